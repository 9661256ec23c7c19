"""The process's thread policy: CPUs from the affinity mask and the cgroup quota, one count per pool, applied."""

import os

import cv2
import pytest
import torch

from taplab.errors import ConfigError
from taplab.runtime import RuntimeConfig, Segmenter
from taplab.threads import (
    CpuSampler,
    ThreadGovernor,
    apply_threads,
    available_cpus,
    cgroup_cpus,
    current_plan,
    inference_threads,
    plan_threads,
    threads_for,
)


def test_the_plan_gives_inference_every_cpu_and_decoding_one_on_small_machines():
    assert plan_threads(2) == plan_threads(1, requested=2)
    two = plan_threads(2)
    assert (two.cpus, two.inference, two.decode, two.opencv) == (2, 2, 1, 1)
    assert (plan_threads(1).inference, plan_threads(1).decode) == (1, 1)
    assert (plan_threads(16).inference, plan_threads(16).decode) == (16, 4)
    assert plan_threads(64, requested=3).inference == 3  # the user's count wins over the CPUs seen
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="threads must be a whole number"):
            plan_threads(2, requested=bad)


@pytest.mark.parametrize("v2, v1, expected", [
    ("max 100000\n", None, None),
    ("150000 100000\n", None, 2),  # 1.5 CPUs of quota: 2 threads, one of them half-used
    ("50000 100000\n", None, 1),
    (None, ("200000", "100000"), 2),
    (None, ("-1", "100000"), None),
    (None, None, None),
])
def test_the_cgroup_quota_in_cpus(tmp_path, v2, v1, expected):
    v2_path, v1_paths = tmp_path / "cpu.max", (tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us")
    if v2 is not None:
        v2_path.write_text(v2)
    if v1 is not None:
        for path, text in zip(v1_paths, v1):
            path.write_text(text)
    assert cgroup_cpus(v2_path, v1_paths) == expected


def test_available_cpus_are_within_the_affinity_mask():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_applying_a_plan_sets_torchs_and_opencvs_pools():
    before = current_plan()
    try:
        plan = apply_threads(1)
        assert plan.inference == 1 and torch.get_num_threads() == 1 and cv2.getNumThreads() == 1
        assert current_plan() == plan
    finally:
        apply_threads(None if before.cpus == available_cpus() else before.cpus)
    assert torch.get_num_threads() == before.inference


def test_threads_is_a_runtime_option_that_the_segmenter_applies(translation_clip):
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        RuntimeConfig(threads=0)
    before = torch.get_num_threads()
    try:
        segmenter = Segmenter("default", threads=1, rgc=False)
        assert torch.get_num_threads() == 1 and current_plan().inference == 1
        labels = [r.labels for r in segmenter.run(translation_clip)]
    finally:
        apply_threads(None)
    assert torch.get_num_threads() == before
    again = [r.labels for r in Segmenter("default", rgc=False).run(translation_clip)]
    assert all((a == b).all() for a, b in zip(labels, again))  # the thread count changes no label


def test_inference_gets_the_cpus_other_processes_leave():
    two, eight = plan_threads(2), plan_threads(8)
    assert [threads_for(two, busy) for busy in (0.0, 0.3, 0.6, 1.0, 1.9, 5.0)] == [2, 2, 1, 1, 1, 1]
    assert [threads_for(eight, busy) for busy in (-1.0, 0.0, 2.2, 7.5)] == [8, 8, 6, 1]


def test_the_sampler_counts_other_processes_busy_time(tmp_path):
    """A written /proc/stat isolates the arithmetic; the real file is read in the test after this."""
    stat = tmp_path / "stat"
    cpus = sorted(os.sched_getaffinity(0))
    hz = os.sysconf("SC_CLK_TCK")

    def write(busy_ticks: int) -> None:
        lines = ["cpu  1 1 1 1 1 1 1 1 0 0"]  # the total line is not read: only the affinity mask's CPUs
        lines += [f"cpu{c} {busy_ticks} 0 0 500 0 0 0 0 0 0" for c in cpus]
        lines += ["cpu999 100000 0 0 0 0 0 0 0 0 0"]  # a CPU outside the mask
        stat.write_text("\n".join(lines) + "\n")

    write(0)
    sampler = CpuSampler(stat)
    write(hz)  # one second of busy time on every CPU of the mask
    t0, busy0, own0 = sampler.last
    sampler.last = (t0 - 2.0, busy0, own0 - 0.5)  # two seconds ago; 0.5 s of it was this process's own
    others = sampler.sample()
    assert others == pytest.approx((len(cpus) - 0.5) / 2, abs=0.05)


def test_the_governor_lowers_inference_threads_while_the_cpu_is_busy_and_restores_them():
    import subprocess
    import sys
    import time

    from taplab.nets.engines import OrtRunner

    apply_threads(2)
    try:
        governor = ThreadGovernor(plan_threads(2), CpuSampler(), interval=0.0)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)  # the hog's busy second, measured by the next tick
            governor.tick()
        finally:
            hog.kill()
            hog.wait()
        assert inference_threads() == 1 and torch.get_num_threads() == 1
        runner = OrtRunner(torch_onnx(), torch.device("cpu"), ["CPUExecutionProvider"])
        runner(torch.zeros(1, 3, 8, 8))
        governor.close()
        assert inference_threads() == 2 and torch.get_num_threads() == 2
        runner(torch.zeros(1, 3, 8, 8))
        assert sorted(runner._sessions) == [1, 2]  # one session per thread count asked for
    finally:
        apply_threads(None)


def torch_onnx() -> bytes:
    from taplab.nets.onnx import export_graph, image_graph

    return export_graph(torch.nn.Conv2d(3, 2, 1), (torch.zeros(1, 3, 8, 8),), image_graph("conv"))
