"""The mv-extractor backend: the same FFmpeg side data, read by mv-extractor's C++ loop.

mv-extractor reads a path or URL only (no file-like objects), returns BGR images
and no timestamps; stream properties come from a short PyAV probe, and ``pts``
and ``time`` count frames at the container's frame rate.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import cv2

from taplab.codec.backends import PICT_TYPES, DecodedFrame
from taplab.codec.backends.pyav import PyAVBackend
from taplab.codec.motion import raw_from_columns
from taplab.errors import VideoOpenError


class MVExtractorBackend:
    def __init__(self, source, timeout: float | None, options: dict[str, str] | None = None):
        """``options`` apply to the probe only: mv-extractor opens the source with its own defaults."""
        if not isinstance(source, (str, os.PathLike)):
            raise VideoOpenError("the mvextractor backend reads paths and URLs only; use backend='pyav' for file-like objects")
        probe = PyAVBackend(source, timeout, options)  # raises the same clear errors as the default backend
        self.codec, self.width, self.height = probe.codec, probe.width, probe.height
        self.fps, self.frame_count, self.extradata = probe.fps, probe.frame_count, probe.extradata
        self.b_frames = probe.b_frames
        probe.close()
        from mvextractor.videocap import VideoCap

        self._cap = VideoCap()
        if not self._cap.open(os.fspath(source)):
            raise VideoOpenError(f"mv-extractor cannot open {os.fspath(source)}")

    def frames(self) -> Iterator[DecodedFrame]:
        index = 0
        while True:
            ok, bgr, columns, ftype = self._cap.read()[:4]
            if not ok:
                return
            yield DecodedFrame(
                pict_type=PICT_TYPES.get(ftype, "P"),
                pts=index,
                time=index / self.fps if self.fps else None,
                luma=cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
                # mv-extractor gives an empty table both for "no side data" and "no vectors".
                raw_motion=raw_from_columns(columns) if len(columns) else None,
                rgb=lambda bgr=bgr: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
            )
            index += 1

    def close(self) -> None:
        self._cap.release()
