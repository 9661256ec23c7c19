"""B-frames from both references: the features warped from the past and from the future anchor, blended per cell.

A B-frame's blocks are predicted from the previous anchor, the next one, or both. The runtime warps
the features of each side along that side's vectors (FFW), then blends them per cell of the feature
grid:

    F = (1 - w) F_past + w F_future

Decisions, made here:

- **Validity first.** A side counts in a cell only where its warp had a source (the cell's block
  has a vector on that side and it points inside the frame). A cell with one such side takes it
  (``w`` 0 or 1); a cell with neither keeps the past side's (in-place) features and stays distorted.
- **Then the residual.** Where both sides have a source, each weighs inversely to its mean
  absolute luma residual over the cell (``|Y - MC(Y_side)|``, 8-bit levels), plus ``EPSILON`` so that two
  near-perfect predictions weigh alike: ``w = (e_past + eps) / (e_past + e_future + 2 eps)``. The residual
  measures how well each side's motion predicts the frame, which is what the warped features need.
- **The frame's residual** (what RGC, fusion and the frame's logs read) is the same mix of the two
  sides' residuals, pixel by pixel with the weight of the cell holding the pixel.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

#: added to each side's mean residual (8-bit levels) before weighing: two near-perfect sides weigh alike
EPSILON = 1.0


def cell_errors(residual: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` uint8 absolute residual -> ``(h, w)`` float32: its mean over each cell of the feature ``grid``."""
    h, w = grid
    return torch.from_numpy(cv2.resize(residual.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA))


def future_weights(past_error: torch.Tensor, past_ok: torch.Tensor, future_error: torch.Tensor,
                   future_ok: torch.Tensor) -> torch.Tensor:
    """The future side's weight ``w`` per cell, ``(h, w)`` float32 in [0, 1] (see the module docstring)."""
    both = (past_error + EPSILON) / (past_error + future_error + 2 * EPSILON)
    weight = torch.where(past_ok, both, torch.ones_like(both))
    return torch.where(future_ok, weight, torch.zeros_like(weight)).float()


def blend(past: torch.Tensor, future: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``(1 - w) past + w future`` for ``(C, h, w)`` features and an ``(h, w)`` weight."""
    return torch.lerp(past, future, weight[None].to(past.dtype))


def blend_residual(past: np.ndarray, future: np.ndarray, weight: torch.Tensor) -> np.ndarray:
    """The two sides' ``(H, W)`` uint8 residuals mixed per pixel by the weight of the feature cell that holds it."""
    height, width = past.shape
    per_pixel = cv2.resize(weight.numpy(), (width, height), interpolation=cv2.INTER_NEAREST)
    mixed = past.astype(np.float32) * (1 - per_pixel) + future.astype(np.float32) * per_pixel
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
