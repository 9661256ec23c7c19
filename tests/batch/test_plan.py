"""How many workers and threads a batch runs (taplab.batch.plan): pure decisions."""

import pytest

from taplab.batch.plan import WORKER_MEMORY, WorkerPlan, plan_ray, plan_workers
from taplab.errors import ConfigError

GiB = 1 << 30


@pytest.mark.parametrize("cpus, memory, videos, workers, threads, expected", [
    (2, 24 * GiB, 8, None, None, WorkerPlan(2, 1)),      # one single-threaded worker per CPU
    (2, 24 * GiB, 1, None, None, WorkerPlan(1, None)),   # one video: in this process, the thread policy's threads
    (1, 24 * GiB, 8, None, None, WorkerPlan(1, None)),
    (16, 3 * WORKER_MEMORY, 40, None, None, WorkerPlan(3, 5)),  # bounded by memory, the CPUs shared out
    (16, None, 40, None, None, WorkerPlan(16, 1)),       # memory unknown: not bounded by it
    (8, 24 * GiB, 40, None, 2, WorkerPlan(4, 2)),        # --threads 2: a worker per two CPUs
    (2, 24 * GiB, 2, 4, None, WorkerPlan(2, 1)),         # never more workers than videos
    (2, 24 * GiB, 8, 4, None, WorkerPlan(4, 1)),         # as many as asked, at least one thread each
    (8, 24 * GiB, 8, 1, 3, WorkerPlan(1, 3)),
])
def test_worker_plans(cpus, memory, videos, workers, threads, expected):
    assert plan_workers(cpus, memory, videos, workers, threads) == expected


@pytest.mark.parametrize("cpus, gpus, device, workers, threads, expected", [
    (16, 0, "auto", None, None, WorkerPlan(16, 1)),
    (16, 0, "cpu", 4, None, WorkerPlan(4, 1)),
    (16, 0, "auto", None, 4, WorkerPlan(4, 4)),
    (64, 4, "auto", None, None, WorkerPlan(4, 16, 1.0)),  # one actor per GPU, the CPUs shared out
    (64, 4, "cuda", 8, None, WorkerPlan(8, 8, 0.5)),      # two actors per GPU
    (64, 4, "cpu", None, None, WorkerPlan(64, 1)),        # a GPU cluster asked for CPUs
])
def test_ray_plans(cpus, gpus, device, workers, threads, expected):
    assert plan_ray(cpus, gpus, device, workers, threads) == expected


def test_impossible_plans_are_refused():
    with pytest.raises(ConfigError, match="no GPU"):
        plan_ray(16, 0, "cuda")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="workers must be a whole number"):
            plan_workers(2, None, 4, workers=bad)
