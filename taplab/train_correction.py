"""Training a correction network (CoNet, :mod:`taplab.nets.conet`) for a segmentation model.

``taplab train --model conet --base MODEL --data synth:clips=40,frames=30``. The DMNet recipe,
made concrete here:

- **Pairs of frames a few apart, warped with the codec's vectors.** Every clip is encoded (MPEG-4
  Part 2, GOP ``gop``; synthetic clips are rendered and encoded first) and run through the runtime
  itself with FFW only (:class:`taplab.runtime.Segmenter`, ``details=True``): every P-frame gives
  one sample, the frame, the key frame's logits warped to it (1 to ``gop - 1`` frames apart) and
  the coarse distortion map, exactly what CoNet sees at run time, with the frame's true labels.
  The segmentation model is frozen; its logits are computed once, before training.
- **Losses**, on ``F = F_warped + M * (F_updated - F_warped)`` with ``M = w_f M_coarse + (1 - w_f) M_edge``
  (the runtime's own :func:`~taplab.ops.fusion.fuse` and :func:`~taplab.ops.fusion.distortion_map`):
  *semantic*, cross-entropy of ``F`` (upsampled) against the labels; *edge-semantics*, the same
  restricted to the cells on a class boundary, where warping fails most; *edge*, binary
  cross-entropy of ``M_edge`` against those boundary cells (edges and thin objects); *warp*, binary
  cross-entropy of ``M`` against the cells whose warped label is wrong, so that the map learns where
  warping failed. Total: ``semantic + edge_semantics + 0.5 (edge + warp)``.
- **Consistency** (``temporal`` W > 0, the Dynamic Warping Network's consistency loss): fusion corrects
  each warped frame on its own, and corrections that differ from one frame to the next flicker (on
  held-out synthetic clips, TC 70.6% against FFW's 78.4%, docs/models.md). With W set, each sample whose
  previous frame is a warped frame too is paired with it (the same crop and flip), and ``W`` times PFI's
  temporal loss (:func:`taplab.pfi.temporal_loss`) joins the total: the squared difference between the
  fused class probabilities of the frame and those of the frame before carried along the clip's
  ground-truth flow, on the feature grid's cells (the flow at the cell centres, in cells), averaged over
  the cells where the flow holds (the centre's label is the one the flow comes from, inside the frame).
  The frame after a key frame has no pair: its previous output is the CNN's, which fusion does not
  change. Both frames of a pair go through the network in one batch. The log's ``val_tc`` and
  ``val_tc_warped`` are the validation pairs' TC (:func:`taplab.metrics.temporal_consistency` on the
  cells' labels) with and without fusion. Clips need their flow (``synth:...`` and ``taplab synth``
  folders have it).
- Adam with the poly schedule, random grid-aligned crops and horizontal flips (no rescaling: the
  logits' geometry is fixed by the model); validation: mIoU of the fused output against the labels
  on the validation clips, next to that of the warped logits alone.

Outputs as :func:`taplab.train.train`'s: ``last.pt`` (with what ``--resume`` needs), ``best.pt``,
``log.jsonl``; ``taplab export`` turns a run's file into the float16 file that ships beside the model.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from taplab.data import layout
from taplab.data.labels import IGNORE_LABEL
from taplab.errors import ConfigError
from taplab.metrics import ConfusionMatrix, temporal_consistency
from taplab.nets.conet import IMAGE_SCALE, CoNet, correction_image, read_correction, save_correction
from taplab.nets.loader import Model, load_model, resolve_device
from taplab.ops.fusion import distortion_map, fuse
from taplab.ops.labels import logits_to_labels
from taplab.pfi import temporal_loss
from taplab.threads import apply_threads
from taplab.training import TrainConfig, TrainingLoop, TrainProgress, TrainResult, finite, refuse_existing_run


@dataclass
class Sample:
    """One warped frame: ``image`` uint8 RGB as CoNet sees it (:func:`~taplab.nets.conet.correction_image`:
    :data:`~taplab.nets.conet.IMAGE_SCALE` times the grid), ``warped`` float16 (C, h, w) logits,
    ``coarse`` float16 (h, w), ``labels`` uint8 (H, W) at the source resolution, ``distance`` frames from the key frame."""

    image: np.ndarray
    warped: np.ndarray
    coarse: np.ndarray
    labels: np.ndarray
    distance: int
    #: with ``collect_samples(..., pairs=True)``: the index of the previous frame's sample when that frame is
    #: warped too, the backward flow to it at the cells' centres (float16 ``(h, w, 2)``, in cells) and where that
    #: flow holds (bool ``(h, w)``); None otherwise
    previous: int | None = None
    flow: np.ndarray | None = None
    valid: np.ndarray | None = None


class Clip(NamedTuple):
    """An encoded clip with ``labels`` for every frame and, where it has one, its ground-truth ``flow`` file
    (``flow/<clip>.npz``, :func:`taplab.data.layout.clip_flow_path`)."""

    video: Path
    labels: list[np.ndarray]
    flow: Path | None = None


def labelled_clips(spec: str, split: str, workdir: Path, gop: int) -> list[Clip]:
    """The :class:`Clip` s of a data spec: ``synth:...`` (rendered and encoded into ``workdir``,
    consecutive frames at 25 frames/s; ``frames`` per clip) or a ``taplab synth`` folder (``video/*.mp4``
    with ``gtFine/<clip>/`` and ``flow/<clip>.npz``; every tenth clip is the validation split)."""
    from taplab.data.datasets import SynthImages, clip_config, parse_synth_spec
    from taplab.data.synth import write_clip

    if spec == "synth" or spec.startswith("synth:"):
        synth = parse_synth_spec(spec)
        seeds = SynthImages(synth, split).seeds
        clips = []
        for k, seed in enumerate(seeds):
            name = f"{split}{k:04d}"
            video = write_clip(workdir, clip_config(seed, synth.size, synth.frames), gop=gop, name=name)
            clips.append(Clip(video, layout.read_clip_labels(layout.clip_labels_dir(workdir, name)),
                              layout.clip_flow_path(workdir, name)))
        return clips
    folder = Path(spec)
    videos = layout.clip_videos(folder)
    if not videos:
        raise ConfigError(f"{spec}: a correction network trains on videos with labels per frame: synth:... or a "
                          "folder written by `taplab synth` (video/*.mp4 and gtFine/<clip>/)")
    chosen = [v for i, v in enumerate(videos) if (i % 10 == 9) == (split == "val")] or videos[:1]
    clips = []
    for v in chosen:
        flow = layout.clip_flow_path(folder, v.stem)
        clips.append(Clip(v, layout.read_clip_labels(layout.clip_labels_dir(folder, v.stem)), flow if flow.exists() else None))
    return clips


def cell_motion(flow: np.ndarray, labels: np.ndarray, labels_before: np.ndarray, stride: int,
                grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A frame's exact backward ``flow`` (pixels, ``(H, W, 2)``) at the centres of its feature grid's cells, in cells
    (float16 ``(h, w, 2)``), and where it holds (bool ``(h, w)``): the centre's label is the one the flow brings from
    the frame before (``labels_before``), from inside the frame. Cells past the frame's edge do not hold."""
    from taplab.data.pairs import label_consistent

    exact = flow.astype(np.float32)
    holds = label_consistent(labels, labels_before, exact)
    centre = stride // 2
    h, w = grid
    at = (slice(centre, None, stride), slice(centre, None, stride))
    moved, kept = exact[at][:h, :w] / stride, holds[at][:h, :w]
    cells, valid = np.zeros((h, w, 2), np.float16), np.zeros((h, w), bool)
    cells[:moved.shape[0], :moved.shape[1]] = moved
    valid[:kept.shape[0], :kept.shape[1]] = kept
    return cells, valid


def collect_samples(model: Model, clips: list[Clip], progress: Callable[[int], None] | None = None,
                    pairs: bool = False) -> list[Sample]:
    """Run every clip through the runtime with FFW only and keep each warped frame as a :class:`Sample`; with
    ``pairs``, each one that follows a warped frame is linked to it, with the flow between them
    (:func:`cell_motion`), in the clips that have their flow."""
    from taplab.runtime import Segmenter

    seg = Segmenter(model, device=model.device, ffw=True, rgc=False, rgfs=False, fusion=False, labels="nearest")
    samples = []
    for k, clip in enumerate(clips):
        flows = np.load(clip.flow)["flow"] if pairs and clip.flow is not None else None
        last_key, before = 0, None  # before: the previous frame's sample, when it was a warped frame
        for r in seg.run(clip.video, images=True, details=True):
            if r.is_key:
                last_key, before = r.index, None
                continue
            if r.warped is None or r.index >= len(clip.labels):
                before = None
                continue
            small = correction_image(r.image, tuple(r.warped.shape[-2:]))
            sample = Sample(small, r.warped.half().cpu().numpy(), r.distortion.half().cpu().numpy(),
                            clip.labels[r.index], r.index - last_key)
            if flows is not None and before is not None and before[0] == r.index - 1:
                sample.previous = before[1]
                sample.flow, sample.valid = cell_motion(flows[r.index], clip.labels[r.index], clip.labels[r.index - 1],
                                                        model.stride, tuple(r.warped.shape[-2:]))
            before = (r.index, len(samples))
            samples.append(sample)
        if progress is not None:
            progress(k + 1)
    if not samples:
        raise ConfigError("the clips gave no warped frames to train on (too short for a GOP, or no motion vectors)")
    return samples


def boundary_cells(labels: torch.Tensor, stride: int, grid: tuple[int, int]) -> torch.Tensor:
    """``(N, H, W)`` labels -> ``(N, h, w)`` float: 1 for the cells holding a class boundary (edges and thin objects)."""
    lab = labels.float()
    edge = torch.zeros_like(lab)
    edge[:, :, 1:] = (lab[:, :, 1:] != lab[:, :, :-1]).float()
    edge[:, 1:, :] = torch.maximum(edge[:, 1:, :], (lab[:, 1:, :] != lab[:, :-1, :]).float())
    h, w = grid
    pad = (0, w * stride - lab.shape[-1], 0, h * stride - lab.shape[-2])
    return F.max_pool2d(F.pad(edge, pad)[:, None], stride)[:, 0]


class Pairs(NamedTuple):
    """The frames before a batch's samples, for the consistency loss: their ``image``, ``warped`` and ``coarse`` as a
    batch's (the same crops and flips as their samples'), ``index`` the positions of those samples in the batch,
    and the backward ``flow`` ``(n, h, w, 2)`` (cells) and ``valid`` ``(n, h, w)`` between them."""

    image: torch.Tensor
    warped: torch.Tensor
    coarse: torch.Tensor
    index: torch.Tensor
    flow: torch.Tensor
    valid: torch.Tensor


def correction_losses(net: CoNet, image: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor,
                      labels: torch.Tensor, stride: int, weight: float, pairs: Pairs | None = None,
                      consistency: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The losses (see the module docstring) for one batch, ``consistency`` the weight of the consistency loss on
    ``pairs``; returns ``(total, fused logits)``."""
    n = len(image)
    if pairs is not None:  # the frames before go through the network in the same batch, behind the samples
        image, warped, coarse = (torch.cat([a, b]) for a, b in zip((image, warped, coarse), pairs[:3]))
    h, w = warped.shape[-2:]
    updated, edge_logit = net(image, warped, coarse[:, None])
    m = distortion_map(coarse, torch.sigmoid(edge_logit[:, 0]), weight)
    every = fuse(warped, updated, m)
    fused, m, edge_logit, warped = every[:n], m[:n], edge_logit[:n], warped[:n]
    up = F.interpolate(fused, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    semantic = F.cross_entropy(up, labels, ignore_index=IGNORE_LABEL)
    edges = boundary_cells(labels, stride, (h, w))
    on_edge = F.interpolate(edges[:, None], scale_factor=stride, mode="nearest")[:, 0, :labels.shape[-2], :labels.shape[-1]]
    edge_labels = torch.where(on_edge > 0, labels, torch.full_like(labels, IGNORE_LABEL))
    edge_semantic = F.cross_entropy(up, edge_labels, ignore_index=IGNORE_LABEL) if (edge_labels != IGNORE_LABEL).any() \
        else up.sum() * 0
    edge = F.binary_cross_entropy_with_logits(edge_logit[:, 0], edges)
    centre = labels[:, stride // 2::stride, stride // 2::stride][:, :h, :w]
    known = (centre != IGNORE_LABEL).float()
    wrong = (warped.argmax(1) != centre).float()
    warp = (F.binary_cross_entropy(m.clamp(1e-4, 1 - 1e-4), wrong, reduction="none") * known).sum() / known.sum().clamp(min=1)
    total = semantic + edge_semantic + 0.5 * (edge + warp)
    if pairs is not None and consistency > 0:
        total = total + consistency * temporal_loss(fused[pairs.index], every[n:], pairs.flow, pairs.valid)
    return total, fused


Window = tuple[int, int, int, int, bool]  #: a crop in cells, ``(y, x, height, width, flipped)``


def _window(sample: Sample, crop: tuple[int, int], stride: int, rng: np.random.Generator, flip: bool) -> Window:
    """A random grid-aligned crop of ``crop`` pixels (rounded down to whole cells), flipped half the time."""
    h, w = sample.coarse.shape
    ch, cw = max(1, min(h, crop[0] // stride)), max(1, min(w, crop[1] // stride))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return y, x, ch, cw, bool(flip and rng.random() < 0.5)


def _crop(s: Sample, window: Window, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    y, x, ch, cw, flipped = window
    im = s.image[IMAGE_SCALE * y:IMAGE_SCALE * (y + ch), IMAGE_SCALE * x:IMAGE_SCALE * (x + cw)]
    wp = s.warped[:, y:y + ch, x:x + cw]
    co = s.coarse[y:y + ch, x:x + cw]
    lab = np.full((ch * stride, cw * stride), IGNORE_LABEL, np.uint8)
    src = s.labels[y * stride:(y + ch) * stride, x * stride:(x + cw) * stride]
    lab[:src.shape[0], :src.shape[1]] = src
    if flipped:
        im, wp, co, lab = im[:, ::-1], wp[:, :, ::-1], co[:, ::-1], lab[:, ::-1]
    return im, wp, co, lab


def _motion(s: Sample, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """A sample's cell flow and its mask in a crop; mirrored, the flow's x turns round."""
    y, x, ch, cw, flipped = window
    flow, valid = s.flow[y:y + ch, x:x + cw].astype(np.float32), s.valid[y:y + ch, x:x + cw]
    if flipped:
        flow, valid = flow[:, ::-1] * np.float32([-1, 1]), valid[:, ::-1]
    return flow, valid


def _stack(arrays, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.stack(arrays))).to(device, dtype)


def _tensors(crops: list, device: torch.device):
    images, warped, coarse, labels = zip(*crops)
    return (_stack(images, device, torch.float).permute(0, 3, 1, 2).div_(255), _stack(warped, device, torch.float),
            _stack(coarse, device, torch.float), _stack(labels, device, torch.long))


def _batch(samples: list[Sample], picks: np.ndarray, crop: tuple[int, int], stride: int, rng: np.random.Generator,
           flip: bool, device: torch.device, pairs: bool = False):
    """Random grid-aligned crops (``crop`` pixels, rounded down to whole cells) with horizontal flips: ``(image,
    warped, coarse, labels, pairs)``, ``pairs`` the :class:`Pairs` of the samples that have a frame before them
    when asked for (else None)."""
    windows = [_window(samples[int(i)], crop, stride, rng, flip) for i in picks]
    batch = _tensors([_crop(samples[int(i)], win, stride) for i, win in zip(picks, windows)], device)
    linked = [k for k, i in enumerate(picks) if samples[int(i)].previous is not None] if pairs else []
    if not linked:
        return (*batch, None)
    before = _tensors([_crop(samples[samples[int(picks[k])].previous], windows[k], stride) for k in linked], device)
    flow, valid = zip(*(_motion(samples[int(picks[k])], windows[k]) for k in linked))
    return (*batch, Pairs(*before[:3], torch.tensor(linked, device=device), _stack(flow, device, torch.float),
                          _stack(valid, device, torch.bool)))


@torch.inference_mode()
def evaluate_correction(net: CoNet, samples: list[Sample], num_classes: int, weight: float,
                        device: torch.device) -> dict[str, float]:
    """mIoU of the fused and of the plain warped logits on whole frames, against the labels; and where samples are
    linked to the frames before them, the TC of both on the cells (``val_tc``, ``val_tc_warped``; None without)."""
    net.eval()
    fused_cm, warped_cm = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    cells: dict[str, list[np.ndarray]] = {"fused": [], "warped": []}  # each sample's labels on the feature grid
    for s in samples:
        image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float().div_(255).to(device)
        warped = torch.from_numpy(s.warped)[None].float().to(device)
        coarse = torch.from_numpy(s.coarse)[None].float().to(device)
        updated, edge = net(image, warped, coarse[:, None])
        fused = fuse(warped, updated, distortion_map(coarse, torch.sigmoid(edge[:, 0]), weight))
        size = s.labels.shape
        fused_cm.update(logits_to_labels(fused, size)[0].cpu().numpy(), s.labels)
        warped_cm.update(logits_to_labels(warped, size)[0].cpu().numpy(), s.labels)
        cells["fused"].append(fused[0].argmax(0).to(torch.uint8).cpu().numpy())
        cells["warped"].append(warped[0].argmax(0).to(torch.uint8).cpu().numpy())
    linked = [(s.previous, i, s.flow.astype(np.float32)) for i, s in enumerate(samples) if s.previous is not None]

    def tc(labels: list[np.ndarray]) -> float | None:
        if not linked:
            return None
        return finite(float(np.nanmean([temporal_consistency([labels[b], labels[i]], [None, flow], num_classes)
                                        for b, i, flow in linked])))

    return {"val_miou": finite(fused_cm.miou()), "val_miou_warped": finite(warped_cm.miou()),
            "val_tc": tc(cells["fused"]), "val_tc_warped": tc(cells["warped"])}


def train_correction(config: TrainConfig, state: dict | None = None,
                     progress: Callable[[TrainProgress], None] | None = None) -> TrainResult:
    """Train (or, with ``state`` read from a run's ``last.pt``, continue) a CoNet for ``config.base``.

    ``config`` has ``model="conet"``; :func:`taplab.train.train` dispatches such configs here."""
    from taplab.runtime.config import RuntimeConfig

    device = resolve_device(config.device)
    if config.threads:  # the process's thread policy: torch's pool, and ONNX Runtime's where a model runs there
        apply_threads(config.threads)
    refuse_existing_run(config, state)  # before the clips are prepared, which takes minutes
    base = load_model(config.base, device=device)
    weight = RuntimeConfig().fusion_weight
    tell = (lambda phase, step, steps: progress(TrainProgress(phase, 0, config.epochs, step, steps))) if progress else None

    with tempfile.TemporaryDirectory(prefix="taplab-conet-") as tmp:
        sets = {}
        for split, spec in (("train", config.data), ("val", config.val_data or config.data)):
            clips = labelled_clips(spec, split, Path(tmp) / split, config.gop)
            consistency = split == "train" and config.temporal > 0
            if consistency and any(clip.flow is None for clip in clips):
                raise ConfigError(f"{spec}: the consistency loss (temporal) needs each clip's ground-truth flow "
                                  "(flow/<clip>.npz, as synth:... and taplab synth folders have)")
            sets[split] = collect_samples(base, clips, None if tell is None else
                                          lambda k, n=len(clips): tell("data", k, n), pairs=consistency or split == "val")
    data, val = sets["train"], sets["val"]

    torch.manual_seed(config.seed)
    net = CoNet(base.num_classes, **config.model_args).to(device)
    loop = TrainingLoop(net, config, len(data), state)
    for epoch in range(loop.start_epoch, config.epochs):
        rng, order = loop.epoch_order(epoch)
        net.train()
        running, seen, start = 0.0, 0, time.perf_counter()
        for step in range(loop.steps):
            lr = loop.set_lr(epoch, step)
            picks = order[step * config.batch_size:(step + 1) * config.batch_size]
            image, warped, coarse, labels, pairs = _batch(data, picks, config.crop, base.stride, rng, config.flip,
                                                          device, pairs=config.temporal > 0)
            loss, _ = correction_losses(net, image, warped, coarse, labels, base.stride, weight, pairs, config.temporal)
            loop.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loop.optimizer.step()
            running += loss.item()
            seen += len(picks)
            if progress is not None:
                progress(TrainProgress("train", epoch + 1, config.epochs, step + 1, loop.steps, running / (step + 1),
                                       seen / (time.perf_counter() - start), lr))
        train_seconds = time.perf_counter() - start
        scores = evaluate_correction(net, val, base.num_classes, weight, device)
        record = {"epoch": epoch + 1, "loss": running / loop.steps, "lr": lr, "train_seconds": round(train_seconds, 2),
                  "images_per_s": round(seen / train_seconds, 3), **scores}
        metrics = {**scores, "samples": len(data), "val_samples": len(val)}
        loop.finish_epoch(record, float("nan") if scores["val_miou"] is None else scores["val_miou"],
                          lambda path, **extra: save_correction(path, net, base.class_names, base.stride, str(config.base),
                                                                config=asdict(config), epoch=epoch + 1, metrics=metrics, **extra))
    return TrainResult(loop.out / "best.pt", loop.out / "last.pt", loop.best_miou, loop.history, net.eval())


def is_correction_file(path) -> bool:
    """Whether ``path`` is a CoNet file (so that ``--resume`` and ``export`` pick the right trainer)."""
    try:
        read_correction(path)
    except Exception:  # noqa: BLE001 - anything else is not one
        return False
    return True


