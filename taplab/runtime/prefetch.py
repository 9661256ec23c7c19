"""Decoding ahead in a background thread, through a bounded queue: decode and inference overlap,
and memory stays bounded on videos of any length."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 8, prepare: Callable[[T], None] | None = None) -> Iterator[T]:
    """Iterate ``items`` in a daemon thread, ``depth`` ahead, calling ``prepare(item)`` there first.

    Exceptions raised by the iteration or by ``prepare`` are re-raised in the consumer, in order.
    Closing the returned generator (or leaving a ``for`` loop over it early) stops the thread promptly.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if prepare is not None:
                    prepare(item)
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who raises it
            put(_Failure(exc))

    thread = threading.Thread(target=produce, name="taplab-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
