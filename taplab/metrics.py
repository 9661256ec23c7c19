"""Metrics over label maps: accuracy (mIoU, per-class IoU, pixel accuracy), fidelity, temporal
consistency (TC), label change and the key-frame jump, corrected labels (CL), accuracy by distance from the key
frame, the speed model.

Conventions (Cityscapes' evaluation): pixels whose ground truth is the ignore label (255) do not
count; a class absent from both the ground truth and the prediction over the whole evaluation
has no IoU (NaN) and is excluded from the mean rather than counted as 0 or 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def percent(fraction: float) -> float | None:
    """A fraction in [0, 1] -> percent rounded to two decimals: how taplab reports accuracy to people and in
    JSON (``taplab eval``, ``taplab bench``, ``taplab demo``); NaN (nothing to score) -> None."""
    return None if np.isnan(fraction) else round(100 * float(fraction), 2)


def miou(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """mIoU of one prediction against one ground truth (a convenience over :class:`ConfusionMatrix`)."""
    cm = ConfusionMatrix(num_classes)
    cm.update(predicted, truth)
    return cm.miou()


def fidelity(accelerated: Iterable[np.ndarray], per_frame: Iterable[np.ndarray], num_classes: int) -> float:
    """mIoU of an accelerated run's labels against the per-frame labels of the same model, frame by
    frame, accumulated over the run: how faithfully the shortcut reproduces the CNN (no ground truth
    needed, so it works on any video)."""
    cm = ConfusionMatrix(num_classes)
    for a, p in zip(accelerated, per_frame, strict=True):
        cm.update(a, p)
    return cm.miou()


def temporal_consistency(predictions: Sequence[np.ndarray], flows: Sequence[np.ndarray | None], num_classes: int,
                         held: Sequence[np.ndarray | None] | None = None) -> float:
    """TC (DMNet paper, Eq. 8): the mean over consecutive frames of the mIoU between a prediction and
    the previous prediction carried to it along the motion, ``mean_t mIoU(P_t, W_t(P_{t-1}))``.

    ``flows[t]`` is the backward flow of frame ``t`` (``frame_t[y, x] ~= frame_{t-1}[y + dy, x + dx]``,
    pixels; ``flows[0]`` is not used). Which motion is used matters: warping with the codec's vectors
    would favour the method that warps with them, so use ground-truth flow on synthetic clips and
    an independent optical flow (:class:`taplab.ops.flow.OpticalFlow`) otherwise. Pixels whose
    source lies outside the frame are not counted; with ``held`` (bool masks, ``held[t]`` for frame ``t``),
    only the pixels where it is True are (:func:`motion_holds`: TC where the motion holds).

    A perfect segmentation does not reach 100: where an object uncovers the background or a thin one
    moves, the true label changes along the flow. On the synthetic clips the ground truth's own TC is
    near FFW's (``taplab bench`` reports it; docs/benchmarks.md), so TC where the motion holds, whose
    ceiling is 100, tells flicker from a changing scene."""
    from taplab.ops.flow import warp_labels

    if len(predictions) != len(flows) or (held is not None and len(held) != len(predictions)):
        raise ValueError(f"{len(predictions)} predictions but {len(flows)} flows"
                         + ("" if held is None else f" and {len(held)} masks"))
    scores = []
    for t in range(1, len(predictions)):
        cm = ConfusionMatrix(num_classes)
        carried = warp_labels(predictions[t - 1], flows[t], fill=IGNORE_LABEL)
        if held is not None:
            carried = np.where(held[t], carried, IGNORE_LABEL)
        cm.update(predictions[t], carried)
        scores.append(cm.miou())
    return float(np.nanmean(scores)) if scores and np.isfinite(scores).any() else float("nan")


def motion_holds(labels: Sequence[np.ndarray], flows: Sequence[np.ndarray | None]) -> list[np.ndarray | None]:
    """Where exact ``flows`` hold, frame by frame (``[0]`` None): the pixel's true label is the one the flow brings
    from the frame before, from inside the frame; occluded, uncovered and entering pixels drop out
    (:func:`taplab.data.pairs.label_consistent`, as the temporal losses mask them)."""
    from taplab.data.pairs import label_consistent

    return [None] + [label_consistent(labels[t], labels[t - 1], flows[t]) for t in range(1, len(labels))]


def label_change(previous: np.ndarray, current: np.ndarray) -> float:
    """The share of pixels whose label differs from the previous frame's, in [0, 1]: flicker as a viewer sees it,
    without following the motion (TC does that). Ignore labels count as labels."""
    if previous.shape != current.shape:
        raise ValueError(f"label maps of two sizes: {previous.shape} and {current.shape}")
    return float(np.count_nonzero(previous != current)) / current.size


class KeyFrameJump:
    """The key-frame jump: :func:`label_change` at key frames against warped frames. A mask that jumps when the CNN's
    output arrives changes more at key frames than the motion changes it in between; ``ratio`` is how many times
    more (the temporal-consistency issue asks for at most 2). The first frame of a clip has no previous frame and a
    frame of another size (a stream that changes size) starts anew: neither counts."""

    def __init__(self):
        self.key: list[float] = []
        self.warped: list[float] = []
        self._previous: np.ndarray | None = None

    def start(self) -> None:
        """A new clip: its first frame has nothing to change from."""
        self._previous = None

    def update(self, labels: np.ndarray, is_key: bool) -> None:
        if self._previous is not None and self._previous.shape == labels.shape:
            (self.key if is_key else self.warped).append(label_change(self._previous, labels))
        self._previous = labels

    @property
    def key_change(self) -> float | None:
        return float(np.mean(self.key)) if self.key else None

    @property
    def warped_change(self) -> float | None:
        return float(np.mean(self.warped)) if self.warped else None

    @property
    def ratio(self) -> float | None:
        """Change at key frames over change at warped frames (None without both, or with no change between keys)."""
        if self.key_change is None or not self.warped_change:
            return None
        return self.key_change / self.warped_change


def corrected_labels(final: np.ndarray, warped: np.ndarray) -> float:
    """CL (DMNet paper, Eq. 9): the share of pixels whose final label differs from the label the warp
    alone gave (``FrameResult.warped`` turned into labels): how much the corrections changed."""
    final, warped = np.asarray(final), np.asarray(warped)
    if final.shape != warped.shape:
        raise ValueError(f"label maps differ in size: {final.shape} vs {warped.shape}")
    return float((final != warped).mean())


class AccuracyByDistance:
    """mIoU per distance from the last key frame (the error-accumulation curve of the TWNet and DMNet
    papers): ``update(distance, predicted, truth)``, then ``miou()`` -> ``{distance: mIoU}``."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.matrices: dict[int, ConfusionMatrix] = {}

    def update(self, distance: int, predicted: np.ndarray, truth: np.ndarray) -> None:
        self.matrices.setdefault(int(distance), ConfusionMatrix(self.num_classes)).update(predicted, truth)

    def miou(self) -> dict[int, float]:
        return {d: self.matrices[d].miou() for d in sorted(self.matrices)}


def speed_model(t_key: float, t_warp: float, gop: float) -> float:
    """The TapLab paper's speed model: frames/s ``1 / (T_I / g + (1 - 1/g) T_P)`` for key frames of
    ``t_key`` seconds, warped frames of ``t_warp`` seconds and one key frame in every ``gop`` frames."""
    if gop < 1 or t_key <= 0 or t_warp < 0:
        raise ValueError("speed_model needs gop >= 1, t_key > 0 and t_warp >= 0")
    return 1.0 / (t_key / gop + (1 - 1 / gop) * t_warp)
