"""B-frames warped from both anchors (b_frames="both", the default) on real encoded streams: the wiring, the
display order, the bounded hold, the end of the stream, estimated futures, and the accuracy it buys."""

import itertools

import cv2
import numpy as np
import pytest
import torch

from taplab.codec import encode, open_video
from taplab.ops import bidirectional
from taplab.ops.warp import motion_to_grid, warp
from taplab.runtime import Segmenter
from taplab.runtime.scheduler import Scheduler
from tests.conftest import DX, DY, translation_frames
from tests.runtime.test_motion_source import pooled_rgb

QUIET = dict(rgc=False, rgfs=False, fusion=False, interpolation=False)  # the B-frames' own blend, alone


@pytest.fixture(scope="module")
def b_clip(tmp_path_factory):
    """H.264 with up to 2 B-frames between anchors, panning: its B-frames have vectors on both sides."""
    path = tmp_path_factory.mktemp("b") / "b.mp4"
    return encode(translation_frames(16, 128, 256, DX, DY), path, gop=16, codec="h264", bframes=2)


def _kinds_by_type(results):
    kinds = {}
    for r in results:
        kinds.setdefault(r.pict_type, set()).add(str(r.kind))
    return kinds


def test_b_frames_are_warped_from_both_anchors_by_default_and_come_out_in_display_order(b_clip):
    results = list(Segmenter(pooled_rgb(), **QUIET).run(b_clip))
    assert [r.index for r in results] == list(range(16))
    b_frames = [r for r in results if r.pict_type == "B"]
    assert len(b_frames) >= 6 and {str(r.kind) for r in b_frames} == {"warp"}
    assert all(r.future is not None and 0 < r.future < 1 for r in b_frames)
    assert all(results[r.key_index].is_key and r.key_index < r.index and r.motion == "codec" for r in b_frames)
    keyed = list(Segmenter(pooled_rgb(), b_frames="key", **QUIET).run(b_clip))
    assert _kinds_by_type(keyed)["B"] == {"key"} and all(r.future is None for r in keyed)


def test_a_b_frame_is_the_residual_weighted_blend_of_its_two_warped_anchors(b_clip):
    """Recomputed from the frames' own vectors and residuals and the anchors' results, in chain propagation."""
    model = pooled_rgb()
    results = list(Segmenter(model, propagation="chain", **QUIET).run(b_clip, logits=True))
    with open_video(b_clip) as video:
        frames = list(video)
    grid, stride = tuple(results[0].logits.shape[1:]), (4, 4)
    checked = 0
    for r, f in zip(results, frames):
        if r.pict_type != "B":
            continue
        past, future = results[f.motion.reference], results[f.future_index]
        assert past.pict_type != "B" and future.pict_type != "B" and past.index < f.index < future.index
        sides = []
        for m, anchor in ((f.motion, past), (f.motion_future, future)):
            sides.append(warp(anchor.logits, motion_to_grid(m.vectors, m.valid, m.block, grid, stride), "bilinear"))
        (p, p_mask), (q, q_mask) = sides
        weight = bidirectional.future_weights(bidirectional.cell_errors(f.residual, grid), ~p_mask,
                                              bidirectional.cell_errors(f.residual_future, grid), ~q_mask)
        torch.testing.assert_close(r.logits, bidirectional.blend(p, q, weight), atol=1e-5, rtol=1e-5)
        assert r.future == pytest.approx(float(weight.mean()))
        checked += 1
    assert checked >= 6


def test_a_stream_that_ends_on_b_frames_gives_them_from_the_past_side(b_clip):
    """The scheduler alone: frames stop after the first B-frames, before their future anchor; flush() gives them."""
    seg = Segmenter(pooled_rgb(), **QUIET)
    past = {r.index: r for r in Segmenter(pooled_rgb(), b_frames="past", **QUIET).run(b_clip)}
    with open_video(b_clip) as video:
        run = Scheduler(seg.model, seg.config, video.height, video.width)
        out, held = [], 0
        for frame in video:
            prep = {"decode": 0.0}
            run.prepare((frame, prep))
            got = run.step(frame, prep)
            out += got
            held += not got
            if frame.pict_type == "B" and held >= 1 and not got and out and out[-1].pict_type != "B":
                break
        tail = run.flush()
    assert tail and all(r.pict_type == "B" and r.future is None and r.kind == "warp" for r in tail)
    assert [r.index for r in out + tail] == list(range(len(out) + len(tail)))
    for r in tail:
        np.testing.assert_array_equal(r.labels, past[r.index].labels)


def test_the_hold_is_bounded(b_clip, monkeypatch):
    """With room for one held B-frame, the first of two in a row goes out from its past side alone, in order."""
    import taplab.runtime.scheduler as scheduler

    monkeypatch.setattr(scheduler, "MAX_REORDER", 1)
    results = list(Segmenter(pooled_rgb(), **QUIET).run(b_clip))
    assert [r.index for r in results] == list(range(16))
    b_frames = [r for r in results if r.pict_type == "B"]
    assert any(r.future is None for r in b_frames) and any(r.future is not None for r in b_frames)


def test_codecs_without_vectors_estimate_both_sides_in_the_decoding_thread(tmp_path, flow_calls):
    """HEVC with B-frames estimates one flow per P-frame and two per B-frame (past and future), all in the
    decoding thread (``flow_calls``: a spy around the real optical flow)."""
    calls = flow_calls
    video = encode(translation_frames(14, 128, 256, DX, DY), tmp_path / "h.mp4", gop=14, codec="hevc", bframes=2)
    results = list(Segmenter(pooled_rgb(), key_interval=None, **QUIET).run(video))
    b_frames = [r for r in results if r.pict_type == "B"]
    p_frames = [r for r in results if r.pict_type == "P"]
    assert b_frames and all(r.kind == "warp" and r.motion == "dis-ultrafast" and r.future > 0 for r in b_frames)
    assert len(calls) == len(p_frames) + 2 * len(b_frames) and set(calls) == {"taplab-decode"}


def _agreement(results, reference, pict_type="B"):
    return np.mean([(r.labels == reference[r.index]).mean() for r in results if r.pict_type == pict_type
                    and r.kind == "warp"])


def test_both_anchors_agree_with_the_per_frame_model_better_than_the_past_alone(real_dir, tmp_path):
    """The real clip at 320x180 as H.264 with 2 B-frames, the shipped model: warped B-frames agree with the
    per-frame output better from both anchors than from the past one, at the same key frames."""
    with open_video(real_dir / "vid_h264.mp4") as video:
        frames = [cv2.resize(f.image, (320, 180), interpolation=cv2.INTER_AREA) for f in itertools.islice(video, 48)]
    clip = encode(frames, tmp_path / "real_b.mp4", gop=250, codec="h264", bframes=2)
    reference = {r.index: r.labels for r in Segmenter(ffw=False).run(clip)}
    past = list(Segmenter(b_frames="past", **QUIET).run(clip))
    both = list(Segmenter(**QUIET).run(clip))
    assert [r.is_key for r in past] == [r.is_key for r in both]
    assert _agreement(both, reference) > _agreement(past, reference) + 0.005


def test_with_interpolation_an_overflowing_hold_keeps_the_b_frames_future_side(b_clip, monkeypatch):
    """A hold of 2 frames with interpolation: the oldest frames go out before the next key frame, and a B-frame
    whose future anchor is still held gets that anchor's features all the same."""
    import taplab.runtime.scheduler as scheduler

    monkeypatch.setattr(scheduler, "MAX_HOLD", 2)
    results = list(Segmenter(pooled_rgb(), rgc=False, rgfs=False, fusion=False, key_interval=None).run(b_clip))
    assert [r.index for r in results] == list(range(16))
    assert all(r.future is not None for r in results if r.pict_type == "B")


class FailingVideo:
    """A real decoded clip whose source fails after ``count`` frames (a fake for the failure alone, said so here)."""

    def __new__(cls, path, count):
        from taplab.codec.reader import Video
        from taplab.errors import DecodeError

        video = open_video(path)
        frames = Video._frames

        def failing(self):
            for frame in itertools.islice(frames(self), count):
                yield frame
            raise DecodeError("the source failed")

        video._frames = failing.__get__(video)
        return video


def test_frames_held_when_the_source_fails_come_out_before_the_error(b_clip):
    from taplab.errors import DecodeError

    video = FailingVideo(b_clip, 3)  # frames 0 (I), 1 (P, held for interpolation), 2 (B, held for frame 3)
    got = []
    with pytest.raises(DecodeError, match="the source failed"):
        for r in Segmenter(pooled_rgb(), **{**QUIET, "interpolation": True}).run(video):
            got.append(r)
    video.close()
    assert [r.index for r in got] == [0, 1, 2] and all(r.labels is not None for r in got)
