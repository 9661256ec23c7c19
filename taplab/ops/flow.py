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

    def __call__(self, current: np.ndarray, previous: np.ndarray) -> np.ndarray:
        cur, prev = _grey(current), _grey(previous)
        if cur.shape != prev.shape:
            raise ValueError(f"frames differ in size: {cur.shape} vs {prev.shape}")
        # OpenCV's flow(a, b) satisfies a[y, x] ~= b[y + dy, x + dx]: current first gives the backward flow
        if self._dis is not None:
            return self._dis.calc(cur, prev, None)
        return cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)


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
