"""``taplab.segment_many``: many videos into one output folder, on worker processes or a Ray cluster, resumable.

    import taplab
    batch = taplab.segment_many(["clips/", "more.mp4"], "masks/", workers=2)
    print(batch.format())                 # per video: frames, frames/s, key-frame share, status
    [r.name for r in batch.failed]        # the videos that failed, each with its one-line error

What the inputs may be: :mod:`taplab.batch.inputs`; how many workers and threads: :mod:`taplab.batch.plan`; where
they run: :mod:`taplab.batch.pools`; what one worker does: :mod:`taplab.batch.worker`; the records:
:mod:`taplab.batch.records`. Each video's outputs go to ``OUT/<name>/``, as :func:`taplab.segment` writes one
video's, with its ``summary.json`` written last; the batch's :class:`BatchSummary` goes to ``OUT/summary.json``
(also when the batch is interrupted).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from taplab.batch.inputs import Job, expand_inputs, is_batch, job_names
from taplab.batch.plan import plan_workers
from taplab.batch.pools import LocalPool, RayPool, drive
from taplab.batch.records import Action, BatchSummary, VideoRecord, decide
from taplab.batch.worker import Work
from taplab.errors import ConfigError, TapLabError
from taplab.io.sinks import FORMATS, RUN_NAME, make_folder, read_run_record

__all__ = ["segment_many", "BatchSummary", "VideoRecord", "BatchProgress", "is_batch", "expand_inputs", "Job"]


@dataclass(frozen=True)
class BatchProgress:
    """Where a batch stands, given to ``progress`` after every report: videos ended of ``total`` (``failed`` of
    them), frames segmented so far by this run, seconds since it began, and the record of the video that just
    ended (None for a report of frames)."""

    videos: int
    total: int
    failed: int
    frames: int
    seconds: float
    record: VideoRecord | None = None


def segment_many(videos: str | Path | Sequence[str | Path], out: str | Path, model="default", *,
                 workers: int | None = None, ray: str | bool | None = None, overwrite: bool = False,
                 formats: Sequence[str] = ("labels",), overlay: str | None = None, side_by_side: bool = False,
                 limit: int | None = None, device: str = "auto", config=None,
                 progress: Callable[[BatchProgress], None] | None = None, **options) -> BatchSummary:
    """Segment every video ``videos`` names (paths, URLs, folders, globs, list files: :mod:`taplab.batch.inputs`)
    into ``out/<name>/``; returns the :class:`BatchSummary`, also written to ``out/summary.json``.

    A video whose folder holds a complete run with the same settings is skipped; any other is (re)done from scratch;
    ``overwrite`` redoes them all. A video that fails is recorded with its error and the rest go on; a model or
    device that cannot be set up raises, as :func:`taplab.segment` would.

    ``workers``: workers on this machine (None: :func:`~taplab.batch.plan.plan_workers`' choice; 1: in this process,
    as for a ``model`` given as an object rather than a name or a file, which cannot travel to other processes). ``ray``: run on Ray instead (``True`` or ``""``: the cluster ``RAY_ADDRESS`` names, else a local Ray;
    a string: that cluster's address), ``workers`` then counting actors. ``overlay``: a file name, e.g.
    ``"overlay.mp4"``, written in each video's folder. ``model``, ``device``, ``config``, ``formats``,
    ``side_by_side``, ``limit`` and the runtime ``options`` are :func:`taplab.segment`'s, for every video;
    ``progress(BatchProgress)`` is called as frames and videos end.
    """
    from taplab.runtime import RuntimeConfig

    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if overlay is not None and Path(overlay).name != str(overlay):
        raise ConfigError(f"in a batch, overlay is a file name written in each video's folder (e.g. overlay.mp4), "
                          f"not a path: {overlay}")
    if isinstance(config, dict):
        config = RuntimeConfig.from_dict(config)
    config = config or RuntimeConfig.for_model(model)
    if options:
        config = config.replace(**options)
    if config.latency_budget is not None:
        raise ConfigError("a latency budget is for one live stream, not a batch of files")
    jobs = job_names(expand_inputs([str(v) for v in ([videos] if isinstance(videos, (str, Path)) else videos)],
                                   exclude=out))
    remote = ray is not None and ray is not False
    if not isinstance(model, (str, Path)):  # a model object stays in this process: one worker
        if remote or workers not in (None, 1):
            raise ConfigError("worker processes load the model themselves: give it as a name or a file, not an object")
        workers = 1

    records: dict[str, VideoRecord] = {}
    settings = _Settings(model, config, formats, limit, overlay, side_by_side)
    to_run = []
    for job in jobs:
        found = read_run_record(out / job.name)
        action = decide(found, settings() if found and found.get("complete") else {}, overwrite)
        if action is Action.SKIP:
            records[job.name] = VideoRecord(job.name, job.source, str(out / job.name), "skipped",
                                            summary=found.get("summary"))
        elif action is Action.REFUSE:
            records[job.name] = VideoRecord(job.name, job.source, str(out / job.name), "failed",
                                            error=f"{out / job.name} holds a complete run made with other settings; "
                                                  "pass --overwrite to redo it")
        else:
            to_run.append(job)

    work = Work(str(out), str(model) if isinstance(model, (str, Path)) else model, device, config.to_dict(),
                tuple(dict.fromkeys(formats)), overlay, side_by_side, limit)
    pool = _pool(work, ray, remote, workers, config.threads, len(to_run), device)
    made = not out.exists()
    make_folder(out)
    batch = BatchSummary(str(out), [], executor=pool.name if pool else "inline",
                         workers=pool.plan.workers if pool else 0, threads=pool.plan.threads if pool else None)
    state = _Progress(len(jobs), start, progress)
    for record in records.values():
        state.ended(record)
    complete, ran, set_up = False, 0, True
    try:
        if pool is not None:
            for record in drive(pool, to_run, out, state.frames):
                records[record.name] = record
                state.ended(record)
                ran += 1
        complete = True
    except TapLabError:
        set_up = ran > 0  # else the workers could not set up (the model, the device): nothing ran
        raise
    finally:
        if pool is not None:
            pool.close(kill=not complete)
        if not set_up:  # leave nothing behind, as a single video's run that fails before its first frame
            if made and not any(out.iterdir()):
                out.rmdir()
        else:
            batch.videos = [records.get(job.name) or
                            VideoRecord(job.name, job.source, str(out / job.name), "interrupted") for job in jobs]
            batch.seconds, batch.interrupted = time.perf_counter() - start, not complete
            batch.write(out / RUN_NAME)
    return batch


class _Settings:
    """:func:`taplab.pipeline.run_settings` for the batch, computed on first use: it needs the model's digest, so the
    model is loaded (in torch, on the CPU) only where a folder holds a complete run to compare with."""

    def __init__(self, model, config, formats, limit, overlay, side_by_side):
        self.args, self.value = (model, config, formats, limit, overlay, side_by_side), None

    def __call__(self) -> dict:
        if self.value is None:
            from taplab.nets.loader import load_model
            from taplab.pipeline import settings_record

            model, config, *rest = self.args
            try:  # in torch: the digest is of the weights, and torch loads them without exporting anything
                loaded = load_model(model, device="cpu", engine="torch")
            except ConfigError:  # an ONNX file, which only ONNX Runtime runs
                loaded = load_model(model, device="cpu", engine="onnxruntime")
            self.value = settings_record(loaded.digest, config, *rest)
        return self.value


def _pool(work: Work, ray, remote: bool, workers: int | None, threads: int | None, videos: int, device: str):
    """The pool the plan asks for; None where there is nothing to run."""
    if not videos:
        return None
    if remote:
        return RayPool(work, "" if ray is True else str(ray), device, workers, threads)
    from taplab.threads import available_cpus, available_memory

    plan = plan_workers(available_cpus(), available_memory(), videos, workers, threads)
    work = replace(work, config={**work.config, "threads": plan.threads})
    return LocalPool(work, plan)


class _Progress:
    """Counts for ``progress``: frames by video (the latest report of each), videos ended, failures."""

    def __init__(self, total: int, start: float, callback):
        self.total, self.start, self.callback = total, start, callback
        self.by_video: dict[str, int] = {}
        self.ended_count = self.failed = 0

    def frames(self, name: str, frames: int) -> None:
        self.by_video[name] = frames
        self._tell(None)

    def ended(self, record: VideoRecord) -> None:
        self.ended_count += 1
        self.failed += record.status == "failed"
        if record.status == "done":
            self.by_video[record.name] = record.frames
        self._tell(record)

    def _tell(self, record: VideoRecord | None) -> None:
        if self.callback is not None:
            self.callback(BatchProgress(self.ended_count, self.total, self.failed, sum(self.by_video.values()),
                                        time.perf_counter() - self.start, record))

