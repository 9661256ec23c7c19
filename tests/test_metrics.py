"""Confusion-matrix metrics on hand-checked label maps."""

import numpy as np
import pytest

from taplab.metrics import ConfusionMatrix, miou


def test_iou_per_class_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 2]])
    cm = ConfusionMatrix(4)
    cm.update(pred, truth)
    # class 0: tp 1, fp 1 (truth 2 predicted 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 1/2
    iou = cm.iou()
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 3, 1 / 2])
    assert np.isnan(iou[3])  # absent from truth and prediction: excluded from the mean
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)  # ignored pixels do not count
    assert miou(pred, truth, 4) == pytest.approx(cm.miou())


def test_accumulates_over_images_and_checks_ids():
    cm = ConfusionMatrix(3)
    cm.update(np.zeros((2, 2)), np.zeros((2, 2)))
    cm.update(np.ones((2, 2)), np.ones((2, 2)))
    assert cm.counts.sum() == 8 and cm.miou() == 1.0
    # a class predicted but never true has IoU 0 and counts in the mean
    cm.update(np.full((1, 1), 2), np.zeros((1, 1)))
    assert cm.iou()[2] == 0.0
    with pytest.raises(ValueError, match="ground truth holds class ids"):
        cm.update(np.zeros(2), np.array([0, 7]))
    with pytest.raises(ValueError, match="prediction holds class ids"):
        cm.update(np.array([0, 3]), np.zeros(2))
    with pytest.raises(ValueError, match="differ in size"):
        cm.update(np.zeros(3), np.zeros(2))


def test_empty_matrix_is_nan():
    cm = ConfusionMatrix(2)
    assert np.isnan(cm.miou()) and np.isnan(cm.pixel_accuracy())
