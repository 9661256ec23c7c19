"""The overlay video: each frame blended with its colour mask (or the two side by side), with a class legend.

Decisions:

- The legend lists the classes seen so far in the video, in the model's class order, each as a swatch
  of its colour and its name, in a box at the top left of the mask (the blended frame, or the mask's
  half of a side-by-side frame). Classes seen once stay listed, so the legend does not flicker from
  frame to frame as small objects come and go. Frames under :data:`LEGEND_MIN_HEIGHT` pixels high get
  none: its text would be unreadable.
- A skipped frame (``kind="skip"``, no labels) shows the frame alone, keeping the video's timing.
- The video is H.264, encoded in a background thread by :func:`taplab.codec.encode`, with a key frame
  every two seconds, written under its name when closed. A run that ends early (an interruption, a
  source that failed) keeps the frames written so far, as its log does; one that wrote none leaves no file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from taplab.codec import encode
from taplab.errors import ConfigError
from taplab.io.sinks import palette_lut
from taplab.runtime.result import FrameResult

#: frames lower than this get no legend
LEGEND_MIN_HEIGHT = 96


class Legend:
    """Draws the legend of the classes seen so far onto an RGB image, in place."""

    def __init__(self, names: Sequence[str], colors: Sequence[tuple[int, int, int]]):
        self.names, self.colors = list(names), [tuple(int(v) for v in c) for c in colors]
        self.seen = np.zeros(len(self.names), bool)

    def update(self, labels: np.ndarray) -> None:
        counts = np.bincount(labels.ravel(), minlength=len(self.names))[: len(self.names)]
        self.seen |= counts > 0

    def draw(self, image: np.ndarray) -> None:
        h = image.shape[0]
        classes = np.flatnonzero(self.seen)
        if h < LEGEND_MIN_HEIGHT or not len(classes):
            return
        scale = max(0.3, h / 1200)  # 0.6 at 720 p
        row = max(10, round(h / 36))
        pad = max(2, row // 4)
        width = pad * 3 + row + max(cv2.getTextSize(self.names[k], cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
                                    for k in classes)
        rows = classes[: max(1, (h - 2 * pad) // row)]  # what fits in the frame's height
        height = 2 * pad + row * len(rows)
        box = image[:height, :min(width, image.shape[1])]
        box[:] = (box * 0.35).astype(np.uint8)  # dark, so the text reads on any colour
        for i, k in enumerate(rows):
            y = pad + i * row
            cv2.rectangle(image, (pad, y + 2), (pad + row - 4, y + row - 2), self.colors[k], -1)
            cv2.putText(image, self.names[k], (2 * pad + row, y + row - pad), cv2.FONT_HERSHEY_SIMPLEX, scale,
                        (255, 255, 255), 1, cv2.LINE_AA)


class OverlayVideo:
    """A sink: an H.264 video of each frame (``result.image``) with its colour mask, blended (``alpha`` of
    mask) or side by side, and the legend (module docstring)."""

    def __init__(self, path: str | Path, colors: Sequence[tuple[int, int, int]], fps: float,
                 side_by_side: bool = False, alpha: float = 0.5, names: Sequence[str] | None = None):
        self.path = self.check_path(path)
        self.lut, self.side_by_side, self.alpha = palette_lut(colors), side_by_side, alpha
        self.legend = Legend(names, colors) if names is not None else None
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._frames = 0
        self._size: tuple[int, int] | None = None  # the first frame's (height, width): the video's

        def frames() -> Iterator[np.ndarray]:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item  # abandons the encode: no file appears
                yield item

        def run() -> None:
            try:
                encode(frames(), self.path, gop=max(1, round(2 * fps)), codec="h264", fps=fps)
            except BaseException as exc:  # noqa: BLE001 - reported by close()
                self._error = exc

        self._thread = threading.Thread(target=run, name="taplab-overlay", daemon=True)
        self._thread.start()

    @staticmethod
    def check_path(path: str | Path) -> Path:
        """``path`` as a :class:`Path`; :class:`ConfigError` where its folder does not exist."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ConfigError(f"overlay video folder does not exist: {path.parent}")
        return path

    def write(self, result: FrameResult) -> None:
        self.add(result.image, result.labels)

    def add(self, image: np.ndarray, labels: np.ndarray | None) -> None:
        """One frame; ``labels`` None (a skipped frame) shows the frame alone. A frame of another size than the
        first (a stream that changes size) is scaled to it: a video keeps one size."""
        self._size = self._size or image.shape[:2]
        if image.shape[:2] != self._size:
            image = cv2.resize(image, self._size[::-1], interpolation=cv2.INTER_AREA)
            if labels is not None:
                labels = cv2.resize(labels, self._size[::-1], interpolation=cv2.INTER_NEAREST)
        if labels is not None and self.legend is not None:
            self.legend.update(labels)
        mask = self.lut[labels] if labels is not None else np.zeros_like(image)
        if labels is None and not self.side_by_side:
            frame = image
        elif self.side_by_side:
            if labels is not None and self.legend is not None:
                self.legend.draw(mask)
            frame = np.hstack([image, mask])
        else:
            frame = cv2.addWeighted(image, 1 - self.alpha, mask, self.alpha, 0)
            if self.legend is not None:
                self.legend.draw(frame)
        h, w = frame.shape[:2]
        if h % 2 or w % 2:  # 4:2:0 video needs even sizes
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        while self._thread.is_alive():
            try:
                self._queue.put(frame, timeout=0.1)
                self._frames += 1
                return
            except queue.Full:
                continue
        self.close()

    def close(self, complete: bool = True) -> None:
        """Finish the video. A run that ended early (``complete=False``) keeps the frames it wrote, as its log
        does; one that wrote none leaves no file."""
        if self._thread.is_alive():
            self._queue.put(None if complete or self._frames else _Abandon())
            self._thread.join()
        if self._error is not None and not isinstance(self._error, _Abandon):
            error, self._error = self._error, None
            raise error


class _Abandon(Exception):
    """Sent to the overlay's encoder when the run did not complete."""
