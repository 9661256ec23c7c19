"""Decoding ahead in a background thread, through a bounded queue: decode and inference overlap,
and memory stays bounded on videos of any length."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Prefetch(Generic[T]):
    """``items`` iterated in a daemon thread, ``depth`` ahead, ``prepare(item)`` called there first.

    Exceptions raised by the iteration or by ``prepare`` are re-raised in the consumer, in order.
    :meth:`close` (or leaving a ``for`` loop over it early and closing it) stops the thread promptly.
    :attr:`waiting` says how many items are ready behind the one in hand: the runtime's measure of
    whether newer frames have already arrived.
    """

    def __init__(self, items: Iterable[T], depth: int = 8, prepare: Callable[[T], None] | None = None):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._produce, args=(items, prepare), name="taplab-decode",
                                        daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, items: Iterable[T], prepare: Callable[[T], None] | None) -> None:
        try:
            for item in items:
                if prepare is not None:
                    prepare(item)
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who raises it
            self._put(_Failure(exc))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    @property
    def waiting(self) -> int:
        """Items decoded and queued behind the one in hand."""
        with self._queue.mutex:
            items = list(self._queue.queue)
        return sum(1 for item in items if item is not _END and not isinstance(item, _Failure))

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread and join it for at most ``timeout`` seconds (a decoder blocked in a network read
        returns at its own timeout). Returns whether the thread has ended."""
        self._done = True
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def prefetch(items: Iterable[T], depth: int = 8, prepare: Callable[[T], None] | None = None) -> Prefetch[T]:
    """A :class:`Prefetch` of ``items``."""
    return Prefetch(items, depth, prepare)
