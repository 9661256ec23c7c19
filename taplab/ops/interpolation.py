"""Interpolation between the enclosing key frames (Inter-BMV): the next key frame's features carried backwards.

FFW carries the previous key frame's features forward along each frame's vectors (``F_t[p] = F_ref[p + v(p)]``,
:mod:`taplab.ops.warp`). A frame's vectors say where each of its cells came from in its reference, so
they carry features backwards too: cell ``p`` of frame ``t`` puts its features down at ``p + v_t(p)`` in
its reference ``t - 1``. This is forward warping (*splatting*): several cells may land on one, and some
cells receive none. Repeated from the next key frame down to frame ``t``, it brings ``t`` the next key
frame's features; the runtime then blends them with the forward-warped ones per cell, as it blends a
B-frame's two sides (:mod:`taplab.ops.bidirectional`).

Decisions, made here:

- **Bilinear splatting with coverage.** Each cell spreads its features over the four cells around its
  target with bilinear weights, scaled by its own *coverage* (how much of it was filled, 1 at the key
  frame). The result is normalised by the weight received; a cell that received less than
  ``MIN_COVER`` has no backward source (it was uncovered between the two frames).
- **Cells without a vector** (intra-coded) send nothing: they had no source in the earlier frame.
- **Weights of the two sides.** Each side weighs inversely to the error accumulated along its path:
  the per-cell mean residual of every frame the features passed, plus ``STEP`` levels per frame,
  so that the closer key frame weighs more where the residual says nothing (a static scene).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from taplab.native import bind
from taplab.ops.warp import GridFlow

#: a cell that received less splatting weight than this has no backward source
MIN_COVER = 0.5
#: added to a side's accumulated error per frame crossed (8-bit levels): distance counts where the residual is 0
STEP = 1.0


def splat(features: torch.Tensor, cover: torch.Tensor, flow: GridFlow) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``(C, h, w)`` of a frame, with their ``cover`` ``(h, w)`` in [0, 1], carried into its reference along
    its ``flow`` (cell ``p`` lands at ``p + flow(p)``): the normalised features there and the weight each cell
    received, clipped to 1 (the reference's coverage). The C++ kernel where it is built and the features are
    float32 on the CPU (equal to :func:`splat_reference` to float rounding), else the reference."""
    kernels = bind("warp") if features.dim() == 3 and features.dtype == torch.float32 \
        and features.device.type == "cpu" and not features.requires_grad else None
    if kernels is None:
        return splat_reference(features, cover, flow)
    return kernels.splat(features, cover, flow.flow, flow.valid)


def splat_reference(features: torch.Tensor, cover: torch.Tensor, flow: GridFlow) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`splat` in torch: the reference that defines it."""
    channels, h, w = features.shape
    ys, xs = _cells(h, w)
    tx, ty = xs + flow.flow[..., 0], ys + flow.flow[..., 1]
    x0, y0 = torch.floor(tx), torch.floor(ty)
    mass = cover * flow.valid.float()
    flat = features.reshape(channels, -1)
    out = torch.zeros(channels, h * w, dtype=features.dtype)
    weight = torch.zeros(h * w, dtype=features.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            share = mass * (1 - (tx - cx).abs()) * (1 - (ty - cy).abs())
            inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h) & (share > 0)
            target = (cy[inside] * w + cx[inside]).long()
            share = share[inside].to(features.dtype)
            weight.index_add_(0, target, share)
            out.index_add_(1, target, flat[:, inside.reshape(-1)] * share)
    normalised = out / weight.clamp(min=1e-6)
    return normalised.reshape(channels, h, w), weight.clamp(max=1.0).reshape(h, w)


@lru_cache(maxsize=4)
def _cells(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every cell's row and column, (h, w) float32 each (shared between calls: never written)."""
    return torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")


def received(cover: torch.Tensor) -> torch.Tensor:
    """The cells a splatted side counts in: those that received at least ``MIN_COVER``."""
    return cover >= MIN_COVER
