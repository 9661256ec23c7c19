"""Bad input: each case is a clear TapLabError (CLI: one line, exit 2), never a crash or a hang."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import warnings

import av
import numpy as np
import pytest

from taplab.codec import encode, open_video
from taplab.errors import CorruptDataWarning, DecodeError, EncodeError, VideoOpenError
from taplab.files import read_label_image
from tests.conftest import translation_frames


def read_all(source, **kw):
    with open_video(source, **kw) as video:
        return list(video)


def test_missing_path():
    with pytest.raises(VideoOpenError, match="no such file"):
        open_video("/no/such/clip.mp4")


def test_directory(tmp_path):
    with pytest.raises(VideoOpenError, match="folder"):
        open_video(tmp_path)


def test_text_file_named_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoOpenError, match="not a video"):
        open_video(path)


def test_truncated_file(translation_clip, tmp_path):
    data = translation_clip.read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoOpenError, match="truncated"):
        read_all(path)


def test_corrupt_packet_mid_stream_is_skipped_with_a_warning(translation_clip, tmp_path):
    with av.open(str(translation_clip)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(translation_clip.read_bytes())
    pos, size = packets[6]
    data[pos + 4 : pos + size] = np.random.default_rng(1).integers(0, 255, size - 4, dtype=np.uint8).tobytes()
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frames = read_all(path)
    assert any(issubclass(w.category, CorruptDataWarning) for w in caught)
    assert len(frames) >= 22  # one frame may be lost; decoding went on to the end
    assert frames[-1].pict_type == "P" and frames[12].pict_type == "I"


def test_audio_only_file(tmp_path):
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=44100)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, i * 1024
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    with pytest.raises(VideoOpenError, match="no video stream.*audio"):
        open_video(path)


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_zero_frame_file(tmp_path, ext):
    path = tmp_path / f"zero.{ext}"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 128, 64, "yuv420p"
        c.start_encoding()
    with pytest.raises((VideoOpenError, DecodeError)):
        read_all(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(VideoOpenError, match="empty"):
        open_video(path)


def test_refused_url_fails_at_once():
    start = time.monotonic()
    with pytest.raises(VideoOpenError, match="refused"):
        open_video("tcp://127.0.0.1:1", timeout=2)
    assert time.monotonic() - start < 2


def test_silent_server_times_out():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    start = time.monotonic()
    try:
        with pytest.raises(VideoOpenError, match="timed out"):
            open_video(f"tcp://127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - start < 5
    finally:
        server.close()


def test_unknown_backend_and_wrong_source_type(translation_clip):
    with pytest.raises(VideoOpenError, match="unknown backend"):
        open_video(translation_clip, backend="gstreamer")
    with pytest.raises(VideoOpenError, match="cannot read a video from a int"):
        open_video(42)
    with pytest.raises(VideoOpenError, match="paths and URLs only"):
        open_video(open(translation_clip, "rb"), backend="mvextractor")


def test_encode_rejects_bad_parameters_and_leaves_no_file(tmp_path):
    frames = translation_frames(4, 64, 128, 1, 1)
    out = tmp_path / "x.mp4"
    with pytest.raises(EncodeError, match="unknown codec"):
        encode(frames, out, codec="prores")  # vp9 was the example until taplab encoded it
    with pytest.raises(EncodeError, match="even"):
        encode([f[:63] for f in frames], out)
    with pytest.raises(EncodeError, match="quality"):
        encode(frames, out, quality=99)
    with pytest.raises(EncodeError, match="frame 2"):
        encode(frames[:2] + [frames[2][:32]], out)
    for fps in (0, -5):  # 0 once fell back to the source's rate and encoded
        with pytest.raises(EncodeError, match="fps must be positive"):
            encode(frames, out, fps=fps)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


@pytest.mark.parametrize(
    "args,message",
    [
        (["probe", "/no/such.mp4"], "error: no such file: /no/such.mp4"),
        (["probe", "/"], "error: is a folder, not a video: /"),
        (["encode", "/no/such/folder", "out.mp4"], "error: no such file or folder: /no/such/folder"),
        (["synth", "clip", "--gop", "-1"], "error: gop must be >= 1, got -1"),  # once left flow/, gtFine/, video/
        (["synth", "clip", "--bframes", "3", "--gop", "3"], "error: bframes must be in 0..2 for gop 3, got 3"),
    ],
)
def test_cli_prints_one_line_and_exits_2(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "taplab.cli", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())


def test_standard_input_is_named_so_in_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "taplab.cli", "segment", "-", "--out", "masks"], input=b"not a video",
                            capture_output=True, cwd=tmp_path, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.strip().endswith("standard input"), err
    assert "object>" not in err and "Traceback" not in err and not list(tmp_path.iterdir())


def two_sizes(tmp_path):
    """An MPEG-TS stream of 6 frames at 128x64, then 6 at 160x96 (MPEG-TS concatenates: one stream that changes
    size, as adaptive live sources do)."""
    from taplab.codec.loopback import mpegts_clip

    first = mpegts_clip(translation_frames(6, 64, 128, 1, 0))
    second = mpegts_clip(translation_frames(6, 96, 160, 1, 0))
    path = tmp_path / "two_sizes.ts"
    path.write_bytes(first.data + second.data)
    return path


def test_a_frame_size_change_starts_the_references_anew_with_a_warning(tmp_path):
    from taplab.errors import TapLabWarning

    with pytest.warns(TapLabWarning, match=r"changes at frame 6, from 128x64 to 160x96: the frames from there on are "
                                           r"read as a new stream, from a key frame"), open_video(two_sizes(tmp_path)) as video:
        frames = [(f.index, f.width, f.height, f.pict_type, f.motion is not None, f.reference_luma is not None,
                   None if f.residual is None else f.residual.shape) for f in video]
    assert [f[:3] for f in frames] == [(i, 128, 64) for i in range(6)] + [(i, 160, 96) for i in range(6, 12)]
    assert frames[6][3:6] == ("I", False, False)  # no reference across the change
    assert frames[7][3:] == ("P", True, True, (96, 160))  # the next P-frame refers to the first of the new size
    result = subprocess.run([sys.executable, "-m", "taplab.cli", "probe", str(tmp_path / "two_sizes.ts")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr


def test_a_stream_that_changes_size_is_segmented_with_a_key_frame_at_the_change(tmp_path):
    from taplab.cli import main

    out = tmp_path / "masks"
    main(["segment", str(two_sizes(tmp_path)), "--out", str(out), "--overlay", str(tmp_path / "o.mp4")])
    records = json.loads((out / "frames.json").read_text())
    assert [r["kind"].startswith("key") for r in records] == [True] + [False] * 5 + [True] + [False] * 5
    shapes = [read_label_image(out / f"frame_{i:06d}.png").shape for i in range(12)]
    assert shapes == [(64, 128)] * 6 + [(96, 160)] * 6
    with open_video(tmp_path / "o.mp4") as overlay:
        assert (overlay.width, overlay.height, sum(1 for _ in overlay)) == (128, 64, 12)  # one size: the first


def test_a_damaged_mp4_that_ffmpeg_can_only_guess_to_be_raw_h261_is_refused(real_dir, tmp_path):
    """The real MPEG-4 clip with its first 100 bytes zeroed: FFmpeg guesses raw H.261 from the content and decodes
    garbage at 176x144 (at times at a frame a second); refused at open, one line, nothing written."""
    data = bytearray((real_dir / "vid_mpeg4_part2.mp4").read_bytes())
    data[:100] = bytes(100)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(data)
    with pytest.raises(VideoOpenError, match=r"damaged.mp4 is damaged: .* FFmpeg could only guess it to be raw H261"):
        open_video(path)
    result = subprocess.run([sys.executable, "-m", "taplab.cli", "segment", str(path), "--out", "masks"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr and not (tmp_path / "masks").exists()


def test_only_a_raw_guess_under_a_containers_name_counts_as_misread():
    from taplab.codec.backends.pyav import misread_container

    assert misread_container("h261", "clip.mp4") and misread_container("h263", "/a/b/CLIP.MKV")
    assert not misread_container("h261", "call.h261") and not misread_container("mov,mp4,m4a,3gp,3g2,mj2", "clip.mp4")
    assert not misread_container("m4v", "clip.mp4")  # a damaged MP4's MPEG-4 stream, read raw: its real frames
    assert not misread_container("h261", object())  # a file object: no name to go by
