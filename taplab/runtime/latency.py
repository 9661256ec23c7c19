"""The latency budget (``RuntimeConfig.latency_budget``): the policy, what each stage is expected to cost, what
still fits, and key frames in the background.

The budget is the seconds from a frame's arrival (decoded) to its result. It is meant for live sources,
whose frames arrive in real time (a file read without ``live`` pacing arrives as fast as it decodes).
The policy, in order:

1. Key frames: the CNN runs in a background thread and is waited for while it can still finish
   within the budget (known once it has run: its measured time). A key frame over budget shows a
   stand-in meanwhile, the current key frame's features carried to it (``kind="hold"``); the frames
   that follow warp from the stand-in, and when the key frame's features are ready, the motion
   accumulated since the key frame carries them to the current frame at once. One CNN runs at a
   time: a P-frame that RGFS selects while one runs is warped instead (``shed`` names ``"rgfs"``); an
   I-frame queues behind it, and the running CNN's features, when ready, are carried to the I-frame
   in place of its stand-in.
2. Warped frames: fusion and RGC run only where their expected time (the running mean of their
   measured times; before RGC's first pass, the CNN's time scaled by the region's share of the
   frame) and the labels' still fit in the budget, and never while a key frame's CNN runs (it takes
   the cores they need); ``FrameResult.shed`` names what was left out.
3. Frames: a warped frame already past its budget when a newer frame has arrived, and the frames
   before the first key frame's features exist, are skipped (``kind="skip"``, no labels): their
   vectors still extend the motion chain, so the next output is exact. Decoding is never skipped,
   nor is a key frame's CNN.

So, where the machine keeps up with the source, every output frame's latency stays within the budget
plus the cost of a warped frame. The tests check the decisions that keep it, on runs whose timing they
control; the latencies themselves depend on the machine's load and are measured (docs/live.md).
B-frames are warped with their past vectors, or skipped without them (never run in line). It needs
``propagation="accumulate"``. The rules that depend on the frame alone are in
:func:`taplab.runtime.decide.decide`; those that depend on time are here:

- :class:`LatencyPolicy`: each frame's deadline, the running mean of every stage's measured time and
  whether a stage (or a key frame's CNN) still fits before the deadline;
- :class:`KeyFrameWorker`: the key frames' CNNs in one background thread, and the carrying of a
  finished CNN's features to the current key frame through the motion between them.

docs/live.md has the decisions and measurements.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np
import torch

from taplab.ops.warp import GridFlow, compose


class LatencyPolicy:
    """Deadlines and expected costs. Without a budget every stage fits and no frame is late, but the costs
    are still measured (they are cheap to keep).

    ``region_share`` is the share of the frame an RGC region covers: before RGC's first pass its
    expected cost is the whole-frame CNN's time scaled by it.
    """

    def __init__(self, budget: float | None, region_share: float | None = None):
        self.budget, self.region_share = budget, region_share
        self.costs: dict[str, float] = {}  # stage -> running mean of its seconds (fusion, cnn_region, labels)
        self.cnn_seconds: float | None = None  # the last whole-frame CNN's time

    def deadline(self, arrival: float | None) -> float | None:
        """When a frame that arrived at ``arrival`` (``perf_counter``) must have its result; None: no budget."""
        return None if self.budget is None or arrival is None else arrival + self.budget

    def cost(self, stage: str) -> float:
        """Expected seconds of ``stage``: the running mean of its measured times, or a prior (0: run it once
        and measure)."""
        if stage in self.costs:
            return self.costs[stage]
        if stage == "cnn_region" and self.cnn_seconds is not None and self.region_share is not None:
            return self.cnn_seconds * self.region_share
        return 0.0

    def measure(self, stage: str, seconds: float) -> None:
        old = self.costs.get(stage)
        self.costs[stage] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def fits(self, stage: str, deadline: float | None, cnn_busy: bool) -> bool:
        """Whether ``stage`` and the labels can still finish by ``deadline``. While a key frame's CNN runs in
        the background nothing optional does: it takes the cores the CNN needs."""
        if deadline is None:
            return True
        return not cnn_busy and time.perf_counter() + self.cost(stage) + self.cost("labels") <= deadline

    def late(self, deadline: float | None, newer: bool) -> bool:
        """Whether a frame is past its deadline with a newer one waiting (it is then skipped, not shown late)."""
        return newer and deadline is not None and time.perf_counter() > deadline

    def key_wait(self, deadline: float) -> float | None:
        """Seconds to wait for a key frame's CNN so that its labels still make the deadline, or None when its
        CNN is known not to fit (before the first CNN has run, it is waited for)."""
        now, labels = time.perf_counter(), self.cost("labels")
        if self.cnn_seconds is not None and now + self.cnn_seconds + labels > deadline:
            return None
        return max(0.0, deadline - labels - now)


@dataclass
class _KeyJob:
    """A key frame's CNN in the background thread: ``future`` gives (features, seconds); ``carry`` is the
    motion from the current key frame back to this job's frame, None while this job's frame is the current
    key frame (a later key frame took its place while it ran)."""

    future: Future
    index: int
    carry: GridFlow | None = None


class KeyFrameWorker:
    """Key frames' CNNs, one at a time, in a background thread.

    ``features(image)`` is the CNN (features of an RGB frame); ``carry(features, motion)`` warps
    features along a :class:`GridFlow`.
    """

    def __init__(self, features: Callable[[np.ndarray], torch.Tensor],
                 carry: Callable[[torch.Tensor, GridFlow], torch.Tensor]):
        self._features, self._carry = features, carry
        self.jobs: list[_KeyJob] = []  # oldest first
        self._executor: ThreadPoolExecutor | None = None

    @property
    def busy(self) -> bool:
        """Whether a key frame's CNN is queued or running."""
        return bool(self.jobs)

    def submit(self, index: int, image: np.ndarray, to_key: GridFlow) -> _KeyJob:
        """Start the CNN of key frame ``index``; ``to_key`` is its motion to the current key frame, which it
        replaces. A CNN already running is never dropped (a slow CNN would otherwise never finish one): its
        result will be carried here. One queued and not started is dropped."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="taplab-key")
        for job in self.jobs:
            job.carry = to_key if job.carry is None else compose(to_key, job.carry)
        self.jobs = [job for job in self.jobs if not job.future.cancel()]
        job = _KeyJob(self._executor.submit(self._timed, image), index)
        self.jobs.append(job)
        return job

    def wait(self, job: _KeyJob, timeout: float) -> tuple[torch.Tensor, float] | None:
        """``job``'s features and CNN seconds if it finishes within ``timeout`` seconds (older jobs finished
        first: one worker; this one supersedes them), else None."""
        try:
            result = job.future.result(timeout=timeout)
        except FutureTimeout:
            return None
        self.jobs.clear()
        return result

    def finished(self) -> tuple[torch.Tensor, int, float] | None:
        """The newest key frame whose CNN has finished, taken from the queue with every older finished one:
        its features (carried to the current key frame), its index and its CNN seconds; None if none finished."""
        newest = None
        while self.jobs and self.jobs[0].future.done():
            job = self.jobs.pop(0)
            if job.future.cancelled():
                continue
            features, seconds = job.future.result()
            if job.carry is not None:
                features = self._carry(features, job.carry)
            newest = (features, job.index, seconds)
        return newest

    def close(self) -> None:
        """Stop: a queued CNN is dropped, a running one waited for (at most one key frame's CNN time), so that
        no thread outlives the run."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.jobs.clear()

    @torch.inference_mode()
    def _timed(self, image: np.ndarray) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        features = self._features(image)
        return features, time.perf_counter() - start
