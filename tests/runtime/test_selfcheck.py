"""Corrections that check themselves against the CNN at key frames (``self_check``): the choice, the probes'
schedule and scores, and whole runs with real decoded clips and real correction networks."""

import itertools
import json
import math

import cv2
import pytest
import torch

from taplab.codec.encoder import encode
from taplab.codec.reader import open_video
from taplab.data.synth import SynthConfig, write_clip
from taplab.io.summary import RunSummary
from taplab.metrics import fidelity
from taplab.nets.conet import CoNet, save_correction
from taplab.nets.loader import load_model
from taplab.runtime import RuntimeConfig, Segmenter
from taplab.runtime.result import Module
from taplab.runtime.selfcheck import BEHIND, EVERY, MIN_PROBES, WINDOW, SelfCheck, behind, choose, variant_name

F, R = Module.FUSION, Module.RGC
NONE, FUSED, RGC, BOTH = frozenset(), frozenset({F}), frozenset({R}), frozenset({F, R})


def test_choose_takes_the_best_unless_fewer_stages_score_within_the_margin():
    assert choose({NONE: 60.0, FUSED: 65.0, RGC: 61.0, BOTH: 66.0}, margin=1.0) == FUSED  # 1.0 below the best
    assert choose({NONE: 60.0, FUSED: 64.0, RGC: 61.0, BOTH: 66.0}, margin=1.0) == BOTH
    assert choose({NONE: 60.0, FUSED: 55.0, RGC: 59.5, BOTH: 56.0}, margin=1.0) == NONE
    assert choose({NONE: 60.0, FUSED: 55.0, RGC: 62.0, BOTH: 56.0}, margin=1.0) == RGC
    # between equally many stages the higher score, whatever the order they come in
    assert choose({RGC: 70.0, FUSED: 70.5, NONE: 10.0}, margin=1.0) == FUSED
    assert choose({FUSED: 70.0, RGC: 70.5, NONE: 10.0}, margin=1.0) == RGC
    # nothing scored (NaN) counts for nothing; all NaN keeps every stage
    assert choose({NONE: math.nan, FUSED: 50.0}, margin=1.0) == FUSED
    assert choose({NONE: math.nan, FUSED: math.nan}, margin=1.0) == FUSED


def test_probes_are_due_at_every_key_frame_then_one_in_every():
    check = SelfCheck(BOTH, 3, RuntimeConfig())
    check.warped = True  # the run has warped a frame
    due = []
    for _ in range(WINDOW + 3 * EVERY):
        due.append(check.due())
        if due[-1]:
            check.probes += 1
    assert due[:WINDOW] == [True] * WINDOW
    assert due[WINDOW:] == [(WINDOW + i + 1) % EVERY == 0 for i in range(3 * EVERY)]
    for cfg in (RuntimeConfig(self_check=False), RuntimeConfig(latency_budget=0.1), RuntimeConfig(propagation="chain"),
                RuntimeConfig(ffw=False)):
        assert not SelfCheck(BOTH, 3, cfg).active and not SelfCheck(BOTH, 3, cfg).due()
    assert not SelfCheck(NONE, 3, RuntimeConfig()).active  # nothing to check
    fresh = SelfCheck(BOTH, 3, RuntimeConfig())
    assert not fresh.due()  # the run has warped no frame yet: nothing to choose for
    fresh.warped = True
    assert fresh.due() and fresh.due()


def test_scores_are_the_windows_fidelity_and_the_choice_waits_for_min_probes():
    """A unit test of the scoring on hand-made label maps (no run): the uncorrected variant agrees with the CNN on
    one half of the grid, the fused one everywhere."""
    check = SelfCheck(FUSED, 2, RuntimeConfig())
    cnn = torch.zeros(2, 4, 4)
    cnn[1, :, :2] = 1.0  # CNN labels: class 1 on the left half, 0 on the right
    truth = cnn.max(0).indices
    half = torch.ones(4, 4, dtype=torch.int64)
    records = []
    for _ in range(MIN_PROBES):
        assert check.kept == FUSED  # configured until the choice
        records.append(check.score({NONE: half, FUSED: truth.clone()}, cnn))
    assert records[0]["kept"] == "fused" and records[-1]["kept"] == "fused"
    assert records[-1]["fidelity"] == {"warp": 25.0, "fused": 100.0} and records[-1]["probes"] == MIN_PROBES
    # the CNN turns to class 1 everywhere: now the uncorrected variant is right, and once the window holds only
    # such probes, the choice follows
    turned = torch.zeros(2, 4, 4)
    turned[1] = 1.0
    record = check.score({NONE: half, FUSED: truth.clone()}, turned)
    # one probe later the window's sum still prefers fused (the last probe alone would not): class 1 24/32 and class 0
    # 0 for warp, 16/24 and 8/16 for fused
    assert record["fidelity"] == {"warp": 37.5, "fused": 58.33} and check.kept == FUSED
    for _ in range(WINDOW):
        record = check.score({NONE: half, FUSED: truth.clone()}, turned)
    # fused is now far behind (75 points): left out of the choice, its score reported apart
    assert record["fidelity"] == {"warp": 100.0} and record["behind"] == {"fused": 25.0}
    assert check.kept == NONE and record["kept"] == "warp" and check.behind == {F}
    assert variant_name(BOTH) == "fused+RGC" and variant_name(RGC) == "warp+RGC"


def test_behind_names_the_stages_every_combination_of_which_lies_far_below_the_kept_one():
    scores = {NONE: 70.0, FUSED: 60.0, RGC: 69.0, BOTH: 62.0}
    assert behind(scores, NONE, margin=4.0) == {F}  # 10 and 8 below
    assert behind(scores, NONE, margin=9.0) == frozenset()  # fused+RGC is 8 below: within 9
    assert behind({NONE: 70.0, FUSED: 60.0, RGC: 69.0, BOTH: 67.0}, NONE, margin=4.0) == frozenset()  # one is near
    assert behind({NONE: 70.0, FUSED: 60.0, RGC: 60.0, BOTH: 60.0}, NONE, margin=4.0) == {F, R}
    assert behind(scores, FUSED, margin=4.0) == frozenset()  # a kept stage is never behind itself
    assert behind({NONE: math.nan, FUSED: 10.0}, NONE, margin=4.0) == frozenset()  # the kept one unscored
    assert behind({NONE: 70.0, FUSED: math.nan}, NONE, margin=4.0) == {F}  # nothing says it is near


def _labels(agree: int) -> torch.Tensor:
    """Labels that agree with the CNN's (class 0 everywhere) on the first ``agree`` of 16 cells, class 1 elsewhere."""
    labels = torch.ones(16, dtype=torch.int64)
    labels[:agree] = 0
    return labels.reshape(4, 4)


def test_a_stage_far_behind_is_probed_one_time_in_every_and_compared_on_the_same_frames():
    """A unit test of the schedule on hand-made label maps (no run): probes apply only the stages
    :meth:`SelfCheck.probing` names, as the runtime's do."""
    check = SelfCheck(FUSED, 2, RuntimeConfig())
    cnn = torch.zeros(2, 4, 4)
    cnn[0] = 1.0  # the CNN says class 0 everywhere
    # an easy key frame: warp agrees on 15 cells of 16, fused on 10: fused falls far behind
    assert check.probing() == FUSED
    record = check.score({NONE: _labels(15), FUSED: _labels(10)}, cnn)
    assert check.behind == {F} and check.kept == NONE and set(record["behind"]) == {"fused"}
    # the next probes leave fusion out but one in EVERY; hard key frames meanwhile (warp on 4 cells of 16) do not
    # make the fused score of the easy frame win: the choice compares combinations on the same probes
    applied = []
    for _ in range(2 * EVERY):
        stages = check.probing()
        applied.append(stages)
        variants = {NONE: _labels(4)}
        if F in stages:
            variants[FUSED] = _labels(2)  # fused is worse on the hard frames too
        check.score(variants, cnn)
        assert check.kept == NONE
    assert applied == [FUSED if (i + 1) % EVERY == 0 else NONE for i in range(2 * EVERY)]
    # fusion comes back once a probe that applies it finds it near: here far ahead
    while check.probing() != FUSED:
        check.score({NONE: _labels(4)}, cnn)
    record = check.score({NONE: _labels(4), FUSED: _labels(16)}, cnn)
    assert check.behind == frozenset() and check.kept == FUSED and record["behind"] == {}
    assert record["fidelity"]["fused"] - record["fidelity"]["warp"] > BEHIND


@pytest.fixture(scope="module")
def model():
    return load_model("default")


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """A synthetic street clip, 128x256, 30 frames, MPEG-4 GOP 6: five key frames to probe."""
    out = tmp_path_factory.mktemp("selfcheck")
    return write_clip(out, SynthConfig(height=128, width=256, frames=30, seed=31, ego_speed_mps=12), gop=6, name="c")


@pytest.fixture(scope="module")
def street_frames(street):
    with open_video(street) as video:
        return [f.image for f in video]


@pytest.fixture(scope="module")
def b_street(street_frames, tmp_path_factory):
    """The street clip re-encoded as H.264 with 2 B-frames and one I-frame: B-frames warped from both anchors."""
    return encode(street_frames, tmp_path_factory.mktemp("selfcheck-b") / "b.mp4", gop=30, codec="h264", bframes=2)


@pytest.mark.parametrize("interpolation", [True, False])
def test_probes_change_nothing_but_the_choice(street, b_street, model, monkeypatch, interpolation):
    """With the choice forced to every stage, a checked run is a run without the check, bit for bit: the probe leaves
    the anchors, the accumulated motion, fusion's memory, RGFS and the held frames as they were (MPEG-4 with I-frames,
    H.264 with B-frames and key-interval P-frames)."""
    import taplab.runtime.selfcheck as selfcheck

    monkeypatch.setattr(selfcheck, "choose", lambda scores, margin: max(scores, key=len))
    for clip, options in ((street, {}), (b_street, dict(key_interval=5))):
        checked = list(Segmenter(model, interpolation=interpolation, **options).run(clip, logits=True))
        plain = list(Segmenter(model, interpolation=interpolation, self_check=False, **options).run(clip, logits=True))
        assert sum(r.check is not None for r in checked) >= 3
        assert [r.kind for r in checked] == [r.kind for r in plain]
        for c, p in zip(checked, plain):
            torch.testing.assert_close(c.logits, p.logits, rtol=0, atol=0)


def test_the_probe_warps_a_key_frame_as_ffw_would_have(street_frames, model, monkeypatch, tmp_path):
    """The probe's uncorrected labels at a key-interval P-frame are the labels FFW gives that frame in a run where it is
    not a key frame (no interpolation: a key frame has no next key frame to blend)."""
    from taplab.ops.labels import class_map
    from taplab.runtime.corrections import Corrections

    clip = encode(street_frames, tmp_path / "long.mp4", gop=30, codec="mpeg4")
    probed, variants = {}, Corrections.variants

    def spy(self, frame, *args):
        out = variants(self, frame, *args)
        probed[frame.index] = out[frozenset()]
        return out

    monkeypatch.setattr(Corrections, "variants", spy)
    list(Segmenter(model, rgfs=False, interpolation=False, key_interval=6).run(clip))
    plain = list(Segmenter(model, rgfs=False, interpolation=False, key_interval=None, fusion=False, rgc=False)
                 .run(clip, details=True))
    assert sorted(probed) == [6, 12, 18, 24] and plain[6].kind == "warp"
    assert torch.equal(probed[6], class_map(plain[6].warped))  # the first: both runs share key frame 0 until there


def test_no_probe_where_no_frame_is_warped(street, model):
    """Every frame a key frame (a key interval of 1): nothing to choose for, so nothing is probed."""
    results = list(Segmenter(model, key_interval=1).run(street))
    assert all(r.is_key for r in results) and all(r.check is None for r in results)


def _harmful(path, model):
    """A real CoNet file whose update pushes every cell to class 18 wherever fusion applies: a correction that is
    wrong on any footage (its weights made so by hand, to isolate the check)."""
    net = CoNet(model.num_classes).eval()
    with torch.no_grad():
        net.delta.bias[18] = 1000.0
    return save_correction(path, net, model.class_names, model.stride, "default")


def test_a_correction_that_lowers_agreement_is_left_out_after_the_first_probes(street, model, tmp_path, monkeypatch):
    from taplab.runtime.corrections import Corrections

    harmful = str(_harmful(tmp_path / "h.conet.pt", model))
    # no key blend: it would carry the fused frames' output into the next key frame, and the plain run has none
    options = dict(rgc=False, rgfs=False, correction=harmful, fusion_memory=0, key_blend=0)
    fused, variants = [], Corrections.variants

    def spy(self, *args):  # which probes apply the correction network
        out = variants(self, *args)
        fused.append(FUSED in out)
        return out

    monkeypatch.setattr(Corrections, "variants", spy)
    checked = list(Segmenter(model, **options).run(street, logits=True))
    assert fused == [i % EVERY == 0 for i in range(4)]  # far behind from the first probe
    summary = RunSummary()
    for r in checked:
        summary.add(r)
    behind_fused = [r for r in checked if r.check is not None][-1].check["behind"]["fused"]  # the last probe's
    assert f"warped frames get: warp; far behind, probed less often: fused {behind_fused:.1f}" in summary.format()
    unchecked = list(Segmenter(model, self_check=False, **options).run(street, logits=True))
    plain = list(Segmenter(model, rgc=False, rgfs=False, fusion=False, key_blend=0).run(street, logits=True))
    probes = [r for r in checked if r.check is not None]
    assert [r.index for r in probes] == [6, 12, 18, 24]  # the key frames after the first
    # fused far below warp, and from the first probe on far behind: probed one key frame in EVERY (the first included)
    assert all(r.check["behind"]["fused"] < r.check["fidelity"]["warp"] - BEHIND for r in probes)
    assert ["fused" in r.check["fidelity"] for r in probes] == [False] * 4
    assert [r.check["kept"] for r in probes] == ["fused"] * (MIN_PROBES - 1) + ["warp"] * (5 - MIN_PROBES)
    assert [r.is_key for r in checked] == [r.is_key for r in unchecked] == [r.is_key for r in plain]
    # the GOP that ends at the probe that chose (interpolation corrects a GOP's frames at its end) and all after it
    # are the plain warp's, exactly; before it, fused as without the check
    settled = probes[MIN_PROBES - 1].index
    for c, u, p in zip(checked, unchecked, plain):
        if c.is_key:
            continue
        if c.index < settled - 6:
            assert c.kind == u.kind == "fused"
            torch.testing.assert_close(c.logits, u.logits)
        elif c.index > settled - 6:
            assert c.kind == "warp" and u.kind == "fused"
            torch.testing.assert_close(c.logits, p.logits)


@pytest.fixture(scope="module")
def full_size(tmp_path_factory):
    """A synthetic street clip at the size the shipped correction was trained at, 512x1024, 30 frames, MPEG-4 GOP 12."""
    return write_clip(tmp_path_factory.mktemp("selfcheck-full"), SynthConfig(frames=30, seed=700001), gop=12, name="f")


def test_the_shipped_correction_is_kept_on_the_synthetic_streets_it_was_trained_for(full_size, model):
    results = list(Segmenter(model).run(full_size))
    probes = [r for r in results if r.check is not None]
    keys = [r.index for r in results if r.is_key]
    assert [r.index for r in probes] == keys[1:] and len(probes) <= WINDOW  # every key frame after the first
    assert all(r.check["kept"] == "fused+RGC" for r in probes)
    last = probes[-1].check["fidelity"]
    assert last["fused+RGC"] > max(last["fused"], last["warp+RGC"]) > last["warp"]
    assert all(r.kind == "fused+RGC" for r in results if not r.is_key)
    summary = RunSummary()
    for r in results:
        summary.add(r)
    assert summary.check == probes[-1].check and summary.to_dict()["self_check"] == probes[-1].check
    assert f"self-check ({len(probes)} key frames): fidelity to the CNN warp {last['warp']:.1f}" in summary.format()
    assert probes[-1].record()["check"] == probes[-1].check


@pytest.mark.filterwarnings("ignore::taplab.errors.LatencyWarning")  # a budget on a file read as fast as it decodes
def test_runs_without_probes_carry_no_check(street, model):
    for options in (dict(self_check=False), dict(fusion=False, rgc=False), dict(latency_budget=10.0)):
        assert all(r.check is None for r in Segmenter(model, **options).run(street))


def test_on_real_footage_the_shipped_correction_is_left_out_and_fidelity_rises(real_dir, model, tmp_path):
    """The real clip at 640x360, MPEG-4 GOP 12: the correction trained on synthetic streets lowers agreement with
    the per-frame output there; the check leaves it out, and the run's fidelity is above the unchecked run's."""
    with open_video(real_dir / "vid_h264.mp4") as video:
        frames = [cv2.resize(f.image, (640, 360), interpolation=cv2.INTER_AREA) for f in itertools.islice(video, 48)]
    clip = encode(frames, tmp_path / "real.mp4", gop=12, codec="mpeg4")
    reference = [r.labels for r in Segmenter(model, ffw=False).run(clip)]
    checked = list(Segmenter(model).run(clip))
    unchecked = list(Segmenter(model, self_check=False).run(clip))
    last = [r.check for r in checked if r.check is not None][-1]
    score = last["fidelity"]
    assert "fused" not in last["kept"] and max(score["fused"], score["fused+RGC"]) < max(score["warp"], score["warp+RGC"])
    score = {name: fidelity([r.labels for r in run], reference, model.num_classes)
             for name, run in (("checked", checked), ("unchecked", unchecked))}
    assert score["checked"] > score["unchecked"] + 0.03, score
    assert sum(r.kind.startswith("fused") for r in checked) < sum(r.kind.startswith("fused") for r in unchecked)


def test_the_command_line_reports_the_check_and_turns_it_off(street, tmp_path):
    from taplab.cli import main

    main(["segment", str(street), "--out", str(tmp_path / "on"), "--format", "labels"])
    main(["segment", str(street), "--out", str(tmp_path / "off"), "--format", "labels", "--no-self-check"])
    on, off = (json.loads((tmp_path / name / "frames.json").read_text()) for name in ("on", "off"))
    probed = [r["index"] for r in on if r["check"]]
    assert probed == [r["index"] for r in on if r["kind"].startswith("key")][1:] and not any(r["check"] for r in off)
    summary = json.loads((tmp_path / "on" / "summary.json").read_text())["summary"]
    assert summary["self_check"] == on[probed[-1]]["check"]
    assert json.loads((tmp_path / "off" / "summary.json").read_text())["summary"]["self_check"] is None
