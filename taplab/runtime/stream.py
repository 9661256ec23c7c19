"""``taplab.stream``: segment a live source as its frames arrive, with bounded latency.

Iterator style, or callback style:

    with taplab.stream("rtsp://camera/...", latency_budget=0.1) as s:
        for r in s:          # FrameResult, with r.latency (arrival to result, seconds)
            ...

    s = taplab.stream(source, on_result=fn).start()   # fn(result) in a background thread
    ...
    s.stop()

Sources: anything :func:`taplab.open_video` reads: RTSP (over TCP by default; UDP with
``source_options={"rtsp_transport": "udp"}``), MPEG-TS over UDP or TCP, HTTP, a pipe or other binary
file object fed by another process, a file still being written (``follow=True``), or a file, which a stream paces at its frame rate
as a camera would deliver it (``live=None``, the default; ``live=False`` reads it as fast as it
decodes, and a latency budget then skips the warped frames that fall behind).

A stream is :meth:`Segmenter.run` with a latency budget, kept by the policy of
:mod:`taplab.runtime.latency`: key frames over budget in the background, then
fusion and RGC shed, then late frames skipped (``kind="skip"``, no labels; their vectors still carry
the features on). ``stop()`` (or leaving the ``with`` block) ends the stream after the frame in hand
and joins every thread; for a network source that blocks, after its read returns or times out.

A network source (a URL) that ends, disconnects or fails is reopened, after ``backoff`` seconds
doubling up to ``max_backoff`` (until ``stop()``, or ``retries`` failed attempts in a row); the
first result after the gap records it (``FrameResult.gap``, seconds without frames), and indices
continue across reconnections. A file, a pipe or a followed file simply ends.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator

from taplab.codec import open_video
from taplab.codec.reader import DEFAULT_TIMEOUT, Video, is_url
from taplab.errors import TapLabError, TapLabWarning, VideoOpenError
from taplab.runtime.result import FrameResult
from taplab.runtime.segmenter import Segmenter


class Stream:
    """A live segmentation of ``source``; see the module docstring. Build one with :func:`stream`."""

    def __init__(self, segmenter: Segmenter, source, on_result: Callable[[FrameResult], None] | None = None,
                 live: bool | None = None, reconnect: bool | None = None, backoff: float = 0.5, max_backoff: float = 8.0,
                 retries: int | None = None, timeout: float | None = DEFAULT_TIMEOUT, follow: bool = False,
                 source_options: dict[str, str] | None = None, images: bool = False):
        self.segmenter, self.source, self.on_result, self.live = segmenter, source, on_result, live
        self.follow, self.source_options, self.images = follow, source_options, images
        if reconnect is None:  # a URL, or a Video opened from one
            reconnect = source.reopenable if isinstance(source, Video) else is_url(source)
        self.reconnect = reconnect
        self.backoff, self.max_backoff, self.retries, self.timeout = backoff, max_backoff, retries, timeout
        self.reconnections = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._video = None  # the source open now, which stop() interrupts where it can
        self.error: BaseException | None = None  # what ended a callback-style stream early, if anything

    def __iter__(self) -> Iterator[FrameResult]:
        following, failures, gap_since = 0, 0, None  # the index the next result gets
        first = self.source if isinstance(self.source, Video) else None  # already open: its first connection
        while not self._stop.is_set():
            offset = following  # a reopened source numbers its frames from 0 again
            video = run = None
            try:
                if first is not None:
                    video, first = first, None
                elif isinstance(self.source, Video):
                    video = self.source.reopen()
                else:
                    video = open_video(self.source, timeout=self.timeout, follow=self.follow,
                                       options=self.source_options)
                self._video = video
                live = not video.live if self.live is None else self.live  # a file: paced, as a camera delivers frames
                run = self.segmenter.run(video, live=live, images=self.images)
                for result in run:
                    if self._stop.is_set():
                        return
                    result.index += offset
                    if result.key_index is not None:
                        result.key_index += offset
                    if gap_since is not None:
                        result.gap, gap_since = time.perf_counter() - gap_since, None
                    failures = 0
                    yield result
                    following = result.index + 1
                error = None
            except TapLabError as exc:  # unreachable, disconnected mid-frame, corrupt beyond repair
                error = exc
            finally:
                if run is not None:
                    run.close()
                if video is not None:
                    video.close()
            if not self.reconnect:
                if error is not None:
                    raise error
                return
            failures += 1
            if self.retries is not None and failures > self.retries:
                if error is not None:
                    raise error
                return
            gap_since = gap_since or time.perf_counter()
            if self._stop.wait(retry_delay(failures, self.backoff, self.max_backoff)):
                return
            self.reconnections += 1

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
        if self._video is not None:
            self._video.interrupt()  # a followed file stops waiting for more
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def retry_delay(failures: int, backoff: float = 0.5, max_backoff: float = 8.0) -> float:
    """Seconds to wait before the next try after ``failures`` failed ones in a row: ``backoff``, doubling, at most
    ``max_backoff``."""
    return min(max_backoff, backoff * 2 ** (failures - 1))


def connect(source, *, retry: bool, timeout: float | None = DEFAULT_TIMEOUT, follow: bool = False,
            options: dict[str, str] | None = None, backoff: float = 0.5, max_backoff: float = 8.0) -> Video:
    """:func:`taplab.open_video`; with ``retry``, a URL that cannot be opened yet is tried again after
    :func:`retry_delay` (a warning line each time) until it opens or the caller is interrupted: the first
    connection of a run that reconnects, as later ones are."""
    failures = 0
    while True:
        try:
            return open_video(source, timeout=timeout, follow=follow, options=options)
        except VideoOpenError as exc:
            if not (retry and is_url(source)):
                raise
            failures += 1
            wait = retry_delay(failures, backoff, max_backoff)
            warnings.warn(f"{exc}; trying again in {wait:g} s", TapLabWarning, stacklevel=2)
            time.sleep(wait)


def stream(source, model="default", latency_budget: float | None = 0.1,
           on_result: Callable[[FrameResult], None] | None = None, live: bool | None = None, device: str = "auto",
           config=None, reconnect: bool | None = None, backoff: float = 0.5, max_backoff: float = 8.0,
           retries: int | None = None, timeout: float | None = DEFAULT_TIMEOUT, follow: bool = False,
           source_options: dict[str, str] | None = None, images: bool = False, **options) -> Stream:
    """A :class:`Stream` of ``source`` (anything :func:`taplab.open_video` accepts) segmented by ``model``,
    with ``latency_budget`` seconds (None: no limit) and any other :class:`~taplab.runtime.RuntimeConfig`
    field as a keyword. ``live``: pace a file at its frame rate (default: files are paced, live
    sources arrive at their own pace). ``reconnect`` (default: for URLs), ``backoff``, ``max_backoff``, ``retries``:
    see the module docstring; ``timeout``: seconds a network source may take to open or to send
    data before it counts as disconnected (a UDP stream has no end but this); ``follow``: the source is
    a file still being written, read as it grows; ``source_options``: FFmpeg's options for the source,
    e.g. ``{"rtsp_transport": "udp"}`` (see :func:`taplab.open_video`); ``images``: attach each decoded
    frame (``r.image``, RGB), to show it with its labels. ``source`` may also be a
    :class:`~taplab.codec.reader.Video` already open (its first connection; a URL's is reopened)."""
    segmenter = Segmenter(model, device=device, config=config, latency_budget=latency_budget, **options)
    return Stream(segmenter, source, on_result, live, reconnect, backoff, max_backoff, retries, timeout, follow,
                  source_options, images)
