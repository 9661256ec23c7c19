"""Distortion-map fusion (the DMNet paper): where warping failed, take a correction network's output.

All maps live on the feature grid ``(h, w)`` of the logits, as floats in [0, 1]:

- :func:`residual_map`: the compressed domain's own evidence of failed warping, the share of each
  cell's pixels whose absolute luma residual exceeds a threshold (8-bit levels, as RGC's THR_RGC).
- :func:`coarse_distortion`: ``M_coarse``, 1 where the label of the warped logits differs from the
  label of the reference frame's logits at the same cell (something moved across a class boundary
  there), where the warp had no source (:func:`taplab.ops.warp.warp`'s ``distorted`` mask), and the
  residual map elsewhere: the element-wise maximum of the three.
- :func:`distortion_map`: ``M = w_f * M_coarse + (1 - w_f) * M_edge`` (DMNet), ``M_edge`` the
  correction network's edge / thin-object probability.
- :func:`fuse`: ``F = (1 - M) * F_warped + M * F_updated`` (DMNet), so ``M = 0`` is plain warping.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from taplab.ops.labels import class_map


def residual_map(residual: np.ndarray, grid: tuple[int, int], threshold: float) -> torch.Tensor:
    """``(H, W)`` absolute luma residual (uint8) -> ``(h, w)`` float32: the share of each cell's pixels above ``threshold``.

    Cells are the ``grid``'s; where ``H`` is not a multiple of ``h`` (a model that rounds its output
    size up), area interpolation spreads the last partial cell, which is close enough for a weight.
    """
    above = (residual > threshold).astype(np.float32)
    h, w = grid
    return torch.from_numpy(cv2.resize(above, (w, h), interpolation=cv2.INTER_AREA))


def coarse_distortion(warped: torch.Tensor, reference_labels: torch.Tensor, distorted: torch.Tensor,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """``M_coarse`` (h, w) float32 in [0, 1] from the warped logits ``(C, h, w)``, the reference frame's
    labels ``(h, w)`` (arg-max of its logits), the warp's ``distorted`` mask and an optional
    :func:`residual_map`."""
    changed = (class_map(warped) != reference_labels) | distorted
    coarse = changed.float()
    if residual is not None:
        coarse = torch.maximum(coarse, residual.to(coarse.device))
    return coarse


def distortion_map(coarse: torch.Tensor, edge: torch.Tensor | None, weight: float = 0.5) -> torch.Tensor:
    """DMNet's ``M = w_f * M_coarse + (1 - w_f) * M_edge``; without an edge map, ``M_coarse``."""
    if edge is None:
        return coarse
    return weight * coarse + (1 - weight) * edge


def fuse(warped: torch.Tensor, updated: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
    """DMNet's ``F = (1 - M) * F_warped + M * F_updated`` for features ``(..., C, h, w)`` and ``M`` ``(..., h, w)``."""
    return torch.lerp(warped, updated, distortion.unsqueeze(-3).to(warped.dtype))
