"""Every parameter of the runtime in one validated object; the CLI, ``bench --set`` and config files map onto it.

Each field carries its help text and, where it has them, its choices (:func:`option`): ``taplab
segment`` generates one option per field from them (names, types, choices, defaults, help), and
``taplab bench --set FIELD=V1,V2`` reads its values with :meth:`RuntimeConfig.parse`, so the API and
the command line cannot drift apart. Rules that tie fields together live here too (a rate given
means RGFS in rate mode), not in the CLI. docs/runtime.md has the measurements behind the defaults.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from taplab.errors import ConfigError
from taplab.nets.adapted import is_adapted, read_adapted
from taplab.nets.engines import ENGINE_CHOICES
from taplab.ops.flow import METHODS as FLOW_METHODS
from taplab.ops.labels import LABEL_MODES
from taplab.ops.regions import PAPER_RGFS_THRESHOLD

#: the share of P-frames RGFS selects in rate mode when no rate is given (the paper selects about 10%)
DEFAULT_RGFS_RATE = 0.1


def option(default: Any, help: str, choices: tuple | None = None, path: bool = False, api_only: tuple = ()) -> Any:
    """A config field with its help text (one line, no default: the CLI adds it), its choices, whether it
    names a file, and the choices that only the Python API can use (they need arguments of ``run``)."""
    return field(default=default, metadata={"help": help, "choices": choices, "path": path, "api_only": api_only})


@dataclass(frozen=True)
class RuntimeConfig:
    """How taplab treats each frame (TapLab's Algorithm 1). Every module can be switched off; with
    ``ffw=False`` every frame is a key frame: the per-frame baseline. Each field's meaning is its help
    text (``RuntimeConfig.describe(name).help``, ``taplab segment --help``); conventions in detail:

    - Motion (``motion_source``): the codec's vectors, or a dense flow from the decoded frames
      (OpenCV's DIS presets or Farneback, :class:`taplab.ops.flow.OpticalFlow`), area-averaged onto the
      feature grid with its cost counted (stage ``flow``): the baseline the compressed domain must
      beat; or ``"truth"``, a synthetic clip's ground-truth flow passed to
      ``Segmenter.run(..., truth_flow=...)`` (I/P streams only: it goes to the previous frame).
      ``"auto"`` (the default) takes the codec's vectors where the stream's codec exports them and
      ``motion_fallback`` where it exports none (:mod:`taplab.runtime.motion`). The motion source does
      not change the key-frame schedule: the codec's I-frames, RGFS and ``key_interval``.
    - ``propagation="accumulate"`` composes each frame's motion back to the key frame and warps the
      key frame's features once, so every step's sub-cell motion is kept and an RGC correction improves
      its own frame only; ``"chain"`` warps the previous frame's features, corrections included.
    - Fusion (DMNet) corrects logits, so it needs ``warp_layer="logits"``; it runs before RGC, which
      then blends the CNN's output over it in its region (``rgc_alpha``).
    - ``correction_kind`` chooses the network in fusion's place: DMNet's CoNet, or the Tamed Warping
      Network's correction (``"twnet"``, :mod:`taplab.nets.twnet`), which warps ``[logits, the model's deep
      interior]`` instead of the logits (it sets the warped layer itself: ``warp_layer`` stays
      ``"logits"``), re-runs the model's first layers on each warped frame and corrects the interior
      before the model's decoder. It takes the same ``fusion`` switch, timing name (``fusion``) and
      module name in the frame's kind; ``fusion_memory`` is DMNet's alone (TWNet's correction is in the
      warped state already). Key frames then run the model's interior graph, on its engine as the model.
    - RGFS: ``rgfs_mode="auto"`` (the default) is rate mode when ``rgfs_rate`` is given, the absolute
      ``rgfs_threshold`` when that is given, and else rate mode at 10% (``DEFAULT_RGFS_RATE``). The
      score is the mean absolute luma residual per pixel in 8-bit levels; the paper's 3.6e7 summed
      over a 1024x2048x3 residual is :data:`~taplab.ops.regions.PAPER_RGFS_THRESHOLD`, about 5.7.
      That level does not transfer (it selects a quarter of the synthetic P-frames and almost none
      of the real ones), so rate mode is the default: it selects about ``rgfs_rate`` of the P-frames,
      those whose residual stands out from the frames just before them, adapting online
      (:class:`~taplab.ops.regions.RateSelector`; the measurements are in docs/streams.md).
    - ``fusion_memory`` (DWNet's consistency, at run time): fusion corrects each warped frame from its own
      image, so its corrections differ from frame to frame and flicker. The correction (fused minus
      warped logits) of the anchor before is carried to the frame along the frame's motion and blended
      into the new one with this weight, an exponential moving average along the motion that starts
      afresh at every key frame (:class:`~taplab.runtime.corrections.Fusion`). Not carried across a frame
      fusion did not correct (shed, skipped) nor into B-frames, nor with ``propagation="chain"``, whose warp
      carries the fused output already. Measured in docs/runtime.md.
    - ``key_blend``: a key frame's CNN output is blended with the previous output carried to it
      (:mod:`taplab.ops.keyblend`), on anchors whose CNN runs in line: not under a latency budget (its
      CNN may finish in the background, after the frame was shown) nor on B-frames made key frames
      (``b_frames="key"``: no frame warps from them, so their jump lasts one frame).
    - ``self_check``: at key frames, where the CNN's output is there to compare with, the run scores every
      combination of its correction stages (fusion, RGC) applied to the frame warped as if it were not a key
      frame, and the warped frames that follow get the best (fewer stages where they score as well):
      :mod:`taplab.runtime.selfcheck`. It only ever leaves configured stages out; it is off under a latency
      budget and with ``propagation="chain"``.
    - ``latency_budget``: seconds from a frame's arrival (decoded) to its result, for live sources,
      whose frames arrive in real time. The policy that keeps it (key frames in the background, then
      modules shed, then late frames skipped) is described in :mod:`taplab.runtime.latency`, with its
      measurements in docs/live.md.
    - Labels (``labels``): ``"bilinear"`` gives what bilinear upsampling of the logits and an arg-max
      give, computed only near class boundaries (:func:`taplab.ops.labels.upsample_labels`);
      ``"exact"`` is the full computation, ``"nearest"`` the arg-max on the feature grid, upsampled.
    """

    ffw: bool = option(True, "Warp non-key frames along the motion (FFW); off: the CNN on every frame.")
    warp_sampling: str = option("bilinear", "Sampling of the features at the motion's source.", ("bilinear", "nearest"))
    propagation: str = option("accumulate", "Warp the key frame through the motion accumulated since it, or chain "
                              "warps from the previous frame.", ("accumulate", "chain"))
    motion_resampling: str = option("nearest", "Block vectors onto the feature grid: the block holding each cell's "
                                    "centre, or interpolated between valid blocks.", ("nearest", "bilinear"))
    motion_source: str = option("auto", "Motion for FFW: auto (the codec's vectors where the codec exports them, "
                                "else motion_fallback), the codec's vectors, a dense optical flow (the baseline), "
                                "or a synthetic clip's ground truth (Python API only: run(truth_flow=...)).",
                                ("codec", *FLOW_METHODS, "truth", "auto"), api_only=("truth",))
    motion_fallback: str = option("dis-ultrafast", "The optical flow that estimates block vectors for "
                                  "motion_source=auto where the codec exports none (HEVC, VP9, AV1).", FLOW_METHODS)
    warp_layer: str = option("logits", "Warp the logits (any model) or the model's features() before its head() "
                             "(the Tamed Warping Network's interior layer).", ("logits", "features"))
    rgc: bool = option(True, "Residual-guided correction: re-run the CNN on the region with the most residual.")
    rgc_threshold: float = option(30.0, "Residual level (8-bit, 0-255) above which a pixel counts for RGC "
                                  "(the paper's THR_RGC).")
    rgc_size: int | None = option(None, "RGC region size in pixels (default: half the frame height).")
    rgc_stride: int | None = option(None, "RGC region grid stride in pixels (default: a quarter of the height).")
    rgc_alpha: float = option(0.8, "Weight of the region's CNN output: F = (1 - a) F_warp + a F_cnn (TapLab Eq. 3).")
    key_interval: int | None = option(12, "A P-frame this many frames or more after the last key frame runs the CNN "
                                      "(key-interval), bounding the drift of long GOPs (under a latency budget it "
                                      "waits for a running CNN); none: the codec's I-frames and RGFS alone.")
    rgfs: bool = option(True, "Residual-guided frame selection: P-frames whose residual says warping will fail "
                        "become key frames.")
    rgfs_mode: str = option("auto", "RGFS by a target rate or an absolute threshold; auto: rate mode unless only a "
                            "threshold is given.", ("auto", "absolute", "rate"))
    rgfs_threshold: float | None = option(None, "Mean residual per pixel (8-bit levels) above which a P-frame becomes a "
                                          "key frame: absolute mode (default: none; the paper's, about 5.7, where "
                                          "the RGFS mode is absolute).")
    rgfs_rate: float | None = option(None, f"Select about this share of P-frames, those whose residual stands out "
                                     f"from the frames before them: rate mode (default: none; {DEFAULT_RGFS_RATE} "
                                     f"where the RGFS mode is rate).")
    fusion: bool | None = option(None, "Distortion-map fusion with the model's correction network where warping "
                                 "failed (default: on where the model has one).")
    fusion_weight: float = option(0.5, "w_f in M = w_f M_coarse + (1 - w_f) M_edge (DMNet).")
    fusion_threshold: float = option(30.0, "Residual level (8-bit, 0-255) above which a pixel counts in the "
                                     "distortion map.")
    fusion_memory: float = option(0.5, "Corrections that do not flicker: blend this weight of the previous frame's "
                                  "correction, carried along the motion, into each fused frame's (0: off; "
                                  "docs/runtime.md).")
    correction: str | None = option(None, "Correction network file for fusion (default: the one that comes "
                                    "with the model).", path=True)
    correction_kind: str = option("dmnet", "The correction network in fusion's place: DMNet's (corrects the warped "
                                  "logits from the frame) or the Tamed Warping Network's (warps the model's interior, "
                                  "re-runs its first layers on the frame and corrects before its decoder; "
                                  "docs/adapt.md).", ("dmnet", "twnet"))
    self_check: bool = option(True, "Check the correction stages (fusion, RGC) against the CNN at key frames and keep "
                              "only those that raise agreement with it on this video (docs/runtime.md).")
    latency_budget: float | None = option(None, "Seconds from a frame's arrival to its result: key frames over it "
                                          "run in the background, then RGC/fusion are shed, then late frames "
                                          "skipped (docs/live.md; default: no limit).")
    b_frames: str = option("both", "B-frames: warped from both anchors (held until the next anchor, so output stays "
                           "in display order; past alone under a latency budget), from the past anchor alone, "
                           "or key frames.", ("both", "past", "key"))
    interpolation: bool | None = option(None, "Offline files: hold the warped frames until the next key frame and "
                                        "blend its features, carried back along the vectors, with the previous "
                                        "one's (Inter-BMV; default: on for files, off for live sources).")
    key_blend: float = option(0.5, "Key frames that do not jump: blend at most this weight of the previous output, "
                              "carried along the motion, into a key frame's CNN output, where the motion predicts "
                              "the frame and the CNN is unsure (0: off; docs/runtime.md).")
    labels: str = option("bilinear", "Full-resolution labels: bilinear (near class boundaries only), exact (all "
                         "pixels, ~10x slower) or nearest (fastest, blocky).", LABEL_MODES)
    engine: str = option("auto", "Inference engine of the CNN and the correction network: auto (the CNN in ONNX Runtime "
                         "where its labels agree with torch's on a probe, else torch; the correction network in "
                         "torch, measured faster), torch or onnxruntime.", ENGINE_CHOICES)
    threads: int | None = option(None, "CPU threads for inference, the whole process's policy (docs/engines.md; "
                                 "default: the CPUs this process may use, its affinity and cgroup quota respected).")

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(self.describe(f.name), getattr(self, f.name))
            allowed = f.metadata["choices"]
            if allowed and getattr(self, f.name) not in allowed:
                raise ConfigError(f"{f.name} must be one of {', '.join(allowed)}, got {getattr(self, f.name)!r}")
        if self.fusion and self.warp_layer != "logits":
            raise ConfigError("fusion corrects logits; it needs warp_layer='logits'")
        if self.correction_kind == "twnet" and self.warp_layer != "logits":
            raise ConfigError("correction_kind='twnet' warps its own layer (the logits and the model's interior); "
                              "leave warp_layer at 'logits'")
        if not 0 <= self.fusion_weight <= 1:
            raise ConfigError(f"fusion_weight must be in 0..1, got {self.fusion_weight}")
        if not 0 <= self.fusion_threshold <= 255:
            raise ConfigError(f"fusion_threshold is an 8-bit residual level in 0..255, got {self.fusion_threshold}")
        if self.interpolation and self.propagation != "accumulate":
            raise ConfigError("interpolation needs propagation='accumulate' (the frames wait for their corrections, "
                              "which a chain would carry forward)")
        if self.latency_budget is not None:
            if self.interpolation:
                raise ConfigError("interpolation holds frames until the next key frame; it cannot keep a "
                                  "latency_budget (set interpolation to none or false)")
            if not self.latency_budget > 0:
                raise ConfigError(f"latency_budget must be > 0 seconds (or None), got {self.latency_budget!r}")
            if self.propagation != "accumulate":
                raise ConfigError("latency_budget needs propagation='accumulate' (a late key frame is carried "
                                  "forward through the motion accumulated since it)")
        if not 0 <= self.rgc_threshold <= 255:
            raise ConfigError(f"rgc_threshold is an 8-bit residual level in 0..255, got {self.rgc_threshold}")
        if not 0 <= self.fusion_memory < 1:
            raise ConfigError(f"fusion_memory must be in 0..1, 1 excluded (0: off), got {self.fusion_memory}")
        if not 0 <= self.key_blend <= 1:
            raise ConfigError(f"key_blend must be in 0..1 (0: off), got {self.key_blend}")
        if not 0 <= self.rgc_alpha <= 1:
            raise ConfigError(f"rgc_alpha must be in 0..1, got {self.rgc_alpha}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1 (or None: every CPU this process may use), got {self.threads}")
        if self.key_interval is not None and self.key_interval < 1:
            raise ConfigError(f"key_interval must be >= 1 frame (or None), got {self.key_interval}")
        for name in ("rgc_size", "rgc_stride"):
            v = getattr(self, name)
            if v is not None and v < 16:
                raise ConfigError(f"{name} must be an integer >= 16 pixels (or None), got {v!r}")
        if self.rgfs_threshold is not None:
            if not (0 <= self.rgfs_threshold <= 255) or math.isnan(self.rgfs_threshold):
                raise ConfigError(f"rgfs_threshold is a mean residual per pixel in 0..255, got {self.rgfs_threshold}")
            if self.rgfs_mode == "rate":
                raise ConfigError("rgfs_threshold selects P-frames by an absolute level; it contradicts "
                                  "rgfs_mode='rate' (set rgfs_mode to auto or absolute, or rgfs_threshold to none)")
        if self.rgfs_rate is not None:
            if not 0 < self.rgfs_rate < 1:
                raise ConfigError(f"rgfs_rate must be in (0, 1), got {self.rgfs_rate}")
            if self.rgfs_mode == "absolute":
                raise ConfigError("rgfs_rate selects P-frames by rate; it contradicts rgfs_mode='absolute' "
                                  "(set rgfs_mode to auto or rate, or rgfs_rate to none)")

    @property
    def rgfs_by_rate(self) -> bool:
        """Whether RGFS selects a share of the P-frames (rate mode) rather than thresholding their score: rate mode,
        or auto unless a threshold alone is given."""
        if self.rgfs_mode == "auto":
            return self.rgfs_rate is not None or self.rgfs_threshold is None
        return self.rgfs_mode == "rate"

    @property
    def rgfs_level(self) -> float:
        """The score above which absolute mode selects a P-frame."""
        return PAPER_RGFS_THRESHOLD if self.rgfs_threshold is None else self.rgfs_threshold

    @property
    def rgfs_share(self) -> float:
        """The share of P-frames rate mode selects."""
        return DEFAULT_RGFS_RATE if self.rgfs_rate is None else self.rgfs_rate

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **values) -> RuntimeConfig:
        """A copy with ``values`` changed (validated as a whole; unknown names refused)."""
        return type(self).from_dict({**self.to_dict(), **values})

    @classmethod
    def from_dict(cls, values: dict) -> RuntimeConfig:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown runtime option(s): {', '.join(unknown)} "
                              f"(known: {', '.join(sorted(cls.field_names()))})")
        return cls(**values)

    @classmethod
    def for_model(cls, spec: Any) -> RuntimeConfig:
        """The defaults that come with a model spec: an adapted model's options (``taplab adapt`` chose them on the
        footage it adapted to), else the defaults. What ``Segmenter`` and ``taplab segment`` start from when no
        config is given; options given override them. A loaded model counts by where it came from (``source``)."""
        spec = getattr(spec, "source", spec)
        if is_adapted(spec):
            return cls.from_dict(read_adapted(spec).config)
        return cls()

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

    # -- the fields described, for the command line

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def describe(cls, name: str) -> FieldInfo:
        """What the command line needs to know of one field."""
        f = _field(cls, name)
        hint = _type_hints(cls)[name]
        args = get_args(hint)  # (T, NoneType) for "T | None"
        value_type = next(a for a in args if a is not type(None)) if args else hint
        return FieldInfo(f.name, value_type, type(None) in args, f.default, f.metadata["help"], f.metadata["choices"],
                         f.metadata["path"], f.metadata["api_only"])

    @classmethod
    def parse(cls, name: str, text: str) -> Any:
        """The value of field ``name`` from its text form (``"0.5"``, ``"on"``, ``"none"``...): how ``bench --set``
        and config text become typed values. ``none``, ``null`` and ``auto`` are None for a field that may be None."""
        info = cls.describe(name)
        low = text.strip().lower()
        if info.optional and low in ("none", "null", "auto"):
            return None
        if info.value_type is bool:
            if low in ("true", "on", "yes", "1"):
                return True
            if low in ("false", "off", "no", "0"):
                return False
            raise ConfigError(f"{name} is true or false{' (or auto)' if info.optional else ''}, got {text!r}")
        if info.value_type is str:
            return text.strip()
        try:
            return info.value_type(text)
        except ValueError:
            raise ConfigError(f"{name} must be a{'n integer' if info.value_type is int else ' number'}, got {text!r}") from None


@dataclass(frozen=True)
class FieldInfo:
    """One field of :class:`RuntimeConfig`: its value type (bool, int, float or str), whether it may be None,
    its default, help text and choices, whether it names a file, and the choices only the API can use."""

    name: str
    value_type: type
    optional: bool
    default: Any
    help: str
    choices: tuple | None
    path: bool
    api_only: tuple = ()

    @property
    def flag(self) -> str:
        """The command-line option: ``--rgc-alpha`` for ``rgc_alpha``."""
        return "--" + self.name.replace("_", "-")


def _check_type(info: FieldInfo, value: Any) -> None:
    """A value of the field's type: a bool for a switch (not 0 or "no"), an int (not a bool) for a count, a
    number (not a bool) for a float, a string for a choice or a path; None where the field may be None."""
    if value is None and info.optional:
        return
    expected = info.value_type
    ok = isinstance(value, (int, float) if expected is float else expected) and \
        (expected is bool or not isinstance(value, bool))
    if not ok:
        if expected is bool and info.optional:
            raise ConfigError(f"{info.name} must be true, false or null (auto), got {value!r}")
        what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[expected]
        raise ConfigError(f"{info.name} must be {what}{' (or null)' if info.optional else ''}, got {value!r}")


@functools.cache
def _type_hints(cls) -> dict[str, Any]:
    """A dataclass's field types, evaluated once (annotations are text here: ``from __future__ import annotations``)."""
    return get_type_hints(cls)


def _field(cls, name: str) -> Field:
    for f in fields(cls):
        if f.name == name:
            return f
    raise ConfigError(f"unknown runtime option {name!r} (known: {', '.join(sorted(cls.field_names()))})")
