"""Writers of segmentation results: label-id PNGs, colour PNGs, ``.npz`` label arrays, a per-frame log.

Every file is written under a temporary name and renamed when complete, so an interrupted run
never leaves a half-written file under a final name. Names: ``frame_<index:06d>.png`` (label ids,
8-bit single channel), ``color/frame_<index:06d>.png`` (RGB, the model's palette),
``npz/frame_<index:06d>.npz`` (key ``labels``), ``frames.json`` and ``frames.csv`` (one record
per frame), and optionally an overlay video (frame and colour mask blended, or side by side).
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from taplab.errors import ConfigError
from taplab.io.atomic import atomic_path

FRAME_NAME = "frame_{index:06d}"
LOG_NAME = "frames.json"
CSV_NAME = "frames.csv"
#: the stages whose milliseconds frames.csv has a column for
CSV_STAGES = ("decode", "residual", "cnn_full", "cnn_region", "warp", "labels")


def _imwrite(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:  # the temporary name keeps the suffix, which tells OpenCV the format
        if not cv2.imwrite(tmp, image):
            raise OSError(f"cannot write {path}")


class LabelWriter:
    """Label ids as 8-bit PNGs (what evaluation tools read)."""

    subdir = ""

    def __init__(self, out: Path, colors: Sequence[tuple[int, int, int]]):
        self.dir = out / self.subdir if self.subdir else out
        self.dir.mkdir(parents=True, exist_ok=True)

    def write(self, index: int, labels: np.ndarray) -> None:
        _imwrite(self.dir / f"{FRAME_NAME.format(index=index)}.png", labels)


class ColorWriter(LabelWriter):
    """Labels coloured with the model's palette."""

    subdir = "color"

    def __init__(self, out: Path, colors: Sequence[tuple[int, int, int]]):
        super().__init__(out, colors)
        lut = np.zeros((256, 3), np.uint8)
        lut[: len(colors)] = np.asarray(colors, np.uint8)[:, ::-1]  # BGR for OpenCV
        self.lut = lut

    def write(self, index: int, labels: np.ndarray) -> None:
        _imwrite(self.dir / f"{FRAME_NAME.format(index=index)}.png", self.lut[labels])


class NpzWriter(LabelWriter):
    """Labels as compressed numpy arrays (key ``labels``)."""

    subdir = "npz"

    def write(self, index: int, labels: np.ndarray) -> None:
        path = self.dir / f"{FRAME_NAME.format(index=index)}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, labels=labels)


#: output formats by name (``taplab segment --format``)
WRITERS: dict[str, type[LabelWriter]] = {"labels": LabelWriter, "color": ColorWriter, "npz": NpzWriter}


def write_log(out: Path, records: list[dict]) -> Path:
    """The per-frame log, ``frames.json`` (a list of records: index, pict_type, kind, residual score,
    region, distortion, ms per stage) and the same as a table, ``frames.csv``."""
    path = out / LOG_NAME
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(records, indent=1) + "\n")
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["index", "pict_type", "kind", "residual_score", "region_y", "region_x", "region_height",
                     "region_width", "distorted", *(f"ms_{s}" for s in CSV_STAGES)])
    for r in records:
        region = r["region"] or ["", "", "", ""]
        score = "" if r["residual_score"] is None else f"{r['residual_score']:.4f}"
        writer.writerow([r["index"], r["pict_type"], r["kind"], score, *region, r["distorted"],
                         *(r["ms"].get(s, "") for s in CSV_STAGES)])
    with atomic_path(out / CSV_NAME) as tmp:
        Path(tmp).write_text(table.getvalue())
    return path


class OverlayVideo:
    """An H.264 video of each frame blended with its colour mask (``alpha`` of mask), or the frame and
    the mask side by side. Encoded in a background thread by :func:`taplab.codec.encode`, so the file
    appears only when complete; :meth:`close` with ``complete=False`` discards it."""

    def __init__(self, path: str | Path, colors: Sequence[tuple[int, int, int]], fps: float,
                 side_by_side: bool = False, alpha: float = 0.5):
        from taplab.codec import encode

        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(f"overlay video folder does not exist: {self.path.parent}")
        lut = np.zeros((256, 3), np.uint8)
        lut[: len(colors)] = np.asarray(colors, np.uint8)
        self.lut, self.side_by_side, self.alpha = lut, side_by_side, alpha
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None

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

    def write(self, image: np.ndarray, labels: np.ndarray | None) -> None:
        """One frame; ``labels`` None (a skipped frame) shows the frame alone, keeping the video's timing."""
        mask = self.lut[labels] if labels is not None else np.zeros_like(image)
        if labels is None and not self.side_by_side:
            frame = image
        elif self.side_by_side:
            frame = np.hstack([image, mask])
        else:
            frame = cv2.addWeighted(image, 1 - self.alpha, mask, self.alpha, 0)
        h, w = frame.shape[:2]
        if h % 2 or w % 2:  # 4:2:0 video needs even sizes
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        while self._thread.is_alive():
            try:
                self._queue.put(frame, timeout=0.1)
                return
            except queue.Full:
                continue
        self.close()

    def close(self, complete: bool = True) -> None:
        if self._thread.is_alive():
            self._queue.put(None if complete else _Abandon())
            self._thread.join()
        if self._error is not None and not isinstance(self._error, _Abandon):
            error, self._error = self._error, None
            raise error


class _Abandon(Exception):
    """Sent to the overlay's encoder when the run did not complete."""


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse a folder that holds anything unless ``overwrite``, which first removes
    what an earlier run wrote there (the names above; nothing else is touched)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output folder {out} is not empty; choose another or pass --overwrite")
        for pattern in ("frame_*.png", "color/frame_*.png", "npz/frame_*.npz", LOG_NAME, CSV_NAME):
            for old in out.glob(pattern):
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)
