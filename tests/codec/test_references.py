"""Vectors into older references (taplab.codec.references) on real H.264 encodes with several references."""

import numpy as np
import pytest

from taplab.codec import encode, open_video
from taplab.codec.references import block_errors, foreign_blocks, reference_frames
from tests.conftest import translation_frames


def alternating(n: int = 12) -> list[np.ndarray]:
    """Two unrelated textures taking turns, both panning: each frame is best predicted from the one two back."""
    a, b = translation_frames(n, 128, 256, 2, 1, seed=1), translation_frames(n, 128, 256, 2, 1, seed=2)
    return [(a if t % 2 == 0 else b)[t] for t in range(n)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("refs")
    frames = alternating()
    return {refs: encode(frames, out / f"refs{refs}.mp4", gop=12, codec="h264", refs=refs) for refs in (1, 3)}


def test_the_sps_says_how_many_references_a_stream_may_use(clips, tmp_path):
    with open_video(clips[3]) as video:
        assert video.references == 3
    with open_video(clips[1]) as video:
        assert video.references == 1
    b = encode(translation_frames(8, 64, 128, 1, 0), tmp_path / "b.mp4", gop=8, codec="h264", bframes=2)
    with open_video(b) as video:
        assert video.references == 1  # x264 says 2: one of them holds a B-frame's future anchor
    m = encode(translation_frames(4, 64, 128, 1, 0), tmp_path / "m.mp4", gop=4, codec="mpeg4")
    with open_video(m) as video:
        assert video.references == 1
    assert reference_frames("h264", None) is None and reference_frames("h264", b"\x01\x64") is None
    assert reference_frames("hevc", b"\x01" * 20) is None


def test_vectors_into_older_anchors_are_marked_invalid_never_misread(clips):
    with open_video(clips[3]) as video:
        frames = list(video)
    for f in frames[2:]:  # from the third frame on, x264 predicts from the frame two back
        assert f.motion.foreign > 0.9 * (f.motion.foreign + f.motion.valid.sum()), f
    with open_video(clips[1]) as video:  # one reference: nothing to check, nothing marked
        assert all(f.motion is None or f.motion.foreign == 0 for f in video)


def test_a_block_is_foreign_only_where_an_older_anchor_predicts_it_much_better():
    rng = np.random.default_rng(0)
    last, older = rng.integers(0, 256, (8, 16), np.uint8), rng.integers(0, 256, (8, 16), np.uint8)
    current = last.copy()
    current[:, 8:] = older[:, 8:]  # the right half comes from the older anchor
    vectors, valid = np.zeros((2, 4, 2), np.float32), np.ones((2, 4), bool)
    valid[0, 3] = False
    np.testing.assert_array_equal(block_errors(current, last, vectors, valid, 4)[:, :2], 0)
    foreign = foreign_blocks(current, [last, older], vectors, valid, 4)
    np.testing.assert_array_equal(foreign, [[False, False, True, False], [False, False, True, True]])
    flat = np.full((8, 16), 100, np.uint8)  # errors below the floor are never foreign
    assert not foreign_blocks(flat + 2, [flat, flat + 2], vectors, valid, 4).any()


def test_the_runtime_treats_them_as_blocks_without_a_vector(clips):
    from taplab.runtime import Segmenter
    from tests.runtime.test_motion_source import pooled_rgb

    results = list(Segmenter(pooled_rgb(), rgc=False, rgfs=False, key_interval=None).run(clips[3]))
    assert [r.kind for r in results[:3]] == ["key-I", "warp", "warp"]
    assert all(r.distorted > 0.85 for r in results[2:])


def test_encode_takes_references_where_the_codec_has_them(tmp_path):
    from taplab.cli import main
    from taplab.errors import EncodeError

    frames = translation_frames(4, 64, 128, 1, 0)
    with pytest.raises(EncodeError, match="refs for mpeg4 must be in 1..1"):
        encode(frames, tmp_path / "m.mp4", codec="mpeg4", refs=2)
    assert not (tmp_path / "m.mp4").exists()
    folder = tmp_path / "frames"
    folder.mkdir()
    import cv2

    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:03d}.png"), frame)
    main(["encode", str(folder), str(tmp_path / "r.mp4"), "--codec", "h264", "--refs", "4"])
    with open_video(tmp_path / "r.mp4") as video:
        assert video.references == 4


def test_a_transport_stream_carries_its_sps_in_band(clips, tmp_path):
    """MPEG-TS (live sources) gives Annex B extradata: start codes, not an avcC record."""
    import av

    with av.open(str(clips[3])) as source, av.open(str(tmp_path / "r.ts"), "w", format="mpegts") as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with open_video(tmp_path / "r.ts") as video:
        assert video._backend.extradata[:3] == b"\x00\x00\x01" and video.references == 3
