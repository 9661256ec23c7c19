"""The reader on real encoded video: picture types, vector sign and sub-pel precision, residuals, B-frames."""

from __future__ import annotations

import gc
import io

import cv2
import numpy as np
import pytest

from taplab.codec import encode, open_video
from taplab.errors import DecodeError
from tests.conftest import DX, DY, translation_frames


def interior_vectors(motion, margin: int = 2) -> np.ndarray:
    """Valid vectors away from the frame edges (where content enters, vectors are arbitrary)."""
    v = motion.vectors[margin:-margin, margin:-margin]
    ok = motion.valid[margin:-margin, margin:-margin]
    return v[ok]


def test_picture_types_and_stream_properties(translation_clip):
    with open_video(translation_clip) as video:
        assert (video.codec, video.width, video.height, video.fps) == ("mpeg4", 256, 128, 25.0)
        frames = list(video)
    assert "".join(f.pict_type for f in frames) == ("I" + "P" * 11) * 2
    assert [f.index for f in frames] == list(range(24))
    assert frames[1].time == pytest.approx(0.04)
    assert all((f.motion is None) == (f.pict_type == "I") for f in frames)


def test_vectors_recover_known_translation_with_right_sign(translation_clip):
    with open_video(translation_clip) as video:
        for frame in video:
            if frame.motion is None:
                continue
            v = interior_vectors(frame.motion)
            assert len(v) > 100
            # current[y, x] = previous[y + DY, x + DX]: the vectors must be (+DX, +DY)
            assert np.median(v[:, 0]) == DX and np.median(v[:, 1]) == DY
            assert frame.motion.reference == frame.index - 1
            assert frame.motion.direction == "past"
            assert frame.motion.vectors.shape == (128 // 8, 256 // 8, 2) and frame.motion.block == 8


def test_sub_pel_vectors_are_kept(tmp_path):
    path = encode(translation_frames(8, 128, 256, 1.5, -0.5), tmp_path / "subpel.mp4", quality=2)
    with open_video(path) as video:
        medians = [np.median(interior_vectors(f.motion), axis=0) for f in video if f.motion is not None]
    assert np.allclose(medians, [1.5, -0.5])


def test_residual_of_translation_is_small_with_motion_and_large_without(translation_clip):
    with open_video(translation_clip) as video:
        frames = list(video)
    for prev, frame in zip(frames, frames[1:]):
        if frame.motion is None:
            continue
        inner = (slice(16, -16), slice(16, -16))
        compensated = frame.residual[inner].mean()
        zero_motion = cv2.absdiff(frame.luma, prev.luma)[inner].mean()
        assert compensated < 3.0, compensated
        assert zero_motion > 5 * compensated
    assert frames[0].residual.max() == 0  # nothing to predict the first frame from
    assert frames[12].residual.mean() > 10  # an I-frame: the zero-motion difference


def test_image_is_rgb_and_matches_the_source(tmp_path):
    src = translation_frames(4, 64, 128, 2, 0)
    src = [np.ascontiguousarray(f * np.array([1.0, 0.5, 0.2])).astype(np.uint8) for f in src]  # red-dominant
    path = encode(src, tmp_path / "rgb.mp4", quality=2)
    with open_video(path) as video:
        images = [f.image for f in video]
    assert images[0].shape == (64, 128, 3) and images[0].dtype == np.uint8
    assert images[0][..., 0].mean() > 2 * images[0][..., 2].mean()
    assert np.abs(images[2].astype(int) - src[2]).mean() < 6


@pytest.mark.parametrize("width", [128, 130])  # a plane without and (for 130) with row padding
def test_luma_is_the_y_plane_and_cannot_corrupt_the_frame(tmp_path, width):
    src = translation_frames(3, 64, width, 2, 0)
    path = encode(src, tmp_path / "luma.mp4", quality=2)
    with open_video(path) as video:
        frames = list(video)
    for f in frames:
        luma = f.luma
        assert luma.shape == (64, width) and luma.flags.c_contiguous
        # Y is BT.601 limited-range luma of the source
        y = cv2.cvtColor(src[f.index], cv2.COLOR_RGB2YUV)[..., 0].astype(float) * 219 / 255 + 16
        assert np.abs(luma.astype(float) - y).mean() < 4
        assert luma.flags.owndata  # its own array: no view keeps the decoder's frame alive
        luma[0, 0] = 0  # and so writing to it cannot corrupt that frame
    image = frames[1].image  # converted from the same planes after all that
    assert np.abs(image.astype(int) - src[1]).mean() < 10  # 4:2:0 chroma on a detailed texture


def test_file_like_object_gives_the_same_result(translation_clip):
    with open_video(translation_clip) as video:
        expect = [(f.pict_type, None if f.motion is None else f.motion.vectors) for f in video]
    with open(translation_clip, "rb") as fh, open_video(io.BytesIO(fh.read())) as video:
        got = [(f.pict_type, None if f.motion is None else f.motion.vectors) for f in video]
    assert [t for t, _ in got] == [t for t, _ in expect]
    assert all((a is None and b is None) or np.array_equal(a, b) for (_, a), (_, b) in zip(got, expect))


def test_a_video_is_read_once(translation_clip):
    with open_video(translation_clip) as video:
        list(video)
        with pytest.raises(DecodeError, match="already read"):
            iter(video)


def test_h264_b_frames_keep_past_and_future_vectors_apart(tmp_path):
    path = encode(translation_frames(16, 128, 256, DX, DY), tmp_path / "b.mp4", codec="h264", bframes=2, gop=16, quality=18)
    with open_video(path) as video:
        frames = list(video)
    bframes = [f for f in frames if f.pict_type == "B"]
    assert len(bframes) >= 4
    for f in bframes:
        # Past vectors point into the previous anchor, |index - reference| frames back.
        steps = f.index - f.motion.reference
        assert steps >= 1
        assert np.median(interior_vectors(f.motion), axis=0).tolist() == [DX * steps, DY * steps]
        assert f.motion_future is not None and f.motion_future.direction == "future"
        fut = np.median(interior_vectors(f.motion_future), axis=0)
        assert np.sign(fut).tolist() == [-np.sign(DX), -np.sign(DY)]  # the future lies the other way
    for f in frames:
        if f.pict_type == "P":
            assert f.motion_future is None and f.motion.reference < f.index


def test_reading_a_b_frame_stream_is_deterministic(tmp_path):
    path = encode(translation_frames(16, 128, 256, DX, DY), tmp_path / "b.mp4", codec="h264", bframes=2, gop=16, quality=18)

    def fields():
        with open_video(path) as video:
            return [(f.pict_type, f.motion and f.motion.vectors.tobytes(), f.motion_future and f.motion_future.vectors.tobytes()) for f in video]

    first = fields()
    assert all(fields() == first for _ in range(12))


def test_mpeg4_b_frame_streams_p_vectors_span_the_anchor_distance(tmp_path):
    """In IBBP order a P-frame predicts from the anchor three frames back; its vectors say so.

    Its B-frames are coded in MPEG-4's direct mode, whose exported vectors are deltas to
    the co-located P vectors rather than motion (documented in docs/codec.md); they stay separate.
    """
    path = encode(translation_frames(24, 128, 256, DX, DY), tmp_path / "mb.mp4", codec="mpeg4", bframes=2, quality=2)
    with open_video(path) as video:
        frames = list(video)
    assert "".join(f.pict_type for f in frames[:7]) == "IBBPBBP"
    for f in frames:
        if f.pict_type == "P":
            steps = f.index - f.motion.reference
            assert steps == 3
            assert np.median(interior_vectors(f.motion), axis=0).tolist() == [DX * steps, DY * steps]
        if f.pict_type == "B":
            assert f.motion.direction == "past" and f.motion_future.direction == "future"


def test_stop_after_ends_the_video_at_that_frame(translation_clip):
    from taplab.codec import open_video
    from taplab.errors import DecodeError

    with open_video(translation_clip) as video:
        video.stop_after(5)
        assert [f.index for f in video] == [0, 1, 2, 3, 4]
        with pytest.raises(DecodeError, match="must come before"):
            video.stop_after(3)


def os_threads() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))


def test_rgb_frames_start_no_threads_per_frame_and_equal_pyavs(tmp_path):
    """Each ``frame.to_ndarray(format="rgb24")`` made a colour converter with threads of its own, alive until the
    garbage collector freed the frame (PyAV holds a frame whose side data was read in a reference cycle): 2 more
    OS threads per frame read. One converter per video now, with the same pixels."""
    import av

    path = encode(translation_frames(40, 64, 128, 1, 0), tmp_path / "clip.mp4", gop=12)
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    gc_was = gc.isenabled()
    gc.disable()  # as between two of the collector's runs, which a long run's frames outlive
    try:
        counts, equal = [], []
        with open_video(path) as video:
            for frame in video:
                equal.append(np.array_equal(frame.image, reference[frame.index]))
                counts.append(os_threads())
    finally:
        if gc_was:
            gc.enable()
    assert all(equal) and len(equal) == 40
    assert counts[-1] - counts[4] <= 2, counts  # was 70 more after 35 frames
