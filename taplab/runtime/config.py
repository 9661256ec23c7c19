"""Every parameter of the runtime in one validated object (the CLI and config files map onto it one to one)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from taplab.errors import ConfigError
from taplab.ops.flow import METHODS as FLOW_METHODS
from taplab.ops.regions import PAPER_RGFS_THRESHOLD


@dataclass(frozen=True)
class RuntimeConfig:
    """How taplab treats each frame (TapLab's Algorithm 1). Every module can be switched off;
    with ``ffw=False`` every frame is a key frame: the per-frame baseline.

    Attributes:
        ffw: fast feature warping of P-frames with the codec's motion vectors.
        warp_sampling: sampling of the features at the source, ``"bilinear"`` or ``"nearest"``.
        propagation: ``"accumulate"`` (default: compose the motion back to the key frame and warp
            the key frame's features once; an RGC correction improves its own frame only) or
            ``"chain"`` (warp the previous frame's features, RGC corrections included). Measured on
            held-out synthetic clips (docs/runtime.md): FFW alone 62.0 mIoU accumulated against 60.3
            chained (54.5 chained with nearest sampling); FFW+RGC+RGFS 69.3 either way.
        motion_resampling: block vectors to the feature grid, ``"nearest"`` or ``"bilinear"``.
        motion_source: ``"codec"`` (the stream's motion vectors: taplab's point) or a dense optical
            flow computed from the decoded frames (``"dis-ultrafast"``, ``"dis-fast"``,
            ``"dis-medium"``, ``"farneback"``; :class:`taplab.ops.flow.OpticalFlow`), area-averaged
            onto the feature grid: the baseline the compressed domain must beat, its cost counted
            (stage ``flow``); or ``"truth"``, a synthetic clip's ground-truth flow passed to
            ``Segmenter.run(..., truth_flow=...)`` (the upper bound of any warping; for I/P streams,
            whose anchor is the previous frame). The key-frame schedule stays the codec's.
        warp_layer: ``"logits"`` (any model) or ``"features"`` (the model's ``features()``, where it
            has a ``features()``/``head()`` split; the Tamed Warping Network's interior layer).
        rgc: residual-guided correction: re-run the CNN on the candidate region with the most
            residual and blend it in.
        rgc_threshold: a pixel counts as residual when its absolute luma residual exceeds this
            (8-bit levels; the paper's THR_RGC = 30).
        rgc_size, rgc_stride: region size and grid stride in pixels (None: the paper's proportions,
            half and a quarter of the frame height).
        rgc_alpha: blend weight of the CNN's output inside the region, ``F = (1 - a) F_warp + a F_cnn``.
            Measured on held-out synthetic clips (FFW+RGC mIoU): 0.3 63.0, 0.5 63.8, 0.8 64.6, 1.0 64.1;
            an intermediate value is best, as the paper finds.
        rgfs: residual-guided frame selection: P-frames whose residual says warping will fail
            become key frames.
        rgfs_mode: ``"absolute"`` (score above ``rgfs_threshold``) or ``"rate"`` (the threshold
            adapts online so that about ``rgfs_rate`` of the P-frames are selected).
        rgfs_threshold: mean absolute luma residual per pixel, 8-bit levels (the paper's 3.6e7 at
            1024x2048 is :data:`~taplab.ops.regions.PAPER_RGFS_THRESHOLD`, about 5.7).
        rgfs_rate: the share of P-frames to select in rate mode (the paper selects about 10%;
            :class:`~taplab.ops.regions.RateSelector`).
        fusion: distortion-map fusion (DMNet) of warped frames with a correction network (CoNet):
            ``True``, ``False``, or ``None`` (default: on where the model has a correction network,
            as the default model has). Fusion corrects logits, so it needs ``warp_layer="logits"``;
            it runs before RGC, which then blends the CNN's output over it in its region (``rgc_alpha``).
        fusion_weight: ``w_f`` in ``M = w_f * M_coarse + (1 - w_f) * M_edge`` (DMNet's default 0.5).
            Measured on held-out synthetic clips (FFW+fusion mIoU): 0 67.5, 0.25 68.2, 0.5 68.1,
            0.75 67.2, 1 65.9.
        fusion_threshold: a pixel counts towards the residual map of ``M_coarse`` when its absolute
            luma residual exceeds this (8-bit levels).
        correction: the correction network's file (``taplab train --model conet``); ``None``: the one
            that comes with the model (a shipped model's, or ``<model>.conet.pt`` beside a checkpoint).
        latency_budget: seconds from a frame's arrival (decoded) to its result (None: no limit; every
            frame gets every module, key frames are computed in line). Meant for live sources, whose
            frames arrive in real time (a file read without ``live`` pacing arrives as fast as it
            decodes). The policy, in order:

            1. Key frames: the CNN runs in a background thread and is waited for while it can still
               finish within the budget (known once it has run: its measured time). A key frame over
               budget shows a stand-in meanwhile, the current key frame's features carried to it
               (``kind="hold"``); the frames that follow warp from the stand-in, and when the key
               frame's features are ready, the motion accumulated since the key frame carries them to
               the current frame at once. One CNN runs at a time: a P-frame that RGFS selects while one
               runs is warped instead (``shed`` names ``"rgfs"``); an I-frame queues behind it, and the
               running CNN's features, when ready, are carried to the I-frame in place of its stand-in.
            2. Warped frames: fusion and RGC run only where their expected time (the running mean of
               their measured times; before RGC's first pass, the CNN's time scaled by the region's
               share of the frame) and the labels' still fit in the budget, and never while a key
               frame's CNN runs (it takes the cores they need); ``FrameResult.shed`` names what was left out.
            3. Frames: a warped frame already past its budget when a newer frame has arrived, and the
               frames before the first key frame's features exist, are skipped (``kind="skip"``, no
               labels): their vectors still extend the motion chain, so the next output is exact.
               Decoding is never skipped, nor is a key frame's CNN.

            So every output frame's latency stays within the budget plus the cost of a warped frame
            (tested with deliberately slow models). B-frames are warped with their past vectors, or
            skipped without them (never run in line). Needs ``propagation="accumulate"``.
            docs/live.md has the decisions and measurements.
        b_frames: ``"key"`` (B-frames are key frames; default) or ``"past"`` (warp B-frames with
            their past-reference vectors where they have them, else key frames). Under a
            ``latency_budget``, B-frames are warped where they can be and skipped where not.
        labels: full-resolution labels from the logits: ``"bilinear"`` (default: what bilinear
            upsampling of the logits and an arg-max give, computed only near class boundaries by
            :func:`taplab.ops.labels.upsample_labels`: 13-31 ms at 720p, 99.9% equal to the full
            computation), ``"exact"`` (the full computation: 130-440 ms at 720p for 19 classes at
            stride 4) or ``"nearest"`` (arg-max on the feature grid, labels upsampled: 7 ms, blocky;
            2.2 mIoU points below bilinear per-frame on held-out synthetic 512x1024 clips).
    """

    ffw: bool = True
    warp_sampling: str = "bilinear"
    propagation: str = "accumulate"
    motion_resampling: str = "nearest"
    motion_source: str = "codec"
    warp_layer: str = "logits"
    rgc: bool = True
    rgc_threshold: float = 30.0
    rgc_size: int | None = None
    rgc_stride: int | None = None
    rgc_alpha: float = 0.8
    rgfs: bool = True
    rgfs_mode: str = "absolute"
    rgfs_threshold: float = PAPER_RGFS_THRESHOLD
    rgfs_rate: float = 0.1
    fusion: bool | None = None
    fusion_weight: float = 0.5
    fusion_threshold: float = 30.0
    correction: str | None = None
    latency_budget: float | None = None
    b_frames: str = "key"
    labels: str = "bilinear"

    def __post_init__(self) -> None:
        choices = {"warp_sampling": ("bilinear", "nearest"), "propagation": ("accumulate", "chain"), "motion_resampling": ("nearest", "bilinear"),
                   "warp_layer": ("logits", "features"), "rgfs_mode": ("absolute", "rate"),
                   "b_frames": ("key", "past"), "labels": ("bilinear", "exact", "nearest"),
                   "motion_source": ("codec", *FLOW_METHODS, "truth")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.fusion is not None and not isinstance(self.fusion, bool):  # 0 == False would slip through `in`
            raise ConfigError(f"fusion must be true, false or null (auto), got {self.fusion!r}")
        if self.fusion and self.warp_layer != "logits":
            raise ConfigError("fusion corrects logits; it needs warp_layer='logits'")
        if not 0 <= self.fusion_weight <= 1:
            raise ConfigError(f"fusion_weight must be in 0..1, got {self.fusion_weight}")
        if not 0 <= self.fusion_threshold <= 255:
            raise ConfigError(f"fusion_threshold is an 8-bit residual level in 0..255, got {self.fusion_threshold}")
        if self.latency_budget is not None:
            if isinstance(self.latency_budget, bool) or not self.latency_budget > 0:
                raise ConfigError(f"latency_budget must be > 0 seconds (or None), got {self.latency_budget!r}")
            if self.propagation != "accumulate":
                raise ConfigError("latency_budget needs propagation='accumulate' (a late key frame is carried "
                                  "forward through the motion accumulated since it)")
        if not 0 <= self.rgc_threshold <= 255:
            raise ConfigError(f"rgc_threshold is an 8-bit residual level in 0..255, got {self.rgc_threshold}")
        if not 0 <= self.rgc_alpha <= 1:
            raise ConfigError(f"rgc_alpha must be in 0..1, got {self.rgc_alpha}")
        for name in ("rgc_size", "rgc_stride"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 16):
                raise ConfigError(f"{name} must be an integer >= 16 pixels (or None), got {v!r}")
        if not (0 <= self.rgfs_threshold <= 255) or math.isnan(self.rgfs_threshold):
            raise ConfigError(f"rgfs_threshold is a mean residual per pixel in 0..255, got {self.rgfs_threshold}")
        if not 0 < self.rgfs_rate < 1:
            raise ConfigError(f"rgfs_rate must be in (0, 1), got {self.rgfs_rate}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> RuntimeConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown runtime option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> RuntimeConfig:
        """A JSON file holding a subset of the attributes."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path} must hold a JSON object")
        return cls.from_dict(values)
