"""How many workers a batch runs, and how many CPU threads each gets: pure decisions, facts in, plan out.

Measured (docs/scale.md, ``benchmarks/bench_batch.py``): on a 2-CPU machine, two worker processes of one thread
each segment a set of short clips faster than one process with both threads, because a worker's frame is not
all parallel work (decoding, the scheduler's Python, the small kernels) and two processes fill each other's gaps.
So the default is one single-threaded worker per CPU, bounded by the videos there are to run and by memory; one
video (or one CPU) runs in this process with every thread, under the thread policy's governor
(:mod:`taplab.threads`), as a single video always did.
"""

from __future__ import annotations

from dataclasses import dataclass

from taplab.errors import ConfigError

#: memory a worker is planned with: its model, ONNX Runtime's sessions and buffers, the frames in flight, with headroom
#: for frames larger than 720p (docs/scale.md has a 720p worker's peak)
WORKER_MEMORY = 3 << 29  # 1.5 GiB


@dataclass(frozen=True)
class WorkerPlan:
    """``workers`` processes (or Ray actors) of ``threads`` CPU threads each; ``threads`` None: the thread policy's
    choice (one worker in this process). ``gpus``: GPUs per Ray actor (0 on CPU)."""

    workers: int
    threads: int | None
    gpus: float = 0.0


def _check_count(value: int | None, what: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{what} must be a whole number >= 1, got {value!r}")


def plan_workers(cpus: int, memory: int | None, videos: int, workers: int | None = None,
                 threads: int | None = None) -> WorkerPlan:
    """The plan for ``videos`` videos to run on this machine (``cpus`` CPUs, ``memory`` bytes available, None where
    unknown), given the user's ``workers`` and ``threads`` (None: choose). Pure.

    Default: one worker per CPU (``threads`` given: per ``threads`` CPUs), as many as :data:`WORKER_MEMORY` each
    fits in ``memory``; never more than there are videos, also when the user asks. Threads: the user's, else the CPUs shared out, at least one
    each; a single worker keeps the thread policy's choice (``None``)."""
    _check_count(workers, "workers")
    _check_count(threads, "threads")
    if workers is None:
        workers = max(1, cpus // (threads or 1))
        if memory is not None:
            workers = min(workers, max(1, memory // WORKER_MEMORY))
    workers = max(1, min(workers, videos))  # a worker without a video would only load a model
    if threads is None and workers > 1:
        threads = max(1, cpus // workers)
    return WorkerPlan(workers, threads)


def plan_ray(cpus: float, gpus: float, device: str, workers: int | None = None,
             threads: int | None = None) -> WorkerPlan:
    """The plan on a Ray cluster of ``cpus`` CPUs and ``gpus`` GPUs (``ray.cluster_resources()``). Pure.

    On CPU (``device`` ``cpu``, or ``auto`` on a cluster without GPUs), as :func:`plan_workers`: one actor of one
    thread per CPU by default (no memory bound: Ray places actors by their CPUs). On GPUs (``device`` ``cuda``, or
    ``auto`` where the cluster has them), one actor per GPU by default, each holding a whole GPU and the cluster's
    CPUs shared out (its decoding and warping run on them). Ray reserves each actor's ``threads`` CPUs."""
    _check_count(workers, "workers")
    _check_count(threads, "threads")
    on_gpu = device.startswith("cuda") or (device == "auto" and gpus >= 1)
    if on_gpu:
        if gpus < 1:
            raise ConfigError(f"device {device}: the Ray cluster has no GPU")
        workers = workers or int(gpus)
        threads = threads or max(1, int(cpus) // workers)
        return WorkerPlan(workers, threads, gpus=min(1.0, gpus / workers))
    threads = threads or 1
    workers = workers or max(1, int(cpus) // threads)
    return WorkerPlan(workers, threads)
