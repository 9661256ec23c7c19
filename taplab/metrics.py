"""Accuracy metrics over label maps: the confusion matrix, mIoU, per-class IoU, pixel accuracy.

Conventions (Cityscapes' evaluation): pixels whose ground truth is the ignore label (255) do not
count; a class absent from both the ground truth and the prediction over the whole evaluation
has no IoU (NaN) and is excluded from the mean rather than counted as 0 or 1.
"""

from __future__ import annotations

import numpy as np

from taplab.data.labels import IGNORE_LABEL


class ConfusionMatrix:
    """Accumulates ``counts[true, predicted]`` over any number of label maps of ``num_classes`` classes."""

    def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.counts = np.zeros((num_classes, num_classes), np.int64)

    def update(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        """Add one or more label maps (same shape; integer class ids). Ids >= num_classes in the
        ground truth other than the ignore label raise ``ValueError``; predicted ids must be < num_classes."""
        predicted = np.asarray(predicted).ravel().astype(np.int64)
        truth = np.asarray(truth).ravel().astype(np.int64)
        if predicted.shape != truth.shape:
            raise ValueError(f"prediction and ground truth differ in size: {predicted.size} vs {truth.size}")
        keep = truth != self.ignore_label
        predicted, truth = predicted[keep], truth[keep]
        n = self.num_classes
        if truth.size and (truth.max() >= n or truth.min() < 0):
            raise ValueError(f"ground truth holds class ids outside 0..{n - 1} (and not {self.ignore_label})")
        if predicted.size and (predicted.max() >= n or predicted.min() < 0):
            raise ValueError(f"prediction holds class ids outside 0..{n - 1}")
        self.counts += np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-class IoU, float64 ``(num_classes,)``; NaN for classes absent from both truth and prediction."""
        tp = np.diag(self.counts).astype(np.float64)
        union = self.counts.sum(0) + self.counts.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(np.trace(self.counts) / total) if total else float("nan")


def miou(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """mIoU of one prediction against one ground truth (a convenience over :class:`ConfusionMatrix`)."""
    cm = ConfusionMatrix(num_classes)
    cm.update(predicted, truth)
    return cm.miou()
