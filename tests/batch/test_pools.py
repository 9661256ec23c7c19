"""drive(), the loop that hands videos to a pool's slots, on a fake pool: it isolates the loop's own decisions
(which slot gets which video, what a worker's death does) from real workers, whose tests are in test_batch.py."""

from concurrent.futures import Future
from pathlib import Path

import pytest

from taplab.batch.inputs import Job
from taplab.batch.plan import WorkerPlan
from taplab.batch.pools import MAX_DEATHS, WorkerDied, drive
from taplab.batch.records import VideoRecord
from taplab.errors import ConfigError, ModelError


class FakePool:
    """Slots whose futures are done at once: a video named ``die*`` kills the slot's worker, ``bad-model`` fails to
    set one up; any other is done."""

    name = "fake"

    def __init__(self, workers):
        self.plan, self.log, self.restarts = WorkerPlan(workers, 1), [], []

    def submit(self, slot, job):
        self.log.append((slot, job.name))
        future = Future()
        if job.name.startswith("die"):
            future.set_exception(WorkerDied("its process ended"))
        elif job.name == "bad-model":
            future.set_exception(ModelError("no such model"))
        else:
            future.set_result(VideoRecord(job.name, job.source, "", "done"))
        return future

    def reports(self):
        return [("a", 3)]

    def restart(self, slot):
        self.restarts.append(slot)


def jobs(*names):
    return [Job(f"{n}.mp4", n) for n in names]


def test_each_free_slot_takes_the_next_video_and_a_dead_worker_fails_its_video_only():
    pool, reports = FakePool(2), []
    records = list(drive(pool, jobs("a", "die1", "b", "c"), Path("out"), lambda *r: reports.append(r)))
    assert [(r.name, r.status) for r in records] == [("a", "done"), ("die1", "failed"), ("b", "done"), ("c", "done")]
    assert records[1].error == "the worker running it died (its process ended)" and records[1].out == "out/die1"
    assert pool.log == [(0, "a"), (1, "die1"), (1, "b"), (0, "c")] and pool.restarts == [1]
    assert reports and reports[0] == ("a", 3)


def test_a_worker_that_keeps_dying_ends_the_batch():
    pool, seen = FakePool(2), []
    with pytest.raises(ConfigError, match=f"a worker died on {MAX_DEATHS} videos in a row"):
        for record in drive(pool, jobs(*(f"die{k}" for k in range(10))), Path("out"), lambda *r: None):
            seen.append(record.status)
    assert seen == ["failed"] * (2 * (MAX_DEATHS - 1) + 1)  # both slots die on every video: one reaches the count


def test_a_worker_that_cannot_set_up_ends_the_batch_with_its_error():
    with pytest.raises(ModelError, match="no such model"):
        list(drive(FakePool(1), jobs("bad-model", "a"), Path("out"), lambda *r: None))
