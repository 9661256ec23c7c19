"""``taplab train``: the papers' training recipe for any built-in network on any labelled data set.

Recipe (TapLab / DMNet papers): Adam, 'poly' learning rate ``lr * (1 - i / total) ** power``,
random scale 0.5-2.0, random crop, horizontal flip, softmax cross-entropy with ignore label 255
on logits upsampled bilinearly to the crop; validation mIoU after every epoch.

Outputs in ``out``: ``last.pt`` (after every epoch, with what ``resume`` needs), ``best.pt``
(highest validation mIoU) and ``log.jsonl`` (one line per epoch). Determinism: the data order,
the augmentation and dropout of epoch ``e`` follow from ``(seed, e)`` alone, so a resumed run
takes the same steps as an uninterrupted one; with the same threads on the same machine the
weights are bit-identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from taplab.data.datasets import open_dataset
from taplab.data.labels import IGNORE_LABEL
from taplab.data.transforms import to_tensor
from taplab.errors import ConfigError
from taplab.evaluate import evaluate
from taplab.nets.checkpoint import read_checkpoint, save_checkpoint
from taplab.nets.conet import read_correction
from taplab.nets.loader import Model, resolve_device
from taplab.nets.registry import create_model
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
    val = open_dataset(config.val_data or config.data, "val")
    if tuple(val.classes) != tuple(data.classes):
        raise ConfigError(f"training and validation data have different classes ({data.description} vs {val.description})")

    torch.manual_seed(config.seed)
    net = create_model(config.model, num_classes=len(data.classes), class_names=tuple(data.classes),
                       colors=list(data.colors), **config.model_args).to(device)
    loop = TrainingLoop(net, config, len(data), state)
    optimizer, steps = loop.optimizer, loop.steps
    out = loop.out
    augment = config.augmentation
    for epoch in range(loop.start_epoch, config.epochs):
        rng, order = loop.epoch_order(epoch)
        net.train()
        running, counted, seen, start = 0.0, 0, 0, time.perf_counter()
        for step in range(steps):
            lr = loop.set_lr(epoch, step)
            batch = [augment(*data[int(i)], rng) for i in order[step * config.batch_size:(step + 1) * config.batch_size]]
            x = to_tensor([b[0] for b in batch]).to(device)
            y = torch.from_numpy(np.stack([b[1] for b in batch])).long().to(device)
            if (y != IGNORE_LABEL).any():  # else nothing labelled in this batch (all crops in padding or void)
                logits = F.interpolate(net(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
                loss = F.cross_entropy(logits, y, ignore_index=IGNORE_LABEL)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.item()
                counted += 1
            seen += len(batch)
            if progress is not None:
                progress(TrainProgress("train", epoch + 1, config.epochs, step + 1, steps, running / max(counted, 1),
                                       seen / (time.perf_counter() - start), lr))
        train_seconds = time.perf_counter() - start

        n_val = len(val) if config.val_limit is None else min(config.val_limit, len(val))
        ticks = iter(range(1, n_val + 1))
        result = evaluate(Model(net, config.model, device, channels_last=False), val, limit=config.val_limit,
                          progress=None if progress is None else
                          lambda _: progress(TrainProgress("val", epoch + 1, config.epochs, next(ticks), n_val)))
        record = {"epoch": epoch + 1, "loss": running / max(counted, 1), "lr": lr, "train_seconds": round(train_seconds, 2),
                  "images_per_s": round(seen / train_seconds, 3), "val_miou": finite(result.miou),
                  "val_pixel_accuracy": finite(result.pixel_accuracy),
                  # fractions like val_miou (the log's unit since the first run), not to_dict()'s percent
                  "val_iou": {name: finite(float(v)) for name, v in zip(result.classes, result.iou)}}
        metrics = {"val_miou": record["val_miou"], "val_pixel_accuracy": record["val_pixel_accuracy"],
                   "val_iou": record["val_iou"], "data": val.description}
        loop.finish_epoch(record, result.miou, lambda path, **extra: save_checkpoint(
            path, net, config.model, config.model_args, config=asdict(config), epoch=epoch + 1, metrics=metrics, **extra))
    return TrainResult(out / "best.pt", out / "last.pt", loop.best_miou, loop.history, net.eval())
