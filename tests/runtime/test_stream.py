"""`taplab.stream`: iterator and callback styles over a paced real encoded clip, and clean shutdown."""

import threading
import time

import numpy as np
import pytest

import taplab
from taplab.codec.loopback import mpegts_clip, serve_http, serve_rtsp, serve_tcp
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


def _threads_end(before: set[int], guard: float = 30.0) -> bool:
    """Whether every thread started since ``before`` was taken has ended (polled: ``guard`` seconds only guard
    against a hang, they claim no speed)."""
    deadline = time.monotonic() + guard
    while {t.ident for t in threading.enumerate()} - before and time.monotonic() < deadline:
        time.sleep(0.02)
    return {t.ident for t in threading.enumerate()} <= before


def test_callback_style_stops_promptly_and_leaves_no_thread(translation_clip):
    """stop() ends the stream after the frame in hand. The callback holds the fourth result until stop() has been
    called (stop(timeout=0): the request, without the join), so the test, not the machine's speed, decides where
    the stream is when it is stopped: a slow machine cannot let it run to the clip's end first."""
    before = {t.ident for t in threading.enumerate()}
    seen, reached, release = [], threading.Event(), threading.Event()

    def on_result(result):
        seen.append(result)
        if len(seen) == 4:
            reached.set()
            assert release.wait(60), "the test never released the callback"

    s = taplab.stream(translation_clip, model=GatedModel(10**9), on_result=on_result, live=True,
                      rgc=False, rgfs=False).start()
    assert reached.wait(60) and s.running
    s.stop(timeout=0)  # asked to stop while the callback holds the fourth result
    release.set()
    s.stop()  # and joined (10 s: a guard; still running after it would mean the request was not heard)
    assert not s.running and s.error is None
    assert [r.index for r in seen] == [0, 1, 2, 3]  # nothing after the frame in hand, of 24
    assert _threads_end(before)


def test_a_callback_error_is_kept_and_ends_the_stream(translation_clip):
    def fail(result):
        raise ValueError("bad callback")

    s = taplab.stream(translation_clip, model=GatedModel(10**9), on_result=fail, rgc=False, rgfs=False).start()
    deadline = time.perf_counter() + 60  # a guard against a hang, not a speed claim
    while s.running and time.perf_counter() < deadline:  # it ends by itself, at the first result
        time.sleep(0.02)
    assert isinstance(s.error, ValueError) and not s.running
    s.stop()


@pytest.mark.parametrize("protocol", ["tcp", "http", "rtsp-tcp", "rtsp-udp"])
def test_a_stream_served_on_loopback_gives_every_frame_in_order(tmp_path, protocol, monkeypatch):
    from taplab.codec import loopback
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(clip.data)
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    # RTSP ends with an RTCP BYE, and FFmpeg's MPEG-TS-over-RTP reader completes a frame only when the
    # next one starts: the last frame is lost (a TCP or HTTP stream's end flushes it)
    count = 23 if protocol.startswith("rtsp") else 24
    # Over UDP the BYE has a socket of its own, and FFmpeg reads it before the data packets queued beside it: a
    # reader behind the sender (a loaded machine) would end early. So the server sends its BYE once the reader has
    # given every frame but the one that the end completes (a handshake; 60 s: a guard against a hang)
    given, stalled, real_bye = threading.Event(), [], loopback._rtcp_bye

    def bye_when_given() -> bytes:
        if not given.wait(60):
            stalled.append(True)
        return real_bye()

    monkeypatch.setattr(loopback, "_rtcp_bye", bye_when_given)
    url = {"tcp": lambda: f"tcp://127.0.0.1:{serve_tcp(clip)}",
           "http": lambda: f"http://127.0.0.1:{serve_http(clip)}/live.ts",
           "rtsp-tcp": lambda: f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live",
           "rtsp-udp": lambda: f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live"}[protocol]()
    if protocol == "rtsp-udp":
        options["source_options"] = {"rtsp_transport": "udp"}
    results = []
    with taplab.stream(url, model=GatedModel(10**9), latency_budget=None, reconnect=False, **options) as s:
        for r in s:
            results.append(r)
            if r.index == count - 2:
                given.set()
    assert not stalled
    assert [r.index for r in results] == list(range(count))
    assert [r.kind for r in results] == ((["key-I"] + ["warp"] * 11) * 2)[:count]
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))
    # every result's latency is measured; how small it is depends on the machine's load, not on taplab alone, so it
    # is measured, not asserted: benchmarks/bench_latency.py (this clip, these protocols), bench_stream.py (720p)
    assert all(r.latency is not None and r.latency >= 0 for r in results)


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


def _udp_bound(port: int) -> bool:
    """Whether a socket on this machine is bound to UDP ``port`` (Linux: ``/proc/net/udp``, ``udp6``)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as rows:
                next(rows)  # the header
                if any(int(row.split()[1].rsplit(":", 1)[1], 16) == port for row in rows):
                    return True
        except FileNotFoundError:
            continue
    return False


def test_mpegts_over_udp_arrives_in_order_and_a_silent_sender_times_out(tmp_path):
    import os
    import socket

    from taplab.codec.loopback import CHUNK
    from taplab.errors import DecodeError
    from tests.conftest import DX, DY, translation_frames

    if not os.path.exists("/proc/net/udp"):
        pytest.skip("the sender waits for the reader's socket, which it sees in Linux's /proc/net/udp")
    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(clip.data)
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unheard = []

    def send() -> None:
        """Datagrams sent before the reader listens are lost: the sender waits for the reader's socket (a handshake;
        60 s: a guard against a hang), then sends the whole clip at once (48 KB, which the socket's buffer holds),
        so that no silence before its end can pass for one, however slow the reader; then it falls silent."""
        deadline = time.monotonic() + 60
        while not _udp_bound(port):
            if time.monotonic() > deadline:
                unheard.append(port)
                return
            time.sleep(0.01)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for k in range(0, len(clip.data), CHUNK):
                out.sendto(clip.data[k:k + CHUNK], ("127.0.0.1", port))

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    results = []
    with pytest.raises(DecodeError, match="timed out"):  # UDP has no end: the sender falls silent
        for r in taplab.stream(f"udp://127.0.0.1:{port}", model=GatedModel(10**9), reconnect=False, timeout=1.0,
                               latency_budget=None, **options):
            results.append(r)
    sender.join()
    assert not unheard and [r.index for r in results] == list(range(24))  # the muxer's last packets complete the last
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))


def test_a_growing_file_is_followed_as_it_is_written(tmp_path):
    from tests.conftest import DX, DY, translation_frames

    clip = mpegts_clip(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "whole.ts").write_bytes(clip.data)
    options = dict(rgc=False, rgfs=False, interpolation=False)  # what a live source gets, for the file run too
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "whole.ts")]
    path = tmp_path / "recording.ts"
    path.write_bytes(b"")
    # The recorder writes frame j only once the results reach frame j - 1 - AHEAD: it is never more than AHEAD + 1
    # frames ahead of the segmentation, whatever the machine's speed. A reader that waited for more than it
    # needs (the file's end) would stall it, and the recorder's wait would run out (60 s: a guard, not a speed claim).
    # The reader needs 2 frames beyond a result (the MPEG-TS demuxer completes a frame when the next one starts).
    ahead = 4
    results, stalled, progress = [], [], threading.Condition()

    def record() -> None:
        with open(path, "ab") as out:
            for j, data in enumerate(clip.frames()):
                with progress:
                    if not progress.wait_for(lambda j=j: len(results) >= j - ahead, timeout=60):
                        stalled.append(j)
                out.write(data)
                out.flush()

    writer = threading.Thread(target=record, daemon=True)  # (daemon: a failing test does not hold up the exit)
    writer.start()
    # timeout: the seconds without growth that end a followed file, a guard here; the stream is left after frame 21,
    # the last one complete before the recording's end (the end itself: tests/codec/test_live_sources.py)
    with taplab.stream(path, model=GatedModel(10**9), follow=True, timeout=60, latency_budget=None, **options) as s:
        for r in s:
            with progress:
                results.append(r)
                progress.notify_all()
            if r.index == 21:
                break
    writer.join()
    assert stalled == []  # each frame was segmented as it was written, at most AHEAD + 1 frames behind the recorder
    assert [r.index for r in results] == list(range(22)) and s.reconnections == 0
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))


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
    deadline = time.perf_counter() + 60  # a guard against a hang, not a speed claim
    while len(seen) < 10 and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert len(seen) >= 10 and s.running  # waiting for more, without end
    s.stop()  # joins the thread (10 s at most): still running after it would mean the wait was not interrupted
    assert not s.running and s.error is None
    assert _threads_end(before)


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
    the frames that arrive while the first key frame's CNN runs are. How many are labelled depends on the
    machine's load too: counted by benchmarks/bench_latency.py. Here what holds at any speed: no result before its
    frame's time (a lower bound, which a slow machine only makes easier to keep), no warning, and no frame skipped
    but before the first output or past its budget."""
    import warnings

    from taplab.errors import LatencyWarning
    from tests.runtime.test_latency import SlowModel

    budget = 0.1
    paced, at = [], []
    start = time.perf_counter()  # before the stream's clock starts: frame i arrives at the earliest i / 25 s later
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyWarning)  # paced: the budget means what it says, no warning
        with taplab.stream(translation_clip, model=SlowModel(0.15), latency_budget=budget, rgc=False, rgfs=False,
                           engine="torch") as s:
            for r in s:
                at.append(time.perf_counter() - start)
                paced.append(r)
    with pytest.warns(LatencyWarning, match="without live pacing"):  # live=False: as fast as it decodes, said so
        with taplab.stream(translation_clip, model=SlowModel(0.15), latency_budget=budget, rgc=False, rgfs=False,
                           live=False, engine="torch") as s:
            unpaced = list(s)
    assert all(t >= r.index / 25 - 1e-3 for r, t in zip(paced, at)), at  # (1 ms: the clock's reading, not load)
    for results in (paced, unpaced):
        assert [r.index for r in results] == list(range(24))
        # shown from the key frames' features (the first CNN's 0.15 s cannot fit the budget: nothing to show before);
        # skipped after the first output only when past the budget with a newer frame waiting: never in time
        labelled = [r for r in results if r.labels is not None]
        assert all(r.key_index in (0, 12) for r in labelled)
        assert all(r.latency > budget for r in results[labelled[0].index if labelled else 24:] if r.kind == "skip")
    assert [r for r in paced if r.labels is not None]  # (unpaced, all 24 may come before the first CNN is done)


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
