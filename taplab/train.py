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

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from taplab.data.datasets import open_dataset
from taplab.data.labels import IGNORE_LABEL
from taplab.data.transforms import Augmentation, to_tensor
from taplab.errors import ConfigError
from taplab.evaluate import evaluate
from taplab.nets.base import SegmentationNet
from taplab.nets.checkpoint import read_checkpoint, save_checkpoint
from taplab.nets.conet import read_correction
from taplab.nets.loader import Model, resolve_device
from taplab.nets.registry import create_model


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in every checkpoint.

    Attributes:
        model: registered network name (``bl1``, ``bl2``, ``bl3``), or ``conet``: a correction network
            for the segmentation model ``base`` (:mod:`taplab.train_correction`); ``model_args`` its
            keyword arguments.
        base: the (frozen) segmentation model a ``conet`` corrects: anything ``load_model`` accepts.
        gop: the GOP synthetic clips are encoded with, for ``conet`` (the warped frames are 1 to
            ``gop - 1`` frames from their key frame).
        data: training data spec (see :func:`taplab.data.datasets.open_dataset`); ``val_data`` the
            validation spec (None: the ``val`` split of ``data``).
        out: output folder for checkpoints and the log.
        epochs, batch_size: length of the run; an epoch is one pass over the training set, or
            ``iters_per_epoch`` batches when set.
        crop, scale, flip, jpeg, jpeg_probability: augmentation (:class:`taplab.data.transforms.Augmentation`).
        lr, weight_decay, poly_power: Adam with the poly schedule.
        val_limit: validate on the first so many images only (None: all).
        seed: seeds data order, augmentation, initialisation and dropout.
        threads: torch CPU threads (None: torch's default).
    """

    model: str = "bl2"
    model_args: dict = field(default_factory=dict)
    base: str = "default"
    gop: int = 12
    data: str = "synth"
    val_data: str | None = None
    out: str = "runs/train"
    epochs: int = 20
    batch_size: int = 8
    iters_per_epoch: int | None = None
    crop: tuple[int, int] = (384, 384)
    scale: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    jpeg: tuple[int, int] | None = (40, 95)
    jpeg_probability: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0
    poly_power: float = 0.9
    val_limit: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None

    def __post_init__(self) -> None:
        self.crop, self.scale = tuple(self.crop), tuple(self.scale)
        self.jpeg = tuple(self.jpeg) if self.jpeg is not None else None
        for name in ("epochs", "batch_size", "gop"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.iters_per_epoch is not None and self.iters_per_epoch < 1:
            raise ConfigError(f"iters_per_epoch must be >= 1, got {self.iters_per_epoch}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.poly_power < 0 or self.weight_decay < 0:
            raise ConfigError("poly_power and weight_decay must be >= 0")
        if self.val_limit is not None and self.val_limit < 1:
            raise ConfigError(f"val_limit must be >= 1 (or None for all), got {self.val_limit}")
        reserved = {"num_classes", "class_names", "colors"} & set(self.model_args)
        if reserved:
            raise ConfigError(f"model_args may not set {', '.join(sorted(reserved))}: they come from the data")
        self.augmentation  # validates crop, scale, jpeg

    @property
    def augmentation(self) -> Augmentation:
        return Augmentation(scale=self.scale, crop=self.crop, flip=self.flip, jpeg=self.jpeg,
                            jpeg_probability=self.jpeg_probability)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainProgress:
    """Passed to the progress callback after every step (phase "train") and validated image (phase "val")."""

    phase: str
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float = float("nan")
    images_per_s: float = float("nan")
    lr: float = float("nan")


@dataclass
class TrainResult:
    """``net`` holds the final weights (those of ``last``); ``history`` one record per epoch (as in log.jsonl)."""

    best: Path
    last: Path
    best_miou: float
    history: list[dict]
    net: SegmentationNet


def train(config: TrainConfig | None = None, resume: str | Path | None = None,
          progress: Callable[[TrainProgress], None] | None = None, **overrides) -> TrainResult:
    """Train ``config``'s network; or continue the run saved in ``resume`` (a run's ``last.pt``) with its
    own config, in the folder that holds it. ``overrides`` may change ``epochs`` (the poly schedule
    then spans the new total), ``device`` and ``threads``. Returns the checkpoints and the history."""
    from taplab.train_correction import is_correction_file, train_correction

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
    if config.threads:
        torch.set_num_threads(config.threads)

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
                  "images_per_s": round(seen / train_seconds, 3), "val_miou": _finite(result.miou),
                  "val_pixel_accuracy": _finite(result.pixel_accuracy), "val_iou": result.to_dict()["iou"]}
        metrics = {"val_miou": record["val_miou"], "val_pixel_accuracy": record["val_pixel_accuracy"],
                   "val_iou": record["val_iou"], "data": val.description}
        loop.finish_epoch(record, result.miou, lambda path, **extra: save_checkpoint(
            path, net, config.model, config.model_args, config=asdict(config), epoch=epoch + 1, metrics=metrics, **extra))
    return TrainResult(out / "best.pt", out / "last.pt", loop.best_miou, loop.history, net.eval())


def refuse_existing_run(config: TrainConfig, state: dict | None) -> None:
    """Never overwrite a run (it may be hours of work): :class:`ConfigError` if ``config.out`` holds one
    and this is not its resumption."""
    out = Path(config.out)
    if state is None and (out / "last.pt").exists():
        raise ConfigError(f"{out} already holds a training run (last.pt); resume it with --resume "
                          f"{out / 'last.pt'} or choose another --out")


class TrainingLoop:
    """What taplab's trainers share: Adam with the poly schedule, the data order and seeds of each
    epoch, resuming, the log and the checkpoints' bookkeeping.

    Determinism: the data order, augmentation and dropout of epoch ``e`` follow from ``(seed, e)``
    alone, so a resumed run takes the same steps as an uninterrupted one.
    """

    def __init__(self, net: torch.nn.Module, config: TrainConfig, samples: int, state: dict | None):
        self.config, self.samples = config, samples
        self.optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps = config.iters_per_epoch or max(1, samples // config.batch_size)
        self.total = self.steps * config.epochs
        self.history: list[dict] = []
        self.best_miou, self.start_epoch = -1.0, 0
        if state is not None:
            net.load_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.history = list(state["trainer"]["history"])
            self.best_miou = float(state["trainer"]["best_miou"])
            self.start_epoch = int(state["epoch"])
        self.out = Path(config.out)
        refuse_existing_run(config, state)
        self.out.mkdir(parents=True, exist_ok=True)

    def epoch_order(self, epoch: int) -> tuple[np.random.Generator, np.ndarray]:
        """Seeds torch for the epoch; returns its random generator and the sample order (enough for every step)."""
        c = self.config
        rng = np.random.default_rng([c.seed, epoch])
        torch.manual_seed(c.seed * 1_000_003 + epoch)
        passes = -(-self.steps * c.batch_size // self.samples)
        return rng, np.concatenate([rng.permutation(self.samples) for _ in range(passes)])

    def set_lr(self, epoch: int, step: int) -> float:
        """The poly schedule: ``lr * (1 - i / total) ** power``."""
        lr = self.config.lr * (1 - (epoch * self.steps + step) / self.total) ** self.config.poly_power
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def finish_epoch(self, record: dict, miou: float, save: Callable[..., object]) -> None:
        """Log ``record``; ``save(path, **extra)`` writes ``last.pt`` (with what resuming needs) and, when
        ``miou`` improved, ``best.pt``."""
        self.history.append(record)
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        # NaN (nothing labelled to validate on) never improves, but the first epoch always writes best.pt
        improved = miou > self.best_miou or not (self.out / "best.pt").exists()
        if not math.isnan(miou):
            self.best_miou = max(self.best_miou, miou)
        save(self.out / "last.pt", optimizer=self.optimizer.state_dict(),
             trainer={"history": self.history, "best_miou": self.best_miou})
        if improved:
            save(self.out / "best.pt")


def _finite(x: float) -> float | None:
    """NaN -> None, so that logs and checkpoints hold valid JSON."""
    return None if math.isnan(x) else x
