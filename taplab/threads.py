"""One thread policy for the whole process: how many CPU threads inference, decoding and OpenCV get.

Left alone, every library sizes its own pool from the machine's core count: torch's OpenMP threads,
ONNX Runtime's intra-op pool, FFmpeg's decoder threads and OpenCV's. They then compete for the same
cores, and where another process holds one of them, a parallel operation waits at its end for the
thread that is not running (docs/engines.md has the measurements). So taplab sizes them itself, from
the CPUs this process may actually use:

- :func:`available_cpus`: the CPU affinity mask, bounded by the cgroup's CPU quota (a container with
  ``--cpus 2`` on a 64-core host gets 2, not 64); :func:`available_memory` likewise reads the memory this
  process may use, for the plans that size themselves by it (batch workers, adaptation's samples);
- :func:`plan_threads`: a pure decision, CPUs (or the user's ``--threads``) in, one count per pool out;
- :func:`apply_threads`: sets torch's and OpenCV's pools and records the plan that ONNX Runtime's
  sessions and the decoder read (:func:`current_plan`, :func:`inference_threads`);
- :class:`ThreadGovernor`: while a video runs without ``--threads``, it measures once a second how much
  of this process's CPUs *other* processes use (``/proc/stat`` against this process's own CPU time)
  and gives inference the CPUs left (:func:`threads_for`): one thread on a 2-CPU machine where another
  process keeps a core busy, all of them again when it stops.

Decisions (measured, docs/engines.md): inference gets every free CPU, because the key-frame CNN is most
of the time; the decoder gets one thread on machines of up to four CPUs, because it runs beside
inference in the prefetch thread and needs ~1 ms per 720p frame (one thread made no difference
against FFmpeg's automatic count end to end, in a one-off comparison); OpenCV gets one, its work here
(a resize, DIS flow at its fastest presets) being too small to split. ONNX Runtime's threads do not spin while waiting
(``allow_spinning=0``): spinning only pays on a quiet machine, and it costs a busy one a core.
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from taplab.errors import ConfigError

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads each pool gets."""

    cpus: int  #: the CPUs the plan was made for (available, or what the user asked for)
    inference: int  #: torch's intra-op threads and ONNX Runtime's intra-op pool
    decode: int  #: FFmpeg's decoder threads (in the prefetch thread, beside inference)
    opencv: int  #: OpenCV's pool (resizes, optical flow)

    def describe(self) -> str:
        return f"{self.inference} inference, {self.decode} decode, {self.opencv} OpenCV (of {self.cpus} CPUs)"


def cgroup_cpus(v2: Path = _CGROUP_V2, v1: tuple[Path, Path] = _CGROUP_V1) -> int | None:
    """The cgroup's CPU quota as whole CPUs (rounded up), or None where there is none or it cannot be read."""
    try:
        quota, period = v2.read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = v1[0].read_text().strip(), v1[1].read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, bounded by the cgroup's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpus()
    return max(1, min(cpus, quota) if quota else cpus)


def plan_threads(cpus: int, requested: int | None = None) -> ThreadPlan:
    """The thread plan for ``requested`` threads (the user's ``--threads``) or, when None, ``cpus``
    available ones. Pure: the module docstring says why the split is what it is."""
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise ConfigError(f"threads must be a whole number >= 1, got {requested!r}")
    n = requested if requested is not None else max(1, int(cpus))
    decode = 1 if n <= 4 else n // 4
    return ThreadPlan(cpus=n, inference=n, decode=decode, opencv=1)


_plan: ThreadPlan | None = None
_inference: int | None = None  # the inference threads in force: the plan's, or fewer under the governor


def apply_threads(requested: int | None = None) -> ThreadPlan:
    """Make :func:`plan_threads`' plan the process's: torch's and OpenCV's pools now, ONNX Runtime's sessions and
    the decoder when they are created. Returns the plan. Calling it again with another count replaces it."""
    global _plan
    import cv2

    plan = plan_threads(available_cpus(), requested)
    if plan != _plan:
        cv2.setNumThreads(plan.opencv)
        _plan = plan
    set_inference_threads(plan.inference)
    return plan


def current_plan() -> ThreadPlan:
    """The plan in force: :func:`apply_threads`' last, or the default one (not applied: reading it imports no
    torch, so that the reader, which takes its decoder threads from it, starts without torch)."""
    return _plan if _plan is not None else _default_plan()


@functools.cache
def _default_plan() -> ThreadPlan:
    """The plan for the CPUs available when first asked (the sessions ask at every call until a plan is applied)."""
    return plan_threads(available_cpus())


def inference_threads() -> int:
    """The inference threads in force now (ONNX Runtime's runners pick their session by it)."""
    return _inference if _inference is not None else current_plan().inference


def set_inference_threads(n: int) -> None:
    """Make ``n`` the inference threads: torch's pool now, ONNX Runtime's from its next call."""
    global _inference
    import torch

    if n != _inference:
        torch.set_num_threads(n)
        _inference = n


def threads_for(plan: ThreadPlan, others: float) -> int:
    """Inference threads when other processes keep ``others`` of the plan's CPUs busy: the CPUs left, rounded,
    at least one and at most the plan's. Pure."""
    return max(1, min(plan.inference, round(plan.cpus - max(0.0, others))))


class CpuSampler:
    """How many of this process's CPUs other processes kept busy since the last sample: the busy time of the CPUs in
    the affinity mask (``/proc/stat``) less this process's own CPU time, per second of wall time."""

    def __init__(self, stat: Path = Path("/proc/stat")):
        self.stat = stat
        self.cpus = {f"cpu{c}" for c in os.sched_getaffinity(0)}
        self.tick = os.sysconf("SC_CLK_TCK")
        self.last = self._read()

    def _read(self) -> tuple[float, float, float]:
        busy = 0
        for line in self.stat.read_text().splitlines():
            name, *values = line.split()
            if name in self.cpus:
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
                busy += user + nice + system + irq + softirq + steal
        return time.monotonic(), busy / self.tick, time.process_time()

    def sample(self) -> float:
        now = self._read()
        (t0, busy0, own0), (t1, busy1, own1) = self.last, now
        self.last = now
        return max(0.0, (busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-3)


class ThreadGovernor:
    """Gives inference the CPUs other processes leave free, re-measured every ``interval`` seconds of a run
    (:meth:`tick`, once per frame). Made by :meth:`for_run`: only where the thread count is taplab's to choose."""

    def __init__(self, plan: ThreadPlan, sampler: CpuSampler, interval: float = 1.0):
        self.plan, self.sampler, self.interval = plan, sampler, interval
        self.next = time.monotonic() + interval

    @classmethod
    def for_run(cls, requested: int | None) -> ThreadGovernor | None:
        """A governor for a run with ``threads=requested``: None where the user fixed the count, where a cgroup quota
        (not the affinity mask) bounds the CPUs (``/proc/stat`` then counts other containers' work), or where
        ``/proc/stat`` cannot be read."""
        plan = current_plan()
        if requested is not None or plan.inference < 2:
            return None
        try:
            sampler, quota = CpuSampler(), cgroup_cpus()
            if quota is not None and quota < len(sampler.cpus):
                return None
        except (OSError, ValueError, AttributeError):
            return None
        return cls(plan, sampler)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next:
            self.next = now + self.interval
            set_inference_threads(threads_for(self.plan, self.sampler.sample()))

    def close(self) -> None:
        """The plan's thread count again: the next run starts from a quiet machine's count."""
        set_inference_threads(self.plan.inference)


def available_memory() -> int | None:
    """Bytes of memory available to new processes: ``MemAvailable``, bounded by the cgroup's limit; None where
    neither can be read."""
    found = []
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            found.append(int(text))
        break
    return min(found) if found else None
