"""Frame pairs for temporal training: each sample's previous frame, its flow and where the flow holds; their augmentation;
unlabelled video joined to labelled data."""

import shutil

import cv2
import numpy as np
import pytest

from taplab.codec import open_video
from taplab.data import layout
from taplab.data.datasets import PairedFiles, open_dataset
from taplab.data.labels import IGNORE_LABEL
from taplab.data.pairs import Previous, forward_backward, frame_pairs, inside, label_consistent
from taplab.data.synth import SynthConfig, write_clip
from taplab.data.transforms import Augmentation
from taplab.data.videos import Joined, UnlabelledFrames, parse_video_spec
from taplab.errors import ConfigError


def carried(previous: Previous) -> np.ndarray:
    """The previous image carried along the flow to the current frame (bilinear)."""
    h, w = previous.flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(previous.image, xs + previous.flow[..., 0], ys + previous.flow[..., 1], cv2.INTER_LINEAR)


def error(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(-1)[where].mean())


def test_synthetic_pairs_follow_the_scene():
    data = open_dataset("synth:clips=2,frames=3,size=128x256,seed=4", "train")
    pairs = frame_pairs(data)
    assert len(pairs) == 6 and pairs[0] is None and pairs[3] is None  # each clip's frame 0 has no frame before
    for i in (1, 2, 4, 5):
        previous, (image, _) = pairs[i], data[i]
        assert previous.image.shape == image.shape and previous.flow.dtype == np.float32
        assert 0.7 < previous.valid.mean() < 1  # occlusions and the border drop out, most of the frame stays
        # the flow explains the frame: where the scene moves, the frame before carried along the flow matches it
        # far better than in place (not exactly: sensor noise, lighting and resampling)
        moving = previous.valid & (np.linalg.norm(previous.flow, axis=-1) > 2)
        assert moving.mean() > 0.1
        assert error(carried(previous), image, moving) < 0.4 * error(previous.image, image, moving)
    np.testing.assert_array_equal(pairs[1].flow, pairs[1].flow)  # kept (in float16), not drawn anew


def test_decoded_frames_of_a_folder_that_keeps_its_flow_pair_with_the_exact_flow(tmp_path):
    """A taplab synth folder: the decoded frames (the codec's noise, which differs from an I-frame to the P-frame
    before it) with the renderer's flow, masked by the labels as the synthetic clips are."""
    config = SynthConfig(height=128, width=256, frames=5, seed=11, ego_speed_mps=8)
    video = write_clip(tmp_path, config, gop=2, name="a")
    data = open_dataset(str(tmp_path), "all")
    pairs = frame_pairs(data)
    truth = np.load(layout.clip_flow_path(tmp_path, "a"))["flow"].astype(np.float32)
    decoded = data._video_frames(video)
    assert pairs[0] is None
    for t in range(1, 5):
        previous = pairs[t]
        np.testing.assert_array_equal(previous.flow, truth[t])
        np.testing.assert_array_equal(previous.image, decoded[t - 1])
        np.testing.assert_array_equal(previous.valid, label_consistent(data[t][1], data[t - 1][1], truth[t]))
        assert 0.5 < previous.valid.mean() < 1


def test_video_pairs_use_optical_flow_with_the_forward_backward_check(tmp_path):
    config = SynthConfig(height=128, width=256, frames=4, seed=11, ego_speed_mps=8)
    write_clip(tmp_path, config, gop=4, name="a")
    truth = np.load(layout.clip_flow_path(tmp_path, "a"))["flow"].astype(np.float32)
    shutil.rmtree(tmp_path / "flow")  # a labelled video without its flow: estimated
    data = open_dataset(str(tmp_path), "all")
    pairs = frame_pairs(data)
    assert pairs[0] is None
    for t in (1, 2, 3):
        previous = pairs[t]
        assert 0.5 < previous.valid.mean() < 1
        endpoint = np.linalg.norm(previous.flow - truth[t], axis=-1)
        # where the check trusts the estimate, it is close to the truth; it trusts the worst pixels less
        assert np.median(endpoint[previous.valid]) < 1.0
        assert endpoint[previous.valid].mean() < endpoint[~previous.valid].mean()


def test_forward_backward_check():
    h, w = 20, 30
    backward = np.zeros((h, w, 2), np.float32)
    backward[..., 0] = 3  # the current frame is the previous one moved 3 pixels left
    forward = -backward
    valid = forward_backward(backward, forward)
    assert valid[:, :w - 3].all() and not valid[:, w - 3:].any()  # sources beyond the right edge are outside
    forward[5:10] = 0  # a band where the forward flow disagrees
    valid = forward_backward(backward, forward)
    assert not valid[5:10].any() and valid[10:, :w - 3].all()


def test_data_without_frames_in_time_is_refused(tmp_path):
    images = PairedFiles([(tmp_path / "a.png", tmp_path / "a_labels.png")], lambda p: None, ("road",), ((0, 0, 0),),
                         "a folder of photos")
    with pytest.raises(ConfigError, match="are not frames of a video"):
        frame_pairs(images)
    with pytest.raises(ConfigError, match="need video data"):
        frame_pairs([])


def test_pair_augmentation_moves_flow_with_the_frames():
    # a textured frame and the frame before it, the scene moved 4 pixels right and 2 down in between
    rng = np.random.default_rng(0)
    before = cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), np.uint8), (0, 0), 2)
    image = np.zeros_like(before)
    image[2:, 4:] = before[:-2, :-4]
    flow = np.broadcast_to(np.float32([-4, -2]), (120, 160, 2)).copy()
    valid = np.zeros((120, 160), bool)
    valid[2:, 4:] = True
    labels = np.zeros((120, 160), np.uint8)
    aug = Augmentation(scale=(0.5, 2.0), crop=(64, 64), jpeg=None)
    flips = 0
    for seed in range(12):
        im, lb, previous = aug.transform(image, labels, np.random.default_rng(seed), Previous(before, flow, valid))
        plain_im, plain_lb = aug(image, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(im, plain_im)  # the same draws with or without the frame before
        np.testing.assert_array_equal(lb, plain_lb)
        inner = previous.valid & inside(previous.flow)  # sources beyond the crop are not in the crop's frame before
        inner[:2], inner[-2:], inner[:, :2], inner[:, -2:] = False, False, False, False
        assert inner.mean() > 0.3
        assert error(carried(previous), im, inner) < 12  # blurred texture, resampled twice: small, not zero
        assert error(previous.image, im, inner) > 2 * error(carried(previous), im, inner)
        flips += int(previous.flow[..., 0].mean() > 0)  # mirrored: the motion points the other way
    assert 0 < flips < 12


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A small encoded synthetic clip: a real video file to use as unlabelled footage."""
    root = tmp_path_factory.mktemp("clip")
    write_clip(root, SynthConfig(height=128, width=256, frames=6, seed=12, ego_speed_mps=8), gop=6, name="a")
    return layout.clip_video_path(root, "a")


def test_unlabelled_frames_and_joined_sets(clip):
    labelled = open_dataset("synth:clips=1,frames=2,size=128x256,seed=4", "train")
    video = UnlabelledFrames(f"{clip}@2:5", labelled.classes, labelled.colors)
    assert len(video) == 3 and "frames 2-4" in video.description
    image, labels = video[0]
    assert image.shape == (128, 256, 3) and (labels == IGNORE_LABEL).all()  # nothing for the cross-entropy
    with open_video(clip) as v:
        np.testing.assert_array_equal(image, [f.image for f in v][2])
    joined = Joined([labelled, video])
    assert len(joined) == 5 and joined.locate(1) == (0, 1) and joined.locate(2) == (1, 0) and joined.locate(4) == (1, 2)
    np.testing.assert_array_equal(joined[3][0], video[1][0])
    pairs = frame_pairs(joined)
    assert pairs[0] is None and pairs[2] is None  # each part's first frame has none before it
    assert pairs[1].valid.mean() > 0.7 and pairs[3].valid.mean() > 0.5  # the renderer's flow; optical flow
    np.testing.assert_array_equal(pairs[3].image, video[0][0])
    assert len(UnlabelledFrames(str(clip), labelled.classes, labelled.colors)) == 6


@pytest.mark.parametrize("suffix, message", [
    ("@5:3", "0 <= START < END"),
    ("@x:3", "frame numbers"),
    ("@3", "PATH@START:END"),
    ("@5:", "fewer than two frames"),
])
def test_bad_video_specs(clip, suffix, message):
    with pytest.raises(ConfigError, match=message):
        UnlabelledFrames(f"{clip}{suffix}", ("road",), ((0, 0, 0),))
    with pytest.raises(ConfigError, match="no video"):
        parse_video_spec("/no/such.mp4@1:2")
