"""One run's per-frame work: decide (:mod:`~taplab.runtime.decide`), then do it with the parts that hold state.

The parts: :class:`~taplab.runtime.anchors.Anchors` (the features carried from frame to frame), a
motion source (:mod:`~taplab.runtime.motion`), the correction stages
(:mod:`~taplab.runtime.corrections`), the latency policy and the background key frames
(:mod:`~taplab.runtime.latency`), and RGFS's rate selector. The maths is in :mod:`taplab.ops`; the
scheduler owns none of its own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from taplab.codec.reader import MAX_REORDER, Frame
from taplab.nets.conet import Correction
from taplab.nets.loader import Model
from taplab.ops import bidirectional, interpolation, keyblend
from taplab.ops.flow import OpticalFlow
from taplab.ops.labels import labels_from_logits
from taplab.ops.regions import RateSelector, residual_score
from taplab.ops.warp import GridFlow, compose, warp, warp_blocks
from taplab.runtime.anchors import Anchors, Layer
from taplab.runtime.config import RuntimeConfig
from taplab.runtime.corrections import Corrections, RegionCorrection, network_stage
from taplab.runtime.decide import FrameFacts, decide, rgfs_candidate
from taplab.runtime.hold import MAX_HOLD, Held, Hold, blend_future, interpolate
from taplab.runtime.latency import KeyFrameWorker, LatencyPolicy
from taplab.runtime.motion import estimated_step, motion_source
from taplab.runtime.result import FrameKind, FrameResult, Kind, Module
from taplab.runtime.selfcheck import SelfCheck


class Scheduler:
    """The state of one run over a ``height x width`` video: :meth:`step` per frame in display order, which gives
    the results that are complete, in display order, and :meth:`flush` at the end.

    Frames wait for later frames' features (:mod:`taplab.runtime.hold`): B-frames warped from both anchors
    (``b_frames="both"``, without a latency budget) for their future anchor, so a B-frame's result comes
    with its future anchor's, just before it: on a live source that adds to a B-frame's latency the time
    until that anchor arrives, at most the run of B-frames before it (``MAX_REORDER`` frames) times the
    frame interval. With interpolation (files, by default: ``live=False``), every warped frame waits for
    the next key frame, at most ``MAX_HOLD`` frames."""

    def __init__(self, model: Model, cfg: RuntimeConfig, height: int, width: int, want_images: bool = False,
                 correction: Correction | None = None, details: bool = False,
                 truth_flow: Sequence[np.ndarray] | None = None, want_logits: bool = False, live: bool = False):
        self.model, self.cfg, self.want_images, self.details = model, cfg, want_images, details
        self.want_logits = want_logits
        #: whether warped frames wait for the next key frame's features (``interpolation``; auto: files only)
        self.interpolating = cfg.ffw and cfg.latency_budget is None and cfg.propagation == "accumulate" \
            and (not live if cfg.interpolation is None else cfg.interpolation)
        self.size = (height, width)
        geometry = model.geometry(height, width)
        self.grid = geometry.size
        # cell i covers pixels [i s, (i + 1) s) whether the model rounds its output size up or down
        self.stride = (geometry.stride, geometry.stride)
        self.motion = motion_source(cfg, self.grid, self.stride, truth_flow)
        # what is warped: the logits, features() (warp_layer), or with a TWNet correction its state
        self._layer = Layer(model, cfg.warp_layer, getattr(correction, "split", None))
        self._features, self._logits = self._layer.encode, self._layer.logits
        self.fusion = network_stage(correction, cfg, self.grid)
        self.rgc = RegionCorrection(cfg, self.size, geometry.stride, self._features)
        self.modules = frozenset({Module.FUSION} if self.fusion.enabled else ()) | ({Module.RGC} if cfg.rgc else set())
        level = cfg.rgfs_level  # RGFS's choice from a frame's score: rate mode's online threshold, or a level
        self.selector = RateSelector(cfg.rgfs_share) if cfg.rgfs_by_rate else lambda score: score > level
        self.anchors = Anchors(self.grid)
        self.policy = LatencyPolicy(cfg.latency_budget, self.rgc.share)
        self.check = SelfCheck(self.modules, model.num_classes, cfg)
        self.correct = Corrections(self.fusion, self.rgc, self.policy, self._logits, details, self.check)
        self.keys = KeyFrameWorker(self._features, lambda f, m: warp(f, m, cfg.warp_sampling)[0])
        self.hold = Hold(MAX_HOLD if self.interpolating else MAX_REORDER)
        self._estimator: OpticalFlow | None = None  # with interpolation: an I-frame's step back
        self._error = torch.zeros(self.grid)  # with interpolation: the error accumulated since the key frame, per cell
        self._b_prepared: list[Frame] = []  # in the decoding thread: the held B-frames since the last anchor

    def bidirectional(self, frame: Frame) -> bool:
        """Whether a frame is held and warped from both its anchors: a B-frame, ``b_frames="both"``, no budget."""
        return frame.pict_type == "B" and self.cfg.ffw and self.cfg.b_frames == "both" \
            and self.cfg.latency_budget is None

    # -- in the decoding thread: compute what this frame will need, overlapped with inference
    def prepare(self, item: tuple[Frame, dict]) -> None:
        frame, prep = item
        if frame.pict_type != "B" and self._b_prepared:  # the held B-frames' future side, now that it is known
            start = time.perf_counter()
            for b in self._b_prepared:
                b.residual_future  # noqa: B018 - cached; estimates the future vectors where the reader does
            prep["future"] = time.perf_counter() - start
            self._b_prepared = []
        elif self.bidirectional(frame):  # the last MAX_REORDER of a run, as the reader attaches their future
            self._b_prepared = self._b_prepared[-(MAX_REORDER - 1):] + [frame]
        start = time.perf_counter()
        warpable = self.warpable(frame)  # a motion field the reader estimates (no codec vectors) is computed here
        if warpable and frame.estimated:
            prep["flow"] = time.perf_counter() - start
        if warpable and (self.cfg.rgc or self.cfg.rgfs or self.fusion.enabled or self.details
                         or self.bidirectional(frame) or self.interpolating):
            start = time.perf_counter()
            frame.residual  # noqa: B018 - cached on the frame
            prep["residual"] = time.perf_counter() - start
        if not warpable or self.check.kept or self.motion.needs_images or self.want_images:  # kept: fusion, RGC
            start = time.perf_counter()
            frame.image  # noqa: B018
            prep["decode"] += time.perf_counter() - start

    def warpable(self, frame: Frame) -> bool:
        """Whether the frame can be warped: it has past motion, and is a P-frame, or a B-frame where B-frames are
        warped (``b_frames`` ``"both"`` or ``"past"``, or under a latency budget); a B-frame warped from both
        anchors may have future vectors alone."""
        if not self.cfg.ffw or frame.pict_type == "I":
            return False
        if frame.pict_type == "B" and self.cfg.b_frames == "key" and self.cfg.latency_budget is None:
            return False
        if self.bidirectional(frame) and frame.has_future:  # the codec's, known on arrival (never estimated here)
            return True
        return self.motion.available(frame)  # last: it computes a motion field the reader estimates

    def close(self) -> None:
        self.keys.close()

    # -- in the consumer: decide and do
    @torch.inference_mode()
    def step(self, frame: Frame, prep: dict, arrival: float | None = None, newer: bool = False) -> list[FrameResult]:
        """Segment one frame; returns the results now complete, in display order: none while the frame is held
        (:mod:`taplab.runtime.hold`), then the held frames' with the frame that completes them (a B-frame's
        future anchor; with interpolation, the next key frame). ``arrival``: when the frame arrived
        (``perf_counter``), from which a latency budget and each result's ``latency`` count; ``newer``: whether
        a later frame has already arrived (a late frame is then skipped)."""
        timings = dict(prep)
        if self.bidirectional(frame):
            return self._hold_b(frame, timings, arrival)
        deadline = self.policy.deadline(arrival)
        self._adopt()
        facts = self._facts(frame, deadline, newer)
        interval = self.cfg.key_interval
        score = residual_score(frame.residual) if rgfs_candidate(facts, self.cfg.rgfs, interval) else None
        decision = decide(facts, score is not None and self.selector(score), interval)
        anchor = frame.pict_type != "B"
        if decision.kind.is_key and anchor:
            self.anchors.last_key = frame.index
            self.fusion.forget()  # before the frames held before it are corrected: their chain starts at their key
        shed = list(decision.shed)
        result = FrameResult(frame.index, frame.pict_type, decision.kind, None, residual_score=score, timings=timings)
        if decision.kind.is_key:
            waiting = self.interpolating and anchor and self.hold.last_features(None) is not None
            back = self._step_back(frame, timings, "interpolation") if waiting else None
            shadow, back = self._shadow(frame, timings, back) if anchor and deadline is None else (None, back)
            result.kind = FrameKind(self._key(frame, decision.kind, deadline, timings))
            if shadow is not None:
                result.check = self.check.score(shadow, self._logits(self.anchors.key_features))
            self._error = torch.zeros(self.grid) if anchor else self._error
            if anchor:
                self._settle(self.hold.items, back if waiting else None)
            if anchor and deadline is None and self.cfg.ffw and self.cfg.key_blend > 0:  # not the per-frame run
                result.carried = self._blend_key(frame, timings, back)
        elif decision.kind is Kind.SKIP:
            if facts.warpable and anchor:  # keep the motion chain intact for the next output
                self.anchors.extend(self._flow(frame, timings))
        else:
            features, mask, flow = self._ffw(frame, timings)
            result.motion = self.motion.origin(frame)
            held = Held(frame, result, arrival, features, mask, decision.modules, flow, previous=self.anchors.anchor_index)
            if self.interpolating:  # its corrections once the next key frame's side is there
                return self._hold_warped(held)
            self.anchors.features = self.correct(frame, result, features, mask, decision.modules, self._reference(),
                                                 deadline, shed, self.keys.busy, held.carry)
        self.anchors.end_frame(frame, keep_image=self.motion.needs_images)
        result.shed = tuple(shed)
        if result.kind.kind is not Kind.SKIP:
            result.key_index = frame.index if result.is_key else self.anchors.key_index
            self._finish(result, frame, self.anchors.features)
        if self.interpolating and not (result.is_key and anchor):  # a B-frame key frame waits its turn
            return self._complete_all(self.hold.add(Held(frame, result, arrival)))
        done = self._release() if anchor else []  # before it in display order
        result.stamp(arrival)
        return done + [result]

    def flush(self) -> list[FrameResult]:
        """At the end of the stream: the frames still held, from what they have (a B-frame's future side where its
        future anchor came)."""
        with torch.inference_mode():
            return self._release()

    def _facts(self, frame: Frame, deadline: float | None, newer: bool, bidirectional: bool = False) -> FrameFacts:
        return FrameFacts(pict_type=frame.pict_type, warpable=self.warpable(frame),
                          features_expected=self.anchors.has_source or self.keys.busy,
                          features_ready=self.anchors.key_features is not None, budget=deadline is not None,
                          cnn_busy=self.keys.busy, late=self.policy.late(deadline, newer), modules=self.modules,
                          since_key=frame.index - self.anchors.last_key, bidirectional=bidirectional,
                          anchor_gap=frame.index - max(self.anchors.anchor_index, 0))

    def _hold_b(self, frame: Frame, timings: dict, arrival: float | None) -> list[FrameResult]:
        """A B-frame warped from both anchors: the CNN now where it is a key frame, else its past side now (the
        past anchor's state changes with the next anchor); held until the future anchor's features exist."""
        decision = decide(self._facts(frame, None, False, bidirectional=True), False, self.cfg.key_interval)
        result = FrameResult(frame.index, frame.pict_type, decision.kind, None, timings=timings,
                             key_index=self.anchors.key_index)
        held = Held(frame, result, arrival, modules=decision.modules)
        if decision.kind.is_key:
            result.kind = FrameKind(self._key(frame, decision.kind, None, timings))
            result.key_index = frame.index
            self._finish(result, frame, self.anchors.features)
        elif self.motion.available(frame):
            held.features, held.mask, _ = self._ffw(frame, timings)
            held.reference = self._reference()
        return self._complete_all(self.hold.add(held))

    def _hold_warped(self, held: Held) -> list[FrameResult]:
        """With interpolation: a warped frame waits for the next key frame with its forward side; an anchor keeps
        its step back (motion, residual) and the error accumulated since the key frame."""
        frame = held.frame
        held.result.key_index = self.anchors.key_index
        held.reference = self._reference()
        if held.anchor:
            held.step = bidirectional.cell_errors(frame.residual, self.grid)
            self._error = held.error = self._error + held.step + interpolation.STEP
        self.anchors.features = held.features
        self.anchors.end_frame(frame, keep_image=self.motion.needs_images)
        return self._complete_all(self.hold.add(held))

    def _step_back(self, frame: Frame, timings: dict, stage: str) -> tuple[GridFlow, torch.Tensor] | None:
        """A key frame's motion back to its previous anchor and its residual per cell (interpolation, key-frame blend):
        its own, else estimated (:func:`~taplab.runtime.motion.estimated_step`, timed in ``stage``)."""
        if self.warpable(frame):
            return self._flow(frame, timings), bidirectional.cell_errors(frame.residual, self.grid)
        start = time.perf_counter()
        self._estimator = self._estimator or OpticalFlow(self.cfg.motion_fallback)
        step = estimated_step(frame, self._estimator, self.grid, self.stride)
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start
        return step

    def _shadow(self, frame: Frame, timings: dict, back: tuple[GridFlow, torch.Tensor] | None) -> tuple:
        """The self-check's probe of a key frame before its CNN runs (:mod:`~taplab.runtime.selfcheck`; None where it
        is not due or has nothing to warp), and the frame's step back, which it needs and passes on."""
        if self.anchors.key_features is None or not self.check.due():
            return None, back
        back = back or self._step_back(frame, timings, "self_check")
        return None if back is None else self.correct.variants(
            frame, self.anchors.key_features, compose(back[0], self.anchors.motion_to_key), self._reference(),
            timings), back

    def _settle(self, held: list[Held], back: tuple[GridFlow, torch.Tensor] | None = None) -> None:
        """The ``held`` anchors made final (``back``: a key frame's step back, which carries its features back first).
        At a key anchor the frames stay held, for the B-frames whose future anchor it is."""
        if back is not None:
            interpolate(held, self.anchors.key_features, *back)
        for h in held:
            if h.anchor and h.result.labels is None:
                h.features = self.correct(h.frame, h.result, h.features, h.mask, h.modules, h.reference, carry=h.carry)
                self._finish(h.result, h.frame, h.features)

    def _blend_key(self, frame: Frame, timings: dict, back: tuple[GridFlow, torch.Tensor] | None) -> float | None:
        """Key frames that do not jump (:mod:`taplab.ops.keyblend`): the key frame's state becomes its CNN output
        blended with the previous anchor's final output (held ones are settled); its mean weight (None: not blended)."""
        previous = self.hold.last_features(self.anchors.anchor_features)
        step = None if previous is None else back if back is not None else self._step_back(frame, timings, "key_blend")
        if step is None:  # nothing before it, or no motion back to it
            return None
        start = time.perf_counter()
        features, carried = keyblend.blend_key(self.anchors.key_features, previous, *step, self._logits,
                                               self.cfg.key_blend, self.cfg.warp_sampling)
        self.anchors.set_key(features, frame.index, anchor=True)
        timings["key_blend"] = timings.get("key_blend", 0.0) + time.perf_counter() - start
        return carried

    def _reference(self) -> torch.Tensor | None:
        """The labels a warped frame's ``M_coarse`` compares with now (for fusion and ``details`` only)."""
        if not (self.fusion.needs_coarse or self.details):
            return None
        return self.anchors.reference_labels(self._logits, self.cfg.propagation == "accumulate")

    def _release(self) -> list[FrameResult]:
        """Every held frame's result; B-frames from both sides where their future anchor came."""
        return self._complete_all(self.hold.take())

    def _complete_all(self, held: list[Held]) -> list[FrameResult]:
        """The results of ``held`` (released, or past the hold's bound), in display order: the anchors corrected first,
        so that a B-frame's future side comes from its anchor's corrected features, as without interpolation."""
        if not held:  # the frames held below the bound: nothing to give out
            return []
        self._settle(held)
        ahead = {h.frame.index: h.features for h in [*held, *self.hold.items] if h.anchor and h.features is not None}
        for h in held:
            if not h.anchor and h.result.labels is None:
                self._complete(h, ahead)
        for h in held:
            h.result.stamp(h.arrival)
        return [h.result for h in held]

    def _complete(self, held: Held, anchors: dict[int, torch.Tensor]) -> None:
        """A held B-frame's features from its past side, its future side or both (:mod:`taplab.ops.bidirectional`),
        then corrected as any warped frame; the CNN where it has neither. Its future anchor's features: that
        anchor's where it was held (``anchors``), else the last anchor's."""
        frame, result, timings = held.frame, held.result, held.result.timings
        index, flow, ahead = frame.future_index, None, None
        if self.bidirectional(frame) and index is not None:
            ahead = anchors.get(index, self.anchors.anchor_features if index == self.anchors.anchor_index else None)
            if ahead is not None and (index == self.anchors.anchor_index or not self.motion.needs_images):
                flow = self._flow(frame, timings, future=True)  # an image source reads the last anchor's image
        if flow is None and held.features is None:  # no motion on either side: the CNN
            result.kind = FrameKind(self._key(frame, Kind.KEY, None, timings))
            result.key_index = frame.index
            self._finish(result, frame, self.anchors.features)
            return
        features, mask = held.features, held.mask
        if flow is not None:
            start = time.perf_counter()
            ahead, ahead_mask = warp(ahead, flow, self.cfg.warp_sampling)
            features, mask, result.future = blend_future(frame, features, mask, ahead, ahead_mask, self.grid)
            timings["warp"] = timings.get("warp", 0.0) + time.perf_counter() - start
        features = self.correct(frame, result, features, mask, held.modules, held.reference)
        result.motion = self.motion.origin(frame)
        self._finish(result, frame, features)

    def _finish(self, result: FrameResult, frame: Frame, features: torch.Tensor) -> None:
        """The result's labels (and logits, image where asked) from its features."""
        start = time.perf_counter()
        logits = self._logits(features)
        result.labels = labels_from_logits(logits, self.size, self.cfg.labels)
        result.timings["labels"] = time.perf_counter() - start
        self.policy.measure("labels", result.timings["labels"])
        if self.want_logits:
            result.logits = logits
        if self.want_images:
            result.image = frame.image

    def _key(self, frame: Frame, kind: Kind, deadline: float | None, timings: dict) -> Kind:
        """The CNN on a key frame: in line; or, with a latency budget, in the background thread, waited for while
        it can still finish within the budget. A key frame over budget shows a stand-in meanwhile: the current
        key frame's features carried to it (through its own vectors where it has them, else to the last
        anchor: the last output without its corrections) (``hold``; ``skip`` before the first key frame's features
        exist), which the following frames' motion accumulates to until the CNN's replace it (:meth:`_adopt`)."""
        if deadline is None:
            start = time.perf_counter()
            features = self._features(frame.image)
            timings["cnn_full"] = self.policy.cnn_seconds = time.perf_counter() - start
            self.anchors.set_key(features, frame.index, anchor=frame.pict_type != "B")
            return kind
        to_key = compose(self._flow(frame, timings), self.anchors.motion_to_key) if self.warpable(frame) \
            else self.anchors.motion_to_key  # no vectors (an I-frame): as the last anchor saw the key frame
        job = self.keys.submit(frame.index, frame.image, to_key)
        wait = self.policy.key_wait(deadline)
        done = None if wait is None else self.keys.wait(job, wait)
        if done is not None:
            features, timings["cnn_full"] = done
            self.policy.cnn_seconds = timings["cnn_full"]
            self.anchors.set_key(features, frame.index, anchor=True)
            return kind
        stand_in = None  # before the first key frame's features: nothing to show
        if self._adopt():  # an older key frame's CNN finished meanwhile: already carried to this frame
            stand_in = self.anchors.key_features
        elif self.anchors.key_features is not None:
            start = time.perf_counter()
            stand_in, _ = warp(self.anchors.key_features, to_key, self.cfg.warp_sampling)
            timings["warp"] = timings.get("warp", 0.0) + time.perf_counter() - start
        self.anchors.hold(stand_in)
        return Kind.HOLD if stand_in is not None else Kind.SKIP

    def _adopt(self) -> bool:
        """A finished background key frame's features replace its stand-in (carried on by the motion since)."""
        done = self.keys.finished()
        if done is None:
            return False
        features, index, self.policy.cnn_seconds = done
        self.anchors.adopt(features, index)
        return True

    def _ffw(self, frame: Frame, timings: dict) -> tuple[torch.Tensor, torch.Tensor, GridFlow | None]:
        """FFW: the features warped from the key frame's (accumulate) or the last anchor's (chain), the unfilled cells'
        mask, the motion on the grid (None: the chain read the block field); motion accumulates on anchors."""
        cfg, anchors = self.cfg, self.anchors
        flow, self.check.warped = None, True  # the self-check probes once the run warps
        if self.motion.blocks and cfg.propagation == "chain" and cfg.motion_resampling == "nearest":
            start = time.perf_counter()  # straight from the block field, in one pass of the native kernel
            m = frame.motion
            features, mask = warp_blocks(anchors.anchor_features, m.vectors, m.valid, m.block, self.stride,
                                         cfg.warp_sampling)
        else:
            flow = self._flow(frame, timings)
            start = time.perf_counter()
            if cfg.propagation == "accumulate":
                to_key = anchors.extend(flow) if frame.pict_type != "B" else compose(flow, anchors.motion_to_key)
                features, mask = warp(anchors.key_features, to_key, cfg.warp_sampling)
            else:
                features, mask = warp(anchors.anchor_features, flow, cfg.warp_sampling)
        timings["warp"] = timings.get("warp", 0.0) + time.perf_counter() - start
        return features, mask, flow

    def _flow(self, frame: Frame, timings: dict, future: bool = False) -> GridFlow | None:
        """The frame's motion to the last anchor on the feature grid (``future``: a B-frame's to its future anchor,
        None where the source has none), timed in the source's stage."""
        start = time.perf_counter()
        flow = self.motion.future(frame, self.anchors) if future else self.motion.flow(frame, self.anchors)
        timings[self.motion.stage] = timings.get(self.motion.stage, 0.0) + time.perf_counter() - start
        return flow
