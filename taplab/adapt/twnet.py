"""``taplab adapt --kind twnet``: the Tamed Warping Network's correction (:mod:`taplab.nets.twnet`) adapted without labels.

The same recipe as DMNet's (:mod:`taplab.adapt`): samples as the runtime makes them, the first
``1 - holdout`` of each video to train on and the rest to validate, the per-frame model as the
teacher, validation deciding whether the correction is switched on. What differs is the sample:

- **The warped state.** The videos run through the runtime with an untrained TWNet in fusion's
  place (its CFR starts at zero, so it leaves the warped interior as it is) and ``details``: each
  warped frame's result carries the state ``[logits, deep interior]`` before the correction.
- **The frame's shallow features** (the model's first layers on the frame) and **RGA's residual
  input** (:func:`~taplab.nets.twnet.residual_cells`; read from a second pass over the video, as the
  results carry no residual, with the runtime's motion: estimated vectors where the codec exports
  none. A B-frame's is its past side's, where the runtime blends both sides' residuals).
- **The loss** is on the decoded logits, ``decode(f_t, F^ + A * phi_r([F^, f_t]))``, by the
  teacher's terms (:func:`taplab.adapt.teacher_losses`); the model's own layers are frozen.

"Without the correction" in the report is FFW's warped logits, as for DMNet; "with" is TWNet's output.
A 720p frame's sample takes about 16 MB (the interior is 83 channels for the default model), against
5 MB for DMNet's; :func:`taplab.adapt.check_memory` refuses footage whose samples would not fit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taplab.adapt import AdaptConfig, Footage, Trained, _half, check_memory, fidelity, footage_bytes, frame_labels, \
    median_ms, teacher_losses, train
from taplab.adapt import collect as collect_samples
from taplab.codec import open_video
from taplab.data.transforms import to_tensor
from taplab.nets.loader import Model
from taplab.nets.twnet import RESIDUAL_CHANNELS, Split, Tamed, TamedNet, residual_cells, save_tamed
from taplab.runtime import Segmenter
from taplab.runtime.config import RuntimeConfig
from taplab.threads import available_memory


@dataclass
class TamedSample:
    """One warped frame as TWNet sees it, float16: the warped ``deep`` interior (D, h, w) and ``logits`` (C, h, w), the
    frame's ``shallow`` features (S, h, w), RGA's ``residual`` (2, h, w), the ``teacher``'s logits; ``labels`` uint8
    (h, w) where the video has them; where it came from."""

    deep: np.ndarray
    logits: np.ndarray
    shallow: np.ndarray
    residual: np.ndarray
    teacher: np.ndarray
    labels: np.ndarray | None
    video: int
    index: int


def _residuals(video: str, frames: int, grid: tuple[int, int], cfg: RuntimeConfig) -> dict[int, torch.Tensor]:
    """RGA's input for each of the first ``frames`` frames of ``video`` but its I-frames, by display index, with the
    runtime's motion (``cfg``'s estimated vectors where the codec exports none)."""
    out = {}
    with open_video(video) as source:
        if cfg.motion_source == "auto":
            source.estimate_motion(cfg.motion_fallback)  # nothing for a codec that exports vectors, as the runtime
        for i, frame in zip(range(frames), source):
            if frame.pict_type != "I":
                out[frame.index] = residual_cells(frame.residual, grid, cfg.fusion_threshold)
    return out


def collect(model: Model, split: Split, videos: list[str], cfg: AdaptConfig,
            progress: Callable[[str, int, int], None] | None = None) -> Footage:
    """Every warped frame of the videos as a :class:`TamedSample` (module docstring)."""
    seg = Segmenter(model, device=model.device, fusion=False, rgc=False)
    identity = Tamed(TamedNet(split.deep_channels, split.shallow_channels), model.class_names, model.stride,
                     "<untrained>", model.device)
    identity.check(model)
    seg.correction = identity  # in fusion's place: the runtime then warps TWNet's state, and details record it
    residuals: dict[str, dict[int, torch.Tensor]] = {}  # the video's being read

    def make(r, v: int, video: str, truth: list[np.ndarray] | None) -> TamedSample | None:
        if r.state is None:
            return None
        grid = tuple(r.state.shape[-2:])
        if video not in residuals:
            residuals.clear()
            residuals[video] = _residuals(video, cfg.frames, grid, seg.config)
        x = to_tensor(r.image)
        return TamedSample(_half(split.deep(r.state)), _half(split.logits(r.state)), _half(split.shallow(x, grid)[0]),
                           _half(residuals[video][r.index]), _half(model.logits(x)[0].float()),
                           frame_labels(truth, r.index, grid), v, r.index)

    return collect_samples(model, videos, cfg, progress, seg, make)


def _batch(samples: list[TamedSample], cfg: AdaptConfig, rng: np.random.Generator):
    """Random crops of ``cfg.crop`` cells with horizontal flips, as tensors; labels where ``cfg.labels`` and every
    crop has them."""
    picks = [int(i) for i in rng.integers(0, len(samples), cfg.batch_size)]
    h, w = samples[picks[0]].teacher.shape[-2:]  # one size per batch: the first pick's video
    picks = [i for i in picks if samples[i].teacher.shape[-2:] == (h, w)]
    ch, cw = min(h, cfg.crop), min(w, cfg.crop)
    crops = []
    for i in picks:
        s = samples[i]
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        arrays = [s.deep, s.shallow, s.residual, s.teacher, s.labels]
        crop = [None if a is None else a[..., y:y + ch, x:x + cw] for a in arrays]
        if rng.random() < 0.5:
            crop = [None if a is None else a[..., ::-1] for a in crop]
        crops.append(crop)
    tensors = [torch.from_numpy(np.ascontiguousarray(np.stack([c[k] for c in crops]))).float() for k in range(4)]
    labels = None
    if cfg.labels and all(c[4] is not None for c in crops):
        labels = torch.from_numpy(np.ascontiguousarray(np.stack([c[4] for c in crops]))).long()
    return (*tensors, labels)


def tamed_losses(net: TamedNet, split: Split, deep: torch.Tensor, shallow: torch.Tensor, residual: torch.Tensor,
                 teacher: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """One batch's loss: the teacher's terms on the decoded, corrected logits."""
    corrected, _ = net(deep, shallow, residual)
    return teacher_losses(split.decode(shallow, corrected), teacher, labels)


@torch.inference_mode()
def cost(tamed: Tamed, sample: TamedSample, size: tuple[int, int], repeats: int = 10) -> float:
    """Milliseconds per frame of TWNet's stage at the video's size: the shallow layers, CFR and RGA, the decoder."""
    image = torch.zeros(1, 3, *size)
    state = torch.cat([torch.from_numpy(sample.logits), torch.from_numpy(sample.deep)]).float()
    residual = np.zeros(size, np.uint8)
    return median_ms(lambda: tamed(image, state, residual_cells(residual, tuple(state.shape[-2:]), 30.0)), repeats)


def adapt_twnet(base: Model, videos: list[str], cfg: AdaptConfig,
                progress: Callable[[str, int, int], None] | None = None) -> Trained:
    """TWNet's correction adapted to ``base`` on ``videos`` (module docstring)."""
    split = Split(base)
    # a TamedSample per cell: float16 interior, logits, shallow features, residual and teacher; a label
    channels = split.deep_channels + 2 * base.num_classes + split.shallow_channels + RESIDUAL_CHANNELS
    needed, what = footage_bytes(base, videos, cfg, 2 * channels + 1)
    check_memory(needed, available_memory(), what)
    footage = collect(base, split, videos, cfg, progress)
    net = TamedNet(split.deep_channels, split.shallow_channels, width=cfg.width)
    frozen = [p for p in base.module.parameters() if p.requires_grad] if base.module is not None else []
    for p in frozen:  # the model's own layers take no gradient: only TWNet's learn
        p.requires_grad_(False)
    try:
        training = train(net, lambda rng: tamed_losses(net, split, *_batch(footage.train, cfg, rng)), cfg, progress)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    tamed = Tamed(copy.deepcopy(net), base.class_names, base.stride, "adapted")
    tamed.check(base)

    def outputs(s: TamedSample) -> dict[str, torch.Tensor]:
        deep, shallow = torch.from_numpy(s.deep).float()[None], torch.from_numpy(s.shallow).float()[None]
        with torch.inference_mode():
            corrected, _ = tamed.net(deep, shallow, torch.from_numpy(s.residual).float()[None])
            return {"warped": torch.from_numpy(s.logits).float(), "corrected": split.decode(shallow, corrected)[0]}

    scores = fidelity(footage.held, outputs, footage.size, base.num_classes)
    ms = cost(tamed, footage.held[0], footage.size[footage.held[0].video])

    def save(path: Path, reference: str, metrics: dict) -> None:
        save_tamed(path, net, base.class_names, base.stride, reference, metrics=metrics, adapted=True)
    return Trained(footage, training, scores, ms, save)
