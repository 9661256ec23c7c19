"""Where a batch's workers run: this process, worker processes of this machine, or Ray actors.

A pool has ``workers`` slots, each one :class:`~taplab.batch.worker.Worker` holding its model. :func:`drive` hands
each free slot the next video (so a long video does not hold up the short ones queued behind it) and yields the
records as videos end. taplab schedules nothing else: a slot is a thread of this process, a one-process
:class:`~concurrent.futures.ProcessPoolExecutor` (started with ``spawn``: torch's and ONNX Runtime's thread pools
do not survive a fork; so a script that calls :func:`taplab.segment_many` with workers needs the usual
``if __name__ == "__main__":`` guard) or a Ray actor, and each answers a video with a future.

A slot whose process dies (killed, out of memory) fails the video it held, and only that one: it gets a new
process for the next video. On Ray, the same for an actor that dies.

Ray: a pool of actors, one per worker, rather than one task per video or Ray Data over the list of videos, because
a worker's model (loaded, exported to ONNX and checked against torch at the video's size) costs seconds to set up
and is the same for every video, and because a video is one unit of work that writes its own files, with nothing
for Ray Data's blocks and operators to stream between stages. Actors are placed by the CPUs (and GPUs) they
reserve (:func:`taplab.batch.plan.plan_ray`).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Protocol

from taplab.batch.inputs import Job
from taplab.batch.plan import WorkerPlan, plan_ray
from taplab.batch.records import VideoRecord
from taplab.batch.worker import Work, Worker
from taplab.errors import ConfigError

#: seconds :func:`drive` waits for a video to end before it passes on the progress reports that came meanwhile
POLL_INTERVAL = 0.25
#: deaths in a row of one slot's worker, without a video finished between, that end the batch: a worker that cannot
#: start (a script without the ``__main__`` guard, a broken environment), or a machine without the memory for it
MAX_DEATHS = 3


class WorkerDied(Exception):
    """A slot's process or actor ended while it held a video."""


class Pool(Protocol):
    name: str  # "inline", "processes" or "ray"
    plan: WorkerPlan

    def submit(self, slot: int, job: Job) -> Future: ...

    def reports(self) -> list[tuple[str, int]]:
        """The progress reports ``(video name, frames done)`` since the last call."""

    def restart(self, slot: int) -> None: ...

    def close(self, kill: bool = False) -> None: ...


def drive(pool: Pool, jobs: list[Job], out: Path, report: Callable[[str, int], None]) -> Iterator[VideoRecord]:
    """Run ``jobs`` (outputs in ``out/<name>/``) on ``pool``'s slots, each free slot taking the next job; yield each
    record as its video ends and pass the workers' progress reports to ``report(name, frames)``. An exception from a
    worker other than its death (a worker that cannot set up: the model, the device) ends the batch."""
    queue, running = deque(jobs), {}
    free = list(range(pool.plan.workers))[::-1]
    deaths = [0] * pool.plan.workers
    while queue or running:
        while queue and free:
            slot, job = free.pop(), queue.popleft()
            running[pool.submit(slot, job)] = (slot, job)
        done, _ = wait(running, timeout=POLL_INTERVAL, return_when=FIRST_COMPLETED)
        for name, frames in pool.reports():
            report(name, frames)
        for future in [f for f in running if f in done]:  # in the order they were handed out
            slot, job = running.pop(future)
            try:
                record, deaths[slot] = future.result(), 0
            except WorkerDied as exc:
                deaths[slot] += 1
                record = VideoRecord(job.name, job.source, str(out / job.name), "failed",
                                     error=f"the worker running it died ({exc})")
                if deaths[slot] >= MAX_DEATHS:
                    yield record
                    raise ConfigError(f"a worker died on {MAX_DEATHS} videos in a row ({exc}); with --workers 1 the "
                                      "videos run in this process, where the cause shows") from None
                pool.restart(slot)
            free.append(slot)
            yield record


# -- worker processes

_worker: Worker | None = None
_queue = None


def _start_process(work: Work, queue) -> None:
    """A worker process's start: Ctrl-C is the driving process's to handle (it ends the workers itself)."""
    global _worker, _queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker, _queue = Worker(work), queue


def _run_in_process(job: Job) -> VideoRecord:
    return _worker.run(job, lambda j, n: _queue.put((j.name, n)))


class LocalPool:
    """``plan.workers`` workers on this machine: the first in a thread of this process, which has its imports done
    and so starts at once (a worker process has to start Python, import torch and load its model), the others each
    in a :class:`ProcessPoolExecutor` of one process. The thread's worker has the process's thread plan to itself
    (the driving thread only waits); no signal reaches it, so :meth:`close` stops it through
    :attr:`Worker.stopping`. One worker is the thread alone (``inline``)."""

    def __init__(self, work: Work, plan: WorkerPlan):
        self.work, self.plan = work, plan
        self.name = "inline" if plan.workers == 1 else "processes"
        self.local, self.local_reports = Worker(work), SimpleQueue()
        self.slots: list = [ThreadPoolExecutor(1, thread_name_prefix="taplab-worker")]
        if plan.workers > 1:
            self.context = multiprocessing.get_context("spawn")
            self.queue = self.context.Queue()
            self.slots += [self._executor() for _ in range(plan.workers - 1)]

    def _executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=self.context, initializer=_start_process,
                                   initargs=(self.work, self.queue))

    def submit(self, slot: int, job: Job) -> Future:
        if slot == 0:
            return self.slots[0].submit(self.local.run, job, lambda j, n: self.local_reports.put((j.name, n)))
        return _translated(self.slots[slot].submit(_run_in_process, job), _process_error)

    def reports(self) -> list[tuple[str, int]]:
        return _drain(self.local_reports) + (_drain(self.queue) if self.plan.workers > 1 else [])

    def restart(self, slot: int) -> None:
        self.slots[slot].shutdown(wait=False)
        self.slots[slot] = self._executor()

    def close(self, kill: bool = False) -> None:
        """End the workers, all at once (a process takes a moment to exit). ``kill`` (interrupted): the videos in
        hand are abandoned, the processes terminated and the thread stopped after its frame; their folders are
        redone on a re-run."""
        processes = [p for executor in self.slots[1:] for p in (executor._processes or {}).values()]  # noqa: SLF001
        if kill:
            self.local.stopping.set()
            for process in processes:  # no public way to stop a pool's process
                process.terminate()
        for executor in self.slots:
            executor.shutdown(wait=False, cancel_futures=True)
        self.slots[0].shutdown(wait=True)
        for process in processes:
            process.join()
        if self.plan.workers > 1:
            self.queue.close()


def _process_error(exc: BaseException) -> BaseException:
    return WorkerDied("its process ended: killed, or out of memory") if isinstance(exc, BrokenProcessPool) else exc


def _translated(inner: Future, translate: Callable[[BaseException], BaseException]) -> Future:
    """A future with ``inner``'s result, or its exception as ``translate`` makes it (a worker's death:
    :class:`WorkerDied`)."""
    outer = Future()

    def done(f: Future) -> None:
        exc = f.exception()
        if exc is None:
            outer.set_result(f.result())
        else:
            outer.set_exception(translate(exc))

    inner.add_done_callback(done)
    return outer


def _drain(queue) -> list:
    found = []
    while True:
        try:
            found.append(queue.get_nowait())
        except Empty:
            return found


# -- Ray

def import_ray():
    """Ray, or a :class:`ConfigError` that says how to install it (it is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray, an optional extra: pip install -e '.[ray]' (or pip install 'ray>=2.9')") \
            from None
    return ray


class RayWorker:
    """A Ray actor's body: a :class:`Worker` and the queue its progress reports go to."""

    def __init__(self, work: Work, queue):
        self.worker, self.queue = Worker(work), queue

    def run(self, job: Job) -> VideoRecord:
        return self.worker.run(job, lambda j, n: self.queue.put_nowait((j.name, n)))


class RayPool:
    """One Ray actor per worker. ``address``: a cluster's (``ray://host:10001``, ``host:6379``, ``auto``); empty:
    join the one ``RAY_ADDRESS`` names, else start a local Ray of this machine's CPUs (ended with the pool). A Ray
    already initialised in this process (``ray.init(...)`` by the caller) is used as it is."""

    name = "ray"

    def __init__(self, work: Work, address: str, device: str, workers: int | None, threads: int | None):
        ray = self.ray = import_ray()
        from ray.util.queue import Queue

        from taplab.threads import available_cpus

        self.started = not ray.is_initialized()
        if self.started:
            local = not address and not os.environ.get("RAY_ADDRESS")
            try:
                ray.init(address=address or None, num_cpus=available_cpus() if local else None,
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         configure_logging=True)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise ConfigError(f"cannot connect to Ray at {address or os.environ.get('RAY_ADDRESS')}: {exc}") \
                    from None
        try:
            resources = ray.cluster_resources()
            self.plan = plan_ray(resources.get("CPU", 1), resources.get("GPU", 0), device, workers, threads)
            self.work = replace(work, config={**work.config, "threads": self.plan.threads})
            self.queue = Queue(actor_options={"num_cpus": 0})
            self.actor_class = ray.remote(num_cpus=self.plan.threads, num_gpus=self.plan.gpus)(RayWorker)
            self.actors = [self._actor() for _ in range(self.plan.workers)]
        except BaseException:
            if self.started:  # the Ray this pool started ends with it
                ray.shutdown()
            raise

    def _actor(self):
        return self.actor_class.remote(self.work, self.queue)

    def submit(self, slot: int, job: Job) -> Future:
        return _translated(self.actors[slot].run.remote(job).future(), self._error)

    def _error(self, exc: BaseException) -> BaseException:
        """An actor's death as :class:`WorkerDied`; an exception its method raised as itself, not Ray's wrapper."""
        if isinstance(exc, self.ray.exceptions.RayActorError):
            return WorkerDied(f"its Ray actor ended: {str(exc).strip().splitlines()[0][:200]}")
        if isinstance(exc, self.ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
            return exc.cause
        return exc

    def reports(self) -> list[tuple[str, int]]:
        n = self.queue.qsize()
        return list(self.queue.get_nowait_batch(n)) if n else []

    def restart(self, slot: int) -> None:
        self.actors[slot] = self._actor()

    def close(self, kill: bool = False) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.queue.shutdown()
        if self.started:
            self.ray.shutdown()

