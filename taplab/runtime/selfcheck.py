"""Corrections that check themselves against the CNN, at key frames (``self_check``, on by default).

A correction stage is trained or tuned on some footage, and on other footage it can lower accuracy while
it costs most of a warped frame's time: the shipped correction network, trained on synthetic streets,
lowers fidelity on the real streams by 7-14 points, and RGC's effect there ranges from -2.7 to +1.3
(docs/streams.md), for 10-20 ms per warped 720p frame each. ``taplab adapt`` validates a correction on
held-out frames before it switches it on; this is the same validation, online, on every video.

At a key frame the CNN's output is there to compare with. The run warps the frame as if it were not a key
frame (the key frame before it carried along the frame's motion, as FFW would have), applies every
combination of the run's correction stages to that, and scores each combination's labels against the
CNN's labels, on the feature grid (:meth:`~taplab.runtime.corrections.Corrections.variants`). The warped
frames that follow get the combination that scores best (:func:`choose`); stages left out stay checked at
later key frames, and come back when they pay again.

Decisions (measured in docs/runtime.md, "Corrections that check themselves"; ``benchmarks/bench_selfcheck.py``
runs the rule at other settings):

- the score is fidelity: mIoU against the CNN's labels, from confusion matrices summed over the last
  :data:`WINDOW` probes, so that classes weigh as fidelity weighs them and no single frame decides;
- a combination with fewer stages within :data:`MARGIN` points of the best wins: it is cheaper, and the
  difference is within what a few key frames can tell apart (at 1 point the real streams kept the same
  fidelity with RGC on 2-14x as many frames);
- the first probe decides (:data:`MIN_PROBES`): before it the run has the stages it was configured with,
  and with interpolation the frames of the GOP that the probed key frame closes get the choice too
  (waiting for a second probe left those GOPs fused on the real streams, 0.4-2.2 fidelity points lower);
- every anchor key frame is probed, once the run has warped a frame, until :data:`WINDOW` probes, then every
  :data:`EVERY`-th (the probe costs one warp, one correction of each stage and a few arg-maxes, and at an
  I-frame the optical flow of its step back where neither interpolation nor the key-frame blend computes it);
- a key frame is a biased sample of the warped frames: it is one the key interval or RGFS chose, so it
  lies farther from its key frame, or warps worse, than most, and corrections look better there than on
  average (an I-frame's residual, which fusion and RGC read, is moreover the zero-motion difference).
  The margin absorbs some of it; probing only the key frames the schedule chose (I-frames, the key
  interval), tried while building this, favoured RGC more, not less;
- a stage :data:`BEHIND` points or more below the kept combination in all its combinations (the shipped
  correction on the real streams, docs/runtime.md) is applied in one probe of :data:`EVERY` only (:func:`behind`,
  :meth:`SelfCheck.probing`): the correction network is most of a probe's cost, a few points cannot bring it
  back, and it is still seen often enough to come back when it pays again (on the probes that applied every
  stage: two of the window's six, once the window is full).
  Combinations are always compared on the same frames: the window's probes that applied every one compared.
  So a probe that applies every stage decides which are far behind on the probes that applied every stage,
  and the others choose among the combinations without a stage far behind, on the probes that applied those;
- with interpolation the probe has the forward side alone (a key frame has no next key frame to blend);
- it is off under a latency budget (the probe would delay the key frame) and with ``propagation="chain"``
  (there the previous output carries its corrections, so no uncorrected warp exists to compare with).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

import numpy as np
import torch

from taplab.metrics import ConfusionMatrix, percent
from taplab.ops.labels import class_map
from taplab.runtime.config import RuntimeConfig
from taplab.runtime.result import FrameKind, Kind, Module

#: probes whose confusion matrices are summed for the choice
WINDOW = 6
#: the probes it takes to make the first choice; until then the configured stages run
MIN_PROBES = 1
#: fidelity points (mIoU %) within which a combination of fewer stages beats the best
MARGIN = 2.0
#: after WINDOW probes, one key frame in this many is probed; a stage far behind is applied in one probe in this many
EVERY = 3
#: fidelity points below the kept combination at which a stage is far behind (every combination holding it)
BEHIND = 4.0


def choose(scores: Mapping[frozenset[Module], float], margin: float) -> frozenset[Module]:
    """The correction stages to run: of the combinations scored (fidelity in %, NaN: nothing to score), the one with
    the fewest stages among those within ``margin`` points (the run's: :data:`MARGIN`) of the best; between equally many, the higher score
    (then the name, so that the choice never depends on the mapping's order)."""
    finite = {mods: s for mods, s in scores.items() if not math.isnan(s)}
    if not finite:
        return max(scores, key=len, default=frozenset())
    best = max(finite.values())
    near = [mods for mods, s in finite.items() if s >= best - margin]
    return min(near, key=lambda mods: (len(mods), -finite[mods], sorted(m.value for m in mods)))


def behind(scores: Mapping[frozenset[Module], float], kept: frozenset[Module], margin: float) -> frozenset[Module]:
    """The stages far behind: those whose every scored combination lies ``margin`` points (the run's: :data:`BEHIND`)
    or more below the ``kept`` combination's score (none where that is not scored)."""
    best = scores.get(kept, math.nan)
    if math.isnan(best):
        return frozenset()
    stages = frozenset().union(*scores)
    return frozenset(m for m in stages
                     if all(s <= best - margin for mods, s in scores.items() if m in mods and not math.isnan(s)))


def _named(scores: Mapping[frozenset[Module], float]) -> dict[str, float | None]:
    return {variant_name(m): percent(v / 100) for m, v in scores.items()}


def variant_name(modules: frozenset[Module]) -> str:
    """A combination's name: the kind a warped frame with those stages has (``"warp"``, ``"fused+RGC"``, ...)."""
    return str(FrameKind(Kind.WARP, modules))


class SelfCheck:
    """The run's self-check: which stages the warped frames get now (:attr:`kept`), from the probes so far.

    ``modules``: the stages the run was configured with (the check only ever leaves some out). It is
    :attr:`active` where ``cfg.self_check`` is on and the run warps, with ``propagation="accumulate"`` and no
    latency budget; otherwise :attr:`kept` stays ``modules``."""

    def __init__(self, modules: frozenset[Module], num_classes: int, cfg: RuntimeConfig):
        self.modules, self.kept = frozenset(modules), frozenset(modules)
        self.num_classes = num_classes
        self.active = bool(self.modules) and cfg.self_check and cfg.ffw and cfg.latency_budget is None \
            and cfg.propagation == "accumulate"
        self.probes = 0  #: key frames probed so far
        self.behind: frozenset[Module] = frozenset()  #: stages far behind (:func:`behind`) at the last full probe
        self._full: dict[frozenset[Module], float] = {}  # the scores at the last probe that applied every stage
        self.warped = False  #: whether the run has warped a frame yet (it sets this)
        self._window: deque[dict[frozenset[Module], np.ndarray]] = deque(maxlen=WINDOW)
        self._seen = 0  # key frames offered for a probe

    def due(self) -> bool:
        """Whether the key frame now arriving is probed: once the run has warped a frame (a run that warps none, as a
        codec without vectors under ``motion_source="codec"``, has nothing to choose for), every one until
        :data:`WINDOW` probes, then one in :data:`EVERY`. Call it once per key frame that could be probed (an anchor
        with features before it)."""
        if not self.active or not self.warped:
            return False
        self._seen += 1
        return self.probes < WINDOW or self._seen % EVERY == 0

    def probing(self) -> frozenset[Module]:
        """The stages the probe now due applies: all of them in one probe of :data:`EVERY` (the first included), else
        those not far behind."""
        return self.modules if self.probes % EVERY == 0 else self.modules - self.behind

    def score(self, variants: Mapping[frozenset[Module], torch.Tensor], cnn_logits: torch.Tensor) -> dict:
        """Score a probe: ``variants`` the labels ``(h, w)`` of each combination, ``cnn_logits`` ``(C, h, w)`` the key
        frame's CNN output. Updates :attr:`kept` and :attr:`behind`; returns the record a key frame's result carries
        (``check``): the window's fidelity of each combination compared for the choice (on the same probes), the
        combination kept, the probes so far, and ``behind``: each combination with a stage far behind and its fidelity
        at the last probe that applied every stage (on the probes that did)."""
        truth = class_map(cnn_logits).numpy()
        counts = {}
        for mods, labels in variants.items():
            cm = ConfusionMatrix(self.num_classes)
            cm.update(labels.numpy(), truth)
            counts[mods] = cm.counts
        self._window.append(counts)
        self.probes += 1
        applied = list(counts)
        scores = self._scores(applied)
        if frozenset().union(*applied) == self.modules:  # every stage applied: which are far behind, measured anew
            self.behind = behind(scores, choose(scores, MARGIN), BEHIND)
            self._full = scores
        # a stage far behind is compared anew at the probes that apply it; meanwhile the choice is among the others
        candidates = [mods for mods in applied if not mods & self.behind]
        chosen = self._scores(candidates) if len(candidates) < len(applied) else scores
        if self.probes >= MIN_PROBES:
            self.kept = choose(chosen, MARGIN)
        return {"fidelity": _named(chosen), "kept": variant_name(self.kept), "probes": self.probes,
                "behind": _named({m: v for m, v in self._full.items() if m & self.behind})}

    def _scores(self, combinations: list[frozenset[Module]]) -> dict[frozenset[Module], float]:
        """Fidelity (%) of each combination over the probes in the window that applied all of them (the same frames
        for each, so that a combination applied in fewer probes is not compared on other frames)."""
        common = [probe for probe in self._window if all(mods in probe for mods in combinations)]
        return {mods: self._window_score(mods, common) for mods in combinations}

    def _window_score(self, mods: frozenset[Module], probes: list[dict]) -> float:
        """Fidelity (%) of one combination over ``probes`` (each holds it)."""
        cm = ConfusionMatrix(self.num_classes)
        cm.counts = sum((probe[mods] for probe in probes), np.zeros_like(cm.counts))
        return 100 * cm.miou()
