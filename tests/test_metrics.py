"""Metrics on hand-checked label maps: confusion matrix, fidelity, TC, CL, accuracy by distance, speed model."""

import numpy as np
import pytest

from taplab.metrics import (
    AccuracyByDistance,
    ConfusionMatrix,
    corrected_labels,
    fidelity,
    miou,
    motion_holds,
    speed_model,
    temporal_consistency,
)
from taplab.ops.flow import OpticalFlow, warp_labels
from tests.conftest import DX, DY


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


def test_fidelity_accumulates_over_frames():
    per_frame = [np.array([[0, 0], [1, 1]]), np.array([[1, 1], [1, 1]])]
    fast = [np.array([[0, 1], [1, 1]]), np.array([[1, 1], [1, 1]])]
    # class 0: tp 1, fn 1 -> 1/2; class 1: tp 6, fp 1 -> 6/7
    assert fidelity(fast, per_frame, 2) == pytest.approx((1 / 2 + 6 / 7) / 2)
    assert fidelity(per_frame, per_frame, 2) == 1.0
    with pytest.raises(ValueError):
        fidelity(fast, per_frame[:1], 2)


def test_warp_labels_follows_a_backward_flow_and_marks_sources_outside():
    previous = np.array([[0, 1, 2, 3]], np.uint8)
    flow = np.zeros((1, 4, 2), np.float32)
    flow[..., 0] = -1  # current[x] = previous[x - 1]: the content moved right
    assert warp_labels(previous, flow).tolist() == [[255, 0, 1, 2]]
    flow[..., 0] = 0.6  # rounds to +1
    assert warp_labels(previous, flow).tolist() == [[1, 2, 3, 255]]


def test_temporal_consistency_by_hand():
    # an object (class 1) moving one pixel right per frame, predicted perfectly, then once wrongly
    frames = [np.array([[1, 0, 0, 0]]), np.array([[0, 1, 0, 0]]), np.array([[0, 0, 0, 0]])]
    flow = np.zeros((1, 4, 2), np.float32)
    flow[..., 0] = -1
    flows = [None, flow, flow]
    # pair 1: warped previous [255, 1, 0, 0] vs [0, 1, 0, 0]: both classes perfect -> 1
    # pair 2: warped previous [255, 0, 1, 0] vs [0, 0, 0, 0]: class 0 2/3, class 1 0 -> 1/3
    assert temporal_consistency(frames, flows, 2) == pytest.approx((1 + 1 / 3) / 2)
    still = [np.array([[1, 0, 0, 0]])] * 3
    assert temporal_consistency(still, [None] + [np.zeros((1, 4, 2), np.float32)] * 2, 2) == 1.0


def test_tc_where_the_motion_holds_leaves_out_what_the_scene_changes():
    # the truth: an object (1) moving right over the background (0) uncovers a pixel each frame, where the flow
    # (the documented best available: the background's, zero) brings the object's label: the truth's own TC is
    # not 100, and TC where the motion holds is
    truth = [np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]), np.array([[0, 0, 1, 1]])]
    flow = np.zeros((1, 4, 2), np.float32)
    flow[0, 1:, 0] = -1  # the object's pixels come from one to the left; pixel 0 (uncovered) stays
    flow[0, 0, 0] = 0
    flows = [None, flow, flow]
    held = motion_holds(truth, flows)
    assert held[0] is None and held[1].tolist() == [[False, True, True, True]]
    assert temporal_consistency(truth, flows, 2) < 1
    assert temporal_consistency(truth, flows, 2, held) == 1.0
    flicker = [truth[0], np.array([[0, 1, 0, 0]]), truth[2]]  # the object's front lost on the middle frame
    assert temporal_consistency(flicker, flows, 2, held) < 1
    with pytest.raises(ValueError, match="2 masks"):
        temporal_consistency(truth, flows, 2, held[:2])


def test_corrected_labels_and_accuracy_by_distance():
    assert corrected_labels(np.array([[1, 2], [3, 4]]), np.array([[1, 0], [3, 0]])) == 0.5
    by = AccuracyByDistance(2)
    by.update(0, np.array([1, 0]), np.array([1, 0]))
    by.update(3, np.array([1, 1]), np.array([1, 0]))
    by.update(3, np.array([0, 0]), np.array([0, 0]))
    # distance 3: class 0 tp 2, fn 1 -> 2/3; class 1 tp 1, fp 1 -> 1/2
    assert by.miou() == {0: 1.0, 3: pytest.approx((2 / 3 + 1 / 2) / 2)}


def test_speed_model():
    assert speed_model(0.25, 0.01, 12) == pytest.approx(1 / (0.25 / 12 + 11 / 12 * 0.01))
    assert speed_model(0.25, 0.01, 1) == pytest.approx(4.0)  # every frame a key frame
    with pytest.raises(ValueError):
        speed_model(0.25, 0.01, 0)


@pytest.mark.parametrize("method", ["dis-ultrafast", "dis-medium", "farneback"])
def test_optical_flow_recovers_a_known_translation(method, translation_clip):
    """The real encoded clip of tests/conftest.py: a texture translating by a known step per frame."""
    from taplab.codec import open_video

    with open_video(translation_clip) as video:
        frames = [f.image for _, f in zip(range(3), video)]
    flow = OpticalFlow(method)(frames[2], frames[1])
    h, w = flow.shape[:2]
    inner = flow[h // 4:3 * h // 4, w // 4:3 * w // 4].reshape(-1, 2)
    dx, dy = np.median(inner, axis=0)
    # the clip is built as frame[t][y, x] = frame[t-1][y + DY, x + DX]: the backward flow is (DX, DY)
    assert dx == pytest.approx(DX, abs=0.3) and dy == pytest.approx(DY, abs=0.3)


def test_label_change_counts_the_pixels_whose_label_differs():
    from taplab.metrics import label_change

    a = np.zeros((4, 5), np.uint8)
    b = a.copy()
    b[0, :3] = 7
    assert label_change(a, b) == 3 / 20 and label_change(a, a) == 0.0
    with pytest.raises(ValueError, match="two sizes"):
        label_change(a, np.zeros((5, 4), np.uint8))


def test_the_key_frame_jump_is_the_change_at_key_frames_over_the_change_at_warped_ones():
    from taplab.metrics import KeyFrameJump

    base = np.zeros((10, 10), np.uint8)
    moved, jumped = base.copy(), base.copy()
    moved[0, :5] = 1  # 5% of the pixels
    jumped[:2, :] = 2  # then 20% differ from `moved`
    jump = KeyFrameJump()
    jump.start()
    for labels, is_key in ((base, True), (moved, False), (jumped, True), (np.zeros((4, 4), np.uint8), False)):
        jump.update(labels, is_key)  # the first frame and the frame of another size do not count
    assert jump.warped == [0.05] and jump.key == [0.2] and jump.ratio == 0.2 / 0.05
    jump.start()
    jump.update(base, True)  # a new clip's first frame: nothing to change from
    assert jump.key == [0.2]
    assert KeyFrameJump().ratio is None
