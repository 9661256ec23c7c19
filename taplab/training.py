"""What taplab's trainers share: the run's config, the loop's bookkeeping, progress and result.

:func:`taplab.train.train` (the segmentation networks) and :func:`taplab.train_correction.train_correction`
(CoNet) both take a :class:`TrainConfig`, drive a :class:`TrainingLoop` (Adam with the poly schedule,
per-epoch seeds, resuming, ``log.jsonl``, ``last.pt`` and ``best.pt``), report :class:`TrainProgress`
and return a :class:`TrainResult`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from taplab.data.transforms import Augmentation
from taplab.errors import ConfigError


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
        device: where to train (``cpu``, ``cuda``, ``cuda:N``).
        threads: torch CPU threads (None: torch's default).
        init: start from this model's weights (a shipped model's name or a taplab checkpoint of the same
            network; None: from scratch), for fine-tuning.
        temporal: weight of PFI's temporal loss on pairs of consecutive frames (:mod:`taplab.pfi`; 0: off); for
            ``conet``, of the consistency of the fused outputs of consecutive warped frames
            (:mod:`taplab.train_correction`).
        distill: weight of PFI's pairwise-frame distillation from ``teacher`` (0: off); ``teacher`` any
            model ``load_model`` accepts.
        temporal_data: unlabelled videos (``PATH`` or ``PATH@START:END``) whose frames join the training
            data for the temporal losses only (:mod:`taplab.data.videos`).
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
    init: str | None = None
    temporal: float = 0.0
    distill: float = 0.0
    teacher: str | None = None
    temporal_data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.crop, self.scale = tuple(self.crop), tuple(self.scale)
        self.jpeg = tuple(self.jpeg) if self.jpeg is not None else None
        self.temporal_data = tuple(self.temporal_data)
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
        if self.temporal < 0 or self.distill < 0:
            raise ConfigError("the temporal and distill weights must be >= 0")
        if (self.distill > 0) != (self.teacher is not None):
            raise ConfigError("pairwise distillation needs both a weight (distill > 0) and a teacher")
        if self.temporal_data and not self.pairs:
            raise ConfigError("unlabelled videos (temporal_data) teach through the temporal losses only: set temporal "
                              "or distill")
        if self.model == "conet" and (self.distill or self.init or self.temporal_data):
            raise ConfigError("distill, init and temporal_data apply to segmentation networks, not to conet")
        reserved = {"num_classes", "class_names", "colors"} & set(self.model_args)
        if reserved:
            raise ConfigError(f"model_args may not set {', '.join(sorted(reserved))}: they come from the data")
        self.augmentation  # validates crop, scale, jpeg

    @property
    def pairs(self) -> bool:
        """Whether training needs each sample's previous frame (PFI's losses)."""
        return self.temporal > 0 or self.distill > 0

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
    """Passed to the progress callback after every step (phase "train") and validated image (phase "val");
    a correction network's trainer also reports each clip it prepares (phase "data", epoch 0)."""

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
    """``net`` holds the final weights (those of ``last``: a :class:`~taplab.nets.base.SegmentationNet`, or a
    :class:`~taplab.nets.conet.CoNet` for ``model="conet"``); ``history`` one record per epoch (as in log.jsonl)."""

    best: Path
    last: Path
    best_miou: float
    history: list[dict]
    net: torch.nn.Module


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


def finite(x: float) -> float | None:
    """NaN -> None, so that logs and checkpoints hold valid JSON."""
    return None if math.isnan(x) else x
