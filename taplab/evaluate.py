"""Accuracy of a model on a labelled data set: mIoU, per-class IoU, pixel accuracy (``taplab eval``).

:class:`EvalResult` holds fractions in [0, 1] (as :class:`~taplab.metrics.ConfusionMatrix` gives them);
what it shows a person or writes as JSON is in percent (0-100, two decimals in JSON), as
``taplab bench``'s results are, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from taplab.data.datasets import LabelledImages
from taplab.errors import ModelError
from taplab.metrics import ConfusionMatrix, percent
from taplab.nets.loader import Model

#: the unit of :meth:`EvalResult.to_dict`'s accuracies
UNIT = "percent"


@dataclass
class EvalResult:
    """Accuracy over ``images`` labelled images, as fractions in [0, 1]; ``iou`` is NaN for classes absent
    from truth and prediction."""

    miou: float
    iou: np.ndarray
    pixel_accuracy: float
    classes: tuple[str, ...]
    images: int
    seconds: float

    def to_dict(self) -> dict:
        """What ``taplab eval --json`` prints: ``unit`` (``"percent"``), ``miou``, ``pixel_accuracy`` and
        ``iou`` (per class name) in percent with two decimals (None where NaN), and ``images``."""
        return {
            "unit": UNIT, "miou": percent(self.miou), "pixel_accuracy": percent(self.pixel_accuracy),
            "images": self.images, "iou": {name: percent(v) for name, v in zip(self.classes, self.iou)},
        }

    def format(self) -> str:
        """A table of IoU per class and a summary line, in percent with one decimal."""
        lines = [f"{'class':<16} {'IoU %':>6}"]
        lines += [f"{name:<16} {'-' if np.isnan(v) else f'{100 * v:6.1f}':>6}" for name, v in zip(self.classes, self.iou)]
        lines += ["", f"mIoU {100 * self.miou:.1f}%   pixel accuracy {100 * self.pixel_accuracy:.1f}%   "
                      f"({self.images} images, {self.images / max(self.seconds, 1e-9):.1f} images/s)"]
        return "\n".join(lines)


def evaluate(model: Model, data: LabelledImages, limit: int | None = None,
             progress: Callable[[int], None] | None = None) -> EvalResult:
    """Predict every image of ``data`` (at its own size; logits upsampled bilinearly) and compare with its labels.

    ``limit`` evaluates only the first so many images; ``progress`` is called with 1 after each image.
    """
    if model.num_classes != len(data.classes):
        raise ModelError(f"class count does not match: {model.source} outputs {model.num_classes} classes, "
                         f"the data has {len(data.classes)} ({data.description})")
    cm = ConfusionMatrix(model.num_classes)
    n = len(data) if limit is None else min(limit, len(data))
    start = time.perf_counter()
    for i in range(n):
        image, labels = data[i]
        cm.update(model.predict(image), labels)
        if progress is not None:
            progress(1)
    return EvalResult(cm.miou(), cm.iou(), cm.pixel_accuracy(), tuple(data.classes), n, time.perf_counter() - start)
