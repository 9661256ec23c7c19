"""`taplab.stream`: iterator and callback styles over a paced real encoded clip, and clean shutdown."""

import threading
import time

import numpy as np
import pytest

import taplab
from taplab.codec.loopback import mpegts_clip, send_udp, serve_http, serve_rtsp, serve_tcp
from taplab.runtime import Segmenter
from tests.runtime.test_latency import GatedModel


def test_iterator_style_gives_every_frame_in_order_with_the_runtimes_labels(translation_clip):
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(translation_clip)]
    with taplab.stream(translation_clip, model=GatedModel(10**9), latency_budget=None, **options) as s:
        results = list(s)
    assert [r.index for r in results] == list(range(24))
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))
    assert all(r.latency is not None and r.latency >= 0 for r in results)


def test_callback_style_stops_promptly_and_leaves_no_thread(translation_clip):
    before = {t.ident for t in threading.enumerate()}
    seen = []
    s = taplab.stream(translation_clip, model=GatedModel(10**9), on_result=seen.append, live=True,
                      rgc=False, rgfs=False).start()
    time.sleep(0.3)  # about 8 frames at 25 frames/s
    assert s.running
    s.stop()
    assert not s.running and s.error is None
    assert 3 <= len(seen) < 24  # stopped before the clip's end and [r.index for r in seen] == list(range(len(seen)))
    time.sleep(0.1)
    assert {t.ident for t in threading.enumerate()} <= before


def test_a_callback_error_is_kept_and_ends_the_stream(translation_clip):
    def fail(result):
        raise ValueError("bad callback")

    s = taplab.stream(translation_clip, model=GatedModel(10**9), on_result=fail, rgc=False, rgfs=False).start()
    deadline = time.perf_counter() + 5
    while s.running and time.perf_counter() < deadline:  # it ends by itself, at the first result
        time.sleep(0.02)
    assert isinstance(s.error, ValueError) and not s.running
    s.stop()


@pytest.mark.parametrize("protocol", ["tcp", "http", "rtsp-tcp", "rtsp-udp"])
def test_a_stream_served_on_loopback_gives_every_frame_in_order_with_bounded_latency(tmp_path, protocol):
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(clip.data)
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    url = {"tcp": lambda: f"tcp://127.0.0.1:{serve_tcp(clip)}",
           "http": lambda: f"http://127.0.0.1:{serve_http(clip)}/live.ts",
           "rtsp-tcp": lambda: f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live",
           "rtsp-udp": lambda: f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live"}[protocol]()
    if protocol == "rtsp-udp":
        options["source_options"] = {"rtsp_transport": "udp"}
    with taplab.stream(url, model=GatedModel(10**9), latency_budget=None, reconnect=False, **options) as s:
        results = list(s)
    # RTSP ends with an RTCP BYE, and FFmpeg's MPEG-TS-over-RTP reader completes a frame only when the
    # next one starts: the last frame is lost (a TCP or HTTP stream's end flushes it)
    count = 23 if protocol.startswith("rtsp") else 24
    assert [r.index for r in results] == list(range(count))
    assert [r.kind for r in results] == ((["key-I"] + ["warp"] * 11) * 2)[:count]
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))
    assert max(r.latency for r in results) < 0.5


@pytest.mark.parametrize("protocol", ["tcp", "rtsp"])
def test_a_sender_that_disconnects_and_comes_back_is_reconnected(tmp_path, protocol):
    from tests.conftest import DX, DY, translation_frames

    frames = translation_frames(24, 128, 256, DX, DY)
    halves = [mpegts_clip(frames[:12]), mpegts_clip(frames[12:])]
    (tmp_path / "second.ts").write_bytes(halves[1].data)
    options = dict(rgc=False, rgfs=False, latency_budget=None, interpolation=False)  # exact labels: none skipped
    second = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "second.ts")]
    url = f"tcp://127.0.0.1:{serve_tcp(halves)}" if protocol == "tcp" else f"rtsp://127.0.0.1:{serve_rtsp(halves)}/live"
    per_half = 12 if protocol == "tcp" else 11  # an RTSP session's last frame is lost (see above)
    results = []
    with taplab.stream(url, model=GatedModel(10**9), backoff=0.1, retries=3,
                       **options) as s:  # retries: a broken test ends in an error, never a hang
        for r in s:
            results.append(r)
            if len(results) == 2 * per_half:
                break
        assert s.reconnections == 1
    assert [r.index for r in results] == list(range(2 * per_half))  # indices continue across the reconnection
    assert [r.gap is not None for r in results] == [False] * per_half + [True] + [False] * (per_half - 1)
    assert results[per_half].gap >= 0.1 and results[per_half].kind == "key-I"
    assert all(np.array_equal(r.labels, e) for r, e in zip(results[per_half:], second))


def test_a_source_that_never_answers_gives_up_after_its_retries():
    import socket

    from taplab.errors import VideoOpenError

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connection refused
    s = taplab.stream(f"tcp://127.0.0.1:{port}", model=GatedModel(10**9), backoff=0.05, retries=2)
    with pytest.raises(VideoOpenError):
        list(s)
    assert s.reconnections == 2  # it gave up after its two retries (a hang would never get here)


def test_mpegts_over_udp_arrives_in_order_and_a_silent_sender_times_out(tmp_path):
    from taplab.errors import DecodeError
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(clip.data)
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    port = send_udp(clip, delay=1.0)  # time for the reader to listen, on a loaded machine too
    results = []
    with pytest.raises(DecodeError, match="timed out"):  # UDP has no end: the sender falls silent
        for r in taplab.stream(f"udp://127.0.0.1:{port}", model=GatedModel(10**9), reconnect=False, timeout=1.0,
                               latency_budget=None,
                               **options):
            results.append(r)
    # the demuxer completes a frame when the next one starts: the last frames wait for data that never comes
    assert len(results) >= 20 and [r.index for r in results] == list(range(len(results)))
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))


def test_a_growing_file_is_followed_as_it_is_written(tmp_path):
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "whole.ts").write_bytes(clip.data)
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "whole.ts")]
    path = tmp_path / "recording.ts"
    path.write_bytes(b"")

    def record() -> None:
        with open(path, "ab") as out:
            for data in clip.frames():
                time.sleep(1 / clip.fps)
                out.write(data)
                out.flush()

    writer = threading.Thread(target=record)
    writer.start()
    with taplab.stream(path, model=GatedModel(10**9), follow=True, timeout=0.5, latency_budget=None, **options) as s:
        results = list(s)
    writer.join()
    assert [r.index for r in results] == list(range(24)) and s.reconnections == 0
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))
    assert max(r.latency for r in results) < 0.5  # each frame segmented as it was written


def _cli_labels(folder):
    import cv2

    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("frame_*.png"))]


def test_segment_cli_reads_an_rtsp_stream_until_it_ends(tmp_path):
    import json

    from taplab.cli import main
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    flags = ["--no-rgc", "--no-rgfs", "--no-fusion", "--no-interpolation"]  # the file run as a live source runs
    (tmp_path / "clip.ts").write_bytes(clip.data)
    main(["segment", str(tmp_path / "clip.ts"), "--out", str(tmp_path / "file"), *flags])
    url = f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live"
    # (over TCP: RTSP over UDP is tested above; here a loaded machine could let the BYE overtake the data)
    main(["segment", url, "--out", str(tmp_path / "rtsp"), "--source-option", "rtsp_transport=tcp", *flags])
    log = json.loads((tmp_path / "rtsp" / "frames.json").read_text())
    assert [r["index"] for r in log] == list(range(23))  # the last frame is lost at an RTSP end (see above)
    got, expected = _cli_labels(tmp_path / "rtsp"), _cli_labels(tmp_path / "file")
    assert len(got) == 23 and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_segment_cli_reads_a_pipe_on_standard_input(tmp_path):
    import subprocess
    import sys

    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(clip.data)
    flags = ["--no-rgc", "--no-rgfs", "--no-fusion", "--no-interpolation"]  # the file run as a live source runs
    command = [sys.executable, "-m", "taplab.cli", "segment"]
    subprocess.run([*command, str(tmp_path / "clip.ts"), "--out", str(tmp_path / "file"), *flags], check=True,
                   capture_output=True)
    with subprocess.Popen(["cat", str(tmp_path / "clip.ts")], stdout=subprocess.PIPE) as cat:
        done = subprocess.run([*command, "-", "--out", str(tmp_path / "pipe"), *flags], stdin=cat.stdout,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got, expected = _cli_labels(tmp_path / "pipe"), _cli_labels(tmp_path / "file")
    assert len(got) == 24 and all(np.array_equal(a, b) for a, b in zip(got, expected))


def test_a_stream_with_corrupt_packets_goes_on_and_recovers_at_the_next_key_frame(tmp_path):
    from taplab.codec.loopback import TsClip
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(clip.data)
    # what a live source gets, for the file run too; no key-frame blend, which would carry some of the
    # concealment's damage into the I-frame where the motion predicts it well
    options = dict(rgc=False, rgfs=False, interpolation=False, key_blend=0)
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    data = bytearray(clip.data)
    start = clip.frame_ends[4]  # frame 5's packets: garble the payload, keep the TS headers
    for packet in range(start, clip.frame_ends[5] - 188 + 1, 188):
        data[packet + 20:packet + 180] = bytes(range(160))
    broken = TsClip(bytes(data), clip.frame_ends, clip.fps)
    with taplab.stream(f"tcp://127.0.0.1:{serve_tcp(broken)}", model=GatedModel(10**9), reconnect=False,
                       latency_budget=None,
                       **options) as s:
        results = list(s)  # FFmpeg conceals what it can and drops what it cannot, silently here
    indices = [r.index for r in results]
    assert indices == list(range(len(indices))) and len(indices) >= 22  # at most two frames lost
    by_index = {r.index: r.labels for r in results}
    assert all(np.array_equal(by_index[i], expected[i]) for i in range(5))
    # the decoder's concealment is wrong until the next I-frame, which restores every label; the frames are
    # numbered as they arrive, so a lost frame shifts the later indices by one
    tail = results[-11:]
    assert all(np.array_equal(r.labels, e) for r, e in zip(tail, expected[-11:]))


def test_stop_ends_a_stream_waiting_on_a_file_that_stopped_growing(tmp_path):
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    path = tmp_path / "recording.ts"
    path.write_bytes(b"".join(clip.frames()[:12]))  # the recorder stalls after one GOP
    before = {t.ident for t in threading.enumerate()}
    seen = []
    s = taplab.stream(path, model=GatedModel(10**9), on_result=seen.append, follow=True, timeout=None,
                      latency_budget=None, rgc=False, rgfs=False).start()
    deadline = time.perf_counter() + 5
    while len(seen) < 10 and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert len(seen) >= 10 and s.running  # waiting for more, without end
    s.stop()  # joins the thread (10 s at most): still running after it would mean the wait was not interrupted
    assert not s.running and s.error is None
    time.sleep(0.1)
    assert {t.ident for t in threading.enumerate()} <= before


def test_segment_cli_reconnects_to_a_stream_with_reconnect(tmp_path, capsys):
    import json

    from taplab.cli import main
    from tests.conftest import DX, DY, translation_frames

    frames = translation_frames(24, 128, 256, DX, DY)
    halves = [mpegts_clip(frames[:12]), mpegts_clip(frames[12:])]
    flags = ["--no-rgc", "--no-rgfs", "--no-fusion", "--no-interpolation"]  # the file run as a live source runs
    (tmp_path / "second.ts").write_bytes(halves[1].data)
    main(["segment", str(tmp_path / "second.ts"), "--out", str(tmp_path / "file"), *flags])
    url = f"tcp://127.0.0.1:{serve_tcp(halves)}"
    main(["segment", url, "--out", str(tmp_path / "live"), "--reconnect", "--limit", "24", *flags])
    log = json.loads((tmp_path / "live" / "frames.json").read_text())
    assert [r["index"] for r in log] == list(range(24))  # indices continue across the reconnection
    got, expected = _cli_labels(tmp_path / "live"), _cli_labels(tmp_path / "file")
    assert len(got) == 24 and all(np.array_equal(a, b) for a, b in zip(got[12:], expected))
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(tmp_path / "second.ts"), "--out", str(tmp_path / "x"), "--reconnect"])
    assert exit_.value.code == 2 and "reconnect is for a stream URL" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_stream_of_a_file_paces_it_so_that_a_budget_means_what_it_says(translation_clip):
    """As the README shows it: taplab.stream(file, latency_budget=0.1). Read as fast as it decodes, the frames
    would queue up and most be skipped as late; paced at the file's frame rate (the default for a file) only
    the frames that arrive while the first key frame's CNN runs are."""
    from tests.runtime.test_latency import SlowModel

    with taplab.stream(translation_clip, model=SlowModel(0.15), latency_budget=0.1, rgc=False, rgfs=False) as s:
        paced = list(s)
    with taplab.stream(translation_clip, model=SlowModel(0.15), latency_budget=0.1, rgc=False, rgfs=False,
                       live=False) as s:
        unpaced = list(s)
    labelled = [r.index for r in paced if r.labels is not None]
    assert len(paced) == 24 and len(labelled) >= 18 and labelled == list(range(labelled[0], 24))
    assert sum(r.labels is not None for r in unpaced) < len(labelled)


def test_segment_with_reconnect_retries_the_first_connection_too(tmp_path):
    from taplab.codec.loopback import TsClip
    from taplab.errors import TapLabWarning
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    garbage = TsClip(bytes(188 * 8), [188 * 8], clip.fps)  # the first connection sends no video: it fails to open
    url = f"tcp://127.0.0.1:{serve_tcp([garbage, clip])}"
    with pytest.warns(TapLabWarning, match="trying again in 0.5 s"):
        summary = taplab.segment(url, tmp_path / "masks", model=GatedModel(10**9), engine="torch", reconnect=True,
                                 limit=6, latency_budget=None, rgc=False, rgfs=False, interpolation=False)
    assert summary.frames == 6 and len(list((tmp_path / "masks").glob("frame_*.png"))) == 6
    with pytest.raises(taplab.VideoOpenError):  # without reconnect, the first failure is the answer
        taplab.segment(f"tcp://127.0.0.1:{serve_tcp([garbage])}", tmp_path / "other", model=GatedModel(10**9),
                       engine="torch")
    assert not (tmp_path / "other").exists()
