"""Residual-guided correction (TapLab's RGC) and frame selection (RGFS): the residual's statistics.

RGC: the frame is covered by candidate regions; the region with the most pixels whose residual
exceeds ``THR_RGC`` is the one the CNN re-runs on. The paper uses 512x512 regions with stride 256
on 1024x2048 frames, i.e. a quarter of the height; :func:`candidate_regions` scales that with the
frame, and adds regions flush with the right and bottom edges, which a plain grid misses when the
stride does not divide the frame.

RGC then blends the CNN's output on that region into the warped features (:func:`blend_region`).

RGFS: a frame whose residual says warping will fail becomes a key frame. The paper thresholds the
sum of the residual over a 1024x2048 frame at 3.6e7 (summed over the three colour channels of the
residual in 8-bit levels). taplab's score is resolution-independent: the mean absolute luma
residual per pixel, in 8-bit levels. The paper's threshold maps onto it as
3.6e7 / (1024 * 2048 * 3) = 5.7 levels per pixel per channel; taking the luma residual as
representative of the three channels, that is a threshold of about 5.7 (:data:`PAPER_RGFS_THRESHOLD`).
That level does not transfer between sources, so the runtime's default is :class:`RateSelector`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import NamedTuple

import cv2
import numpy as np
import torch

#: the TapLab paper's RGFS threshold (3.6e7 summed over a 1024x2048x3 residual) as a per-pixel mean
PAPER_RGFS_THRESHOLD = 3.6e7 / (1024 * 2048 * 3)
#: the paper's region size and stride as fractions of the frame height (512 and 256 of 1024)
PAPER_REGION_FRACTION = 0.5
PAPER_STRIDE_FRACTION = 0.25


class Region(NamedTuple):
    """A rectangle in pixels: rows ``[y, y + height)``, columns ``[x, x + width)``."""

    y: int
    x: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, max(length - size, 0) + 1, stride))
    if starts[-1] + size < length:  # the plain grid misses the far edge: add a region flush with it
        starts.append(length - size)
    return starts


def candidate_regions(height: int, width: int, size: int | None = None, stride: int | None = None,
                      multiple: int = 1) -> list[Region]:
    """Square candidate regions covering the whole frame.

    ``size`` and ``stride`` default to the paper's proportions (half and a quarter of the height:
    512 and 256 at 1024x2048), rounded to a ``multiple`` (e.g. the model's stride, so that a crop's
    features align with the frame's). Regions larger than the frame are clipped to it.
    """
    if size is None:
        size = max(multiple, round(height * PAPER_REGION_FRACTION / multiple) * multiple)
    if stride is None:
        stride = max(multiple, round(height * PAPER_STRIDE_FRACTION / multiple) * multiple)
    if size < 1 or stride < 1:
        raise ValueError(f"region size and stride must be >= 1, got {size} and {stride}")
    rh, rw = min(size, height), min(size, width)
    return [Region(y, x, rh, rw) for y in _starts(height, rh, stride) for x in _starts(width, rw, stride)]


def region_counts(residual: np.ndarray, regions: list[Region], threshold: float) -> np.ndarray:
    """Number of pixels with ``residual > threshold`` in each region (an integral image: one pass)."""
    # OpenCV's integral image: 0.5 ms at 720p, where numpy's two cumsums took 8 ms of every RGC frame
    integral = cv2.integral((residual > threshold).view(np.uint8), sdepth=cv2.CV_32S)
    r = np.array(regions, np.int64).reshape(-1, 4)
    y0, x0, y1, x1 = r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]
    return integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]


def select_region(residual: np.ndarray, regions: list[Region], threshold: float) -> tuple[Region, int]:
    """RGC: the region with the most pixels whose residual exceeds ``threshold`` (the first on ties), and that count."""
    counts = region_counts(residual, regions, threshold)
    best = int(np.argmax(counts))
    return regions[best], int(counts[best])


def residual_score(residual: np.ndarray) -> float:
    """RGFS score: the mean absolute residual per pixel, in 8-bit levels (resolution-independent)."""
    return float(residual.mean())


#: the lowest level a rate-mode score is divided by (8-bit levels): a still scene's zero residual divides nothing
LEVEL_FLOOR = 0.05


class RateSelector:
    """RGFS in rate mode: selects about ``rate`` of the candidate frames, those whose residual stands out from the
    frames just before them, adapting online.

    - **Relative to the recent level.** A frame's score is divided by the median of the ``trend``
      candidates' scores before it (the first frame's by itself). A residual that rises slowly along
      a clip (the synthetic clips' do, as their objects come closer) then does not make every later
      frame rank high; a frame whose residual jumps does. (``trend=0`` ranks the raw scores.)
    - **Ranked online.** The frame is selected when its relative score ranks within the top ``rate``
      share of the last ``window`` relative scores and itself: when fewer than
      ``k = round(rate * (n + 1))`` of the ``n`` before it are at least as high. For scores in random
      order the chance of selection is then ``k / (n + 1)``, within half a frame of ``rate`` at every
      ``n``, so short runs select about the asked share too (the first ``1 / (2 rate) - 1`` frames
      only calibrate).

    At ``rate=0.1`` it selects about a tenth of the P-frames on synthetic and real streams alike, where
    the paper's absolute threshold selects a quarter of the synthetic ones and almost none of the real
    ones (docs/runtime.md, docs/streams.md). Deterministic: the same scores give the same choices.
    """

    def __init__(self, rate: float, window: int = 200, trend: int = 3):
        if not 0 < rate < 1:
            raise ValueError(f"rate must be in (0, 1), got {rate}")
        self.rate, self.window, self.trend = rate, window, trend
        self.scores: deque[float] = deque(maxlen=window)  # the relative scores
        self._raw: deque[float] = deque(maxlen=max(1, trend))

    @property
    def threshold(self) -> float:
        """The relative score the next frame must exceed to be selected (infinite while calibrating)."""
        recent = list(self.scores)
        allowed = math.floor(self.rate * (len(recent) + 1) + 0.5)
        if allowed > len(recent):  # (rate >= 0.5 early on) any score ranks high enough
            return -math.inf
        return sorted(recent, reverse=True)[allowed - 1] if allowed else math.inf

    def relative(self, score: float) -> float:
        """``score`` over the median of the ``trend`` scores before it (1 for the first; ``trend=0``: the score)."""
        if not self.trend:
            return score
        level = float(np.median(self._raw)) if self._raw else score
        return score / max(level, LEVEL_FLOOR) if score > 0 else 0.0

    def __call__(self, score: float) -> bool:
        relative = self.relative(score)
        selected = relative > self.threshold
        self.scores.append(relative)
        self._raw.append(score)
        return selected


def blend_region(features: torch.Tensor, region_features: torch.Tensor, region: Region, stride: tuple[int, int],
                 alpha: float) -> None:
    """RGC's blend (TapLab Eq. 3), in place: ``F = (1 - alpha) F_warped + alpha F_cnn`` inside ``region``.

    ``features`` (C, h, w) are the frame's on a grid of ``stride = (sy, sx)`` pixels; ``region_features``
    (C, rh, rw) the CNN's on the region's crop, whose top-left cell is the region's pixel corner divided
    by the stride (regions are placed on multiples of the stride); what overhangs the grid is dropped.
    """
    sy, sx = stride
    y0, x0 = round(region.y / sy), round(region.x / sx)
    h = min(region_features.shape[1], features.shape[1] - y0)
    w = min(region_features.shape[2], features.shape[2] - x0)
    target = features[:, y0:y0 + h, x0:x0 + w]
    target.mul_(1 - alpha).add_(region_features[:, :h, :w], alpha=alpha)
