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

import numpy as np
import torch
import torch.nn.functional as F

from taplab.data import layout
from taplab.data.labels import IGNORE_LABEL
from taplab.errors import ConfigError
from taplab.metrics import ConfusionMatrix
from taplab.nets.conet import IMAGE_SCALE, CoNet, correction_image, read_correction, save_correction
from taplab.nets.loader import Model, load_model, resolve_device
from taplab.ops.fusion import distortion_map, fuse
from taplab.ops.labels import logits_to_labels
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


def labelled_clips(spec: str, split: str, workdir: Path, gop: int) -> list[tuple[Path, list[np.ndarray]]]:
    """``(video, labels per frame)`` for a data spec: ``synth:...`` (rendered and encoded into ``workdir``,
    consecutive frames at 25 frames/s; ``frames`` per clip) or a ``taplab synth`` folder (``video/*.mp4``
    with ``gtFine/<clip>/``; every tenth clip is the validation split)."""
    from taplab.data.datasets import SynthImages, clip_config, parse_synth_spec
    from taplab.data.synth import write_clip

    if spec == "synth" or spec.startswith("synth:"):
        synth = parse_synth_spec(spec)
        seeds = SynthImages(synth, split).seeds
        clips = []
        for k, seed in enumerate(seeds):
            name = f"{split}{k:04d}"
            video = write_clip(workdir, clip_config(seed, synth.size, synth.frames), gop=gop, name=name)
            clips.append((video, layout.read_clip_labels(layout.clip_labels_dir(workdir, name))))
        return clips
    folder = Path(spec)
    videos = layout.clip_videos(folder)
    if not videos:
        raise ConfigError(f"{spec}: a correction network trains on videos with labels per frame: synth:... or a "
                          "folder written by `taplab synth` (video/*.mp4 and gtFine/<clip>/)")
    chosen = [v for i, v in enumerate(videos) if (i % 10 == 9) == (split == "val")] or videos[:1]
    return [(v, layout.read_clip_labels(layout.clip_labels_dir(folder, v.stem))) for v in chosen]


def collect_samples(model: Model, clips: list[tuple[Path, list[np.ndarray]]],
                    progress: Callable[[int], None] | None = None) -> list[Sample]:
    """Run every clip through the runtime with FFW only and keep each warped frame as a :class:`Sample`."""
    from taplab.runtime import Segmenter

    seg = Segmenter(model, device=model.device, ffw=True, rgc=False, rgfs=False, fusion=False, labels="nearest")
    samples = []
    for k, (video, truth) in enumerate(clips):
        last_key = 0
        for r in seg.run(video, images=True, details=True):
            if r.is_key:
                last_key = r.index
                continue
            if r.warped is None or r.index >= len(truth):
                continue
            small = correction_image(r.image, tuple(r.warped.shape[-2:]))
            samples.append(Sample(small, r.warped.half().cpu().numpy(), r.distortion.half().cpu().numpy(),
                                  truth[r.index], r.index - last_key))
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


def correction_losses(net: CoNet, image: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor,
                      labels: torch.Tensor, stride: int, weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The four losses (see the module docstring) for one batch; returns ``(total, fused logits)``."""
    h, w = warped.shape[-2:]
    updated, edge_logit = net(image, warped, coarse[:, None])
    m = distortion_map(coarse, torch.sigmoid(edge_logit[:, 0]), weight)
    fused = fuse(warped, updated, m)
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
    return semantic + edge_semantic + 0.5 * (edge + warp), fused


def _batch(samples: list[Sample], picks: np.ndarray, crop: tuple[int, int], stride: int, rng: np.random.Generator,
           flip: bool, device: torch.device):
    """Random grid-aligned crops (``crop`` pixels, rounded down to whole cells) with horizontal flips."""
    images, warped, coarse, labels = [], [], [], []
    for i in picks:
        s = samples[int(i)]
        h, w = s.coarse.shape
        ch, cw = max(1, min(h, crop[0] // stride)), max(1, min(w, crop[1] // stride))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        im = s.image[IMAGE_SCALE * y:IMAGE_SCALE * (y + ch), IMAGE_SCALE * x:IMAGE_SCALE * (x + cw)]
        wp = s.warped[:, y:y + ch, x:x + cw]
        co = s.coarse[y:y + ch, x:x + cw]
        lab = np.full((ch * stride, cw * stride), IGNORE_LABEL, np.uint8)
        src = s.labels[y * stride:(y + ch) * stride, x * stride:(x + cw) * stride]
        lab[:src.shape[0], :src.shape[1]] = src
        if flip and rng.random() < 0.5:
            im, wp, co, lab = im[:, ::-1], wp[:, :, ::-1], co[:, ::-1], lab[:, ::-1]
        images.append(im)
        warped.append(wp)
        coarse.append(co)
        labels.append(lab)
    image = torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float().div_(255)
    return (image.to(device), torch.from_numpy(np.ascontiguousarray(np.stack(warped))).float().to(device),
            torch.from_numpy(np.ascontiguousarray(np.stack(coarse))).float().to(device),
            torch.from_numpy(np.ascontiguousarray(np.stack(labels))).long().to(device))


@torch.inference_mode()
def evaluate_correction(net: CoNet, samples: list[Sample], num_classes: int, weight: float,
                        device: torch.device) -> dict[str, float]:
    """mIoU of the fused and of the plain warped logits on whole frames, against the labels."""
    net.eval()
    fused_cm, warped_cm = ConfusionMatrix(num_classes), ConfusionMatrix(num_classes)
    for s in samples:
        image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float().div_(255).to(device)
        warped = torch.from_numpy(s.warped)[None].float().to(device)
        coarse = torch.from_numpy(s.coarse)[None].float().to(device)
        updated, edge = net(image, warped, coarse[:, None])
        fused = fuse(warped, updated, distortion_map(coarse, torch.sigmoid(edge[:, 0]), weight))
        size = s.labels.shape
        fused_cm.update(logits_to_labels(fused, size)[0].cpu().numpy(), s.labels)
        warped_cm.update(logits_to_labels(warped, size)[0].cpu().numpy(), s.labels)
    return {"val_miou": finite(fused_cm.miou()), "val_miou_warped": finite(warped_cm.miou())}


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
            sets[split] = collect_samples(base, clips, None if tell is None else
                                          lambda k, n=len(clips): tell("data", k, n))
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
            image, warped, coarse, labels = _batch(data, picks, config.crop, base.stride, rng, config.flip, device)
            loss, _ = correction_losses(net, image, warped, coarse, labels, base.stride, weight)
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


