"""Label-free adaptation: a correction network learns a model's own per-frame output on the user's footage.

``taplab adapt MODEL VIDEO... --out DIR``. Nobody has labels for every frame of their video, but
the model itself, run on every frame, says what the accelerated output should be: it is the
teacher. The recipe:

- **Samples, as the runtime makes them.** Each video runs through the runtime with its default
  configuration (B-frames, interpolation, RGFS, the key interval) but without corrections
  (``fusion=False, rgc=False``, ``details=True``). Every warped frame gives one sample: the frame as
  the correction network sees it, the warped logits, the coarse distortion map, and the teacher's
  logits on that frame. That is exactly the input fusion gets at run time, since fusion runs
  first among the corrections.
- **Split in time.** The first ``1 - holdout`` of each video's frames train; the rest validate.
  Later frames are the harder test: the scene has moved on.
- **Targets** (:func:`adaptation_losses`), on the fused logits ``F = F_w + M (F_u - F_w)`` at the
  feature grid: the teacher's soft output (KL divergence), its arg-max as pseudo-labels
  (cross-entropy), DMNet's edge-semantics term on the pseudo-labels' boundary cells, the edge map
  against those cells and the distortion map against the cells where the warped arg-max disagrees
  with the teacher. Where labels exist (a ``taplab synth`` folder's videos) and the model has their
  classes, a supervised cross-entropy is added.
- **Validation decides.** The correction is switched on only if it raises the held-out warped
  frames' fidelity (mIoU against the teacher's labels, at full resolution, as the runtime makes
  labels) by more than ``min_gain`` points; the report says which, and why.
- **Bounded time.** ``steps`` Adam steps (the poly schedule), stopped early after ``minutes``.
  The step count, not the clock, makes a run reproducible: with the same seed and steps the same
  weights come out; a run the clock stopped says so in its report.

The folder it writes (:mod:`taplab.nets.adapted`) is a model: ``taplab segment --model DIR``,
``Segmenter(model=DIR)``.

``kind`` (``--kind``) chooses the correction: DMNet's CoNet, as above (:func:`adapt_dmnet`), or the Tamed
Warping Network's (:mod:`taplab.adapt.twnet`), whose samples and network differ and whose losses,
validation, decision and folder are these.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from taplab.codec import open_video
from taplab.data import layout
from taplab.data.labels import CLASSES, IGNORE_LABEL
from taplab.data.transforms import to_tensor
from taplab.errors import ConfigError
from taplab.metrics import ConfusionMatrix, percent
from taplab.nets.adapted import write_adapted
from taplab.nets.conet import IMAGE_SCALE, CoNet, Correction, correction_image, save_correction
from taplab.nets.loader import Model, load_model
from taplab.nets.registry import list_architectures
from taplab.nets.zoo import find_shipped
from taplab.ops.fusion import distortion_map, fuse
from taplab.ops.labels import labels_from_logits
from taplab.runtime import Segmenter
from taplab.runtime.config import RuntimeConfig, option
from taplab.threads import apply_threads, available_memory

#: the correction network's file in an adapted model's folder
CORRECTION_FILE = "correction.pt"
REPORT_FILE = "report.md"


@dataclass(frozen=True)
class AdaptConfig:
    """How one adaptation runs; ``taplab adapt`` has one option per field, generated from their help texts.
    Validated on construction."""

    kind: str = option("dmnet", "The correction to adapt: DMNet's fusion network or the Tamed Warping Network's "
                       "correction (twnet: the model's interior warped, its first layers re-run; docs/adapt.md).",
                       ("dmnet", "twnet"))
    holdout: float = option(0.3, "Share of each video's frames, at its end, held out to validate the correction.")
    frames: int = option(300, "Frames read per video, from its start (a 720p frame's samples take 5 MB; "
                        "16 MB with --kind twnet; more than the machine can spare is refused before reading).")
    steps: int = option(3000, "Training steps (Adam, poly schedule); the same steps and seed give the same weights.")
    minutes: float | None = option(None, "Stop training after this many minutes, even before --steps (default: no "
                                   "limit).")
    width: int = option(16, "Width of the correction network (its cost grows with it).")
    scale: int = option(2, "Run the correction network on half the feature grid (2: a quarter of the cells, for "
                        "slightly coarser corrections) or on the feature grid (1); DMNet's only (TWNet's runs on "
                        "the feature grid).")
    batch_size: int = option(8, "Crops per training step.")
    crop: int = option(64, "Side of the square training crops, in cells of the model's output grid.")
    lr: float = option(2e-3, "Adam's initial learning rate.")
    labels: bool = option(True, "Add a supervised term where the videos have labels (a `taplab synth` folder's) "
                          "and the model their classes.")
    min_gain: float = option(0.0, "Fidelity points the correction must add on the held-out frames to be switched on.")
    seed: int = option(0, "Seed of the initialisation and the crops.")
    threads: int | None = option(None, "Torch CPU threads (default: torch's).")

    def __post_init__(self) -> None:
        if self.kind not in ("dmnet", "twnet"):
            raise ConfigError(f"kind is dmnet or twnet, got {self.kind!r}")
        if not 0 < self.holdout < 1:
            raise ConfigError(f"holdout is the share of frames held out, in (0, 1), got {self.holdout}")
        for name in ("frames", "steps", "width", "batch_size", "crop"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.scale not in (1, 2):
            raise ConfigError(f"scale is 1 (the feature grid) or 2 (half of it), got {self.scale}")
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"minutes must be > 0 (or None), got {self.minutes}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


@dataclass
class Sample:
    """One warped frame as fusion sees it: ``image`` uint8 RGB at :data:`~taplab.nets.conet.IMAGE_SCALE` times the
    grid, ``warped`` and ``teacher`` float16 logits (C, h, w), ``coarse`` float16 (h, w), ``labels`` uint8 (h, w) at
    the cells' centres where the video has labels (else None), and where it came from."""

    image: np.ndarray
    warped: np.ndarray
    coarse: np.ndarray
    teacher: np.ndarray
    labels: np.ndarray | None
    video: int
    index: int


@dataclass
class Footage:
    """The samples of the given videos: ``train`` and ``held`` (the last ``holdout`` of each video's frames),
    ``size`` each video's frame size and ``frames`` the frames read of it, ``warp_ms`` the runtime's warp per
    warped frame (median)."""

    train: list[Sample]
    held: list[Sample]
    size: list[tuple[int, int]]
    frames: list[int]
    warp_ms: float


def video_labels(video: str | os.PathLike[str], model: Model) -> list[np.ndarray] | None:
    """A video's labels per frame where it lives in a ``taplab synth`` folder (``video/X.mp4`` beside
    ``gtFine/X/``) and ``model`` has those labels' classes (Cityscapes' train ids), else None."""
    if tuple(model.class_names) != tuple(c.name for c in CLASSES):
        return None
    path = Path(video)
    if path.parent.name != layout.VIDEOS_DIR:
        return None
    folder = layout.clip_labels_dir(path.parent.parent, path.stem)
    return layout.read_clip_labels(folder) if folder.is_dir() else None


def collect(model: Model, videos: Sequence[str], cfg: AdaptConfig,
            progress: Callable[[str, int, int], None] | None = None, seg: Segmenter | None = None,
            make: Callable[..., Any] | None = None) -> Footage:
    """Run the videos through the runtime (``seg``; default: without corrections) and keep every warped frame as a
    sample, ``make(result, video_index, video, labels_of_the_frames)`` (default: a :class:`Sample`, with the teacher's
    logits on it; None for a result that gives none)."""
    seg = seg or Segmenter(model, device=model.device, fusion=False, rgc=False)
    make = make or partial(_fusion_sample, model)
    train, held, sizes, counts, warp = [], [], [], [], []
    for v, video in enumerate(videos):
        truth = video_labels(video, model)
        samples, frames = [], 0
        with open_video(video) as source:
            total = min(cfg.frames, source.frame_count or cfg.frames)
            source.stop_after(cfg.frames)  # the frames held back for later ones still come out
            for r in seg.run(source, images=True, details=True):
                frames += 1
                if progress is not None:
                    progress(f"frames of {source.name}", frames, total)
                sample = make(r, v, video, truth)
                if sample is not None:
                    samples.append(sample)
                    warp.append(r.timings.get("warp", 0.0))
        cut = math.ceil((1 - cfg.holdout) * frames)
        train += [s for s in samples if s.index < cut]
        held += [s for s in samples if s.index >= cut]
        sizes.append(tuple(r.labels.shape) if frames else (0, 0))
        counts.append(frames)
    if not train or not held:
        raise ConfigError(f"the videos gave {len(train)} warped frames to train on and {len(held)} to validate with; "
                          "adaptation needs both (longer videos, or more of their frames: --frames)")
    return Footage(train, held, sizes, counts, 1000 * statistics.median(warp))


#: the share of the available memory the samples may take (the model, the runtime and training need the rest)
MEMORY_SHARE = 0.8


def footage_bytes(model: Model, videos: Sequence[str], cfg: AdaptConfig, per_cell: int) -> tuple[int, str]:
    """The most memory the samples of ``videos`` take, every frame read a warped frame of ``per_cell`` bytes per cell of
    the model's output grid; and the largest video's size, for messages."""
    total, largest = 0, (0, "")
    for video in videos:
        with open_video(video) as source:
            frames = min(cfg.frames, source.frame_count or cfg.frames)
            h, w = model.geometry(source.height, source.width).size
            largest = max(largest, (h * w * per_cell, f"{source.width}x{source.height}"))
        total += frames * h * w * per_cell
    return total, f"{largest[0] / 2**20:.0f} MB per frame at {largest[1]}"


def check_memory(needed: int, available: int | None, what: str) -> None:
    """:class:`ConfigError` where the samples (``needed`` bytes; ``what``: their size per frame) would take more than
    :data:`MEMORY_SHARE` of the ``available`` memory (None: unknown, not checked): a clear error, not the kernel's kill
    minutes into the run."""
    if available is not None and needed > MEMORY_SHARE * available:
        raise ConfigError(f"adaptation would hold up to {needed / 2**30:.1f} GB of samples ({what}), more than this "
                          f"machine can spare of its {available / 2**30:.1f} GB available: read fewer frames per video "
                          "(--frames) or give fewer videos")


def _fusion_sample(model: Model, r, v: int, video: str, truth: list[np.ndarray] | None) -> Sample | None:
    """A warped frame's :class:`Sample` (None for other frames)."""
    if r.warped is None:
        return None
    grid = tuple(r.warped.shape[-2:])
    teacher = model.logits(to_tensor(r.image))[0].float()
    return Sample(correction_image(r.image, grid), _half(r.warped), _half(r.distortion), _half(teacher),
                  frame_labels(truth, r.index, grid), v, r.index)


def frame_labels(truth: list[np.ndarray] | None, index: int, grid: tuple[int, int]) -> np.ndarray | None:
    """Frame ``index``'s labels on the cells of ``grid``, where the video has labels for it."""
    return None if truth is None or index >= len(truth) else _cell_labels(truth[index], grid)


def _half(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float16).numpy()


def _cell_labels(labels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Full-resolution labels -> the label at each cell's centre (cells of ``H / h`` pixels)."""
    h, w = grid
    ys = np.minimum(((np.arange(h) + 0.5) * labels.shape[0] / h).astype(int), labels.shape[0] - 1)
    xs = np.minimum(((np.arange(w) + 0.5) * labels.shape[1] / w).astype(int), labels.shape[1] - 1)
    return np.ascontiguousarray(labels[ys][:, xs])


def label_edges(labels: torch.Tensor) -> torch.Tensor:
    """``(N, h, w)`` labels -> float ``(N, h, w)``: 1 on the cells next to a cell of another label."""
    edge = torch.zeros_like(labels, dtype=torch.float32)
    across = (labels[:, :, 1:] != labels[:, :, :-1]).float()
    edge[:, :, 1:] = across
    edge[:, :, :-1] = torch.maximum(edge[:, :, :-1], across)
    down = (labels[:, 1:] != labels[:, :-1]).float()
    edge[:, 1:] = torch.maximum(edge[:, 1:], down)
    edge[:, :-1] = torch.maximum(edge[:, :-1], down)
    return edge


def adaptation_losses(net: CoNet, image: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor,
                      teacher: torch.Tensor, labels: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The module docstring's losses for one batch (all on the feature grid): ``teacher`` (N, C, h, w) logits,
    ``labels`` (N, h, w) or None."""
    updated, edge_logit = net(image, warped, coarse[:, None])
    m = distortion_map(coarse, torch.sigmoid(edge_logit[:, 0]), weight)
    fused = fuse(warped, updated, m)
    pseudo = teacher.argmax(1)
    edges = label_edges(pseudo)
    edge = F.binary_cross_entropy_with_logits(edge_logit[:, 0], edges)
    wrong = (warped.argmax(1) != pseudo).float()
    warp = F.binary_cross_entropy(m.clamp(1e-4, 1 - 1e-4), wrong)
    return teacher_losses(fused, teacher, labels) + 0.5 * (edge + warp)


def teacher_losses(logits: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The terms every adapted correction learns its output by, on ``(N, C, h, w)`` logits: the teacher's soft output
    (KL divergence), its arg-max as pseudo-labels (cross-entropy), DMNet's edge-semantics term (that cross-entropy on
    the cells at a pseudo-label boundary), and a supervised cross-entropy where ``labels`` are given."""
    log_out = logits.log_softmax(1)
    pseudo = teacher.argmax(1)
    soft = F.kl_div(log_out, teacher.log_softmax(1), log_target=True, reduction="none").sum(1).mean()
    per_cell = F.nll_loss(log_out, pseudo, reduction="none")
    edges = label_edges(pseudo)
    edge_semantic = (per_cell * edges).sum() / edges.sum().clamp(min=1)
    total = soft + per_cell.mean() + edge_semantic
    if labels is not None and (labels != IGNORE_LABEL).any():
        total = total + F.nll_loss(log_out, labels, ignore_index=IGNORE_LABEL)
    return total


def _batch(samples: list[Sample], cfg: AdaptConfig, rng: np.random.Generator):
    """Random crops of ``cfg.crop`` cells (whole samples where smaller) with horizontal flips; labels where ``cfg.labels``
    and every sample of the batch has them."""
    picks = rng.integers(0, len(samples), cfg.batch_size)
    crops = []
    h, w = samples[int(picks[0])].coarse.shape  # one size per batch: the first pick's video
    picks = [int(i) for i in picks if samples[int(i)].coarse.shape == (h, w)]
    ch, cw = min(h, cfg.crop), min(w, cfg.crop)
    for i in picks:
        s = samples[i]
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        cells = (slice(y, y + ch), slice(x, x + cw))
        pixels = (slice(IMAGE_SCALE * y, IMAGE_SCALE * (y + ch)), slice(IMAGE_SCALE * x, IMAGE_SCALE * (x + cw)))
        crop = [s.image[pixels], s.warped[(slice(None), *cells)], s.coarse[cells], s.teacher[(slice(None), *cells)],
                None if s.labels is None else s.labels[cells]]
        if rng.random() < 0.5:
            crop = [None if a is None else a[..., ::-1, :] if k == 0 else a[..., ::-1] for k, a in enumerate(crop)]
        crops.append(crop)
    image = torch.from_numpy(np.ascontiguousarray(np.stack([c[0] for c in crops]))).permute(0, 3, 1, 2).float().div_(255)
    warped, coarse, teacher = (torch.from_numpy(np.ascontiguousarray(np.stack([c[k] for c in crops]))).float()
                               for k in (1, 2, 3))
    labels = None
    if cfg.labels and all(c[4] is not None for c in crops):
        labels = torch.from_numpy(np.ascontiguousarray(np.stack([c[4] for c in crops]))).long()
    return image, warped, coarse, teacher, labels


def train(net: torch.nn.Module, step_loss: Callable[[np.random.Generator], torch.Tensor], cfg: AdaptConfig,
          progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Train ``net`` for ``cfg.steps`` steps or ``cfg.minutes``, whichever ends first, each on ``step_loss(rng)`` (a
    batch's loss; ``rng`` seeded by ``cfg.seed``); returns ``{"steps", "seconds", "loss", "stopped_by_clock"}`` (the
    loss: the mean of the last 100 steps)."""
    rng = np.random.default_rng(cfg.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    net.train()
    losses: list[float] = []
    start, step = time.perf_counter(), 0
    limit = None if cfg.minutes is None else 60 * cfg.minutes
    while step < cfg.steps and (limit is None or time.perf_counter() - start < limit):
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * (1 - step / cfg.steps) ** 0.9
        loss = step_loss(rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
        if progress is not None:
            progress("training", step, cfg.steps)
    net.eval()
    return {"steps": step, "seconds": round(time.perf_counter() - start, 1),
            "loss": round(float(np.mean(losses[-100:])), 4) if losses else None, "stopped_by_clock": step < cfg.steps}


@torch.inference_mode()
def validate(correction: Correction | None, samples: list[Sample], sizes: list[tuple[int, int]], num_classes: int,
             weight: float) -> dict:
    """Fidelity (mIoU % against the teacher's labels) of the held-out warped frames, without and with the correction,
    at full resolution as the runtime labels them; and their mIoU against the labels where the videos have them."""
    def outputs(s: Sample) -> dict[str, torch.Tensor]:
        warped = torch.from_numpy(s.warped).float()
        out = {"warped": warped}
        if correction is not None:
            image = torch.from_numpy(s.image).permute(2, 0, 1).float().div_(255)
            coarse = torch.from_numpy(s.coarse).float()
            updated, edge = correction(image, warped, coarse)
            out["corrected"] = fuse(warped, updated, distortion_map(coarse, edge, weight))
        return out

    return fidelity(samples, outputs, sizes, num_classes)


def fidelity(samples: Sequence, outputs: Callable[[Any], dict[str, torch.Tensor]], sizes: list[tuple[int, int]],
             num_classes: int) -> dict:
    """Each sample's ``outputs`` (logits ``"warped"``, and ``"corrected"``) scored against the sample's ``teacher`` logits
    at full resolution, as the runtime labels them (fidelity: mIoU % and ``_pixels``, pixel agreement %), and against
    its ``labels`` where it has them (``truth_*``)."""
    scores = {name: ConfusionMatrix(num_classes) for name in ("warped", "corrected", "truth_warped", "truth_corrected",
                                                                "truth_teacher")}
    for s in samples:
        size = sizes[s.video]
        out = outputs(s)
        teacher = labels_from_logits(torch.from_numpy(s.teacher).float(), size, "bilinear")
        labels = {k: labels_from_logits(v, size, "bilinear") for k, v in out.items()}
        for k, v in labels.items():
            scores[k].update(v, teacher)
        if s.labels is not None:
            truth = _upsample_cells(s.labels, size)
            scores["truth_teacher"].update(teacher, truth)
            for k, v in labels.items():
                scores[f"truth_{k}"].update(v, truth)
    found = {k: percent(cm.miou()) for k, cm in scores.items() if cm.counts.sum()}
    found.update({f"{k}_pixels": percent(cm.pixel_accuracy()) for k, cm in scores.items() if cm.counts.sum()})
    return found


def _upsample_cells(cells: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = cells.shape
    ys = np.minimum((np.arange(size[0]) * h) // size[0], h - 1)
    xs = np.minimum((np.arange(size[1]) * w) // size[1], w - 1)
    return cells[ys][:, xs]


def median_ms(run: Callable[[], Any], repeats: int = 10) -> float:
    """Milliseconds ``run()`` takes: the median of ``repeats`` calls after one that warms up."""
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])


def correction_cost(correction: Correction, sample: Sample, size: tuple[int, int], repeats: int = 10) -> float:
    """Milliseconds per frame of the fusion stage's network part (frame resize, network, fusion) at the video's size."""
    frame = np.zeros((*size, 3), np.uint8)
    warped = torch.from_numpy(sample.warped).float()
    coarse = torch.from_numpy(sample.coarse).float()

    def run() -> None:
        image = to_tensor(correction_image(frame, tuple(warped.shape[-2:]), correction.scale))[0]
        updated, edge = correction(image, warped, coarse)
        fuse(warped, updated, distortion_map(coarse, edge))
    return median_ms(run, repeats)


def decide(before: float | None, after: float | None, min_gain: float) -> tuple[bool, str]:
    """Whether the correction is switched on, and why: only if it raised held-out fidelity by more than ``min_gain``."""
    if before is None or after is None:
        return False, "no held-out fidelity to compare"
    gain = after - before
    if gain > min_gain:
        return True, f"it raised held-out fidelity by {gain:.1f} points"
    return False, f"it changed held-out fidelity by {gain:+.1f} points (needs more than {min_gain:+.1f})"


def model_reference(spec: str) -> str:
    """What an adapted folder records of its model: a shipped name as is, a file as its absolute path."""
    if find_shipped(spec) is not None or spec == "default":
        return spec
    path = Path(spec)
    return str(path.resolve()) if path.exists() else spec


@dataclass
class Trained:
    """A correction adapted to the footage: its ``footage``, ``training`` record, held-out ``scores``
    (:func:`fidelity`), cost ``ms`` per frame, and ``save(path, model_reference, metrics)`` that writes its file."""

    footage: Any
    training: dict
    scores: dict
    ms: float
    save: Callable[[Path, str, dict], Any]


def adapt_dmnet(base: Model, videos: list[str], cfg: AdaptConfig,
                progress: Callable[[str, int, int], None] | None = None) -> Trained:
    """DMNet's CoNet adapted (the module docstring's recipe)."""
    weight = RuntimeConfig().fusion_weight
    # a Sample per cell: the frame at twice the grid (4 cells' RGB), two float16 logits, the coarse map, a label
    needed, what = footage_bytes(base, videos, cfg, 3 * IMAGE_SCALE**2 + 2 * (2 * base.num_classes + 1) + 1)
    check_memory(needed, available_memory(), what)
    footage = collect(base, videos, cfg, progress)
    net = CoNet(base.num_classes, width=cfg.width, scale=cfg.scale)
    training = train(net, lambda rng: adaptation_losses(net, *_batch(footage.train, cfg, rng), weight), cfg, progress)
    # Correction folds the batch norms in place: it gets a copy, the file the trained network
    correction = Correction(copy.deepcopy(net), base.class_names, base.stride, "adapted", "cpu")
    scores = validate(correction, footage.held, footage.size, base.num_classes, weight)
    cost = correction_cost(correction, footage.held[0], footage.size[footage.held[0].video])

    def save(path: Path, reference: str, metrics: dict) -> None:
        save_correction(path, net, base.class_names, base.stride, reference, metrics=metrics, adapted=True)
    return Trained(footage, training, scores, cost, save)


def _kinds() -> dict[str, Callable[..., Trained]]:
    """Each ``--kind``'s adaptation."""
    from taplab.adapt.twnet import adapt_twnet  # it builds on this module's samples, losses and scores

    return {"dmnet": adapt_dmnet, "twnet": adapt_twnet}


@dataclass
class AdaptResult:
    """What :func:`adapt` wrote (``folder``) and its report (``report``, as in ``adapted.json``)."""

    folder: Path
    report: dict
    enabled: bool

    def format(self) -> str:
        return format_report(self.report)


def adapt(model: str, videos: Sequence[str], out: str | os.PathLike[str], cfg: AdaptConfig | None = None,
          device: str = "cpu", overwrite: bool = False,
          progress: Callable[[str, int, int], None] | None = None) -> AdaptResult:
    """Adapt a correction network to ``model`` (any spec naming a model: a shipped name, a file,
    ``package.module:factory``) on ``videos`` and write the adapted model's folder ``out``.

    Nothing is written unless it succeeds: the folder is assembled beside ``out`` and renamed into place.
    Raises :class:`~taplab.errors.ConfigError` for an ``out`` that exists (unless ``overwrite``), too few
    frames, or a model given as an object; the model's and the videos' errors as :func:`taplab.load_model`
    and :func:`taplab.open_video` raise them."""
    cfg = cfg or AdaptConfig()
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError("adapt records the model by name or path; pass a shipped name, a file or package.module:factory")
    if not videos:
        raise ConfigError("adapt needs at least one video of the footage to adapt to")
    if str(model) in {a.name for a in list_architectures()}:  # its weights would differ at every load
        raise ConfigError(f"{model} is an untrained network; adapt a trained model (a shipped name or a checkpoint)")
    out = Path(out)
    if out.exists() and not (overwrite or (out.is_dir() and not any(out.iterdir()))):
        raise ConfigError(f"{out} exists; pass overwrite (--overwrite) to replace it")
    if cfg.threads:  # the process's thread policy: torch's pool, and ONNX Runtime's where a model runs there
        apply_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    base = load_model(str(model), device=device)
    trained = _kinds()[cfg.kind](base, [str(v) for v in videos], cfg, progress)
    footage, training, scores, cost = trained.footage, trained.training, trained.scores, trained.ms
    enabled, why = decide(scores.get("warped"), scores.get("corrected"), cfg.min_gain)
    report = {
        "model": model_reference(str(model)), "videos": [str(v) for v in videos], "frames": footage.frames,
        "samples": {"train": len(footage.train), "held_out": len(footage.held)},
        "training": training, "settings": asdict(cfg), "kind": cfg.kind,
        "fusion": {"enabled": enabled, "why": why, "fidelity_without": scores.get("warped"),
                   "fidelity_with": scores.get("corrected"), "agreement_without": scores.get("warped_pixels"),
                   "agreement_with": scores.get("corrected_pixels"), "ms_per_frame": round(cost, 2),
                   "warp_ms_per_frame": round(footage.warp_ms, 2),
                   "cost_over_warp": round(cost / footage.warp_ms, 2) if footage.warp_ms > 0 else None},
    }
    if "truth_warped" in scores:
        report["labels"] = {"miou_without": scores["truth_warped"], "miou_with": scores.get("truth_corrected"),
                            "miou_per_frame": scores.get("truth_teacher")}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        trained.save(staging / CORRECTION_FILE, report["model"], report["fusion"])
        options = {"fusion": enabled, **({"correction_kind": cfg.kind} if cfg.kind != "dmnet" else {})}
        write_adapted(staging, report["model"], CORRECTION_FILE if enabled else None, options, report)
        (staging / REPORT_FILE).write_text(format_report(report) + "\n")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return AdaptResult(out, report, enabled)


def format_report(report: dict) -> str:
    """The report as text (``report.md``, and what ``taplab adapt`` prints)."""
    fusion, training = report["fusion"], report["training"]

    def pct(v):
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"# Adapted: {report['model']}",
        "",
        f"Footage: {', '.join(report['videos'])} ({sum(report['frames'])} frames; "
        f"{report['samples']['train']} warped frames trained on, {report['samples']['held_out']} held out).",
        f"Training: {training['steps']} steps in {training['seconds']} s"
        + (" (stopped by --minutes)" if training["stopped_by_clock"] else "") + f", final loss {training['loss']}.",
        "",
        "| held-out warped frames | fidelity (mIoU) % | pixel agreement % | ms per frame |",
        "|---|---:|---:|---:|",
        f"| warped (no correction) | {pct(fusion['fidelity_without'])} | {pct(fusion['agreement_without'])} "
        f"| {fusion['warp_ms_per_frame']:.1f} (warp) |",
        f"| + adapted {report.get('kind', 'dmnet')} | {pct(fusion['fidelity_with'])} | {pct(fusion['agreement_with'])} "
        f"| {fusion['ms_per_frame']:.1f} |",
        "",
        f"Fusion is {'on' if fusion['enabled'] else 'off'}: {fusion['why']}.",
    ]
    if "labels" in report:
        lab = report["labels"]
        lines += ["", f"Against the labels (mIoU %): warped {pct(lab['miou_without'])}, with the correction "
                      f"{pct(lab['miou_with'])}, per-frame {pct(lab['miou_per_frame'])}."]
    return "\n".join(lines)


__all__ = ["AdaptConfig", "AdaptResult", "Trained", "adapt", "adapt_dmnet", "adaptation_losses", "collect", "decide",
           "fidelity", "frame_labels", "teacher_losses", "train", "validate"]
