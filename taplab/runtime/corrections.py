"""The correction stages of a warped frame, in the order they run: fusion (DMNet's, or TWNet's in its place), then RGC
(TapLab).

Each stage is a small object built once per run that the scheduler calls on a warped frame; the
maths is in :mod:`taplab.ops` (``ops.fusion``, ``ops.regions``) and the networks in :mod:`taplab.nets`.
A new stage is a class here with the members of :class:`CorrectionStage` and a
:class:`~taplab.runtime.result.Module` of its own; the scheduler calls it after FFW, admits it through
the latency policy under its timing ``stage`` name, and records it in the frame's kind
(docs/architecture.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from taplab.codec.reader import Frame
from taplab.data.transforms import to_tensor
from taplab.nets.conet import Correction, correction_image
from taplab.nets.twnet import Tamed, residual_cells
from taplab.ops.fusion import coarse_distortion, distortion_map, fuse, residual_map
from taplab.ops.labels import class_map
from taplab.ops.regions import Region, blend_region, candidate_regions, select_region
from taplab.ops.warp import GridFlow, warp
from taplab.runtime.config import RuntimeConfig
from taplab.runtime.latency import LatencyPolicy
from taplab.runtime.result import FrameKind, FrameResult, Kind, Module
from taplab.runtime.selfcheck import SelfCheck


class CorrectionStage(Protocol):
    """What the scheduler and the latency policy know of every correction stage."""

    module: Module  #: what the frame's kind records when it ran
    stage: str  #: its timing and cost name (what ``FrameResult.timings`` and the latency policy call it)


class Fusion:
    """Distortion-map fusion: where ``M`` says warping failed, the correction network's logits replace the
    warped ones, ``F = (1 - M) F_warped + M F_updated`` (:mod:`taplab.ops.fusion`). Without a correction
    network (``correction=None``) it still gives ``M_coarse``, which ``run(details=True)`` reports.

    With ``fusion_memory`` ``b`` > 0 the correction ``D = F - F_warped`` of an anchor is remembered, and the next
    anchor's, whose motion goes to it (``carry``), becomes ``(1 - b) D + b W(D_before)``, ``W`` the warp along that
    motion (cells it cannot fill keep their own). Corrections computed from each frame's image alone flicker;
    carried, they change as the scene does. :meth:`forget` at a key frame: a chain starts with its GOP."""

    module = Module.FUSION
    stage = "fusion"  #: its timing and cost name

    def __init__(self, correction: Correction | None, cfg: RuntimeConfig, grid: tuple[int, int]):
        self.correction, self.grid = correction, grid
        self.weight, self.threshold = cfg.fusion_weight, cfg.fusion_threshold
        # a chained warp carries the fused output, corrections included, already: no second carry there
        self.memory = cfg.fusion_memory if cfg.propagation == "accumulate" else 0.0
        self.sampling = cfg.warp_sampling
        self._last: tuple[int, torch.Tensor] | None = None  # the last anchor's index and its (carried) correction

    def forget(self) -> None:
        """A key frame: no correction is carried past it."""
        self._last = None

    @property
    def enabled(self) -> bool:
        return self.correction is not None

    @property
    def needs_coarse(self) -> bool:
        """Whether the network takes ``M_coarse`` (and so the reference labels it compares with) on every frame."""
        return self.enabled

    def coarse(self, frame: Frame, warped: torch.Tensor, reference_labels: torch.Tensor,
               distorted: torch.Tensor) -> torch.Tensor:
        """``M_coarse`` (h, w) of a frame whose warped logits are ``warped`` (C, h, w)."""
        return coarse_distortion(warped, reference_labels, distorted,
                                 residual_map(frame.residual, self.grid, self.threshold))

    def __call__(self, frame: Frame, features: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor,
                 carry: tuple[int, GridFlow] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused logits (a new tensor) and the distortion map ``M`` that weighted them, for a frame whose warped
        ``features`` are the logits ``warped``; ``carry``: an anchor's previous anchor and its motion to it, along
        which that anchor's correction is carried (``fusion_memory``)."""
        image = to_tensor(correction_image(frame.image, self.grid, self.correction.scale))[0]
        updated, edge = self.correction(image, warped, coarse)
        distortion = distortion_map(coarse, edge, self.weight)
        fused = fuse(warped, updated, distortion)
        if self.memory > 0 and carry is not None:
            before, motion = carry
            correction = fused - warped
            if self._last is not None and self._last[0] == before:
                carried, unfilled = warp(self._last[1], motion, self.sampling)
                correction = torch.where(unfilled, correction, torch.lerp(correction, carried, self.memory))
                fused = warped + correction
            self._last = (frame.index, correction)
        return fused, distortion


class TamedCorrection(Fusion):
    """TWNet's correction in fusion's place (``correction_kind="twnet"``, :mod:`taplab.nets.twnet`): the warped state
    ``[logits, deep interior]`` corrected by CFR and RGA from the frame's shallow features and residual, then
    decoded. Its distortion map (``run(details=True)``) is RGA's attention ``A``. Nothing is remembered between
    frames: the correction is in the interior, which the warp carries on."""

    needs_coarse = False  #: its inputs are the state, the frame and its residual; M_coarse is for details alone

    def __init__(self, correction: Tamed, cfg: RuntimeConfig, grid: tuple[int, int]):
        super().__init__(correction, cfg, grid)
        self.memory = 0.0

    def __call__(self, frame: Frame, features: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor,
                 carry: tuple[int, GridFlow] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.correction(to_tensor(frame.image), features,
                               residual_cells(frame.residual, self.grid, self.threshold))


def network_stage(correction: Correction | Tamed | None, cfg: RuntimeConfig, grid: tuple[int, int]) -> Fusion:
    """The stage that runs ``correction`` in fusion's place: :class:`TamedCorrection` for a TWNet, else :class:`Fusion`."""
    return TamedCorrection(correction, cfg, grid) if isinstance(correction, Tamed) else Fusion(correction, cfg, grid)


class RegionCorrection:
    """RGC: the CNN re-runs on the candidate region with the most pixels of large residual, and its output is
    blended into the warped features there (TapLab Eq. 3, ``rgc_alpha``)."""

    module = Module.RGC
    stage = "cnn_region"

    def __init__(self, cfg: RuntimeConfig, size: tuple[int, int], stride: int,
                 features: Callable[[np.ndarray], torch.Tensor]):
        height, width = size
        self.regions = candidate_regions(height, width, cfg.rgc_size, cfg.rgc_stride, multiple=stride)
        self.share = self.regions[0].height * self.regions[0].width / (height * width) if self.regions else None
        self.threshold, self.alpha, self.stride = cfg.rgc_threshold, cfg.rgc_alpha, (stride, stride)
        self._features = features

    def select(self, frame: Frame) -> tuple[Region, int]:
        """The region to correct and its count of pixels above the threshold (0: nothing to correct)."""
        return select_region(frame.residual, self.regions, self.threshold)

    def __call__(self, features: torch.Tensor, frame: Frame, region: Region) -> None:
        """Correct ``features`` (C, h, w) in place with the CNN's on ``region`` of the frame."""
        self.blend(features, self.crop(frame, region), region)

    def crop(self, frame: Frame, region: Region) -> torch.Tensor:
        """The CNN's features of ``region`` of the frame."""
        ys, xs = region.slices()
        return self._features(np.ascontiguousarray(frame.image[ys, xs]))

    def blend(self, features: torch.Tensor, crop: torch.Tensor, region: Region) -> None:
        """Blend the region's CNN features ``crop`` into ``features`` (C, h, w), in place."""
        blend_region(features, crop, region, self.stride, self.alpha)


class Corrections:
    """A warped frame's correction stages in their order, fusion then RGC, each admitted by the latency policy
    (a stage that does not fit is named in the result's ``shed``) and by the self-check (``check``: the stages it
    keeps now, :mod:`taplab.runtime.selfcheck`). ``logits`` turns features into logits; ``details`` keeps the
    warped logits and the distortion map on the result (``run(details=True)``)."""

    def __init__(self, fusion: Fusion, rgc: RegionCorrection, policy: LatencyPolicy,
                 logits: Callable[[torch.Tensor], torch.Tensor], details: bool, check: SelfCheck):
        self.fusion, self.rgc, self.policy, self.logits, self.details = fusion, rgc, policy, logits, details
        self.check = check

    def __call__(self, frame: Frame, result: FrameResult, features: torch.Tensor, mask: torch.Tensor,
                 modules: frozenset[Module], reference: torch.Tensor | None, deadline: float | None = None,
                 shed: list[str] | None = None, cnn_busy: bool = False,
                 carry: tuple[int, GridFlow] | None = None) -> torch.Tensor:
        """Correct a warped frame whose FFW left ``features`` and the unfilled cells ``mask``; ``reference``: the labels
        fusion's ``M_coarse`` compares with; ``carry``: an anchor's previous anchor and its motion to it (fusion's
        memory). Sets the result's kind, ``distorted`` and what ``details`` keep; returns the corrected features."""
        shed = [] if shed is None else shed
        modules = modules & self.check.kept
        timings = result.timings
        result.distorted = float(mask.float().mean())
        applied: set[Module] = set()
        fusing = Module.FUSION in modules and self._admit(self.fusion, deadline, shed, cnn_busy)
        if fusing or self.details:
            start = time.perf_counter()
            warped = self.logits(features)
            coarse = self.fusion.coarse(frame, warped, reference, mask) if self.details or self.fusion.needs_coarse \
                else None
            before = features
            if fusing:
                features, distortion = self.fusion(frame, features, warped, coarse, carry)
                applied.add(Module.FUSION)
            else:
                warped, distortion = warped.clone(), coarse  # RGC blends into the features in place
            # without fusion this is the cost of run(details=True) alone, which benchmarks leave out
            timings["fusion" if fusing else "details"] = time.perf_counter() - start
            if fusing:
                self.policy.measure("fusion", timings["fusion"])
            if self.details:
                result.warped, result.distortion = warped, distortion
                if isinstance(self.fusion, TamedCorrection):  # the whole warped state, before TWNet and RGC
                    result.state = before if fusing else before.clone()
        if Module.RGC in modules and self._admit(self.rgc, deadline, shed, cnn_busy):
            start = time.perf_counter()
            region, count = self.rgc.select(frame)
            if count > 0:
                self.rgc(features, frame, region)
                applied.add(Module.RGC)
                result.region = region
            timings["cnn_region"] = time.perf_counter() - start
            if count > 0:
                self.policy.measure("cnn_region", timings["cnn_region"])
        result.kind = FrameKind(Kind.WARP, applied)
        return features

    def variants(self, frame: Frame, key_features: torch.Tensor, to_key: GridFlow, reference: torch.Tensor | None,
                 timings: dict) -> dict[frozenset[Module], torch.Tensor]:
        """The self-check's probe of a key frame (:mod:`taplab.runtime.selfcheck`): the frame warped as if it were not
        one (``key_features`` carried along ``to_key``, its motion to the key frame before it; ``reference``: fusion's
        labels to compare with), then the labels ``(h, w)`` on the feature grid of every combination of the run's
        stages the check probes now (:meth:`~taplab.runtime.selfcheck.SelfCheck.probing`) applied to it as on warped
        frames (fusion without its memory), timed in ``self_check``. RGC's region
        runs the CNN once, blended into each; where no pixel calls for it, RGC changes nothing."""
        start = time.perf_counter()
        features, mask = warp(key_features, to_key, self.fusion.sampling)
        out, stages = {frozenset(): features}, self.check.probing()
        if Module.FUSION in stages:
            warped = self.logits(features)
            coarse = self.fusion.coarse(frame, warped, reference, mask) if self.fusion.needs_coarse else None
            out[frozenset({Module.FUSION})] = self.fusion(frame, features, warped, coarse)[0]
        if Module.RGC in stages:
            region, count = self.rgc.select(frame)
            crop = self.rgc.crop(frame, region) if count > 0 else None
            for mods, f in list(out.items()):
                if crop is not None:
                    f = f.clone()
                    self.rgc.blend(f, crop, region)
                out[mods | {Module.RGC}] = f
        labels = {mods: class_map(self.logits(f)) for mods, f in out.items()}
        timings["self_check"] = timings.get("self_check", 0.0) + time.perf_counter() - start
        return labels

    def _admit(self, stage: CorrectionStage, deadline: float | None, shed: list[str], cnn_busy: bool) -> bool:
        """Whether a correction stage fits in the budget; if not it is named in ``shed``."""
        if self.policy.fits(stage.stage, deadline, cnn_busy):
            return True
        shed.append(stage.module.value)
        return False
