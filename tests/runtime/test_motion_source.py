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
