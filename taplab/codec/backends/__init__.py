"""Decoder backends: each turns a source into decoded frames with the codec's raw vectors.

A backend knows how to talk to one decoder library and nothing about motion
fields, references or residuals; :mod:`taplab.codec.reader` builds those from
what every backend yields. Register a new backend in :data:`BACKENDS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class DecodedFrame:
    """What a backend yields per frame, in display order."""

    pict_type: str  # "I", "P" or "B" ("S"/"SI"/"SP"/"BI" are mapped onto these by the backend)
    pts: int | None
    time: float | None  # seconds
    luma: np.ndarray  # (H, W) uint8
    raw_motion: np.ndarray | None  # AV_MOTION_VECTOR_DTYPE records; None where the frame has no side data
    rgb: Callable[[], np.ndarray]  # converts to (H, W, 3) uint8 RGB on demand
    corrupt: bool = False


class Backend(Protocol):
    codec: str
    width: int
    height: int
    fps: float
    frame_count: int | None  # as declared by the container; None when unknown (streams)
    extradata: bytes | None  # the codec's out-of-band headers (an H.264 avcC), where the container has them
    b_frames: bool  # the stream reorders frames (has B-frames), as far as its headers say

    def frames(self) -> Iterator[DecodedFrame]: ...

    def close(self) -> None: ...


def _pyav(source, timeout, options, live):
    from taplab.codec.backends.pyav import PyAVBackend

    return PyAVBackend(source, timeout, options, live)


def _mvextractor(source, timeout, options, live):
    from taplab.codec.backends.mvextractor import MVExtractorBackend

    return MVExtractorBackend(source, timeout, options)


#: backend name -> factory(source, timeout_seconds, ffmpeg_options, live) -> Backend; ``live``: frames
#: arrive in real time (a URL, a pipe, a followed file), so the decoder must not hold any back
BACKENDS: dict[str, Callable[..., Backend]] = {"pyav": _pyav, "mvextractor": _mvextractor}

#: PyAV's generic picture types folded onto the three the runtime knows
PICT_TYPES = {"I": "I", "P": "P", "B": "B", "S": "P", "SP": "P", "SI": "I", "BI": "B"}


def describe_source(source) -> str:
    """A source as messages name it: a path or URL as given, standard input as such, a file object by its name."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)
    if name in ("<stdin>", 0):  # sys.stdin.buffer, or a file object over descriptor 0
        return "standard input"
    return name if isinstance(name, str) and name else f"a {type(source).__name__} object"
