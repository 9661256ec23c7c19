"""Temporal consistency trained into a per-frame model (the PFI paper): losses on pairs of consecutive frames.

A model that is consistent in time needs no runtime help to stop flickering, and costs nothing more at
inference. ``taplab train --temporal W --distill W --teacher MODEL`` adds to the cross-entropy, on each
sample and the frame before it (:mod:`taplab.data.pairs`):

- **temporal loss** (:func:`temporal_loss`): the squared difference between the class probabilities of
  a frame and those of the frame before, carried to it along the backward flow, summed over classes
  and averaged over the pixels where the flow holds (occlusions masked). Gradients reach both frames.
- **pairwise-frame distillation** (:func:`pairwise_distillation`): the teacher's cross-frame affinity,
  the cosine similarity between every cell of one frame's features and every cell of the other's, is
  what the student's affinity must match (mean squared difference). Both feature maps are average-pooled
  to one cell per 16x16 pixels first, so teacher and student of different widths and strides compare, and
  the affinity matrices stay small (576 x 576 cells for a 384x384 crop). The teacher is any loadable model
  (its ``features()``; a model without an interior layer gives its logits).

``--temporal-data VIDEO`` adds unlabelled footage (:mod:`taplab.data.videos`), which teaches through these
losses alone. What the weights buy, and cost, is measured in docs/models.md.

The paper's third loss, multi-frame distillation from a video teacher, is not built: it needs a teacher
that sees several frames (the paper's has a recurrent layer), and taplab has none to distil from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from taplab.ops.warp import GridFlow, warp_reference

if TYPE_CHECKING:
    from taplab.data.datasets import LabelledImages
    from taplab.data.pairs import FramePairs
    from taplab.nets.loader import Model

#: pixels per affinity cell side (pairwise-frame distillation)
AFFINITY_CELL = 16


def warp(x: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` ``(N, C, H, W)`` of the previous frame carried along the backward ``flow`` ``(N, H, W, 2)`` (pixels,
    ``current[y, x] ~= previous[y + dy, x + dx]``), bilinearly; and where the source lies inside the frame
    (bool ``(N, H, W)``). FFW's torch reference (:func:`taplab.ops.warp.warp_reference`), at one cell per pixel,
    one sample at a time (each has its own flow)."""
    every = torch.ones(flow.shape[1:3], dtype=torch.bool, device=flow.device)
    warped, distorted = zip(*(warp_reference(x[i], GridFlow(flow[i], every), "bilinear") for i in range(len(x))))
    return torch.stack(warped), ~torch.stack(distorted)


def temporal_loss(logits: torch.Tensor, logits_before: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """PFI's temporal loss for logits ``(N, C, H, W)`` of frames and of the frames before them (at the flow's
    resolution), the backward ``flow`` ``(N, H, W, 2)`` and its ``valid`` mask ``(N, H, W)``: the mean over valid
    pixels of ``sum_c (p - W(p_before))^2``, ``p`` the softmax. Zero where no pixel is valid."""
    carried, inside = warp(logits_before.softmax(1), flow)
    mask = (valid & inside).to(logits.dtype)
    squared = (logits.softmax(1) - carried).pow(2).sum(1)
    return (squared * mask).sum() / mask.sum().clamp_min(1)


def affinity(features: torch.Tensor, features_before: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """Cosine similarity ``(N, K, K)`` between the ``K = cells[0] * cells[1]`` pooled cells of two feature maps."""
    a, b = (F.normalize(F.adaptive_avg_pool2d(f, cells).flatten(2), dim=1) for f in (features, features_before))
    return a.transpose(1, 2) @ b


def pairwise_distillation(student: torch.Tensor, student_before: torch.Tensor, teacher: torch.Tensor,
                          teacher_before: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PFI's pairwise-frame distillation: the mean squared difference between the student's and the teacher's
    cross-frame affinities, on cells of :data:`AFFINITY_CELL` pixels of an input of ``size`` (H, W)."""
    cells = (max(1, size[0] // AFFINITY_CELL), max(1, size[1] // AFFINITY_CELL))
    with torch.no_grad():
        target = affinity(teacher, teacher_before, cells)
    return (affinity(student, student_before, cells) - target).pow(2).mean()


def pair_consistency(model: Model, data: LabelledImages, pairs: FramePairs, limit: int | None = None) -> float:
    """Temporal consistency over the samples of ``data`` that have a frame before them (the first ``limit``
    samples): the mean of the mIoU between the model's labels on a frame and its labels on the frame
    before, carried along the flow (as :func:`taplab.metrics.temporal_consistency`, pair by pair)."""
    from taplab.metrics import temporal_consistency

    scores = []
    for i in range(len(data) if limit is None else min(limit, len(data))):
        previous = pairs[i]
        if previous is None:
            continue
        labels, before = model.predict(np.stack([data[i][0], previous.image]))
        scores.append(temporal_consistency([before, labels], [None, previous.flow], model.num_classes))
    return float(np.nanmean(scores)) if scores else float("nan")
