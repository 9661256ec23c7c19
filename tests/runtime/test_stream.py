"""`taplab.stream`: iterator and callback styles over a paced real encoded clip, and clean shutdown."""

import threading
import time

import numpy as np
import pytest

import taplab
from taplab.codec.loopback import mpegts_bytes, send_udp, serve_http, serve_tcp
from taplab.runtime import Segmenter
from tests.runtime.test_latency import GatedModel


def test_iterator_style_gives_every_frame_in_order_with_the_runtimes_labels(translation_clip):
    options = dict(rgc=False, rgfs=False)
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
    start = time.perf_counter()
    s.stop()
    assert time.perf_counter() - start < 1.0 and not s.running and s.error is None
    assert 3 <= len(seen) < 24 and [r.index for r in seen] == list(range(len(seen)))
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


@pytest.mark.parametrize("protocol", ["tcp", "http"])
def test_a_stream_served_on_loopback_gives_every_frame_in_order_with_bounded_latency(tmp_path, protocol):
    from tests.conftest import DX, DY, translation_frames

    data = mpegts_bytes(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(data)
    options = dict(rgc=False, rgfs=False)
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    if protocol == "tcp":
        url = f"tcp://127.0.0.1:{serve_tcp(data, seconds=24 / 25)}"
    else:
        url = f"http://127.0.0.1:{serve_http(data, seconds=24 / 25)}/live.ts"
    with taplab.stream(url, model=GatedModel(10**9), latency_budget=0.1, reconnect=False, **options) as s:
        results = list(s)
    assert [r.index for r in results] == list(range(24))
    assert [r.kind for r in results] == (["key-I"] + ["warp"] * 11) * 2
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))
    assert max(r.latency for r in results) < 0.5


def test_a_sender_that_disconnects_and_comes_back_is_reconnected(tmp_path):
    from tests.conftest import DX, DY, translation_frames

    frames = translation_frames(24, 128, 256, DX, DY)
    halves = [mpegts_bytes(frames[:12]), mpegts_bytes(frames[12:])]
    (tmp_path / "second.ts").write_bytes(halves[1])
    options = dict(rgc=False, rgfs=False)
    second = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "second.ts")]
    port = serve_tcp(halves, seconds=12 / 25)
    results = []
    with taplab.stream(f"tcp://127.0.0.1:{port}", model=GatedModel(10**9), backoff=0.1, retries=3,
                       **options) as s:  # retries: a broken test ends in an error, never a hang
        for r in s:
            results.append(r)
            if len(results) == 24:
                break
        assert s.reconnections == 1
    assert [r.index for r in results] == list(range(24))  # indices continue across the reconnection
    assert [r.gap is not None for r in results] == [False] * 12 + [True] + [False] * 11
    assert results[12].gap >= 0.1 and results[12].kind == "key-I"
    assert all(np.array_equal(r.labels, e) for r, e in zip(results[12:], second))


def test_a_source_that_never_answers_gives_up_after_its_retries():
    import socket

    from taplab.errors import VideoOpenError

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now: connection refused
    start = time.perf_counter()
    s = taplab.stream(f"tcp://127.0.0.1:{port}", model=GatedModel(10**9), backoff=0.05, retries=2)
    with pytest.raises(VideoOpenError):
        list(s)
    assert s.reconnections == 2 and time.perf_counter() - start < 5


def test_mpegts_over_udp_arrives_in_order_and_a_silent_sender_times_out(tmp_path):
    from taplab.errors import DecodeError
    from tests.conftest import DX, DY, translation_frames

    data = mpegts_bytes(translation_frames(24, 128, 256, DX, DY))
    (tmp_path / "clip.ts").write_bytes(data)
    options = dict(rgc=False, rgfs=False)
    expected = [r.labels for r in Segmenter(GatedModel(10**9), **options).run(tmp_path / "clip.ts")]
    port = send_udp(data, seconds=0.96)
    results = []
    start = time.perf_counter()
    with pytest.raises(DecodeError, match="timed out"):  # UDP has no end: the sender falls silent
        for r in taplab.stream(f"udp://127.0.0.1:{port}", model=GatedModel(10**9), reconnect=False, timeout=1.0,
                               **options):
            results.append(r)
    assert time.perf_counter() - start < 6
    # the demuxer completes a frame when the next one starts: the last frames wait for data that never comes
    assert len(results) >= 20 and [r.index for r in results] == list(range(len(results)))
    assert all(np.array_equal(r.labels, e) for r, e in zip(results, expected))
