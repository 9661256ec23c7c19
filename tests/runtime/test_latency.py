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
