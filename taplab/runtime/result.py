"""What the runtime made of a frame: its :class:`Kind`, the correction :class:`Module` s applied, the labels.

A frame's kind is a decision (:class:`Kind`) plus the set of correction modules applied to a warped
frame. :class:`FrameKind` holds both and *is* its stable string form, the one logs, JSON and tests
read: ``"key-I"``, ``"key"``, ``"key-RGFS"``, ``"key-interval"``, ``"hold"``, ``"warp"``, ``"fused"``,
``"warp+RGC"``, ``"fused+RGC"``, ``"skip"``, ``"interp"`` (:data:`KINDS`). Code decides on ``kind.kind`` and
``kind.modules``, never on the text.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import torch

from taplab.ops.regions import Region


class Kind(str, Enum):
    """What was done to a frame."""

    KEY_I = "key-I"  #: an I-frame: the CNN on the whole frame
    KEY = "key"  #: no usable past motion (the first frame, no vectors, B-frames by policy): the CNN
    KEY_RGFS = "key-RGFS"  #: a P-frame whose residual says warping would fail (RGFS): the CNN
    KEY_INTERVAL = "key-interval"  #: a P-frame ``key_interval`` frames from the last key frame: the CNN (drift bound)
    HOLD = "hold"  #: a key frame over the latency budget: a stand-in while its CNN runs in the background
    WARP = "warp"  #: the key frame's features carried along the motion (FFW), then corrected
    SKIP = "skip"  #: under a latency budget, no output; the frame's motion still carries the features on
    INTERP = "interp"  #: the ITP baseline: logits interpolated between key frames (taplab.bench)

    @property
    def is_key(self) -> bool:
        """Whether the CNN ran on the whole frame for this frame itself (a held key frame's runs in the background)."""
        return self in (Kind.KEY_I, Kind.KEY, Kind.KEY_RGFS, Kind.KEY_INTERVAL)

    def __str__(self) -> str:
        return self.value


class Module(str, Enum):
    """A correction applied to a warped frame, in the order they run."""

    FUSION = "fusion"  #: distortion-map fusion with the correction network (DMNet)
    RGC = "rgc"  #: residual-guided correction: the CNN on the region with the most residual (TapLab)

    def __str__(self) -> str:
        return self.value


def _text(kind: Kind, modules: frozenset[Module]) -> str:
    if kind is not Kind.WARP:
        return kind.value
    base = "fused" if Module.FUSION in modules else "warp"
    return base + ("+RGC" if Module.RGC in modules else "")


#: the correction modules a warped frame can have, in the order summaries list its forms
_WARP_FORMS = ((), (Module.RGC,), (Module.FUSION,), (Module.FUSION, Module.RGC))
#: string form -> (kind, modules), for every frame kind
_PARSED = {_text(kind, frozenset(mods)): (kind, frozenset(mods))
           for kind in Kind for mods in (_WARP_FORMS if kind is Kind.WARP else ((),))}
#: every kind's string form, in the order summaries list them: "key-I", "key", "key-RGFS", "key-interval",
#: "hold", "warp", "warp+RGC", "fused", "fused+RGC", "skip", "interp"
KINDS: tuple[str, ...] = tuple(_PARSED)


class FrameKind(str):
    """A :class:`Kind` and the :class:`Module` s applied, whose string value is the stable form (``"fused+RGC"``).

    ``FrameKind(Kind.WARP, {Module.FUSION})`` or ``FrameKind("fused")``; it compares, hashes and
    serialises (JSON, pickle) as its string.
    """

    kind: Kind
    modules: frozenset[Module]

    def __new__(cls, kind: Kind | str, modules: Iterable[Module | str] = ()) -> FrameKind:
        mods = frozenset(Module(m) for m in modules)
        if not isinstance(kind, Kind):  # a string form, e.g. "fused+RGC" (also how pickle rebuilds one)
            if kind not in _PARSED:
                raise ValueError(f"unknown frame kind {kind!r}; one of {', '.join(KINDS)}")
            kind, parsed = _PARSED[kind]
            mods |= parsed
        if mods and kind is not Kind.WARP:
            raise ValueError(f"only warped frames are corrected; {kind.value} with {sorted(m.value for m in mods)}")
        self = super().__new__(cls, _text(kind, mods))
        self.kind, self.modules = kind, mods
        return self

    @property
    def is_key(self) -> bool:
        return self.kind.is_key

    def __repr__(self) -> str:
        return f"FrameKind({str.__repr__(self)})"


@dataclass
class FrameResult:
    """What the runtime made of one frame.

    Attributes:
        index, pict_type: the frame's display index and picture type (I/P/B).
        kind: a :class:`FrameKind` (a plain string form is accepted and parsed): what was done to it.
            ``"skip"`` (only under a latency budget): no output for this frame, its motion kept for the
            frames after it.
        labels: (H, W) uint8 class ids at the source resolution; None for ``"skip"`` frames.
        logits: (C, h, w) float tensor at the model's stride, when ``run(..., logits=True)``.
        residual_score: mean absolute luma residual per pixel (8-bit levels), where it was computed.
        region: the RGC region (pixels), for ``"warp+RGC"`` and ``"fused+RGC"`` frames.
        distorted: share of feature cells the warp could not fill (no vector, or source out of frame).
        timings: seconds per stage (decode, residual, cnn_full, cnn_region, flow (the optical-flow
            baseline), warp, fusion (or details: what ``run(details=True)`` costs without fusion),
            labels; future: on an anchor, its held B-frames' future vectors (estimated where the codec has
            none) and residuals, in the decoding thread; interpolation: the next key frame's side carried
            back and blended; key_blend: a key frame's blend with the previous output, with the motion it needed;
            write, added by :func:`taplab.segment`).
        image: the decoded (H, W, 3) uint8 RGB frame, when ``run(..., images=True)``.
        warped: for warped frames, when ``run(..., details=True)``: the logits (C, h, w) as FFW
            left them, before fusion and RGC (CL, the share of corrected labels, compares with them).
        distortion: likewise: the distortion map (h, w) in [0, 1] that fusion used, or without
            fusion ``M_coarse`` (:func:`taplab.ops.fusion.coarse_distortion`); with a TWNet correction, its
            attention ``A``.
        state: likewise, in a run with a TWNet correction (``correction_kind="twnet"``): the warped state
            ``[logits, deep interior]`` (C + D, h, w) before the corrections (:mod:`taplab.nets.twnet`).
        latency: seconds from the frame's arrival (decoded) to this result.
        shed: the modules left out of this frame to keep within its latency budget (``"fusion"``,
            ``"rgc"``; ``"rgfs"``: selected as a key frame while another key frame's CNN was running).
        gap: on a :func:`taplab.stream` result, seconds without frames before it (the source had
            disconnected and was reopened).
        key_index: the key frame whose CNN output this result carries forward: the frame itself for
            key frames; under a latency budget, the previous key frame while a newer one's CNN runs.
        motion: for warped frames, the motion source that carried the features (``"codec"``, an optical
            flow method such as ``"dis-ultrafast"``, ``"truth"``).
        future: the mean weight, over the feature cells, of the features that came from later frames: a B-frame's
            future anchor (``b_frames="both"``), or with interpolation the next key frame (0: all from the past
            side; None: nothing came from later frames).
        carried: on a key frame blended with the previous output (``key_blend``), that output's mean weight over
            the feature cells (None: not blended: ``key_blend`` 0, the first frame, a B-frame, a latency budget).
        check: on a key frame the self-check probed (``self_check``, :mod:`taplab.runtime.selfcheck`): the fidelity
            (%) to the CNN of each combination of the correction stages over its recent probes, by the kind a warped
            frame with them has (``{"warp": 61.2, "fused": 55.0, ...}``; those compared for the choice, on the same
            probes), the combination kept for the frames that follow (``"kept"``), the probes so far (``"probes"``)
            and the combinations holding a stage far behind, with their fidelity at the last probe that applied
            every stage (``"behind"``).
    """

    index: int
    pict_type: str
    kind: FrameKind
    labels: np.ndarray | None
    logits: torch.Tensor | None = None
    residual_score: float | None = None
    region: Region | None = None
    distorted: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None
    warped: torch.Tensor | None = None
    distortion: torch.Tensor | None = None
    state: torch.Tensor | None = None
    latency: float | None = None
    shed: tuple[str, ...] = ()
    gap: float | None = None
    key_index: int | None = None
    motion: str | None = None
    future: float | None = None
    carried: float | None = None
    check: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, FrameKind):
            self.kind = FrameKind(self.kind)

    @property
    def is_key(self) -> bool:
        return self.kind.is_key

    def stamp(self, arrival: float | None) -> None:
        """Set :attr:`latency`, the seconds since ``arrival`` (``perf_counter``), where the frame's arrival is known."""
        if arrival is not None:
            self.latency = time.perf_counter() - arrival

    def record(self) -> dict:
        """The result as one JSON-ready record: what ``frames.json`` and ``frames.csv`` hold per frame."""
        return {"index": self.index, "pict_type": self.pict_type, "kind": str(self.kind),
                "residual_score": self.residual_score, "region": list(self.region) if self.region else None,
                "distorted": round(self.distorted, 4),
                "latency_ms": None if self.latency is None else round(1000 * self.latency, 2), "shed": list(self.shed),
                "motion": self.motion, "future": None if self.future is None else round(self.future, 4),
                "carried": None if self.carried is None else round(self.carried, 4), "check": self.check,
                "ms": {k: round(1000 * v, 3) for k, v in self.timings.items()}}
