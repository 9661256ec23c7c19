"""What a batch reports: one :class:`VideoRecord` per video, gathered in a :class:`BatchSummary` (the closing table,
``OUT/summary.json``), and :func:`decide`, whether a video's folder is done already.

A video ends in one status (:data:`STATUSES`):

- ``done``: segmented by this run; its folder holds every output and ``summary.json`` (written last);
- ``skipped``: its folder held a complete run with the same settings, so nothing was redone;
- ``failed``: its one-line error is in the record (the video is bad, its folder held a complete run made with other
  settings, or the worker process running it died); a re-run tries it again;
- ``interrupted``: the batch was stopped before the video ended (or began); a re-run does it from scratch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from taplab.files import atomic_path

STATUSES = ("done", "skipped", "failed", "interrupted")


@dataclass
class VideoRecord:
    """How one video of a batch went. ``summary`` is its run's :meth:`RunSummary.to_dict` (for a skipped video, the
    earlier run's); ``warnings``: the distinct warnings its run gave, one line each."""

    name: str
    source: str
    out: str
    status: str
    error: str | None = None
    summary: dict | None = None
    warnings: list[str] = field(default_factory=list)
    traceback: str | None = None  # where the error was a bug in taplab, not bad input

    @property
    def frames(self) -> int:
        return self.summary["frames"] if self.summary else 0

    @property
    def seconds(self) -> float:
        return self.summary["seconds"] if self.summary else 0.0

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class BatchSummary:
    """A batch's records in input order, the wall time, and how it ran (``executor``: ``inline``, ``processes`` or
    ``ray``; ``workers``; ``threads`` per worker, None where the thread policy chose)."""

    out: str
    videos: list[VideoRecord]
    seconds: float = 0.0
    executor: str = "inline"
    workers: int = 1
    threads: int | None = None
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.videos)

    @property
    def failed(self) -> list[VideoRecord]:
        return [r for r in self.videos if r.status == "failed"]

    @property
    def frames(self) -> int:
        """Frames segmented by this run (not those of skipped videos)."""
        return sum(r.frames for r in self.videos if r.status == "done")

    def to_dict(self) -> dict:
        return {"out": self.out, "executor": self.executor, "workers": self.workers, "threads": self.threads,
                "seconds": round(self.seconds, 3), "frames": self.frames, "interrupted": self.interrupted,
                "counts": {s: self.count(s) for s in STATUSES}, "videos": [r.to_dict() for r in self.videos]}

    def write(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    def format(self) -> str:
        """The closing table: per video its frames, frames/s, key-frame share and status (the error of a failed one),
        then the totals."""
        rows = [("video", "frames", "frames/s", "key", "status")]
        for r in self.videos:
            s = r.summary or {}
            status = r.status if not r.error else f"{r.status}: {r.error}"
            rows.append((r.name, str(s.get("frames", "")), f"{s['fps']:.1f}" if s.get("fps") else "",
                         f"{100 * s['key_share']:.0f}%" if "key_share" in s else "", status))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = ["  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:4], widths[1:])), row[4]])
                 for row in rows]
        rate = f", {self.frames / self.seconds:.1f} frames/s" if self.seconds and self.frames else ""
        how = f"{self.workers} worker{'s' if self.workers != 1 else ''}" + (" on ray" if self.executor == "ray" else "")
        lines.append(f"{len(self.videos)} videos: " + ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s))
                     + f"; {self.frames} frames in {self.seconds:.1f} s{rate} ({how})")
        return "\n".join(lines)


class Action(str, Enum):
    """What to do with one video's folder before a batch runs (:func:`decide`)."""

    RUN = "run"  # nothing there, or an earlier run that did not complete: (re)do it from scratch
    SKIP = "skip"  # a complete run with the same settings
    REFUSE = "refuse"  # a complete run with other settings, and no overwrite


def decide(record: dict | None, settings: dict, overwrite: bool) -> Action:
    """The fate of a video whose folder holds ``record`` (its ``summary.json``, None where there is none), for a run
    with ``settings`` (:func:`taplab.pipeline.run_settings`). Pure. A folder without a complete record is redone
    from scratch (its earlier files removed first); ``overwrite`` redoes every video."""
    if overwrite or not record or not record.get("complete"):
        return Action.RUN
    return Action.SKIP if record.get("settings") == settings else Action.REFUSE
