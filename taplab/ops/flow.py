"""Dense motion for baselines and metrics: optical flow (OpenCV) and warping label maps with a flow.

taplab's convention throughout: a *backward* flow ``(H, W, 2)`` float32 ``(dx, dy)`` in pixels with
``current[y, x] ~= previous[y + dy, x + dx]`` (the codec's vectors point the same way, and so do the
synthetic clips' ground-truth flows). It serves

- the optical-flow baseline: the runtime's FFW with dense optical flow in place of the codec's
  vectors (``motion_source`` in :class:`~taplab.runtime.RuntimeConfig`), the peer that the
  compressed domain must beat at a fraction of the cost;
- the temporal-consistency metric (:func:`taplab.metrics.temporal_consistency`), which warps the
  previous prediction to the current frame.
"""

from __future__ import annotations

import cv2
import numpy as np

#: OpenCV's estimators: DIS at its presets (fast to accurate) and Farneback
METHODS = ("dis-ultrafast", "dis-fast", "dis-medium", "farneback")
_DIS_PRESETS = {"dis-ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "dis-fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                "dis-medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}


class OpticalFlow:
    """``flow = OpticalFlow("dis-fast")(current, previous)``: backward flow between two frames
    (uint8 RGB ``(H, W, 3)`` or grey ``(H, W)``), in taplab's convention.

    DIS runs at OpenCV's presets; Farneback with OpenCV's documented example parameters (pyramid
    scale 0.5, 3 levels, window 15, 3 iterations, polynomial 5 / 1.2). Cost at 1280x720 on this
    2-core CPU: DIS ultrafast about 13 ms, Farneback about 170 ms.
    """

    def __init__(self, method: str = "dis-fast"):
        if method not in METHODS:
            raise ValueError(f"optical flow method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method = method
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[method]) if method in _DIS_PRESETS else None
        self._coarse: dict[int, cv2.DISOpticalFlow] = {}  # per reduction factor s: DIS for frames reduced by s

    def __call__(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        cur, prev = _grey(current), _grey(previous)
        if cur.shape != prev.shape:
            raise ValueError(f"frames differ in size: {cur.shape} vs {prev.shape}")
        # OpenCV's flow(a, b) satisfies a[y, x] ~= b[y + dy, x + dx]: current first gives the backward flow
        if self._dis is not None:
            return self._dis.calc(cur, prev, None)
        return cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)

    def blocks(self, current: np.ndarray, previous: np.ndarray, block: int) -> np.ndarray:
        """The backward flow as one vector per ``block``-pixel block, ``(ceil(H/block), ceil(W/block), 2)`` float32
        pixels: the block mean of :meth:`__call__`'s flow (:func:`flow_to_blocks`), computed for
        less where DIS allows.

        DIS estimates its flow at its finest pyramid scale (ultrafast and fast: a quarter of the size, medium: half)
        and then densifies it to full size, which block means undo. Here DIS runs on the frames reduced by
        ``s`` (area averaging), the largest power of two at most ``2 ** finest scale`` that divides the block and
        both sides, with its finest-scale index lowered by ``log2 s``: the same absolute scale and pyramid
        levels, without the full-size levels and the densification. The two ways' vectors differ slightly (the
        pyramid's rounding; ``tests/ops/test_flow.py`` bounds it, docs/codec.md). Farneback, and sizes no such
        ``s`` divides, take the full-size flow."""
        cur, prev = _grey(current), _grey(previous)
        if cur.shape != prev.shape:
            raise ValueError(f"frames differ in size: {cur.shape} vs {prev.shape}")
        s = self._reduction(cur.shape, block)
        if s == 1:
            return flow_to_blocks(self(cur, prev), block)
        if s not in self._coarse:
            self._coarse[s] = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.method])
            self._coarse[s].setFinestScale(self._dis.getFinestScale() - s.bit_length() + 1)
        size = (cur.shape[1] // s, cur.shape[0] // s)
        small = [cv2.resize(x, size, interpolation=cv2.INTER_AREA) for x in (cur, prev)]
        flow = self._coarse[s].calc(small[0], small[1], None) * np.float32(s)
        return flow_to_blocks(flow, block // s)

    def _reduction(self, shape: tuple[int, int], block: int) -> int:
        """The factor :meth:`blocks` reduces the frames by (1: none)."""
        if self._dis is None:
            return 1
        s = 1 << self._dis.getFinestScale()
        while s > 1 and (block % s or shape[0] % s or shape[1] % s):
            s //= 2
        return s


def flow_to_blocks(flow: np.ndarray, block: int) -> np.ndarray:
    """A dense backward flow ``(H, W, 2)`` in pixels -> one vector per ``block``-pixel block, ``(ceil(H/block),
    ceil(W/block), 2)`` float32: the mean over the block's pixels (an edge block over the pixels it holds)."""
    height, width = flow.shape[:2]
    gh, gw = -(-height // block), -(-width // block)
    whole_h, whole_w = height // block, width // block  # blocks that hold block x block pixels
    out = np.empty((gh, gw, 2), np.float32)
    if whole_h and whole_w:  # an area resize by a whole factor is the block mean, and 100x faster than numpy's
        core = np.ascontiguousarray(flow[:whole_h * block, :whole_w * block], np.float32)
        out[:whole_h, :whole_w] = cv2.resize(core, (whole_w, whole_h), interpolation=cv2.INTER_AREA)
    if whole_h < gh:  # the bottom row of partial blocks
        rows = flow[whole_h * block:, :whole_w * block]
        out[whole_h, :whole_w] = rows.reshape(rows.shape[0], whole_w, block, 2).mean(axis=(0, 2))
    if whole_w < gw:  # the right column of partial blocks
        cols = flow[:whole_h * block, whole_w * block:]
        out[:whole_h, whole_w] = cols.reshape(whole_h, block, cols.shape[1], 2).mean(axis=(1, 2))
    if whole_h < gh and whole_w < gw:
        out[whole_h, whole_w] = flow[whole_h * block:, whole_w * block:].mean(axis=(0, 1))
    return out


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else np.ascontiguousarray(image)


def warp_labels(previous: np.ndarray, flow: np.ndarray, fill: int = 255) -> np.ndarray:
    """Labels ``(H, W)`` of the previous frame carried to the current one along a backward ``flow``:
    ``out[y, x] = previous[round(y + dy), round(x + dx)]``; ``fill`` where the source is outside the frame."""
    h, w = previous.shape
    if flow.shape != (h, w, 2):
        raise ValueError(f"flow {flow.shape} does not match labels {previous.shape}")
    ys, xs = np.mgrid[0:h, 0:w]
    sx = np.floor(xs + flow[..., 0].astype(np.float64) + 0.5).astype(np.int64)
    sy = np.floor(ys + flow[..., 1].astype(np.float64) + 0.5).astype(np.int64)
    inside = (sx >= 0) & (sx < w) & (sy >= 0) & (sy < h)
    out = np.full((h, w), fill, previous.dtype)
    out[inside] = previous[sy[inside], sx[inside]]
    return out
