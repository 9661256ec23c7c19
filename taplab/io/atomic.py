"""Atomic file writes: a failed or interrupted write leaves no half-written file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    The file gets the permissions a plain ``open()`` would give it (0666 less the umask), not the
    0600 of :func:`tempfile.mkstemp`, so shipped and shared files stay readable.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".taplab-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
