"""The optical-flow baseline: the runtime's FFW with dense optical flow instead of the codec's vectors."""

import numpy as np
import pytest
import torch

from taplab.runtime import Segmenter


def pooled_rgb():
    """A stand-in model for one unit (the warp), said so here: its 'logits' are the frame's RGB, blurred
    (so that they vary smoothly between cells, as a CNN's do) and averaged over 4x4 cells; warped
    logits can then be compared with the frame's own."""
    return torch.nn.Sequential(torch.nn.AvgPool2d(9, stride=1, padding=4, count_include_pad=False), torch.nn.AvgPool2d(4))


@pytest.mark.parametrize("source", ["dis-medium", "farneback", "codec"])
def test_warping_a_known_translation_reproduces_the_frames_own_logits(translation_clip, source):
    model = pooled_rgb()
    per_frame = [r.logits for r in Segmenter(model, ffw=False).run(translation_clip, logits=True)]
    results = list(Segmenter(model, motion_source=source, rgc=False, rgfs=False).run(translation_clip, logits=True))
    assert [r.kind for r in results[:3]] == ["key-I", "warp", "warp"]
    inner = (slice(None), slice(4, -4), slice(8, -8))  # away from the borders the motion uncovers
    warped = [k for k, r in enumerate(results) if r.kind == "warp" and 0 < r.index < 12]
    errors = [float((results[k].logits - per_frame[k])[inner].abs().mean()) for k in warped]
    still = [float((per_frame[0] - per_frame[k])[inner].abs().mean()) for k in warped]  # no motion at all
    assert np.mean(errors) < 0.25 * np.mean(still)
    if source != "codec":
        assert all("flow" in results[k].timings for k in warped)


def test_bad_motion_source_is_a_clear_error():
    from taplab.errors import ConfigError

    with pytest.raises(ConfigError, match="motion_source must be one of codec, dis-ultrafast"):
        Segmenter(pooled_rgb(), motion_source="raft")


def test_ground_truth_flow_needs_the_clips_flows_and_warps_with_them(tmp_path):
    from taplab.data.synth import SynthConfig, write_clip
    from taplab.errors import ConfigError

    video = write_clip(tmp_path, SynthConfig(height=128, width=256, frames=5, seed=11, ego_speed_mps=12), gop=5, name="c")
    flows = list(np.load(tmp_path / "flow" / "c.npz")["flow"].astype(np.float32))
    model = pooled_rgb()
    with pytest.raises(ConfigError, match="needs the clip's flows"):
        list(Segmenter(model, motion_source="truth").run(video))
    per_frame = [r.logits for r in Segmenter(model, ffw=False).run(video, logits=True)]
    results = list(Segmenter(model, motion_source="truth", rgc=False, rgfs=False).run(video, logits=True,
                                                                                       truth_flow=flows))
    assert [r.kind for r in results] == ["key-I", "warp", "warp", "warp", "warp"]
    zero = [np.zeros_like(f) for f in flows]  # the same run with no motion must be worse
    still = list(Segmenter(model, motion_source="truth", rgc=False, rgfs=False).run(video, logits=True,
                                                                                     truth_flow=zero))
    err = np.mean([float((r.logits - p).abs().mean()) for r, p in zip(results[1:], per_frame[1:])])
    err_still = np.mean([float((r.logits - p).abs().mean()) for r, p in zip(still[1:], per_frame[1:])])
    assert err < 0.8 * err_still  # 0.69 measured: driving forward, much is disoccluded at this size
    half = [f.astype(np.float16) for f in flows]  # as taplab synth stores them
    same = list(Segmenter(model, motion_source="truth", rgc=False, rgfs=False).run(video, truth_flow=half))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(same, results))
    for bad, message in ((flows[:3], "the clip's flows"), ([f[:, :-1] for f in flows], "expected")):
        with pytest.raises(ConfigError, match=message):
            list(Segmenter(model, motion_source="truth", rgc=False, rgfs=False).run(video, truth_flow=bad))


def test_a_long_gop_gets_key_frames_at_the_interval_and_the_kind_says_why(tmp_path):
    from taplab.codec import encode
    from tests.conftest import translation_frames

    video = encode(translation_frames(30, 128, 256, 3, -2), tmp_path / "long.mp4", gop=30, codec="h264")
    kinds = [r.kind for r in Segmenter(pooled_rgb(), rgc=False, rgfs=False, key_interval=8).run(video)]
    assert [k for k, kind in enumerate(kinds) if kind != "warp"] == [0, 8, 16, 24]
    assert kinds[0] == "key-I" and {kinds[8], kinds[16], kinds[24]} == {"key-interval"}
    kinds = [r.kind for r in Segmenter(pooled_rgb(), rgc=False, rgfs=False, key_interval=None).run(video)]
    assert kinds == ["key-I"] + ["warp"] * 29


def test_a_codec_without_vectors_is_warped_with_estimated_vectors_by_default(tmp_path):
    """HEVC exports no vectors: by default (motion_source="auto") the reader estimates them by optical flow and the
    frames are warped as a codec's would be; motion_source="codec" keeps every frame a key frame, and says so."""
    import warnings

    from taplab.codec import encode
    from taplab.errors import TapLabWarning
    from tests.conftest import translation_frames

    frames = translation_frames(12, 128, 256, 3, -2)
    video = encode(frames, tmp_path / "h.mp4", gop=12, codec="hevc")
    results = list(Segmenter(pooled_rgb(), rgc=False, rgfs=False).run(video, logits=True))
    assert [r.kind for r in results] == ["key-I"] + ["warp"] * 11
    assert {r.motion for r in results[1:]} == {"dis-ultrafast"} and all(r.timings["flow"] > 0 for r in results[1:3])
    mpeg4 = encode(frames, tmp_path / "m.mp4", gop=12, codec="mpeg4", quality=2)
    codec = list(Segmenter(pooled_rgb(), rgc=False, rgfs=False).run(mpeg4, logits=True))
    for a, b in zip(results[1:], codec[1:]):  # both carry the same content the same way
        assert (a.logits - b.logits).abs().mean() < 0.1 * b.logits.abs().mean()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kinds = [r.kind for r in Segmenter(pooled_rgb(), motion_source="codec").run(video)]
    assert kinds == ["key-I"] + ["key"] * 11
    assert any(issubclass(w.category, TapLabWarning) and "exports no motion vectors" in str(w.message) for w in caught)


def test_estimation_runs_once_per_warped_frame_in_the_decoding_thread(tmp_path, flow_calls):
    """HEVC with B-frames, which are key frames under b_frames="key" and must not pay for a flow they do not use;
    warped with b_frames="past", they do (``flow_calls``: a spy around the real optical flow)."""
    from taplab.codec import encode
    from tests.conftest import translation_frames

    calls = flow_calls
    video = encode(translation_frames(14, 128, 256, 3, -2), tmp_path / "h.mp4", gop=14, codec="hevc", bframes=2)
    kinds = [r.kind for r in Segmenter(pooled_rgb(), rgc=False, rgfs=False, b_frames="key", key_interval=None).run(video)]
    assert kinds.count("key") >= 6 and len(calls) == kinds.count("warp")  # B-frames: keys, never estimated
    assert set(calls) == {"taplab-decode"}
    calls.clear()
    kinds = [r.kind for r in Segmenter(pooled_rgb(), rgc=False, rgfs=False, b_frames="past", key_interval=None).run(video)]
    assert kinds == ["key-I"] + ["warp"] * 13 and len(calls) == 13


def test_an_rgfs_key_frame_restarts_the_interval(translation_clip):
    """With every P-frame selected by RGFS, no frame is ever 12 frames from a key frame."""
    kinds = [r.kind for r in Segmenter(pooled_rgb(), rgc=False, rgfs_threshold=0, key_interval=2).run(translation_clip)]
    assert "key-interval" not in kinds and kinds.count("key-RGFS") == 22
