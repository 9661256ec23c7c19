"""``taplab bench``: sweeps of the runtime over GOPs, module combinations, motion sources and any
:class:`~taplab.runtime.RuntimeConfig` field, measured side by side in one process.

Every point of a sweep is one runtime configuration on the same clips, encoded at the point's GOP.
Per point: mIoU against the labels (synthetic clips have them on every frame), fidelity (mIoU
against the per-frame run at the same GOP: works on any video), temporal consistency (TC: with the
clips' ground-truth flow on synthetic data, with DIS optical flow on other videos, never with the
codec's vectors; on synthetic clips also TC where the flow holds, which leaves out the pixels whose true
label changes along the flow, and the ground truth's own TC), the key-frame jump (the share of pixels whose label changes from the previous frame, at
key frames and at warped frames, and their ratio: :class:`~taplab.metrics.KeyFrameJump`), corrected
labels (CL: share of pixels the corrections changed after the warp), the
share of key frames, frames/s over the whole run, ms per stage, the TapLab speed model's prediction
from the run's own T_I and T_P, and mIoU by distance from the key frame.

Data:
- ``synth:clips=N,frames=N,size=HxW``: synthetic clips with the default scene parameters and seeds
  ``seed``, ``seed + 1``, ... (default 700001: scenes that neither the default model nor its
  correction network was trained on), rendered once per GOP and encoded with it;
- a video file: its first ``frames`` frames, re-encoded at each GOP (no labels: fidelity and TC only);
- a Cityscapes-format sequence folder: the papers' protocol (the 20th frame of each 30-frame snippet
  is the annotated one; the key frame sits ``key_distance`` frames before it, or a distance drawn
  per snippet), scored on the annotated frames only; mIoU where ``gtFine`` labels are present.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from taplab.data import layout
from taplab.errors import ConfigError
from taplab.files import read_image

#: the TapLab paper's Table 5 rows, and fusion (DMNet) on top
MODULES: dict[str, dict] = {
    "per-frame": dict(ffw=False),
    "FFW": dict(rgc=False, rgfs=False, fusion=False),
    "FFW+RGC": dict(rgfs=False, fusion=False),
    "FFW+RGFS": dict(rgc=False, fusion=False),
    "FFW+RGC+RGFS": dict(fusion=False),
    "FFW+fusion": dict(rgc=False, rgfs=False, fusion=True),
    "FFW+RGC+fusion": dict(rgfs=False, fusion=True),
    "FFW+RGC+RGFS+fusion": dict(fusion=True),
}
#: baselines that are not runtime configurations (:mod:`taplab.bench.baselines`)
BASELINES = ("ITP",)


@dataclass
class BenchConfig:
    """A sweep: the product of ``gops`` x ``modules`` x ``motion`` x the values of every ``sweep`` field.

    Attributes:
        data: ``synth:...`` spec or a video path (see the module docstring).
        gops: GOP sizes; the data is encoded at each.
        modules: names from :data:`MODULES`.
        motion: motion sources (``auto``, ``codec``, ``dis-fast``, ...; :class:`~taplab.runtime.RuntimeConfig`'s
            ``motion_source``), for the warping modules. ``auto`` (the default) is the codec's vectors, or
            vectors estimated by optical flow for a codec that exports none (``hevc``, ``vp9``).
        sweep: ``{RuntimeConfig field: [values]}``, e.g. ``{"rgc_alpha": [0.5, 0.8]}``. Points run with
            ``key_interval=None`` unless it is swept: a GOP sweep measures the codec's GOP; and with ``self_check``
            off unless it is swept, so that a row runs the modules it names.
        models: the segmentation models (anything ``load_model`` accepts; their correction networks
            come with them).
        scales: resolution factors: the frames (and labels) are resized by each before encoding
            (synthetic clips are rendered at that size).
        frames: for a video, how many of its frames.
        key_distance: for a Cityscapes sequence folder, frames between the key frame and the
            annotated one (None: drawn per snippet from ``seed``).
        codec: the encoder for the clips (a key of :data:`taplab.codec.CODECS`: ``mpeg4`` as the papers,
            ``h264``, ``hevc``, ``vp9``, ``mpeg2``).
        seed: the synthetic clips' seed.
        device: where the models run (``"auto"``: the GPU where torch sees one); each record names it.
    """

    data: str = "synth:clips=2,frames=30,size=512x1024"
    gops: tuple[int, ...] = (12,)
    modules: tuple[str, ...] = tuple(MODULES)
    motion: tuple[str, ...] = ("auto",)
    sweep: dict[str, list] = field(default_factory=dict)
    models: tuple[str, ...] = ("default",)
    scales: tuple[float, ...] = (1.0,)
    frames: int = 60
    key_distance: int | None = None
    codec: str = "mpeg4"
    seed: int = 700001
    device: str = "auto"

    def __post_init__(self) -> None:
        from taplab.runtime.config import RuntimeConfig

        self.gops, self.modules, self.motion = tuple(self.gops), tuple(self.modules), tuple(self.motion)
        self.models, self.scales = tuple(self.models), tuple(float(x) for x in self.scales)
        if not self.models or not self.scales or any(not 0.05 <= x <= 4 for x in self.scales):
            raise ConfigError(f"need at least one model, and resolution scales in 0.05..4, got {self.scales}")
        unknown = [m for m in self.modules if m not in MODULES and m not in BASELINES]
        if unknown:
            raise ConfigError(f"unknown module combination {unknown[0]!r}; choose from {', '.join([*MODULES, *BASELINES])}")
        if "truth" in self.motion and not self.data.startswith("synth"):
            raise ConfigError("motion 'truth' (ground-truth flow) needs synthetic data")
        if not self.gops or any(not isinstance(g, int) or g < 1 for g in self.gops):
            raise ConfigError(f"GOPs must be integers >= 1, got {self.gops}")
        if self.frames < 2:
            raise ConfigError(f"frames must be >= 2, got {self.frames}")
        if self.key_distance is not None and self.key_distance < 0:
            raise ConfigError(f"key_distance must be >= 0, got {self.key_distance}")
        for point in self.points():  # every combination must be a valid runtime configuration
            if point.modules not in BASELINES:
                RuntimeConfig.from_dict(point.options)

    def points(self) -> list[Point]:
        """Every configuration of the sweep; per-frame and ITP once per GOP, model and scale (motion and
        swept options do not apply to them)."""
        names, values = list(self.sweep), [list(v) for v in self.sweep.values()]
        out = []
        for scale, gop, model, module in itertools.product(self.scales, self.gops, self.models, self.modules):
            if module == "per-frame" or module in BASELINES:
                out.append(Point(gop, module, "-", {}, dict(MODULES.get(module, {})), model, scale))
                continue
            for motion, combo in itertools.product(self.motion, itertools.product(*values)):
                swept = dict(zip(names, combo))
                # a GOP sweep measures the codec's GOP: no key-interval bound unless it is swept itself; and a row
                # measures the modules it names: no self-check leaving some out unless it is swept itself
                options = {**MODULES[module], "motion_source": motion, "key_interval": None, "self_check": False,
                           **swept}
                out.append(Point(gop, module, motion, swept, options, model, scale))
        return out


@dataclass
class Point:
    gop: int
    modules: str
    motion: str
    swept: dict
    options: dict  # the RuntimeConfig fields this point sets
    model: str = "default"
    scale: float = 1.0

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.swept.items())
        motion = "" if self.motion in ("-", "codec", "auto") else f", {self.motion}"
        model = "" if self.model == "default" else f", {self.model}"
        scale = "" if self.scale == 1 else f", x{self.scale:g}"
        return f"{self.modules}{motion}{extra}{model}{scale}"


@dataclass
class Clip:
    video: Path
    labels: list[np.ndarray | None] | None  # per frame (None where unlabelled), or None (no ground truth)
    flows: list[np.ndarray] | None   # backward ground-truth flow per frame, or None
    tc_flows: list                   # the flows TC warps with: ground truth, else DIS optical flow ([0] unused)
    scored: set[int] | None = None   # the frames accuracy and fidelity count (None: all)
    held: list | None = None         # with ground-truth flow: where it holds, per frame (metrics.motion_holds)


def prepare_clips(config: BenchConfig, gop: int, workdir: Path, scale: float = 1.0) -> list[Clip]:
    """The sweep's data at ``scale`` encoded at ``gop`` (synthetic clips rendered with labels and flow)."""
    from taplab.data.synth import SynthConfig, write_clip
    from taplab.metrics import motion_holds

    folder = workdir / f"gop{gop}-x{scale:g}"
    if config.data == "synth" or config.data.startswith("synth:"):
        from taplab.data.datasets import parse_synth_spec

        spec = parse_synth_spec(config.data)
        clips = []
        for k in range(spec.clips):
            name = f"clip{k}"
            h, w = (_scaled(v, scale) for v in spec.size)
            synth = SynthConfig(height=h, width=w, frames=spec.frames, seed=config.seed + k)
            video = write_clip(folder, synth, gop=gop, codec=config.codec, name=name)
            labels = [layout.read_labels(layout.clip_label_path(folder, name, t)) for t in range(spec.frames)]
            flows = list(np.load(layout.clip_flow_path(folder, name))["flow"].astype(np.float32))
            clips.append(Clip(video, labels, flows, flows, held=motion_holds(labels, flows)))
        return clips
    if Path(config.data).is_dir():
        return _cityscapes_clips(config, gop, folder, scale)
    from taplab.codec import open_video

    with open_video(config.data) as video:
        frames = [_resize(f.image, scale) for _, f in zip(range(config.frames), video)]
    if len(frames) < 2:
        raise ConfigError(f"{config.data} holds fewer than 2 frames")
    return [_encoded_clip(frames, folder / "clip.mp4", gop, config.codec)]


def _scaled(n: int, scale: float) -> int:
    """A size times ``scale``, even (the encoders' chroma subsampling) and at least 64."""
    return max(64, 2 * round(n * scale / 2))


def _resize(image: np.ndarray, scale: float, labels: bool = False) -> np.ndarray:
    if scale == 1:
        return image
    size = (_scaled(image.shape[1], scale), _scaled(image.shape[0], scale))
    return cv2.resize(image, size, interpolation=cv2.INTER_NEAREST if labels else cv2.INTER_AREA)


def _encoded_clip(frames: list[np.ndarray], path: Path, gop: int, codec: str, labels=None, scored=None) -> Clip:
    """Frames encoded at ``gop``; TC's flow is DIS optical flow on the decoded frames, as the methods see them."""
    from taplab.codec import encode, open_video
    from taplab.ops.flow import OpticalFlow

    path.parent.mkdir(parents=True, exist_ok=True)
    video = encode(frames, path, gop=gop, codec=codec)
    with open_video(video) as v:
        decoded = [f.image for f in v]
    optical = OpticalFlow("dis-medium")
    flows = [None] + [optical(decoded[t], decoded[t - 1]) for t in range(1, len(decoded))]
    return Clip(video, labels, None, flows, scored)


#: the Cityscapes sequence protocol: 30-frame snippets whose 20th frame (index 19) is the annotated one
ANNOTATED = 19


def _cityscapes_clips(config: BenchConfig, gop: int, folder: Path, scale: float) -> list[Clip]:
    """The papers' protocol on a Cityscapes-format sequence folder (:mod:`taplab.data.layout`:
    ``<city>_<seq>_<frame>_leftImg8bit.png`` or ``.jpg``, anywhere below ``data``; labels, where present,
    as ``<city>_<seq>_000019_gtFine_labelTrainIds.png`` anywhere below it too): per snippet, a window of
    up to ``gop`` frames that starts with its key frame ``d`` frames before the annotated frame, ``d``
    drawn from ``0 .. min(gop, 20) - 1`` (``key_distance`` fixes it); only the annotated frame is scored."""
    root = Path(config.data)
    snippets: dict[str, dict[int, Path]] = {}
    for path in sorted(root.rglob(layout.IMAGE_GLOB)):
        parsed = layout.parse_image_name(path.name)
        if parsed:
            snippet, frame, _ = parsed
            snippets.setdefault(snippet, {})[frame] = path
    labels = {layout.label_stem(p.name): p for p in root.rglob(layout.LABEL_GLOB)}  # by <city>_<seq>_<frame>
    clips = []
    for k, (name, files) in enumerate(sorted(snippets.items())):
        indices = sorted(files)
        if ANNOTATED not in files:
            continue
        annotated = indices.index(ANNOTATED)
        rng = np.random.default_rng([config.seed, gop, k])
        reach = min(gop, annotated + 1)
        d = config.key_distance if config.key_distance is not None else int(rng.integers(0, reach))
        if d >= reach:
            raise ConfigError(f"key_distance {d} does not fit GOP {gop} before frame {ANNOTATED} of {name}")
        window = indices[annotated - d:annotated - d + gop]
        frames = [_resize(read_image(files[i]), scale) for i in window]
        truth = [None] * len(frames)
        stem = layout.frame_stem(name, ANNOTATED)
        if stem in labels:
            truth[d] = _resize(layout.read_labels(labels[stem]), scale, labels=True)
        clips.append(_encoded_clip(frames, folder / f"{name}.mp4", gop, config.codec,
                                   truth if truth[d] is not None else None, {d}))
    if not clips:
        raise ConfigError(f"{root} holds no Cityscapes sequence snippet with frame {ANNOTATED:06d} "
                          "(<city>_<seq>_<frame>_leftImg8bit.png or .jpg)")
    return clips


def run_sweep(config: BenchConfig, progress: Callable[[int, int, Point], None] | None = None) -> list[dict]:
    """Run every point; returns one record per point (see :mod:`taplab.bench.report` for the outputs)."""
    from taplab.nets.loader import load_model
    from taplab.runtime import Segmenter

    models = {name: load_model(name, device=config.device) for name in config.models}
    points = config.points()
    for point in points:  # fail before minutes of work: e.g. fusion asked of a model without a correction network
        if point.modules not in BASELINES:
            Segmenter(models[point.model], **point.options)
    records, done = [], 0
    with tempfile.TemporaryDirectory(prefix="taplab-bench-") as tmp:
        for scale, gop in itertools.product(config.scales, config.gops):
            clips = prepare_clips(config, gop, Path(tmp), scale)
            for name, model in models.items():
                reference = _per_frame(model, clips)
                for point in (p for p in points if (p.gop, p.scale, p.model) == (gop, scale, name)):
                    records.append(measure(model, point, clips, reference))
                    done += 1
                    if progress is not None:
                        progress(done, len(points), point)
    return records


def _per_frame(model, clips: list[Clip]) -> list[list[np.ndarray]]:
    from taplab.runtime import Segmenter

    seg = Segmenter(model, ffw=False)
    return [[r.labels for r in seg.run(c.video)] for c in clips]


def measure(model, point: Point, clips: list[Clip], reference: list[list[np.ndarray]]) -> dict:
    """One point over all clips: accuracy, fidelity, TC, CL, key frames, speed, stages, by distance."""
    from taplab.bench.baselines import interpolate_keys
    from taplab.metrics import (
        AccuracyByDistance,
        ConfusionMatrix,
        KeyFrameJump,
        corrected_labels,
        percent,
        speed_model,
        temporal_consistency,
    )
    from taplab.ops.labels import upsample_labels
    from taplab.runtime import Segmenter

    n_classes = model.num_classes
    if point.modules == "ITP":
        def results(clip):
            return interpolate_keys(model, clip.video)
    else:
        seg = Segmenter(model, **point.options)
        corrections = seg.config.rgc or seg.fusion  # CL is 0 without them: no need for the warped logits

        def results(clip):
            return seg.run(clip.video, details=corrections, truth_flow=clip.flows)
    truth_cm, fid_cm, by_distance = ConfusionMatrix(n_classes), ConfusionMatrix(n_classes), AccuracyByDistance(n_classes)
    tc, tc_held, truth_tc, cl, stages, jump = [], [], [], [], {}, KeyFrameJump()
    key_t, warp_t, frames, keys, seconds = [], [], 0, 0, 0.0
    for clip, per_frame in zip(clips, reference):
        labels, last_key, overhead = [], 0, 0.0
        jump.start()
        start = time.perf_counter()
        for r in results(clip):
            scoring = time.perf_counter()  # the metrics' own time is taken out of the frame rate
            overhead += r.timings.pop("details", 0.0)  # and so is what details=True costs the runtime
            labels.append(r.labels)
            jump.update(r.labels, r.is_key)
            size = r.labels.shape
            total = sum(r.timings.values())
            (key_t if r.is_key else warp_t).append(total)
            for k, v in r.timings.items():
                stages[k] = stages.get(k, 0.0) + v
            last_key = r.index if r.is_key else last_key
            if clip.scored is None or r.index in clip.scored:
                fid_cm.update(r.labels, per_frame[r.index])
                if clip.labels is not None and clip.labels[r.index] is not None:
                    truth_cm.update(r.labels, clip.labels[r.index])
                    by_distance.update(r.index - last_key, r.labels, clip.labels[r.index])
            if r.warped is not None:
                cl.append(corrected_labels(r.labels, upsample_labels(r.warped, r.labels.shape)))
            keys += r.is_key
            frames += 1
            overhead += time.perf_counter() - scoring
        seconds += time.perf_counter() - start - overhead
        tc.append(temporal_consistency(labels, clip.tc_flows[:len(labels)], n_classes))
        if clip.held is not None:  # synthetic clips: TC where the flow holds, and the ground truth's own TC
            tc_held.append(temporal_consistency(labels, clip.tc_flows[:len(labels)], n_classes, clip.held[:len(labels)]))
            truth_tc.append(temporal_consistency(clip.labels[:len(labels)], clip.tc_flows[:len(labels)], n_classes))
    g = frames / max(keys, 1)
    t_i = float(np.mean(key_t)) if key_t else float("nan")
    t_p = float(np.mean(warp_t)) if warp_t else 0.0
    return {
        **{k: v for k, v in asdict(point).items() if k != "options"}, "label": point.label,
        "miou": percent(truth_cm.miou()) if truth_cm.counts.any() else None,
        "fidelity": percent(fid_cm.miou()), "tc": percent(float(np.nanmean(tc))),
        "tc_held": percent(float(np.nanmean(tc_held))) if tc_held else None,
        "truth_tc": percent(float(np.nanmean(truth_tc))) if truth_tc else None,
        "change_key": percent(jump.key_change) if jump.key_change is not None else None,
        "change_warped": percent(jump.warped_change) if jump.warped_change is not None else None,
        "key_jump": round(jump.ratio, 2) if jump.ratio is not None else None,
        "cl": round(100 * float(np.mean(cl)), 2) if cl else 0.0,
        "size": "x".join(map(str, size)), "device": str(model.device),
        "key_share": round(100 * keys / frames, 1), "frames": frames, "fps": round(frames / seconds, 2),
        "speed_model_fps": round(speed_model(t_i, t_p, g), 2) if key_t else None,
        "t_key_ms": round(1000 * t_i, 1), "t_warp_ms": round(1000 * t_p, 2) if warp_t else None,
        "stages_ms": {k: round(1000 * v / frames, 2) for k, v in stages.items()},
        "miou_by_distance": {d: percent(v) for d, v in by_distance.miou().items()},
    }
