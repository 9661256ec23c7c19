"""Fast feature warping (TapLab's FFW) on the feature grid: the torch reference.

Conventions (taplab's, see :mod:`taplab.codec.motion`): a motion vector ``(dx, dy)`` in pixels
points from the current frame into its reference, ``current[y, x] ~= reference[y + dy, x + dx]``.
The TapLab paper writes FFW as ``F_t[p] = F_{t-1}[p - Mv_t[p]]`` with vectors pointing the other
way; in taplab's convention it reads

    F_t[p] = F_ref[p + v(p)]                                                  (TapLab Eq. 2)

Features live on a grid of stride ``s``: cell ``(i, j)`` covers pixels ``[i s, (i + 1) s)`` and
its centre is pixel ``((j + 0.5) s - 0.5, (i + 0.5) s - 0.5)``. A pixel displacement ``v`` moves
a cell centre by ``v / s`` cells, so a *flow* on the feature grid is ``(h, w, 2)`` float32 in cells:
source cell = ``(j + fx, i + fy)``.

Decisions, made here:

- Vectors go from the codec's block grid to the feature grid either ``"nearest"`` (the vector of
  the block holding the cell's centre; default) or ``"bilinear"`` (interpolated between the
  centres of valid blocks; cells whose neighbourhood holds no valid block take no vector).
- Cells whose block has no vector (intra-coded) keep their features in place (zero flow) and
  count as *distorted*; so do cells whose source lies outside the frame, whose source is clamped
  to the border (as codecs extend the reference picture).
- Sampling the features at the source is ``"nearest"`` (round to the nearest cell: exact for
  whole-cell motion, but a chain of warps drops every step's sub-cell part) or ``"bilinear"``.
"""

from __future__ import annotations

from functools import lru_cache

from typing import NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from taplab.native import bind, register_reference
from taplab.native.warp import WarpReference

SAMPLING = ("nearest", "bilinear")


class GridFlow(NamedTuple):
    """Motion on the feature grid: ``flow`` (h, w, 2) float32 in cells, ``valid`` (h, w) bool."""

    flow: torch.Tensor
    valid: torch.Tensor


@lru_cache(maxsize=16)
def cell_centres(size: int, stride: float) -> np.ndarray:
    """Pixel coordinate of the centres of ``size`` cells of ``stride`` pixels (read-only: cached, as every frame
    of a video asks for the same)."""
    centres = (np.arange(size, dtype=np.float64) + 0.5) * stride - 0.5
    centres.flags.writeable = False
    return centres


@lru_cache(maxsize=16)
def _nearest_block(cells: int, stride: float, block: int, blocks: int) -> np.ndarray:
    """For each of ``cells`` cells of ``stride`` pixels, the block (of ``blocks`` of ``block`` pixels) holding its centre."""
    index = np.clip(np.floor(cell_centres(cells, stride) / block - 0.5 + 0.5).astype(int), 0, blocks - 1)
    index.flags.writeable = False
    return index


def motion_to_grid(vectors: np.ndarray, valid: np.ndarray, block: int, grid: tuple[int, int],
                   stride: tuple[float, float] | float, mode: str = "nearest") -> GridFlow:
    """Block motion ``(gh, gw, 2)`` pixels + ``valid`` -> :class:`GridFlow` on a ``grid = (h, w)`` feature grid.

    ``stride`` is the feature grid's pixel stride, ``(sy, sx)`` or one number (for an image of
    ``H x W`` and logits of ``h x w``, ``(H / h, W / w)``).
    """
    if mode not in SAMPLING:
        raise ValueError(f"mode must be one of {SAMPLING}, got {mode!r}")
    sy, sx = (stride, stride) if np.isscalar(stride) else stride
    h, w = grid
    gh, gw = valid.shape
    cells = np.array([sx, sy], np.float32)  # pixels -> cells
    if mode == "nearest":
        iy, ix = _nearest_block(h, sy, block, gh), _nearest_block(w, sx, block, gw)
        # scale at block resolution, then gather rows and columns (two 1-D takes beat one 2-D fancy index)
        per_block = np.where(valid[..., None], vectors, 0).astype(np.float32) / cells
        flow = per_block.take(iy, 0).take(ix, 1)
        ok = valid.take(iy, 0).take(ix, 1)
    else:
        # Normalised convolution: interpolate valid vectors only, so invalid (zero) blocks do not
        # pull their neighbours' vectors towards zero.
        by = cell_centres(h, sy) / block - 0.5  # the cells' centres in block coordinates (block centre k at k)
        bx = cell_centres(w, sx) / block - 0.5
        weights = valid.astype(np.float32)
        stacked = np.concatenate([vectors * weights[..., None], weights[..., None]], axis=2)
        y0 = np.clip(np.floor(by).astype(int), 0, gh - 1)
        x0 = np.clip(np.floor(bx).astype(int), 0, gw - 1)
        y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
        fy = np.clip(by - y0, 0, 1)[:, None, None]
        fx = np.clip(bx - x0, 0, 1)[None, :, None]
        top = stacked[y0][:, x0] * (1 - fx) + stacked[y0][:, x1] * fx
        bottom = stacked[y1][:, x0] * (1 - fx) + stacked[y1][:, x1] * fx
        mix = top * (1 - fy) + bottom * fy
        ok = mix[..., 2] > 1e-6
        v = np.where(ok[..., None], mix[..., :2] / np.maximum(mix[..., 2:], 1e-6), 0).astype(np.float32)
        flow = v / cells
    return GridFlow(torch.from_numpy(flow), torch.from_numpy(np.ascontiguousarray(ok)))


def dense_to_grid(flow: np.ndarray, grid: tuple[int, int], stride: tuple[float, float] | float) -> GridFlow:
    """A dense flow ``(H, W, 2)`` float32 in pixels -> :class:`GridFlow` on a ``grid = (h, w)`` feature grid.

    The flow follows taplab's convention (a backward flow: ``(dx, dy)`` points from the current frame
    into its reference, as the codec's vectors do). It is area-averaged onto the cells and divided by
    ``stride`` (``(sy, sx)`` pixels per cell, or one number); every cell is valid.
    """
    h, w = grid
    sy, sx = (stride, stride) if np.isscalar(stride) else stride
    cells = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA) / np.array([sx, sy], np.float32)
    return GridFlow(torch.from_numpy(np.ascontiguousarray(cells, np.float32)), torch.ones(h, w, dtype=torch.bool))


def warp(features: torch.Tensor, motion: GridFlow, sampling: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """FFW: ``features`` ``(C, h, w)`` (or ``(N, C, h, w)``) of the reference -> the current frame's.

    Returns ``(warped, distorted)``: ``distorted`` (h, w) bool marks cells without a vector (kept
    in place) and cells whose source lies outside the grid (clamped to its border). Unbatched float32
    CPU features go through the C++ kernel where it is built, unbatched float32/float16 CUDA
    features through the CUDA kernel where nvcc could build it (both equal to :func:`warp_reference`
    for nearest sampling, to float rounding for bilinear); everything else through the reference.
    """
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if features.dim() == 3 and tuple(motion.flow.shape[:2]) != tuple(features.shape[1:]):
        raise ValueError(f"motion grid {tuple(motion.flow.shape[:2])} does not match the features' {tuple(features.shape[1:])}")
    kernels = _kernels(features)
    if kernels is None:
        return warp_reference(features, motion, sampling)
    return kernels.warp(features, motion.flow, motion.valid, sampling == "bilinear")


def warp_blocks(features: torch.Tensor, vectors: np.ndarray, valid: np.ndarray, block: int,
                stride: tuple[float, float] | float, sampling: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """FFW straight from the codec's block field: ``warp(features, motion_to_grid(vectors, valid, block,
    grid, stride, "nearest"), sampling)``, in one pass of the native kernels, without building the
    grid-sized flow. (The runtime's default, motion accumulated to the key frame, needs that flow
    for the composition; chained warping does not.)"""
    if sampling not in SAMPLING:
        raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    sy, sx = (stride, stride) if np.isscalar(stride) else stride
    if vectors.shape != (*valid.shape, 2):
        raise ValueError(f"vectors {vectors.shape} do not match the valid mask {valid.shape}")
    kernels = _kernels(features)
    if kernels is None:
        grid = tuple(features.shape[-2:])
        return warp_reference(features, motion_to_grid(vectors, valid, block, grid, (sy, sx)), sampling)
    return kernels.warp_blocks(features, vectors, valid, block, (sy, sx), sampling == "bilinear")


def _kernels(features: torch.Tensor):
    """The native warp binding for these features, or None for the reference: the C++ kernel for unbatched
    float32 CPU features, the CUDA kernel for unbatched float32/float16 CUDA features."""
    if features.dim() != 3 or features.requires_grad:
        return None
    if features.device.type == "cpu" and features.dtype == torch.float32:
        return bind("warp")
    if features.device.type == "cuda" and features.dtype in (torch.float32, torch.float16):
        return bind("warp_cuda")
    return None


def warp_reference(features: torch.Tensor, motion: GridFlow, sampling: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`warp` in torch: the reference that defines its semantics (any device, batched or not)."""
    batched = features.dim() == 4
    x = features if batched else features[None]
    h, w = x.shape[-2:]
    flow, valid = motion.flow.to(x.device), motion.valid.to(x.device)
    if flow.shape[:2] != (h, w):
        raise ValueError(f"motion grid {tuple(flow.shape[:2])} does not match the features' {(h, w)}")
    ys = torch.arange(h, device=x.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=x.device, dtype=torch.float32)[None, :]
    sx, sy = xs + flow[..., 0], ys + flow[..., 1]
    # a source within half a cell of the border still samples real features (nearest rounds onto it)
    outside = (sx < -0.5) | (sx > w - 0.5) | (sy < -0.5) | (sy > h - 0.5)
    if sampling == "nearest":
        ix = torch.floor(sx + 0.5).clamp_(0, w - 1).long()
        iy = torch.floor(sy + 0.5).clamp_(0, h - 1).long()
        out = x[:, :, iy, ix]
    else:
        gx = sx.clamp(0, w - 1) * (2 / max(w - 1, 1)) - 1
        gy = sy.clamp(0, h - 1) * (2 / max(h - 1, 1)) - 1
        grid = torch.stack([gx, gy], dim=2)[None].expand(x.shape[0], h, w, 2).to(x.dtype)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    distorted = ~valid | outside
    return (out if batched else out[0]), distorted


def compose(step: GridFlow, accumulated: GridFlow) -> GridFlow:
    """Chain motion: ``step`` (current -> previous frame) after ``accumulated`` (previous -> key frame)
    gives current -> key frame, ``D(p) = v(p) + D_prev(p + v(p))`` with ``D_prev`` sampled bilinearly.

    Warping the key frame's features once with the composed flow keeps every step's sub-cell part,
    which a chain of nearest warps drops. A cell is valid where both steps are. One pass of the C++
    kernel where it is built and the flows are float32 on the CPU without autograd (bit for bit
    :func:`compose_reference` through the C++ warp kernel, without its half a dozen torch operations),
    else the reference.
    """
    flows = (step.flow, accumulated.flow)
    kernels = bind("warp") if all(f.device.type == "cpu" and f.dtype == torch.float32 and not f.requires_grad
                                  for f in flows) else None
    if kernels is None:
        return compose_reference(step, accumulated)
    return GridFlow(*kernels.compose(step.flow, step.valid, accumulated.flow, accumulated.valid))


def compose_reference(step: GridFlow, accumulated: GridFlow) -> GridFlow:
    """:func:`compose` in torch: the accumulated flow and validity stacked as three channels and warped with
    ``step`` (bilinear), the flow added to the step's; valid where the step is and the sampled validity > 0.999."""
    prev = torch.cat([accumulated.flow.permute(2, 0, 1), accumulated.valid[None].float()])
    sampled, _ = warp(prev, step, "bilinear")
    flow = step.flow + sampled[:2].permute(1, 2, 0)
    valid = step.valid & (sampled[2] > 0.999)
    return GridFlow(flow.contiguous(), valid)


def zero_flow(grid: tuple[int, int]) -> GridFlow:
    """The identity motion (every cell valid): the key frame's own accumulated flow."""
    h, w = grid
    return GridFlow(torch.zeros(h, w, 2), torch.ones(h, w, dtype=torch.bool))


# the CUDA kernel checks itself against this reference before its first use (taplab/native/cuda.py)
register_reference("warp_cuda", WarpReference(warp_reference, motion_to_grid))
