"""A latency budget: key frames over budget run their CNN in the background and are carried forward
when ready. The model is a stand-in whose forward waits on the test (said so here: it isolates the
scheduling); decoding and motion are real."""

import threading
import time

import numpy as np
import pytest
import torch

from taplab.errors import ConfigError
from taplab.runtime import Segmenter


class GatedModel(torch.nn.Module):
    """Pooled RGB as 'logits'; from the ``gate_from``-th call on, each forward waits for ``gate``."""

    def __init__(self, gate_from: int):
        super().__init__()
        self.pool = torch.nn.Sequential(torch.nn.AvgPool2d(9, stride=1, padding=4, count_include_pad=False),
                                        torch.nn.AvgPool2d(4))
        self.calls, self.gate_from = 0, gate_from
        self.gate, self.finished = threading.Event(), threading.Event()

    def forward(self, x):
        self.calls += 1
        if self.calls > self.gate_from and x.shape[-1] > 64:  # not the loader's probe pass
            assert self.gate.wait(10), "the test never opened the gate"
        out = self.pool(x)
        if self.calls > self.gate_from:
            self.finished.set()
        return out


def test_a_late_key_frame_holds_then_catches_up_exactly(translation_clip):
    inline = {r.index: r.logits for r in Segmenter(GatedModel(10**9), rgc=False, rgfs=False).run(
        translation_clip, logits=True)}
    model = GatedModel(gate_from=2)  # the probe pass, the first key frame; then the gate
    seg = Segmenter(model, rgc=False, rgfs=False, latency_budget=1e-9)
    run = seg.run(translation_clip, logits=True)
    results = [next(run) for _ in range(14)]  # frames 0..13: the second I-frame (12) is over budget
    assert [r.kind for r in results] == ["key-I"] + ["warp"] * 11 + ["hold", "warp"]
    np.testing.assert_array_equal(results[12].labels, results[11].labels)  # holds the last output
    assert not torch.equal(results[13].logits, inline[13])  # warped from the stand-in meanwhile
    model.gate.set()
    assert model.finished.wait(10)
    time.sleep(0.2)  # the worker returns its result
    later = [next(run) for _ in range(2)]  # frames 14, 15: the key frame's features, carried forward
    for r in later:
        torch.testing.assert_close(r.logits, inline[r.index])
    run.close()


def test_within_budget_key_frames_run_in_line(translation_clip):
    results = list(Segmenter(GatedModel(10**9), rgc=False, rgfs=False, latency_budget=60.0).run(translation_clip))
    assert [r.kind for r in results] == (["key-I"] + ["warp"] * 11) * 2


def test_closing_a_run_with_a_key_frame_pending_ends_its_thread(translation_clip):
    model = GatedModel(gate_from=2)
    run = Segmenter(model, rgc=False, rgfs=False, latency_budget=1e-9).run(translation_clip)
    for _ in range(13):
        next(run)
    threading.Timer(0.3, model.gate.set).start()  # the background CNN finishes shortly
    run.close()
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("taplab-key")]


def test_latency_budget_is_validated():
    with pytest.raises(ConfigError, match="latency_budget must be > 0"):
        Segmenter(GatedModel(0), latency_budget=0)
    with pytest.raises(ConfigError, match="needs propagation='accumulate'"):
        Segmenter(GatedModel(0), latency_budget=0.1, propagation="chain")


class SlowModel(GatedModel):
    """The stand-in, taking ``seconds`` per forward pass (whole frame or RGC region)."""

    def __init__(self, seconds: float):
        super().__init__(gate_from=10**9)
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return super().forward(x)


def test_live_pacing_delivers_frames_at_the_videos_rate_and_records_latency(translation_clip):
    start = time.perf_counter()
    results = list(Segmenter(GatedModel(10**9), rgc=False, rgfs=False).run(translation_clip, live=True))
    elapsed = time.perf_counter() - start
    assert elapsed >= 23 / 25 - 0.02  # 24 frames at 25 frames/s: the last arrives 0.92 s after the first
    assert all(0 <= r.latency < 0.5 for r in results)
    fast = time.perf_counter()
    list(Segmenter(GatedModel(10**9), rgc=False, rgfs=False).run(translation_clip))
    assert time.perf_counter() - fast < elapsed


def test_frames_behind_the_budget_shed_rgc_and_catch_up(translation_clip):
    start = time.perf_counter()
    inline = list(Segmenter(SlowModel(0.03), rgfs=False, rgc_threshold=0).run(translation_clip))
    inline_seconds = time.perf_counter() - start
    assert {r.kind for r in inline if not r.is_key} == {"warp+RGC"} and not any(r.shed for r in inline)
    # every frame is in the file at once, so after the first key frame the output is behind a 10 ms budget
    start = time.perf_counter()
    results = list(Segmenter(SlowModel(0.03), rgfs=False, rgc_threshold=0, latency_budget=0.01).run(translation_clip))
    shed_seconds = time.perf_counter() - start
    shed = [r for r in results if r.shed]
    assert len(shed) >= 10 and all(r.kind == "warp" and r.shed == ("rgc",) and r.region is None for r in shed)
    assert shed_seconds < inline_seconds - 10 * 0.03  # at least ten 30 ms region passes saved


def test_segment_live_reports_latency(translation_clip, tmp_path, capsys):
    import json

    from taplab.cli import main

    main(["segment", str(translation_clip), "--out", str(tmp_path / "m"), "--live", "--latency-budget", "0.5",
          "--no-rgc", "--no-rgfs", "--no-fusion", "--limit", "6"])
    log = json.loads((tmp_path / "m" / "frames.json").read_text())
    assert len(log) == 6 and all(r["latency_ms"] > 0 and r["shed"] == [] for r in log)
    assert "latency (arrival to result): p50" in capsys.readouterr().out
