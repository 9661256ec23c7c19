"""The reader on the real 1280x720 clips: the two backends agree, and motion compensation helps."""

from __future__ import annotations

import numpy as np
import pytest

from taplab.codec import open_video

CLIPS = [("vid_mpeg4_part2.mp4", "mpeg4", 8), ("vid_h264.mp4", "h264", 4)]


def read(path, backend):
    with open_video(path, backend=backend) as video:
        return [(f.pict_type, f.motion) for f in video]


@pytest.mark.parametrize("name,codec,block", CLIPS)
def test_backends_agree_on_types_and_vectors(real_dir, name, codec, block):
    ours = read(real_dir / name, "pyav")
    theirs = read(real_dir / name, "mvextractor")
    assert len(ours) == len(theirs) == 337
    assert [t for t, _ in ours] == [t for t, _ in theirs]
    for (_, a), (_, b) in zip(ours, theirs):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.block == b.block == block
            assert np.array_equal(a.vectors, b.vectors) and np.array_equal(a.valid, b.valid)
            assert np.array_equal(a.raw[["dst_x", "dst_y", "motion_x", "motion_y"]], b.raw[["dst_x", "dst_y", "motion_x", "motion_y"]])


def test_mpeg4_clip_is_the_papers_format(real_dir):
    with open_video(real_dir / "vid_mpeg4_part2.mp4") as video:
        types = "".join(f.pict_type for f in video)
    assert (video.codec, video.width, video.height) == ("mpeg4", 1280, 720)
    gops = [len(g) + 1 for g in types.split("I")[1:]]
    assert types[0] == "I" and "B" not in types
    assert max(gops) == 12 and sum(g == 12 for g in gops) >= 0.9 * len(gops)


@pytest.mark.parametrize("name,codec,block", CLIPS)
def test_motion_compensated_residual_is_lower_than_zero_motion(real_dir, name, codec, block):
    compensated, zero_motion = [], []
    with open_video(real_dir / name) as video:
        previous = None
        for frame in video:
            if frame.motion is not None and previous is not None:
                compensated.append(frame.residual.mean())
                zero_motion.append(np.abs(frame.luma.astype(np.int16) - previous).mean())
            previous = frame.luma.astype(np.int16)
            if len(compensated) == 60:
                break
    compensated, zero_motion = np.array(compensated), np.array(zero_motion)
    assert compensated.mean() < 0.8 * zero_motion.mean()
    assert (compensated <= zero_motion + 0.05).mean() > 0.9  # frame by frame, too


def test_the_real_hevc_clip_gets_estimated_vectors_that_compensate_like_a_codecs(real_dir):
    """HEVC exports no vectors; estimated ones (DIS ultrafast, 4-pixel blocks) must predict the frame better than
    zero motion, as the codecs' own do above."""
    with open_video(real_dir / "vid_hevc.mp4") as video:
        assert (video.codec, video.exports_vectors) == ("hevc", False)
        video.estimate_motion("dis-ultrafast")
        compensated, zero_motion = [], []
        for frame in video:
            if frame.pict_type == "P" and frame.motion is not None:
                assert frame.motion.source == "dis-ultrafast" and frame.motion.block == 4
                compensated.append(frame.residual.mean())
                reference = frame._reference_luma.astype(np.int16)  # the previous anchor, which the vectors point into
                zero_motion.append(np.abs(frame.luma.astype(np.int16) - reference).mean())
            if len(compensated) == 20:
                break
    assert len(compensated) == 20 and np.mean(compensated) < 0.8 * np.mean(zero_motion)
