"""Writers of segmentation results: label-id PNGs, colour PNGs, ``.npz`` label arrays, a per-frame log.

Every file is written under a temporary name and renamed when complete, so an interrupted run
never leaves a half-written file under a final name. Names: ``frame_<index:06d>.png`` (label ids,
8-bit single channel), ``color/frame_<index:06d>.png`` (RGB, the model's palette),
``npz/frame_<index:06d>.npz`` (key ``labels``), and ``frames.json`` (one record per frame).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from taplab.errors import ConfigError
from taplab.io.atomic import atomic_path

FRAME_NAME = "frame_{index:06d}"
LOG_NAME = "frames.json"


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
    """The per-frame log, ``frames.json``: a list of records (index, pict_type, kind, scores, timings)."""
    path = out / LOG_NAME
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(records, indent=1) + "\n")
    return path


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse a folder that holds anything unless ``overwrite``, which first removes
    what an earlier run wrote there (the names above; nothing else is touched)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output folder {out} is not empty; choose another or pass --overwrite")
        for pattern in ("frame_*.png", "color/frame_*.png", "npz/frame_*.npz", LOG_NAME):
            for old in out.glob(pattern):
                old.unlink()
    out.mkdir(parents=True, exist_ok=True)
