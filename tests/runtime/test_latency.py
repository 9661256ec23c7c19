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
    """Pooled RGB as 'logits'; from the ``gate_from``-th call on, each forward waits for ``gate``. A fake that
    isolates the latency policy: its forward's Python is the point, so torch runs it (an exported graph has none)."""

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


def _inline_logits(clip, **options):
    """The same run without a budget, frame by frame as the budgeted one warps (no interpolation; no key-frame
    blend, which a budget's key frames do without)."""
    run = Segmenter(GatedModel(10**9), engine="torch", interpolation=False, key_blend=0, **options)
    return {r.index: r.logits for r in run.run(clip, logits=True)}


def test_a_late_key_frame_holds_then_catches_up_exactly(translation_clip):
    inline = _inline_logits(translation_clip, rgc=False, rgfs=False)
    model = GatedModel(gate_from=2)  # the probe pass, the first key frame; then the gate
    run = Segmenter(model, engine="torch", rgc=False, rgfs=False, latency_budget=0.1).run(translation_clip, logits=True, live=True)
    results = [next(run) for _ in range(15)]  # frames 0..14: the second I-frame (12) is over budget
    model.gate.set()  # (before the checks: the stream goes on meanwhile, and late frames would be skipped)
    assert model.finished.wait(10)
    later = list(run)  # frames 15..23: the key frame's features adopted, carried forward by the motion since
    kinds = [r.kind for r in results]
    # (a loaded machine may make a warped frame late enough to skip)
    assert kinds[0] == "key-I" and set(kinds[1:12]) <= {"warp", "skip"} and kinds[12] == "hold"
    torch.testing.assert_close(results[12].logits, inline[11])  # the key frame as the last anchor saw it
    assert results[12].key_index == 0 and 0.05 < results[12].latency < 0.3  # waited for the CNN within budget
    meanwhile = [r for r in results[13:] if r.kind == "warp"]
    assert meanwhile and all(r.key_index == 0 and not torch.equal(r.logits, inline[r.index]) for r in meanwhile)
    assert [r.index for r in later] == list(range(15, 24))
    caught_up = [r for r in later if r.key_index == 12]
    assert len(caught_up) >= 6
    for r in caught_up:
        torch.testing.assert_close(r.logits, inline[r.index])


def test_frames_before_the_first_key_frames_features_are_skipped_then_exact(translation_clip):
    inline = _inline_logits(translation_clip, rgc=False, rgfs=False)
    model = GatedModel(gate_from=1)  # the first key frame's CNN waits for the test
    run = Segmenter(model, engine="torch", rgc=False, rgfs=False, latency_budget=0.1).run(translation_clip, logits=True, live=True)
    first = [next(run) for _ in range(4)]
    assert [r.kind for r in first] == ["skip"] * 4 and all(r.labels is None and r.logits is None for r in first)
    model.gate.set()
    rest = [r for r in run if r.index < 12]
    assert rest[-1].index == 11 and all(r.kind in ("skip", "warp") for r in rest)
    warped = [r for r in rest if r.kind == "warp"]
    assert len(warped) >= 5 and all(r.key_index == 0 for r in warped)
    for r in warped:  # the skipped frames' vectors carried the key frame's features on exactly
        torch.testing.assert_close(r.logits, inline[r.index])


def test_key_frames_whose_cnn_fits_the_budget_are_shown_at_once(translation_clip):
    results = list(Segmenter(GatedModel(10**9), engine="torch", rgc=False, rgfs=False, latency_budget=60.0).run(translation_clip))
    assert [r.kind for r in results] == (["key-I"] + ["warp"] * 11) * 2


def test_closing_a_run_with_a_key_frame_pending_ends_its_thread(translation_clip):
    model = GatedModel(gate_from=2)
    run = Segmenter(model, engine="torch", rgc=False, rgfs=False, latency_budget=1e-9).run(translation_clip)
    for _ in range(13):
        next(run)
    threading.Timer(0.3, model.gate.set).start()  # the background CNN finishes shortly
    run.close()
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name.startswith("taplab-key")]


def test_latency_budget_is_validated():
    with pytest.raises(ConfigError, match="latency_budget must be > 0"):
        Segmenter(GatedModel(0), engine="torch", latency_budget=0)
    with pytest.raises(ConfigError, match="needs propagation='accumulate'"):
        Segmenter(GatedModel(0), engine="torch", latency_budget=0.1, propagation="chain")


class SlowModel(GatedModel):
    """The stand-in, taking ``seconds`` per whole 128x256 frame and a proportional share per region,
    as a CNN's cost grows with its input."""

    def __init__(self, seconds: float):
        super().__init__(gate_from=10**9)
        self.seconds = seconds

    def forward(self, x):
        if x.shape[-1] > 64:
            time.sleep(self.seconds * x.shape[-1] * x.shape[-2] / (128 * 256))
        return super().forward(x)


# a warped frame at 128x256 costs a few ms; the bound leaves room for a loaded machine
P_FRAME = 0.05


def test_a_slow_model_keeps_latency_within_budget_and_catches_up_after_each_key_frame(translation_clip):
    budget = 0.1
    results = list(Segmenter(SlowModel(0.25), engine="torch", rgfs=False, rgc_threshold=0, latency_budget=budget).run(
        translation_clip, live=True))
    assert [r.index for r in results] == list(range(24))
    assert all(r.latency <= budget + P_FRAME for r in results), [round(r.latency, 3) for r in results]
    kinds = [r.kind for r in results]
    # the first key frame's CNN takes 0.25 s: no output until it is ready (frames 40 ms apart)
    assert kinds[0] == "skip" and 4 <= kinds.index(next(k for k in kinds if k != "skip")) <= 9
    assert kinds[12] == "hold"
    for key in (0, 12):  # after each key frame, within the CNN's time, the output carries its features
        gop = [r for r in results[key:key + 12] if r.labels is not None]
        assert gop[-1].key_index == key
        assert all(r.index - key <= 9 for r in gop if r.key_index != key)
    # RGC (a 64x64 region: an eighth of the CNN, 31 ms) fits in the budget except while the key CNN runs
    corrected = [r for r in results if r.kind == "warp+RGC"]
    assert len(corrected) >= 6 and {r.index < 12 for r in corrected} == {True, False}
    assert all(r.shed == ("rgc",) for r in results if r.kind == "warp")


def test_a_cnn_slower_than_the_gop_still_has_its_features_used(translation_clip):
    # 0.6 s a CNN against 0.48 s between I-frames: the second I-frame arrives while the first one's CNN
    # runs; that one is not dropped but carried to the second I-frame when it finishes
    results = list(Segmenter(SlowModel(0.6), engine="torch", rgc=False, rgfs=False, latency_budget=0.1).run(
        translation_clip, live=True))
    shown = [r for r in results if r.labels is not None]
    assert len(shown) >= 5 and all(r.key_index == 0 and r.index > 12 for r in shown)
    assert all(r.latency <= 0.1 + P_FRAME for r in results)


def test_b_frames_under_a_budget_are_warped_or_skipped_never_run_in_line(tmp_path):
    from taplab.codec import encode
    from tests.conftest import DX, DY, translation_frames

    clip = encode(translation_frames(24, 128, 256, DX, DY), tmp_path / "b.mp4", gop=12, codec="mpeg4", bframes=2)
    results = list(Segmenter(SlowModel(0.25), engine="torch", rgc=False, rgfs=False, latency_budget=0.1).run(clip, live=True))
    b_frames = [r for r in results if r.pict_type == "B"]
    assert len(b_frames) >= 12 and {r.kind for r in b_frames} <= {"warp", "skip"}
    assert all(r.future is None for r in b_frames)  # from the past side alone: no hold for the future anchor
    assert sum(r.kind == "warp" for r in b_frames) >= 6
    assert all(r.latency <= 0.1 + P_FRAME for r in results), [round(r.latency, 3) for r in results]


def test_modules_that_cannot_fit_in_the_budget_are_shed_before_they_run(translation_clip):
    budget = 0.02  # below RGC's expected 25 ms (0.2 s / 8)
    results = list(Segmenter(SlowModel(0.2), engine="torch", rgfs=False, rgc_threshold=0, latency_budget=budget).run(
        translation_clip, live=True))
    warped = [r for r in results if r.kind not in ("skip", "hold") and not r.is_key]
    assert len(warped) >= 8 and all(r.kind == "warp" and r.shed == ("rgc",) for r in warped)
    assert all(r.latency <= budget + P_FRAME for r in results)


def test_one_background_cnn_at_a_time_rgfs_frames_meanwhile_are_warped(translation_clip):
    results = list(Segmenter(SlowModel(0.15), engine="torch", rgc=False, rgfs_threshold=0, latency_budget=0.05).run(
        translation_clip, live=True))
    kinds = [r.kind for r in results]
    assert "key-RGFS" not in kinds and 3 <= kinds.count("hold") <= 8  # each P-frame is selected; one CNN at a time
    assert all(r.shed == ("rgfs",) for r in results if r.kind == "warp") and kinds.count("warp") >= 8


def test_late_frames_are_skipped_when_a_newer_one_is_waiting(translation_clip):
    """The scheduler alone (taplab.runtime.scheduler.Scheduler), with arrival times set by the test."""
    from taplab.codec import open_video
    from taplab.runtime.scheduler import Scheduler

    inline = _inline_logits(translation_clip, rgc=False, rgfs=False)
    seg = Segmenter(GatedModel(10**9), engine="torch", rgc=False, rgfs=False, latency_budget=0.05)
    results = []
    with open_video(translation_clip) as video:
        run = Scheduler(seg.model, seg.config, video.height, video.width, want_logits=True)
        for frame in video:
            prep = {"decode": 0.0}
            run.prepare((frame, prep))
            late = frame.index % 3 == 1  # arrived a second ago
            newer = late and frame.index != 22  # frame 22 is late with nothing newer: still shown
            results += run.step(frame, prep, arrival=time.perf_counter() - (1.0 if late else 0.0), newer=newer)
        results += run.flush()
    skipped = [r.index for r in results if r.kind == "skip"]
    assert skipped == [i for i in range(1, 24, 3) if i != 22]
    assert all(r.labels is None and r.logits is None and r.key_index is None for r in results if r.kind == "skip")
    assert [r.kind for r in results if r.index in (0, 12, 22)] == ["key-I", "key-I", "warp"]
    for r in results:  # skipping keeps the motion chain: every output equals the unhurried run's
        if r.kind != "skip":
            torch.testing.assert_close(r.logits, inline[r.index])


def test_segment_live_reports_latency(translation_clip, tmp_path, capsys):
    import json

    from taplab.cli import main

    main(["segment", str(translation_clip), "--out", str(tmp_path / "m"), "--live", "--latency-budget", "0.5",
          "--no-rgc", "--no-rgfs", "--no-fusion", "--limit", "6"])
    log = json.loads((tmp_path / "m" / "frames.json").read_text())
    assert len(log) == 6 and all(r["latency_ms"] > 0 and r["shed"] == [] for r in log)
    assert "latency (arrival to result, frames with output): p50" in capsys.readouterr().out


def test_the_run_summary_counts_held_key_frames_and_leaves_skipped_frames_out_of_latency():
    from taplab.io.summary import RunSummary
    from taplab.runtime import FrameResult

    labels = np.zeros((2, 2), np.uint8)
    summary = RunSummary()
    for kind, latency in [("skip", 0.5), ("key-I", 0.04), ("warp", 0.01), ("hold", 0.09), ("warp", 0.02)]:
        summary.add(FrameResult(0, "P", kind, None if kind == "skip" else labels, latency=latency))
    assert summary.key_share == 2 / 5 and sorted(summary.latencies) == [0.01, 0.02, 0.04, 0.09]
    assert "skipped: 1" in summary.format() and "max 90 ms" in summary.format()


def test_a_budget_on_a_file_read_without_pacing_warns(translation_clip):
    import warnings

    from taplab.errors import LatencyWarning

    seg = Segmenter(GatedModel(10**9), engine="torch", rgc=False, rgfs=False, latency_budget=0.1)
    with pytest.warns(LatencyWarning, match="without live pacing"):
        run = seg.run(translation_clip)
        next(run)
        run.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatencyWarning)
        run = seg.run(translation_clip, live=True)
        next(run)
        run.close()
