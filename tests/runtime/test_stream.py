"""`taplab.stream`: iterator and callback styles over a paced real encoded clip, and clean shutdown."""

import threading
import time

import numpy as np

import taplab
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
