"""Image and data files, below every other floor: atomic writes, and image reads that fail with a clear error.

A file is written under a temporary name beside its final one and renamed when complete, so a
failed or interrupted write leaves no half-written file behind. Images follow OpenCV's
conventions on disk and taplab's in memory: colour arrays are RGB uint8 ``(H, W, 3)``, both ways.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from taplab.errors import ConfigError


class _Whole:
    """The state of :func:`whole`: whether a whole write is under way, and the stop that waits for its end."""

    active = False
    pending: BaseException | None = None


@contextmanager
def whole() -> Iterator[None]:
    """A stretch of writes that belong together (one frame's outputs: its label files, its overlay frame, its
    log record), which a stop signal does not cut: a handler that asks :func:`defer_stop` while it runs has its
    stop raised when the stretch ends, so the outputs of an interrupted run are the frames done, each whole.
    The runtime's stop handlers (``taplab``'s command line) ask; Python's default Ctrl-C does not. Only the main
    thread's writes count: Python runs signal handlers, and raises their stops, in the main thread alone, so a
    stop deferred to another thread's write would end that thread and not the run (a batch's in-process worker)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Whole.active = True
    try:
        yield
    finally:
        _Whole.active = False
        pending, _Whole.pending = _Whole.pending, None
        if pending is not None:
            raise pending


def defer_stop(stop: BaseException) -> bool:
    """For a stop signal's handler: True where :func:`whole` writes are under way, which then end by raising ``stop``;
    False where the handler should raise it itself."""
    if not _Whole.active:
        return False
    _Whole.pending = stop
    return True


def os_reason(exc: OSError) -> str:
    """An OS error's reason and the file it concerns, for a one-line message: ``Permission denied: masks/color``."""
    return f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The temporary path is only named here, not created: the writer creates it inside the ``with`` block,
    so an exception at any moment (a Ctrl-C or SIGTERM raised between two bytecodes included) finds the
    file either absent or owned by the cleanup below. A name created first (``tempfile.mkstemp``) left a
    window, between its creation and the ``try``, in which a signal left it behind. The writer's own
    ``open()`` gives the file the usual permissions (0666 less the umask). Sixteen random hex digits make
    a clash with another writer's name negligible.
    """
    path = Path(path)
    tmp = str(path.parent / f".taplab-{secrets.token_hex(8)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


#: PNG options of single-channel images (label maps): each row filtered against the row above. Label maps are
#: long runs that repeat from row to row, and "up" made them a third smaller than OpenCV's default "sub" at the
#: same speed (``python benchmarks/bench_png.py``, docs/scale.md). Lossless whatever the filter.
LABEL_PNG = (cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP) if hasattr(cv2, "IMWRITE_PNG_FILTER_UP") else ()


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """An image file written atomically, the format following ``path``'s suffix: a single-channel array (label
    ids) as it is (as a PNG with :data:`LABEL_PNG`), a colour array ``(H, W, 3)`` taken as RGB, as
    :func:`read_image` gives it back. :class:`OSError` naming ``path`` when OpenCV cannot write it (no writer
    for the suffix, an array the format cannot hold, a failed write)."""
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)  # OpenCV writes BGR
    params = LABEL_PNG if array.ndim == 2 and str(path).lower().endswith(".png") else ()
    with atomic_path(path) as tmp:  # the temporary name keeps the suffix, which tells OpenCV the format
        try:
            written = cv2.imwrite(tmp, array, params)
        except cv2.error as exc:  # OpenCV raises for some failures and returns False for others
            raise OSError(f"cannot write {path}: {exc.err}") from None
        if not written:
            raise OSError(f"cannot write {path}")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 RGB ``(H, W, 3)`` (grey images are expanded, deeper ones scaled to 8 bits);
    :class:`~taplab.errors.ConfigError` naming the file when it is missing or not an image."""
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_label_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as stored (channels and depth unchanged: label images are read this way);
    :class:`~taplab.errors.ConfigError` naming the file when it is missing or not an image."""
    return _imread(path, cv2.IMREAD_UNCHANGED)


def _imread(path: str | os.PathLike[str], flags: int) -> np.ndarray:
    array = cv2.imread(str(path), flags)
    if array is None:
        reason = "" if Path(path).is_file() else ": no such file"
        raise ConfigError(f"cannot read image {path}{reason}")
    return array
