"""Bad input: each case is a clear TapLabError (CLI: one line, exit 2), never a crash or a hang."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
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
    # "at once" is the cause in the message, not a stopwatch (a loaded machine may take any time): a reader that
    # waited for the timeout instead would say "timed out"; the seconds it takes are in benchmarks/bench_bad_input.py
    with pytest.raises(VideoOpenError, match="refused") as error:
        open_video("tcp://127.0.0.1:1", timeout=30)
    assert "timed out" not in str(error.value)


def test_silent_server_times_out():
    """A server that accepts and sends nothing: the timeout fires (the error says so) rather than the read hanging.
    The read runs in a thread joined for 60 s, a guard against a hang only; how close to its timeout it ends is
    measured by benchmarks/bench_bad_input.py."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted = []  # the connection kept open (a dropped one would close: end of data, not silence)
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    outcome = []

    def read() -> None:
        try:
            open_video(f"tcp://127.0.0.1:{port}", timeout=0.5)
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        reader.join(60)
        assert not reader.is_alive(), "the read hung: its timeout never fired"
        assert isinstance(outcome[0], VideoOpenError) and "timed out after 0.5 s" in str(outcome[0]), outcome
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


def test_encode_cli_refuses_a_frame_rate_of_0(translation_clip, tmp_path):
    """`encode --fps 0` once fell back to the source's rate and exited 0; the API test is
    test_encode_rejects_bad_parameters_and_leaves_no_file, this one is the command's promise."""
    result = subprocess.run([sys.executable, "-m", "taplab.cli", "encode", str(translation_clip), "out.mp4", "--fps", "0"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == "error: fps must be positive, got 0.0", result.stderr
    assert not list(tmp_path.iterdir())  # no output file, not even a temporary one


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


# ---------------------------------------------------------------- PyAV's own exceptions on damaged data

#: what PyAV raised on damaged bytes when the real clips were fuzzed (issue 17, item 1), besides FFmpeg's errors
PYAV_DAMAGE = [IndexError("list index out of range"),
               UnicodeDecodeError("utf-8", b"\xff\xfe", 0, 1, "invalid start byte"),
               AttributeError("'NoneType' object has no attribute 'options'"),
               ValueError("current and reference must be equal planes")]


class DamagedContainer:
    """A real container opened by PyAV, whose demuxing (``at="demux"``), a packet's decoding (``"decode"``) or the
    reading of its streams (``"header"``) raises ``exc`` after ``after`` good packets. The one fake of these tests:
    no small file makes PyAV raise each of these types on demand, and the unit under test is the mapping of
    whatever it raises (``DAMAGED`` in taplab/codec/backends/pyav.py), not PyAV's parsing."""

    def __init__(self, container, exc: Exception, at: str, after: int = 3):
        self._container, self._exc, self._at, self._after = container, exc, at, after

    def demux(self, *streams):
        for k, packet in enumerate(self._container.demux(*streams)):
            if k == self._after:
                if self._at == "demux":
                    raise self._exc
                packet = _UndecodablePacket(packet, self._exc)
            yield packet

    def __getattr__(self, name):  # streams, format, close: the real container's
        if name == "streams" and self._at == "header":  # (here, not in a property: an AttributeError raised by a
            raise self._exc  # property would make Python fall back on __getattr__, hiding it)
        return getattr(self._container, name)


class _UndecodablePacket:
    def __init__(self, packet, exc: Exception):
        self.pts, self._exc = packet.pts, exc

    def decode(self):
        raise self._exc


def _damage(monkeypatch, exc: Exception, at: str) -> None:
    """Every container the PyAV backend opens from now on is a :class:`DamagedContainer` over the real one."""
    from taplab.codec.backends import pyav as backend

    real = backend.open_container
    monkeypatch.setattr(backend, "open_container", lambda *a, **kw: DamagedContainer(real(*a, **kw), exc, at))


@pytest.mark.parametrize("exc", PYAV_DAMAGE, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("at", ["demux", "decode"])
def test_pyav_exceptions_while_reading_are_decode_errors_naming_them(translation_clip, monkeypatch, exc, at):
    _damage(monkeypatch, exc, at)
    got = []
    with pytest.raises(DecodeError, match=rf"reading .*translation.mp4 failed: damaged data \({type(exc).__name__}: ") \
            as error, open_video(translation_clip) as video:
        got.extend(f.index for f in video)
    assert type(error.value.__cause__) is type(exc)
    # the good packets' frames first, then the error (fewer than 3 where frame threading holds frames back: many cores)
    assert got == list(range(len(got))) and len(got) <= 3


@pytest.mark.parametrize("exc", PYAV_DAMAGE, ids=lambda e: type(e).__name__)
def test_pyav_exceptions_on_opening_are_video_open_errors_naming_them(translation_clip, monkeypatch, exc):
    import av

    from taplab.codec.backends import pyav as backend

    with monkeypatch.context() as m:  # the header: PyAV fails reading the streams of a container it opened
        _damage(m, exc, "header")
        with pytest.raises(VideoOpenError, match=rf"its header is damaged \({type(exc).__name__}: ") as error:
            open_video(translation_clip)
        assert type(error.value.__cause__) is type(exc)
    real_open = av.open

    def damaged_open(*args, **kwargs):  # the container: av.open opens it for real, then fails as PyAV did
        real_open(*args, **kwargs).close()
        raise exc

    monkeypatch.setattr(backend.av, "open", damaged_open)
    with pytest.raises(VideoOpenError, match=rf"its container is damaged \({type(exc).__name__}: ") as error:
        open_video(translation_clip)
    assert type(error.value.__cause__) is type(exc)


@pytest.mark.parametrize("exc", PYAV_DAMAGE, ids=lambda e: type(e).__name__)
def test_pyav_exceptions_reach_the_command_line_as_one_error_line(translation_clip, tmp_path, monkeypatch, capsys, exc):
    """Through `taplab probe`, and for one of the types `taplab segment` (the CLI's handling does not depend on the
    type; a segment run loads a model, seconds each), in this process (the fake does not cross into a subprocess)."""
    from taplab.cli import main

    _damage(monkeypatch, exc, "demux")
    commands = [["probe", str(translation_clip)]]
    if isinstance(exc, IndexError):
        commands.append(["segment", str(translation_clip), "--out", str(tmp_path / "m")])
    for args in commands:
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err.strip()
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert exit_.value.code == 2 and "Traceback" not in err, err
        assert len(lines) == 1 and f"damaged data ({type(exc).__name__}: " in lines[0], err
    out = tmp_path / "m"
    if isinstance(exc, IndexError) and out.exists():  # the frames read before the damage are kept, complete, logged
        logged = [r["index"] for r in json.loads((out / "frames.json").read_text())]
        assert 1 <= len(logged) <= 3 and logged == list(range(len(logged)))  # (see above: frame threading)
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"frame_{i:06d}.png" for i in logged] + ["frames.csv", "frames.json"])  # no summary.json: incomplete
    # (no folder: no frame came out before the damage, and a run that segmented nothing leaves nothing)


def test_a_full_disk_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    """The CLI's mapping of storage failures, isolated: a full disk cannot be made here, so the clip writer is replaced
    by one that fails as a full disk makes it fail (``taplab synth`` once printed the whole traceback)."""
    import errno

    import taplab.data.synth
    from taplab.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "clip/video/synth.mp4")

    monkeypatch.setattr(taplab.data.synth, "write_clip", full)
    with pytest.raises(SystemExit) as exit_status:
        main(["synth", str(tmp_path / "clip")])
    assert exit_status.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # after the progress line
    assert err[-1] == "error: cannot write: No space left on device: clip/video/synth.mp4"
    assert not any("Traceback" in line for line in err)

    def bug(*args, **kwargs):  # any other OSError is a bug, and keeps its traceback
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(taplab.data.synth, "write_clip", bug)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["synth", str(tmp_path / "clip2")])
