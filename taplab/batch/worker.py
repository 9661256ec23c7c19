"""What one worker does: hold a model, and segment the videos it is given into their folders, one at a time.

The same :class:`Worker` runs in the calling process (one worker), in a worker process of this machine
(``--workers N``) and in a Ray actor (``--ray``): :mod:`taplab.batch.pools` only says where. A worker loads its
model on its first video and keeps it for the rest. A video's failure (bad input, or a bug) becomes its
:class:`VideoRecord`; only a failure to set the worker up (the model, the device) leaves :meth:`Worker.run` as an
exception, which ends the batch, since every video would fail the same way.
"""

from __future__ import annotations

import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from pathlib import Path

from taplab.batch.inputs import Job
from taplab.batch.records import VideoRecord
from taplab.errors import TapLabError

#: seconds between two progress reports of a worker (each costs a message to the driving process)
REPORT_INTERVAL = 0.5
#: distinct warnings kept per video (a damaged stream can warn once per packet)
MAX_WARNINGS = 20


@dataclass(frozen=True)
class Work:
    """What every worker needs, as plain values (it travels to worker processes and Ray actors): the model spec (a
    name or a path: a module object cannot travel), the device, the runtime options (``RuntimeConfig.to_dict``,
    ``threads`` set per worker), the outputs and the output folder of the batch."""

    out: str
    model: Any  # a name or a path; a model object only where the worker runs in this process
    device: str
    config: dict
    formats: tuple[str, ...] = ("labels",)
    overlay: str | None = None  # the overlay video's file name, inside each video's folder
    side_by_side: bool = False
    limit: int | None = None


class Worker:
    """Segments the jobs it is given (:meth:`run`) with one :class:`Segmenter`, made on the first. ``stopping``: set
    from another thread, it ends the video in hand after its current frame, as Ctrl-C would (a worker running in a
    thread of the driving process, where no signal reaches it)."""

    def __init__(self, work: Work):
        self.work = work
        self._segmenter = None
        self.stopping = threading.Event()

    def segmenter(self):
        if self._segmenter is None:
            from taplab.runtime import RuntimeConfig, Segmenter

            self._segmenter = Segmenter(self.work.model, device=self.work.device,
                                        config=RuntimeConfig.from_dict(self.work.config))
        return self._segmenter

    def run(self, job: Job, report: Callable[[Job, int], None] | None = None) -> VideoRecord:
        """Segment ``job`` into ``OUT/<name>/`` (an earlier run's files there removed first); ``report(job, frames)``
        now and then while it runs. Returns its record: ``done``, or ``failed`` with the error's one line."""
        from taplab.pipeline import segment_to_folder

        segmenter = self.segmenter()  # raises: the batch cannot run
        folder = Path(self.work.out) / job.name
        record = VideoRecord(job.name, job.source, str(folder), "failed")
        last = [time.monotonic()]

        def progress(result, summary) -> None:
            if self.stopping.is_set():
                raise KeyboardInterrupt  # the outputs are closed as after Ctrl-C; the folder is redone on a re-run
            now = time.monotonic()
            if report is not None and now - last[0] >= REPORT_INTERVAL:
                last[0] = now
                report(job, summary.frames)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                summary = segment_to_folder(segmenter, job.source, folder, self.work.formats, overwrite=True,
                                            limit=self.work.limit, progress=progress,
                                            overlay=folder / self.work.overlay if self.work.overlay else None,
                                            side_by_side=self.work.side_by_side)
                record.status, record.summary = "done", summary.to_dict()
            except TapLabError as exc:
                record.error = _one_line(str(exc))
            except Exception as exc:  # noqa: BLE001 - a bug on one video must not end the batch; its traceback is kept
                record.error = _one_line(f"internal error: {type(exc).__name__}: {exc}")
                record.traceback = traceback.format_exc()
        record.warnings = list(dict.fromkeys(_one_line(str(w.message)) for w in caught))[:MAX_WARNINGS]
        if report is not None:
            report(job, record.frames)
        return record


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else "(no message)"
