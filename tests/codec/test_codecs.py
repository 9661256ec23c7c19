"""The codecs beside the papers' format: HEVC, VP9 and MPEG-2 encoded and read back, and block vectors estimated
by optical flow where the codec exports none (HEVC, VP9)."""

import numpy as np
import pytest

from taplab.codec import CODECS, encode, open_video
from taplab.codec.motion import VECTOR_CODECS, MotionField, flow_to_blocks
from taplab.errors import DecodeError, EncodeError
from tests.conftest import DX, DY, translation_frames


@pytest.fixture(scope="module")
def frames():
    return translation_frames(14, 128, 256, DX, DY)


@pytest.mark.parametrize("codec, bframes, name, vectors", [
    ("hevc", 2, "hevc", False), ("vp9", 0, "vp9", False), ("mpeg2", 2, "mpeg2video", True),
    ("h264", 2, "h264", True), ("mpeg4", 0, "mpeg4", True),
])
def test_each_codec_encodes_a_fixed_gop_and_says_whether_it_exports_vectors(frames, tmp_path, codec, bframes, name,
                                                                             vectors):
    path = encode(frames, tmp_path / f"{codec}.mp4", gop=6, codec=codec, bframes=bframes)
    with open_video(path) as video:
        read = list(video)
    types = "".join(f.pict_type for f in read)
    assert video.codec == name and video.exports_vectors is vectors and (name in VECTOR_CODECS) is vectors
    assert len(read) == 14 and [i for i, t in enumerate(types) if t == "I"] == [0, 6, 12]
    assert ("B" in types) is (bframes > 0)
    assert any(f.motion is not None for f in read) is vectors  # nothing is estimated unless asked


def test_vp9_has_no_b_frames_and_unknown_codecs_are_refused(frames, tmp_path):
    with pytest.raises(EncodeError, match="vp9 takes at most 0 B-frames"):
        encode(frames, tmp_path / "x.mp4", codec="vp9", bframes=2)
    assert set(CODECS) == {"mpeg4", "h264", "hevc", "vp9", "mpeg2"} and not list(tmp_path.iterdir())


@pytest.mark.parametrize("codec, bframes", [("hevc", 2), ("vp9", 0)])
def test_estimated_vectors_recover_the_known_motion_of_a_codec_without_vectors(frames, tmp_path, codec, bframes):
    path = encode(frames, tmp_path / f"{codec}.mp4", gop=12, codec=codec, bframes=bframes)
    with open_video(path) as video:
        video.estimate_motion("dis-ultrafast")
        read = list(video)
    assert read[0].motion is None  # an I-frame: no motion
    for f in read[1:12]:
        m = f.motion
        assert f.estimated and m.source == "dis-ultrafast" and m.direction == "past" and m.block == 4
        assert m.vectors.shape == (32, 64, 2) and m.valid.all()
        steps = f.index - m.reference  # to the previous anchor, in display order (past a B-frame's neighbours)
        assert 1 <= steps <= 3
        np.testing.assert_allclose(np.median(m.vectors[4:-4, 4:-4].reshape(-1, 2), 0), [DX * steps, DY * steps], atol=0.5)
        assert f.residual.mean() < 4  # compensated by the estimated vectors, as a codec's would be


def test_estimating_does_nothing_for_a_codec_with_vectors_and_must_come_before_reading(frames, tmp_path):
    path = encode(frames, tmp_path / "h.mp4", gop=12, codec="hevc", bframes=0)
    with open_video(path) as video:
        next(iter(video))
        with pytest.raises(DecodeError, match="before"):
            video.estimate_motion("dis-fast")
    mpeg4 = encode(frames, tmp_path / "m.mp4", gop=12)
    with open_video(mpeg4) as video:
        frames_read = iter(video)
        first = next(frames_read)
        video.estimate_motion("dis-fast")  # a codec with vectors: nothing to do, so no error either
        read = [first, *frames_read]
    assert not any(f.estimated for f in read)
    assert {f.motion.source for f in read if f.motion is not None} == {"codec"} and read[12].motion is None  # an I-frame


def test_flow_to_blocks_averages_each_block_and_edge_blocks_over_the_pixels_they_hold():
    flow = np.zeros((10, 12, 2), np.float32)
    flow[:4, :4] = (1.0, 2.0)
    flow[8, :, 0] = 4.0  # the last, partial row of blocks holds rows 8 and 9 only
    blocks = flow_to_blocks(flow, 4)
    assert blocks.shape == (3, 3, 2)
    np.testing.assert_allclose(blocks[0, 0], (1.0, 2.0))
    np.testing.assert_allclose(blocks[2, :, 0], 2.0)  # (4 + 0) / 2: neither padding nor repeated rows count
    field = MotionField.from_flow(flow, 4, "dis-fast", reference=3)
    assert field.source == "dis-fast" and field.reference == 3 and field.valid.all() and len(field.raw) == 0
