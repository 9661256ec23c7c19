"""Typed bindings of the warp kernels, one interface for both: ``native/cpu/warp.cpp`` (C++ with OpenMP,
CPU tensors, through the buffer protocol) and ``native/cuda/warp.cu`` (CUDA tensors, through ctypes).

Semantics are defined by the torch reference in :mod:`taplab.ops.warp` (``warp_reference``, and for
``warp_blocks`` ``motion_to_grid(..., "nearest")`` then ``warp_reference``); its module docstring has the
conventions. Each binding takes unbatched features ``(C, h, w)`` of its device and dtypes, puts the
motion on the features' device as contiguous float32 / bool, checks every shape, allocates the
outputs and returns them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch


class WarpReference(NamedTuple):
    """The torch reference that the CUDA kernel must equal before it is used (its self-test, see
    :mod:`taplab.native.cuda`). :mod:`taplab.ops.warp` hands it over with
    :func:`taplab.native.register_reference`: native code does not import the layers above it."""

    #: ``warp_reference(features, motion, sampling) -> (out, distorted)``, ``motion`` a ``GridFlow``
    #: (``motion.flow`` (h, w, 2) float32 in cells, ``motion.valid`` (h, w) bool)
    warp: Callable
    #: ``motion_to_grid(vectors, valid, block, grid, stride) -> motion``: the block field on the feature grid
    motion_to_grid: Callable


class WarpKernels(ABC):
    """The interface of the warp bindings: inputs checked and outputs allocated here; a subclass runs its
    kernel, ``compiled`` (the raw module or ctypes library, as :func:`taplab.native.kernel` gives it)."""

    #: the features each kernel takes: device type and dtypes (unbatched, without autograd)
    device_type: str
    dtypes: tuple[torch.dtype, ...]

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def warp(self, x: torch.Tensor, flow: torch.Tensor, valid: torch.Tensor,
             bilinear: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """FFW on the feature grid (TapLab Eq. 2): ``x`` (C, h, w); ``flow`` (h, w, 2) in cells, the
        source of cell ``(i, j)`` being ``(j + fx, i + fy)``; ``valid`` (h, w) bool; nearest or bilinear
        sampling. Returns ``(out (C, h, w) like x, distorted (h, w) bool)`` on ``x``'s device."""
        x = self._features(x)
        c, h, w = x.shape
        flow = flow.to(x.device, torch.float32).contiguous()
        valid = valid.to(x.device, torch.bool).contiguous()
        if tuple(flow.shape) != (h, w, 2) or tuple(valid.shape) != (h, w):
            raise ValueError(f"flow {tuple(flow.shape)} / valid {tuple(valid.shape)} do not fit features {tuple(x.shape)}")
        out, distorted = _outputs(x)
        self._warp(x, flow, valid, bool(bilinear), out, distorted)
        return out, distorted

    def warp_blocks(self, x: torch.Tensor, vectors: np.ndarray, valid: np.ndarray, block: int,
                    stride: tuple[float, float], bilinear: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`warp` straight from the codec's block field, in one pass: ``vectors`` (gh, gw, 2)
        ``(dx, dy)`` in pixels, ``valid`` (gh, gw) bool, blocks of ``block`` pixels, features of
        ``stride = (sy, sx)`` pixels per cell; each cell takes the vector of the block holding its centre."""
        x = self._features(x)
        sy, sx = float(stride[0]), float(stride[1])
        vectors = torch.from_numpy(np.ascontiguousarray(vectors, np.float32)).to(x.device)
        valid = torch.from_numpy(np.ascontiguousarray(valid, bool)).to(x.device)
        if valid.dim() != 2 or tuple(vectors.shape) != (*valid.shape, 2) or min(*valid.shape, block) < 1 \
                or not (sy > 0 and sx > 0):
            raise ValueError(f"block field {tuple(vectors.shape)} / {tuple(valid.shape)}, block {block}, stride "
                             f"({sy}, {sx}) is not a valid block field")
        out, distorted = _outputs(x)
        self._warp_blocks(x, vectors, valid, int(block), sy, sx, bool(bilinear), out, distorted)
        return out, distorted

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.device.type != self.device_type or x.dtype not in self.dtypes or x.requires_grad:
            raise ValueError(f"{type(self).__name__} takes unbatched {self.device_type} features of "
                             f"{[str(d) for d in self.dtypes]} without autograd, got {tuple(x.shape)} {x.dtype} "
                             f"on {x.device}{' with autograd' if x.requires_grad else ''}")
        return x.contiguous()

    @abstractmethod
    def _warp(self, x, flow, valid, bilinear, out, distorted) -> None:
        """Run the kernel into ``out`` and ``distorted``."""

    @abstractmethod
    def _warp_blocks(self, x, vectors, valid, block, sy, sx, bilinear, out, distorted) -> None:
        """Run the block-field kernel into ``out`` and ``distorted``."""


def _outputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.empty_like(x), torch.empty(x.shape[1:], dtype=torch.bool, device=x.device)


class CpuWarp(WarpKernels):
    """``native/cpu/warp.cpp``: float32 CPU features, passed as numpy views of the tensors (no copy)."""

    device_type = "cpu"
    dtypes = (torch.float32,)

    def _warp(self, x, flow, valid, bilinear, out, distorted) -> None:
        c, h, w = x.shape
        self.compiled.warp(x.numpy(), c, h, w, flow.numpy(), valid.numpy(), bilinear, out.numpy(), distorted.numpy())

    def _warp_blocks(self, x, vectors, valid, block, sy, sx, bilinear, out, distorted) -> None:
        c, h, w = x.shape
        self.compiled.warp_blocks(x.numpy(), c, h, w, vectors.numpy(), valid.numpy(), *valid.shape, block, sy, sx,
                                 bilinear, out.numpy(), distorted.numpy())

    def splat(self, x: torch.Tensor, cover: torch.Tensor, flow: torch.Tensor,
              valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``taplab.ops.interpolation.splat_reference`` for float32 CPU features ``(C, h, w)``: the features carried
        into the reference along ``flow`` (h, w, 2), each cell weighted by ``cover`` (h, w), and the weight received."""
        x = self._features(x)
        c, h, w = x.shape
        if tuple(cover.shape) != (h, w) or tuple(flow.shape) != (h, w, 2) or tuple(valid.shape) != (h, w):
            raise ValueError(f"cover {tuple(cover.shape)}, flow {tuple(flow.shape)}, valid {tuple(valid.shape)} "
                             f"do not fit features {tuple(x.shape)}")
        cover = cover.to(torch.float32).contiguous()
        flow, valid = flow.to(torch.float32).contiguous(), valid.to(torch.bool).contiguous()
        out, weight = torch.empty_like(x), torch.empty(h, w)
        self.compiled.splat(x.numpy(), c, h, w, cover.numpy(), flow.numpy(), valid.numpy(), out.numpy(),
                            weight.numpy())
        return out, weight

    def compose(self, step_flow: torch.Tensor, step_valid: torch.Tensor, flow: torch.Tensor,
                valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``taplab.ops.warp.compose_reference`` on the CPU: ``step`` (``step_flow`` (h, w, 2) in cells, ``step_valid``
        (h, w)) after the accumulated motion (``flow``, ``valid``); the chained flow and its validity, new tensors."""
        h, w = step_valid.shape
        if tuple(step_flow.shape) != (h, w, 2) or tuple(flow.shape) != (h, w, 2) or tuple(valid.shape) != (h, w):
            raise ValueError(f"step {tuple(step_flow.shape)} / {tuple(step_valid.shape)} and accumulated "
                             f"{tuple(flow.shape)} / {tuple(valid.shape)} are not one grid's motion")
        step_flow, flow = (f.to(torch.float32).contiguous() for f in (step_flow, flow))
        step_valid, valid = (v.to(torch.bool).contiguous() for v in (step_valid, valid))
        out_flow, out_valid = torch.empty(h, w, 2), torch.empty(h, w, dtype=torch.bool)
        self.compiled.compose(h, w, step_flow.numpy(), step_valid.numpy(), flow.numpy(), valid.numpy(),
                              out_flow.numpy(), out_valid.numpy())
        return out_flow, out_valid


class CudaWarp(WarpKernels):
    """``native/cuda/warp.cu`` (a ctypes library, see :mod:`taplab.native.cuda`): float32 and float16 CUDA
    features, passed as device pointers, launched on the features' device and torch's current stream.
    The library reads raw memory: every tensor it receives is checked here, just before the launch."""

    device_type = "cuda"
    dtypes = (torch.float32, torch.float16)

    def _warp(self, x, flow, valid, bilinear, out, distorted) -> None:
        c, h, w = x.shape
        self._check(x, out, distorted, flow, valid)
        self._launch("taplab_warp", x, x.data_ptr(), c, h, w, flow.data_ptr(), valid.data_ptr(), int(bilinear),
                     out.data_ptr(), distorted.data_ptr())

    def _warp_blocks(self, x, vectors, valid, block, sy, sx, bilinear, out, distorted) -> None:
        c, h, w = x.shape
        self._check(x, out, distorted, vectors, valid)
        gh, gw = valid.shape
        self._launch("taplab_warp_blocks", x, x.data_ptr(), c, h, w, vectors.data_ptr(), valid.data_ptr(), gh, gw,
                     block, sy, sx, int(bilinear), out.data_ptr(), distorted.data_ptr())

    @staticmethod
    def _check(x, out, distorted, *grids) -> None:
        """Where the pointers are taken: every tensor contiguous on the features' device, the outputs of
        their shape and dtype (the shapes of the motion are checked by :class:`WarpKernels`)."""
        c, h, w = x.shape
        tensors = (out, distorted, *grids)
        if not all(t.is_cuda and t.device == x.device and t.is_contiguous() for t in tensors):
            raise ValueError("the CUDA warp kernel needs contiguous tensors on the features' device")
        if out.shape != x.shape or out.dtype != x.dtype or tuple(distorted.shape) != (h, w) \
                or distorted.dtype != torch.bool:
            raise ValueError(f"output buffers {tuple(out.shape)}, {tuple(distorted.shape)} do not fit features {tuple(x.shape)}")

    def _launch(self, name: str, x: torch.Tensor, *args) -> None:
        fn = getattr(self.compiled, f"{name}_{'f16' if x.dtype == torch.float16 else 'f32'}")
        device = x.device.index if x.device.index is not None else torch.cuda.current_device()
        err = fn(*args, device, torch.cuda.current_stream(x.device).cuda_stream)
        if err:
            raise RuntimeError(f"the CUDA warp kernel failed: cudaError {err}")
