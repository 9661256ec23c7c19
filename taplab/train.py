"""``taplab train``: the papers' training recipe for any built-in network on any labelled data set.

Recipe (TapLab / DMNet papers): Adam, 'poly' learning rate ``lr * (1 - i / total) ** power``,
random scale 0.5-2.0, random crop, horizontal flip, softmax cross-entropy with ignore label 255
on logits upsampled bilinearly to the crop; validation mIoU after every epoch. With ``temporal`` or
``distill`` set, each sample comes with the frame before it, and PFI's losses on the pair
(:mod:`taplab.pfi`) join the cross-entropy; the log then also holds each loss and ``val_tc``, the
temporal consistency of the validation frames with the frames before them. ``init`` starts from a
trained model's weights (fine-tuning); ``temporal_data`` adds unlabelled video, whose frames teach
through the temporal losses only.

Outputs in ``out``: ``last.pt`` (after every epoch, with what ``resume`` needs), ``best.pt``
(highest validation mIoU) and ``log.jsonl`` (one line per epoch). Determinism: the data order,
the augmentation and dropout of epoch ``e`` follow from ``(seed, e)`` alone, so a resumed run
takes the same steps as an uninterrupted one; with the same threads on the same machine the
weights are bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from taplab.data.datasets import open_dataset
from taplab.data.pairs import Previous, frame_pairs
from taplab.data.videos import Joined, UnlabelledFrames
from taplab.data.labels import IGNORE_LABEL
from taplab.data.transforms import to_tensor
from taplab.errors import ConfigError
from taplab.evaluate import evaluate
from taplab.nets.base import SegmentationNet
from taplab.nets.checkpoint import build_from_checkpoint, read_checkpoint, save_checkpoint
from taplab.nets.conet import read_correction
from taplab.nets.loader import Model, load_model, resolve_device
from taplab.nets.registry import create_model
from taplab.nets.zoo import find_shipped
from taplab.pfi import pair_consistency, pairwise_distillation, temporal_loss
from taplab.threads import apply_threads
from taplab.train_correction import is_correction_file, train_correction
from taplab.training import TrainConfig, TrainingLoop, TrainProgress, TrainResult, finite

__all__ = ["TrainConfig", "TrainProgress", "TrainResult", "train"]


def train(config: TrainConfig | None = None, resume: str | Path | None = None,
          progress: Callable[[TrainProgress], None] | None = None, **overrides) -> TrainResult:
    """Train ``config``'s network; or continue the run saved in ``resume`` (a run's ``last.pt``) with its
    own config, in the folder that holds it. ``overrides`` may change ``epochs`` (the poly schedule
    then spans the new total), ``device`` and ``threads``. Returns the checkpoints and the history."""
    state = None
    if resume is not None:
        state = read_correction(resume) if is_correction_file(resume) else read_checkpoint(resume)
        if "trainer" not in state or "config" not in state:
            raise ConfigError(f"{resume} holds no training state (resume from a run's last.pt)")
        config = TrainConfig.from_dict({**state["config"], "out": str(Path(resume).parent)})
    elif config is None:
        raise ConfigError("train() needs a config or a checkpoint to resume")
    unknown = set(overrides) - {"epochs", "device", "threads"}
    if unknown:
        raise ConfigError(f"only epochs, device and threads can be overridden, not {', '.join(sorted(unknown))}")
    config = TrainConfig.from_dict({**asdict(config), **{k: v for k, v in overrides.items() if v is not None}})
    if config.model == "conet":
        return train_correction(config, state, progress)
    device = resolve_device(config.device)
    if config.threads:  # the process's thread policy: torch's pool, and ONNX Runtime's where a model runs there
        apply_threads(config.threads)

    data = open_dataset(config.data, "train")
    if config.temporal_data:
        data = Joined([data, *(UnlabelledFrames(spec, data.classes, data.colors) for spec in config.temporal_data)])
    val = open_dataset(config.val_data or config.data, "val")
    if tuple(val.classes) != tuple(data.classes):
        raise ConfigError(f"training and validation data have different classes ({data.description} vs {val.description})")

    net, config = _network(config, data, device)
    pairs = frame_pairs(data) if config.pairs else None
    val_pairs = frame_pairs(val) if config.pairs else None
    teacher = load_model(config.teacher, device, num_classes=len(data.classes)) if config.distill else None
    loop = TrainingLoop(net, config, len(data), state)
    optimizer, steps = loop.optimizer, loop.steps
    out = loop.out
    augment = config.augmentation
    for epoch in range(loop.start_epoch, config.epochs):
        rng, order = loop.epoch_order(epoch)
        net.train()
        running, counted, seen, start = 0.0, 0, 0, time.perf_counter()
        parts: dict[str, float] = {}
        for step in range(steps):
            lr = loop.set_lr(epoch, step)
            picks = order[step * config.batch_size:(step + 1) * config.batch_size]
            batch = _batch(data, pairs, picks, augment, rng, device)
            losses = _losses(net, teacher, config, batch)
            if losses:  # else nothing to learn from in this batch (all crops in padding or void, no pairs)
                loss = sum(losses.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.item()
                counted += 1
                for name, value in losses.items():
                    parts[name] = parts.get(name, 0.0) + value.item()
            seen += len(picks)
            if progress is not None:
                progress(TrainProgress("train", epoch + 1, config.epochs, step + 1, steps, running / max(counted, 1),
                                       seen / (time.perf_counter() - start), lr))
        train_seconds = time.perf_counter() - start

        n_val = len(val) if config.val_limit is None else min(config.val_limit, len(val))
        ticks = iter(range(1, n_val + 1))
        result = evaluate(Model(net, config.model, device, channels_last=False), val, limit=config.val_limit,
                          progress=None if progress is None else
                          lambda _: progress(TrainProgress("val", epoch + 1, config.epochs, next(ticks), n_val)))
        if val_pairs is not None:  # the loss's parts (weighted) and the consistency the temporal losses aim at
            record_extra = {f"loss_{name}": value / max(counted, 1) for name, value in parts.items()}
            record_extra["val_tc"] = finite(pair_consistency(Model(net, config.model, device, channels_last=False),
                                                             val, val_pairs, config.val_limit))
        else:
            record_extra = {}
        record = {"epoch": epoch + 1, "loss": running / max(counted, 1), "lr": lr, "train_seconds": round(train_seconds, 2),
                  "images_per_s": round(seen / train_seconds, 3), "val_miou": finite(result.miou),
                  "val_pixel_accuracy": finite(result.pixel_accuracy),
                  # fractions like val_miou (the log's unit since the first run), not to_dict()'s percent
                  "val_iou": {name: finite(float(v)) for name, v in zip(result.classes, result.iou)}, **record_extra}
        metrics = {"val_miou": record["val_miou"], "val_pixel_accuracy": record["val_pixel_accuracy"],
                   "val_iou": record["val_iou"], "data": val.description}
        loop.finish_epoch(record, result.miou, lambda path, **extra: save_checkpoint(
            path, net, config.model, config.model_args, config=asdict(config), epoch=epoch + 1, metrics=metrics, **extra))
    return TrainResult(out / "best.pt", out / "last.pt", loop.best_miou, loop.history, net.eval())


def _network(config: TrainConfig, data, device: torch.device) -> tuple[SegmentationNet, TrainConfig]:
    """A new network for ``data``'s classes, or ``config.init``'s (whose network arguments the run then takes)."""
    names, colors = tuple(data.classes), list(data.colors)
    if config.init is None:
        torch.manual_seed(config.seed)
        net = create_model(config.model, num_classes=len(names), class_names=names, colors=colors, **config.model_args)
        return net.to(device), config
    shipped = find_shipped(config.init)
    if shipped is None and not Path(config.init).is_file():
        raise ConfigError(f"--init {config.init}: no shipped model or checkpoint of that name (taplab models lists "
                          "the shipped ones)")
    checkpoint = read_checkpoint(shipped.path if shipped is not None else config.init)
    args = {k: v for k, v in checkpoint["arch_args"].items() if k != "num_classes"}
    if checkpoint["arch"] != config.model or any(args.get(k) != v for k, v in config.model_args.items()):
        raise ConfigError(f"--init {config.init} is a {checkpoint['arch']} with {args or 'default arguments'}, "
                          f"not the {config.model} with {config.model_args or 'default arguments'} to train")
    if tuple(checkpoint["classes"]) != names:
        raise ConfigError(f"--init {config.init} has other classes than the data ({data.description})")
    return build_from_checkpoint(checkpoint, config.init).to(device), replace(config, model_args=args)


def _batch(data, pairs, picks: np.ndarray, augment, rng: np.random.Generator, device: torch.device) -> dict:
    """One batch of augmented samples: ``x``, ``y``; with ``pairs``, also the frames before (``x_before``), the
    backward flow and its valid mask (a sample without a frame before pairs with itself, all invalid)."""
    images, labels, before, flows, valid = [], [], [], [], []
    for i in picks:
        image, y = data[int(i)]
        previous = pairs[int(i)] if pairs is not None else None
        if pairs is not None and previous is None:
            h, w = y.shape
            previous = Previous(image, np.zeros((h, w, 2), np.float32), np.zeros((h, w), bool))
        image, y, previous = augment.transform(image, y, rng, previous)
        images.append(image)
        labels.append(y)
        if previous is not None:
            before.append(previous.image)
            flows.append(previous.flow)
            valid.append(previous.valid)
    batch = {"x": to_tensor(images).to(device), "y": torch.from_numpy(np.stack(labels)).long().to(device)}
    if pairs is not None:
        batch.update(x_before=to_tensor(before).to(device), flow=torch.from_numpy(np.stack(flows)).to(device),
                     valid=torch.from_numpy(np.stack(valid)).to(device))
    return batch


def _losses(net: SegmentationNet, teacher: Model | None, config: TrainConfig, batch: dict) -> dict[str, torch.Tensor]:
    """The weighted losses of one batch, by name: ``cross_entropy`` (when anything is labelled), ``temporal``
    and ``distill`` (PFI's, :mod:`taplab.pfi`, when their weights are set)."""
    x, y = batch["x"], batch["y"]
    size = y.shape[-2:]
    labelled = bool((y != IGNORE_LABEL).any())
    if "x_before" not in batch:
        if not labelled:
            return {}
        logits = F.interpolate(net(x), size=size, mode="bilinear", align_corners=False)
        return {"cross_entropy": F.cross_entropy(logits, y, ignore_index=IGNORE_LABEL)}
    both = torch.cat([x, batch["x_before"]])
    features = net.features(both)
    # the head sees each pair side by side, so that both frames share its dropout mask and the temporal loss
    # measures the frames, not dropout's noise (taplab's heads are pointwise: dropout and a 1x1 convolution)
    current, before = features.chunk(2)
    logits, logits_before = net.head(torch.cat([current, before], dim=-1)).chunk(2, dim=-1)
    logits, logits_before = (F.interpolate(z, size=size, mode="bilinear", align_corners=False) for z in (logits, logits_before))
    losses = {}
    if labelled:
        losses["cross_entropy"] = F.cross_entropy(logits, y, ignore_index=IGNORE_LABEL)
    if config.temporal:
        losses["temporal"] = config.temporal * temporal_loss(logits, logits_before, batch["flow"], batch["valid"])
    if teacher is not None:
        taught = teacher.features(both).clone()  # out of inference mode, so that autograd may use it
        losses["distill"] = config.distill * pairwise_distillation(*features.chunk(2), *taught.chunk(2), tuple(size))
    return losses
