"""Typed bindings of the C kernels that take numpy arrays: ``native/cpu/mc.c`` and ``native/cpu/labels.c``.

The compiled modules take raw buffers and sizes and check only that every buffer is long enough;
these classes (each over its raw module, ``compiled``, as :func:`taplab.native.kernel` gives it)
check shapes and dtypes, make the inputs C-contiguous, allocate the outputs and return them. Their
semantics are defined by the references they replace (named per method).

numpy only, no torch: the codec's reader uses the ``mc`` kernels and must start without torch.
(The CPU warp kernel takes torch tensors; its binding is in :mod:`taplab.native.warp`.)
"""

from __future__ import annotations

import numpy as np


class MotionKernels:
    """``native/cpu/mc.c``: the reader's per-frame motion compensation, equal to its references byte for byte."""

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def residual(self, current: np.ndarray, reference: np.ndarray, vectors: np.ndarray, valid: np.ndarray,
                 block: int) -> np.ndarray:
        """``|current - MC(reference)|`` (H, W) uint8 by integer-pel block copy: ``taplab.ops.residual.residual_reference``.

        ``current``, ``reference``: (H, W) uint8 luma planes. ``vectors``: (gh, gw, 2) ``(dx, dy)`` in
        pixels (rounded to whole pixels here), pointing from ``current`` into ``reference``; ``valid``:
        (gh, gw) bool, zero motion where False. The grid of ``block``-pixel cells must cover the frame.
        """
        if current.ndim != 2 or current.shape != reference.shape or current.dtype != np.uint8 \
                or reference.dtype != np.uint8:
            raise ValueError(f"current {current.shape} {current.dtype} and reference {reference.shape} "
                             f"{reference.dtype} must be equal (H, W) uint8 planes")
        height, width = current.shape
        gh, gw = valid.shape
        if vectors.shape != (gh, gw, 2) or block < 1 or gh * block < height or gw * block < width:
            raise ValueError(f"vectors {vectors.shape} / valid {valid.shape} of {block}-pixel blocks do not cover "
                             f"a {height}x{width} frame")
        out = np.empty((height, width), np.uint8)
        shifts = np.rint(vectors).astype(np.int16)
        self.compiled.mc_residual(np.ascontiguousarray(current), np.ascontiguousarray(reference), shifts,
                                np.ascontiguousarray(valid, bool), height, width, gh, gw, block, out)
        return out

    def rasterize(self, raw: np.ndarray, block: int, grid_shape: tuple[int, int],
                  sign: int) -> tuple[np.ndarray, np.ndarray]:
        """FFmpeg's per-partition vectors onto a ``grid_shape = (gh, gw)`` grid of ``block``-pixel cells:
        ``taplab.codec.motion.rasterize_reference``.

        ``raw``: 1-D AVMotionVector records (``taplab.codec.motion.AV_MOTION_VECTOR_DTYPE``, 40 bytes
        each); only those whose ``source`` has the sign ``sign`` (-1 past, +1 future) are used.
        Returns ``(vectors (gh, gw, 2) float32 (dx, dy) pixels, valid (gh, gw) bool)``.
        """
        # the kernel reads the records as FFmpeg's C struct: its size is what memory safety needs
        if raw.ndim != 1 or raw.dtype.fields is None or raw.dtype.itemsize != 40:
            raise ValueError(f"raw must be a 1-D array of 40-byte AVMotionVector records, got {raw.shape} {raw.dtype}")
        gh, gw = grid_shape
        if sign not in (-1, 1) or block < 1 or gh < 0 or gw < 0:
            raise ValueError(f"sign {sign} (-1 or 1), block {block} or grid {grid_shape} is not valid")
        vectors = np.empty((gh, gw, 2), np.float32)
        valid = np.empty((gh, gw), bool)
        self.compiled.rasterize(np.ascontiguousarray(raw), len(raw), block, gh, gw, sign, vectors, valid)
        return vectors, valid


class LabelKernels:
    """``native/cpu/labels.c``: full-resolution labels from coarse logits (``taplab.ops.labels.upsample_labels_reference``)."""

    #: the kernel's limit on classes (labels are uint8)
    max_classes = 256

    def __init__(self, compiled) -> None:
        self.compiled = compiled

    def upsample(self, logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Logits ``(C, h, w)`` float32 -> uint8 labels ``size = (H, W)``: bilinear upsampling (PyTorch's
        ``align_corners=False``) then arg-max, computed near class boundaries only."""
        if logits.ndim != 3 or logits.dtype != np.float32 or not 1 <= logits.shape[0] <= self.max_classes:
            raise ValueError(f"logits must be (C, h, w) float32 with 1 <= C <= {self.max_classes}, "
                             f"got {logits.shape} {logits.dtype}")
        height, width = size
        c, h, w = logits.shape
        out = np.empty((height, width), np.uint8)
        self.compiled.upsample_labels(np.ascontiguousarray(logits), c, h, w, height, width, out)
        return out
