"""evaluate(): the prediction and the confusion matrix wired together.

The model here is a real torch module with hand-set weights (a 1x1 convolution that reads the class
from the red channel): it isolates the evaluation unit from any training, and says so.
"""

import numpy as np
import pytest
import torch

from taplab.data.datasets import LabelledImages
from taplab.errors import ModelError
from taplab.evaluate import evaluate
from taplab.nets.loader import load_model


class RedToClass(torch.nn.Module):
    """Logit of class k = -(red - k/4)^2 written as a 1x1 conv on (red, red^2): arg-max is round(4 * red)."""

    def forward(self, x):
        red = x[:, :1]
        k = torch.arange(4, dtype=x.dtype).view(1, 4, 1, 1) / 4
        return -((red - k) ** 2)


class Images(LabelledImages):
    def __init__(self, labels, truth, classes=4):
        self.labels, self.truth = labels, truth
        self.classes = tuple(f"c{k}" for k in range(classes))
        self.colors = ((0, 0, 0),) * classes

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        image = np.zeros((*self.labels[i].shape, 3), np.uint8)
        image[..., 0] = np.round(self.labels[i].astype(float) * 255 / 4).astype(np.uint8)
        return image, self.truth[i]


def test_perfect_and_imperfect_predictions():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, (20, 30)).astype(np.uint8) for _ in range(3)]
    model = load_model(RedToClass())
    assert evaluate(model, Images(labels, labels)).miou == 1.0
    truth = [lb.copy() for lb in labels]
    truth[0][:10] = 255  # ignored pixels change nothing
    assert evaluate(model, Images(labels, truth)).miou == 1.0
    wrong = [np.where(lb == 3, 2, lb).astype(np.uint8) for lb in labels]  # class 3 predicted where truth says 2
    result = evaluate(model, Images(labels, wrong))
    n2, n3 = sum((lb == 2).sum() for lb in labels), sum((lb == 3).sum() for lb in labels)
    assert result.iou[2] == pytest.approx(n2 / (n2 + n3))
    assert result.iou[3] == 0.0  # predicted, never true: counts as 0, not NaN
    assert result.pixel_accuracy == pytest.approx(1 - n3 / sum(lb.size for lb in labels))
    assert "mIoU" in result.format() and result.to_dict()["images"] == 3


def test_limit_and_class_mismatch():
    labels = [np.zeros((8, 8), np.uint8)] * 5
    assert evaluate(load_model(RedToClass()), Images(labels, labels), limit=2).images == 2
    with pytest.raises(ModelError, match="class count does not match"):
        evaluate(load_model(RedToClass()), Images(labels, labels, classes=19))


def test_json_and_text_are_in_percent_and_say_so():
    labels = [np.array([[0, 1], [2, 3]], np.uint8).repeat(4, 0).repeat(4, 1)]
    wrong = [np.where(labels[0] == 3, 2, labels[0]).astype(np.uint8)]  # class 3 predicted where truth says 2
    result = evaluate(load_model(RedToClass()), Images(labels, wrong))
    d = result.to_dict()
    assert d["unit"] == "percent"
    assert d["miou"] == pytest.approx(100 * result.miou, abs=0.005) and d["miou"] == 62.5  # (1 + 1 + 1/2 + 0) / 4
    assert d["pixel_accuracy"] == 75.0 and d["iou"] == {"c0": 100.0, "c1": 100.0, "c2": 50.0, "c3": 0.0}
    assert "mIoU 62.5%" in result.format() and "pixel accuracy 75.0%" in result.format()
    absent = evaluate(load_model(RedToClass()), Images([np.zeros((4, 4), np.uint8)], [np.zeros((4, 4), np.uint8)]))
    assert absent.to_dict()["iou"]["c1"] is None  # NaN: a class neither true nor predicted
