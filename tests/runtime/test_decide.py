"""The per-frame decision (taplab.runtime.decide) alone: facts in, a Decision out, no video, no model."""

import pytest

from taplab.runtime.decide import Decision, FrameFacts, decide, rgfs_candidate
from taplab.runtime.result import Kind, Module

BOTH = frozenset({Module.FUSION, Module.RGC})


def facts(pict_type="P", **values) -> FrameFacts:
    return FrameFacts(pict_type, **{"warpable": True, "features_expected": True, "modules": BOTH, **values})


@pytest.mark.parametrize("given, selected, expected", [
    (facts("I"), False, Decision(Kind.KEY_I)),
    (facts("I", budget=True, cnn_busy=True), False, Decision(Kind.KEY_I)),  # an I-frame is always a key frame
    (facts(warpable=False), False, Decision(Kind.KEY)),  # no past motion
    (facts(features_expected=False), False, Decision(Kind.KEY)),  # nothing to warp from
    (facts(), True, Decision(Kind.KEY_RGFS)),
    (facts(), False, Decision(Kind.WARP, BOTH)),
    (facts(modules=frozenset()), False, Decision(Kind.WARP)),  # the run's modules, as given
    (facts("B", warpable=False), False, Decision(Kind.KEY)),  # b_frames="key"
    (facts("B"), False, Decision(Kind.WARP, BOTH)),  # b_frames="past"
    (facts("B", bidirectional=True), False, Decision(Kind.WARP, BOTH)),  # b_frames="both"
    (facts("B", bidirectional=True, warpable=False), False, Decision(Kind.KEY)),  # no vectors on either side
])
def test_without_a_budget(given, selected, expected):
    assert decide(given, selected) == expected


@pytest.mark.parametrize("given, selected, expected", [
    # one CNN at a time: a P-frame selected while one runs is warped, and says why
    (facts(budget=True, cnn_busy=True), True, Decision(Kind.WARP, BOTH, ("rgfs",))),
    (facts(budget=True), True, Decision(Kind.KEY_RGFS)),
    # a B-frame has vectors to warp with, and its CNN could not be carried forward
    (facts("B", budget=True), True, Decision(Kind.WARP, BOTH, ("rgfs",))),
    (facts("B", budget=True, warpable=False), False, Decision(Kind.SKIP)),
    (facts("P", budget=True, warpable=False), False, Decision(Kind.KEY)),
    # the first key frame's CNN still runs: nothing to warp yet
    (facts(budget=True, features_ready=False, cnn_busy=True), False, Decision(Kind.SKIP)),
    # late with a newer frame waiting: skipped (its motion still extends the chain)
    (facts(budget=True, late=True), False, Decision(Kind.SKIP)),
    (facts(budget=True, late=True, cnn_busy=True), True, Decision(Kind.SKIP, shed=("rgfs",))),
    (facts(budget=False, late=True), False, Decision(Kind.WARP, BOTH)),  # lateness needs a budget to matter
])
def test_under_a_latency_budget(given, selected, expected):
    assert decide(given, selected) == expected


@pytest.mark.parametrize("given, rgfs, expected", [
    (facts(), True, True),
    (facts(), False, False),
    (facts("I"), True, False),
    (facts(warpable=False), True, False),
    (facts(features_expected=False), True, False),
    (facts("B"), True, True),  # b_frames="past"
    (facts("B", bidirectional=True), True, False),  # its future anchor is fresh
])
def test_rgfs_scores_only_frames_that_would_be_warped(given, rgfs, expected):
    assert rgfs_candidate(given, rgfs) is expected


def test_a_key_decision_never_carries_correction_modules():
    for pict_type in "IPB":
        for selected in (False, True):
            decision = decide(facts(pict_type, warpable=pict_type != "I"), selected)
            assert decision.kind is Kind.WARP or decision.modules == frozenset()


@pytest.mark.parametrize("given, interval, expected", [
    (facts(since_key=11), 12, Decision(Kind.WARP, BOTH)),
    (facts(since_key=12), 12, Decision(Kind.KEY_INTERVAL)),
    (facts(since_key=40), None, Decision(Kind.WARP, BOTH)),  # no bound
    (facts("B", since_key=40), 12, Decision(Kind.WARP, BOTH)),  # B-frames are no anchors: never the bound's key
    (facts("I", since_key=40), 12, Decision(Kind.KEY_I)),
    (facts(warpable=False, since_key=40), 12, Decision(Kind.KEY)),  # no motion says more than distance
    (facts(since_key=12, budget=True, cnn_busy=True), 12, Decision(Kind.WARP, BOTH)),  # waits for the running CNN
    (facts(since_key=12, budget=True), 12, Decision(Kind.KEY_INTERVAL)),
])
def test_the_key_interval_bounds_the_distance_from_the_last_key_frame(given, interval, expected):
    assert decide(given, False, interval) == expected


@pytest.mark.parametrize("since_key, gap, due", [
    (11, 1, False), (12, 1, True),  # I/P: the P-frame 12 frames after the key frame
    (9, 3, False), (10, 3, True),  # 2 B-frames: at 10 the next anchor would be at 13, its B-frames at 11 and 12
])
def test_the_key_interval_bounds_the_b_frames_too(since_key, gap, due):
    decision = decide(facts(since_key=since_key, anchor_gap=gap), key_interval=12)
    assert (decision.kind is Kind.KEY_INTERVAL) is due
