"""``taplab.stream``: segment a live source as its frames arrive, with bounded latency.

Iterator style, or callback style:

    with taplab.stream("rtsp://camera/...", latency_budget=0.1) as s:
        for r in s:          # FrameResult, with r.latency (arrival to result, seconds)
            ...

    s = taplab.stream(source, on_result=fn).start()   # fn(result) in a background thread
    ...
    s.stop()

A stream is :meth:`Segmenter.run` with a latency budget (key frames over budget run in the
background, frames behind the budget shed fusion and RGC: see :class:`~taplab.runtime.RuntimeConfig`).
``live=True`` paces a file at its frame rate, as a camera would deliver it. ``stop()`` (or leaving
the ``with`` block) ends the stream after the frame in hand and joins every thread; for a network
source that blocks, after its read returns or times out.

Still to come (the live-stream issue): reconnecting with backoff, gap reports, skipping output
frames when far behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

from taplab.runtime.segmenter import FrameResult, Segmenter


class Stream:
    """A live segmentation of ``source``; see the module docstring. Build one with :func:`stream`."""

    def __init__(self, segmenter: Segmenter, source, on_result: Callable[[FrameResult], None] | None = None,
                 live: bool = False):
        self.segmenter, self.source, self.on_result, self.live = segmenter, source, on_result, live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what ended a callback-style stream early, if anything

    def __iter__(self) -> Iterator[FrameResult]:
        run = self.segmenter.run(self.source, live=self.live)
        try:
            for result in run:
                if self._stop.is_set():
                    return
                yield result
        finally:
            run.close()

    def start(self) -> Stream:
        """Callback style: call ``on_result(result)`` for every result, in a background thread."""
        if self.on_result is None:
            raise TypeError("start() needs on_result; or iterate over the stream instead")
        if self._thread is not None:
            raise RuntimeError("the stream is already started")

        def work() -> None:
            try:
                for result in self:
                    self.on_result(result)
            except BaseException as exc:  # noqa: BLE001 - kept for the caller, who reads .error
                self.error = exc

        self._thread = threading.Thread(target=work, name="taplab-stream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """End the stream after the frame in hand and join its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stream(source, model="default", latency_budget: float | None = 0.1,
           on_result: Callable[[FrameResult], None] | None = None, live: bool = False, device: str = "cpu",
           config=None, **options) -> Stream:
    """A :class:`Stream` of ``source`` (anything :func:`taplab.open_video` accepts) segmented by ``model``,
    with ``latency_budget`` seconds (None: no limit) and any other :class:`~taplab.runtime.RuntimeConfig`
    field as a keyword."""
    segmenter = Segmenter(model, device=device, config=config, latency_budget=latency_budget, **options)
    return Stream(segmenter, source, on_result, live)
