"""Sinks: what consumes the runtime's results. The runtime yields :class:`FrameResult` s; sinks write them.

A sink has ``write(result)`` and ``close(complete)``. The ones here write into an output folder:

- :data:`FORMATS`: one file per frame with output, ``frame_<index:06d>.png`` (label ids, 8-bit single
  channel, what evaluation tools read), ``color/frame_<index:06d>.png`` (RGB, the model's palette) or
  ``npz/frame_<index:06d>.npz`` (key ``labels``); a skipped frame (``kind="skip"``) gets none;
- :class:`FrameLog`: ``frames.json`` and ``frames.csv``, one record per frame (skipped ones too),
  written when the run ends, also when it was interrupted (the frames done so far);
- ``summary.json`` (:func:`write_run_record`): the run's summary, its source and the settings that made
  its outputs, written last and only when the run completes: a folder that has one is complete
  (``taplab segment`` over many videos skips it on a re-run).

The overlay video is :class:`taplab.io.overlay.OverlayVideo`, the summary
:class:`taplab.io.summary.RunSummary`. Every file is written under a temporary name and renamed when
complete, so an interrupted run never leaves a half-written file under a final name.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from taplab.errors import ConfigError, OutputError
from taplab.files import atomic_path, os_reason, write_image
from taplab.runtime.result import FrameResult

FRAME_NAME = "frame_{index:06d}"
LOG_NAME = "frames.json"
CSV_NAME = "frames.csv"
RUN_NAME = "summary.json"
#: the stages whose milliseconds frames.csv has a column for
CSV_STAGES = ("decode", "flow", "residual", "cnn_full", "cnn_region", "warp", "fusion", "labels")


class Sink(Protocol):
    """Consumes results in display order; ``close(complete=False)`` after an interrupted run."""

    def write(self, result: FrameResult) -> None: ...

    def close(self, complete: bool = True) -> None: ...


class LabelFiles:
    """Label ids as 8-bit PNGs, one per frame with output."""

    subdir = ""
    suffix = ".png"

    def __init__(self, out: Path, colors: Sequence[tuple[int, int, int]]):
        self.dir = out / self.subdir if self.subdir else out
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, index: int) -> Path:
        return self.dir / f"{FRAME_NAME.format(index=index)}{self.suffix}"

    def write(self, result: FrameResult) -> None:
        if result.labels is not None:
            self.save(self.path(result.index), result.labels)

    def save(self, path: Path, labels: np.ndarray) -> None:
        write_image(path, labels)

    def close(self, complete: bool = True) -> None:
        pass


class ColorFiles(LabelFiles):
    """Labels coloured with the model's palette."""

    subdir = "color"

    def __init__(self, out: Path, colors: Sequence[tuple[int, int, int]]):
        super().__init__(out, colors)
        self.lut = palette_lut(colors)

    def save(self, path: Path, labels: np.ndarray) -> None:
        write_image(path, self.lut[labels])


class NpzFiles(LabelFiles):
    """Labels as compressed numpy arrays (key ``labels``)."""

    subdir = "npz"
    suffix = ".npz"

    def save(self, path: Path, labels: np.ndarray) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, labels=labels)


#: per-frame output formats by name (``taplab segment --format``)
FORMATS: dict[str, type[LabelFiles]] = {"labels": LabelFiles, "color": ColorFiles, "npz": NpzFiles}


def palette_lut(colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """A (256, 3) uint8 RGB look-up table: class id -> colour (ids beyond the palette are black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8)
    return lut


class FrameLog:
    """``frames.json`` (a list of :meth:`FrameResult.record` s: index, pict_type, kind, residual score, region,
    distortion, latency, shed modules, the motion that carried a warped frame, ms per stage) and the same as a
    table, ``frames.csv``. The records go to a hidden file in ``out`` as they come, one JSON line each, rather
    than into memory (a long run's would grow by about a megabyte per thousand frames); :meth:`close` writes the
    two files from it. The hidden file has no name (``tempfile.TemporaryFile``: unlinked as it is created, where
    the OS allows it), so no stop signal, however timed, can leave it behind."""

    def __init__(self, out: Path):
        self.out = out
        self._lines = tempfile.TemporaryFile("w+", prefix=".taplab-", suffix=".jsonl", dir=out)

    def write(self, result: FrameResult) -> None:
        self._lines.write(json.dumps(result.record()) + "\n")

    def close(self, complete: bool = True) -> None:
        try:
            self._lines.seek(0)
            write_log(self.out, [json.loads(line) for line in self._lines])
        finally:
            self._lines.close()


def write_log(out: Path, records: list[dict]) -> Path:
    """Write ``records`` as ``out/frames.json`` and ``out/frames.csv``; returns the JSON's path."""
    path = out / LOG_NAME
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(records, indent=1) + "\n")
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["index", "pict_type", "kind", "residual_score", "region_y", "region_x", "region_height",
                     "region_width", "distorted", "motion", *(f"ms_{s}" for s in CSV_STAGES)])
    for r in records:
        region = r["region"] or ["", "", "", ""]
        score = "" if r["residual_score"] is None else f"{r['residual_score']:.4f}"
        writer.writerow([r["index"], r["pict_type"], r["kind"], score, *region, r["distorted"], r.get("motion") or "",
                         *(r["ms"].get(s, "") for s in CSV_STAGES)])
    with atomic_path(out / CSV_NAME) as tmp:
        Path(tmp).write_text(table.getvalue())
    return path


def write_run_record(out: Path, record: dict) -> Path:
    """Write ``out/summary.json`` (atomically): the record of a completed run."""
    path = out / RUN_NAME
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return path


def read_run_record(out: Path) -> dict | None:
    """``out/summary.json`` as written by :func:`write_run_record`; None where there is none or it cannot be read
    (then the folder does not hold a completed run)."""
    try:
        record = json.loads((out / RUN_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


#: the hidden files a killed run's atomic writes left half-done (:func:`taplab.files.atomic_path`): nobody's output
TEMPORARIES = (".taplab-*", "color/.taplab-*", "npz/.taplab-*")


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out``; first remove the :data:`TEMPORARIES` a killed run left there (and the sub-folders they leave
    empty), then refuse a folder that holds anything unless ``overwrite``, which first removes what an earlier run
    wrote there (the names above; nothing else is touched). :class:`OutputError` where ``out`` cannot be made or
    written to."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    try:
        if out.is_dir():
            for old in (old for pattern in TEMPORARIES for old in out.glob(pattern)):
                old.unlink()
            for sub in (out / "color", out / "npz"):
                if sub.is_dir() and not any(sub.iterdir()):
                    sub.rmdir()
        if out.is_dir() and any(out.iterdir()):
            if not overwrite:
                raise ConfigError(f"output folder {out} is not empty; choose another or pass --overwrite")
            # the completion record first: a removal cut short must not leave a folder that looks complete
            for pattern in (RUN_NAME, "frame_*.png", "color/frame_*.png", "npz/frame_*.npz", LOG_NAME, CSV_NAME):
                for old in out.glob(pattern):
                    old.unlink()
        make_folder(out)
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {out}: {os_reason(exc)}") from None


def make_folder(out: Path) -> None:
    """``out`` and its parents, writable; :class:`OutputError` where that cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {out} is not writable")


def undo_output(out: Path, made: bool) -> None:
    """Remove what a run that failed before its first frame created in ``out``: the log, the sinks' empty
    folders, and ``out`` itself where the run ``made`` it and it is empty now. As far as it can: the run's own
    error, which may be that ``out`` cannot be written, is what the user needs to see."""
    try:
        for name in (LOG_NAME, CSV_NAME):
            (out / name).unlink(missing_ok=True)
        for sink in FORMATS.values():
            folder = out / sink.subdir
            if sink.subdir and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
    except OSError:
        pass
