"""Labelled data sets (synthetic, Cityscapes-, synth- and CamVid-format folders) and augmentation."""

import cv2
import numpy as np
import pytest

from taplab.data.datasets import CAMVID_CLASSES, open_dataset, parse_synth_spec
from taplab.data.labels import IGNORE_LABEL
from taplab.data.synth import SynthConfig, write_clip
from taplab.data.transforms import Augmentation, to_tensor
from taplab.errors import ConfigError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def test_synth_on_the_fly_splits_do_not_share_scenes():
    train = open_dataset("synth:clips=20,frames=2,size=64x128,seed=3", "train")
    val = open_dataset("synth:clips=20,frames=2,size=64x128,seed=3", "val")
    assert len(train) == 40 and len(val) == 2 * 2  # a tenth of the clips
    assert not set(train.seeds) & set(val.seeds)
    image, labels = train[3]
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8
    assert labels.shape == (64, 128) and set(np.unique(labels)) <= set(range(19))
    again = open_dataset("synth:clips=20,frames=2,size=64x128,seed=3", "train")[3]
    np.testing.assert_array_equal(again[0], image)  # deterministic in the seed
    assert len(set(np.unique(labels))) >= 4  # a street scene, not a blank frame


@pytest.mark.parametrize("spec, message", [
    ("synth:clips=0", "clips must be >= 1"),
    ("synth:colour=3", "bad synthetic data spec"),
    ("synth:clips=x", "bad value for clips"),
    ("synth:size=63x128", "even and >= 64"),
])
def test_bad_synth_specs(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_synth_spec(spec)


def test_cityscapes_folder_with_splits(tmp_path):
    rng = np.random.default_rng(0)
    for split, city, n in (("train", "aachen", 3), ("val", "lindau", 2)):
        for k in range(n):
            stem = f"{city}_000000_{k:06d}"
            _write(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", rng.integers(0, 256, (32, 48, 3), np.uint8))
            _write(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", np.full((32, 48), k, np.uint8))
    train, val = open_dataset(str(tmp_path), "train"), open_dataset(str(tmp_path), "val")
    assert (len(train), len(val), len(open_dataset(str(tmp_path), "all"))) == (3, 2, 5)
    image, labels = train[2]
    assert image.shape == (32, 48, 3) and (labels == 2).all()
    with pytest.raises(ConfigError, match="no 'test' split"):
        open_dataset(str(tmp_path), "test")
    (tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000001_leftImg8bit.png").unlink()
    with pytest.raises(ConfigError, match="no image for .*lindau_000000_000001_gtFine_labelTrainIds.png"):
        open_dataset(str(tmp_path), "val")


def test_synth_folder_reads_frames_from_the_video(tmp_path):
    config = SynthConfig(height=64, width=128, frames=3, seed=1)
    write_clip(tmp_path, config, gop=3, name="a")
    write_clip(tmp_path, SynthConfig(height=64, width=128, frames=2, seed=2), gop=3, name="b")
    everything = open_dataset(str(tmp_path), "all")
    assert len(everything) == 5
    image, labels = everything[1]
    expected = cv2.imread(str(tmp_path / "gtFine" / "a" / "a_000001_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, expected)
    assert image.shape == (64, 128, 3)
    # the decoded frame is close to the rendered one (MPEG-4 at quantiser 4), not some other frame
    from taplab.data.synth import generate

    rendered = [f.image for f in generate(config)]
    errors = [np.abs(image.astype(int) - r.astype(int)).mean() for r in rendered]
    assert int(np.argmin(errors)) == 1 and errors[1] < errors[0] / 2
    # without split folders every tenth clip (the first) is validation
    assert len(open_dataset(str(tmp_path), "val")) == 3 and len(open_dataset(str(tmp_path), "train")) == 2


def test_synth_clips_render_the_training_sets_scenes_encoded(tmp_path, capsys):
    """taplab synth --clips N: the scenes of synth:clips=N (their seeds and varied parameters), each encoded with its
    labels and flow, so an encoded training set is one command (its frames consecutive, not step apart)."""
    from taplab.cli import main
    from taplab.data.datasets import SynthImages, SynthSet

    main(["synth", str(tmp_path / "set"), "--clips", "3", "--frames", "4", "--size", "64x128", "--gop", "2",
          "--seed", "5", "--name", "c"])
    assert "wrote 3 clips" in capsys.readouterr().out
    data = open_dataset(str(tmp_path / "set"), "all")
    assert len(data) == 12 and sorted(p.name for p in (tmp_path / "set" / "flow").iterdir()) == [
        "c000.npz", "c001.npz", "c002.npz"]
    rendered = SynthImages(SynthSet(clips=3, frames=4, step=1, seed=5, size=(64, 128)), "train")
    for k in range(3):  # the labels are the on-the-fly set's, clip by clip and frame by frame
        for t in range(4):
            np.testing.assert_array_equal(data[4 * k + t][1], rendered[4 * k + t][1])
    assert not np.array_equal(data[0][1], data[4][1])  # and the clips differ


def test_label_ids_outside_the_classes_are_an_error(tmp_path):
    _write(tmp_path / "leftImg8bit" / "c" / "c_000000_000000_leftImg8bit.png", np.zeros((8, 8, 3), np.uint8))
    _write(tmp_path / "gtFine" / "c" / "c_000000_000000_gtFine_labelTrainIds.png", np.full((8, 8), 26, np.uint8))
    with pytest.raises(ConfigError, match="holds class id 26, but the data has 19 classes.*labelIds instead"):
        open_dataset(str(tmp_path), "all")[0]


def test_camvid_folder_maps_void_to_ignore(tmp_path):
    for split in ("train", "val"):
        _write(tmp_path / split / "0001TP_006690.png", np.zeros((24, 32, 3), np.uint8))
        _write(tmp_path / f"{split}annot" / "0001TP_006690.png", np.array([[3, 11]] * 24, np.uint8).repeat(16, 1))
    data = open_dataset(str(tmp_path), "train")
    assert data.classes == CAMVID_CLASSES and len(data.classes) == 11
    _, labels = data[0]
    assert set(np.unique(labels)) == {3, IGNORE_LABEL}
    with pytest.raises(ConfigError, match="no CamVid 'test' split"):
        open_dataset(str(tmp_path), "test")


def test_wrong_data_folders(tmp_path):
    with pytest.raises(ConfigError, match="is not a labelled folder"):
        open_dataset(str(tmp_path))
    with pytest.raises(ConfigError, match="neither 'synth"):
        open_dataset(str(tmp_path / "missing"))
    (tmp_path / "gtFine").mkdir()
    with pytest.raises(ConfigError, match="holds no \\*_gtFine_labelTrainIds.png"):
        open_dataset(str(tmp_path), "all")
    with pytest.raises(ConfigError, match="split must be one of"):
        open_dataset("synth", "dev")


def test_augmentation_keeps_image_and_labels_aligned():
    # the image encodes its own labels (red = 40 * class), so any misalignment would show
    labels = np.repeat(np.arange(6, dtype=np.uint8), 20)[None].repeat(50, 0)
    image = np.zeros((50, 120, 3), np.uint8)
    image[..., 0] = labels * 40
    aug = Augmentation(scale=(0.5, 2.0), crop=(64, 64), jpeg=None)
    rng = np.random.default_rng(0)
    flipped = padded = 0
    for _ in range(30):
        im, lb = aug(image, labels, rng)
        assert im.shape == (64, 64, 3) and lb.shape == (64, 64)
        valid = lb != IGNORE_LABEL
        padded += int((~valid).any())
        assert (im[..., 0][~valid] == 0).all()
        # away from class borders (where bilinear blends two classes) the colour says the label
        inner = valid & (np.abs(im[..., 0].astype(int) - lb.astype(int) * 40) > 20)
        assert inner.mean() < 0.1
        cols = lb[0][valid[0]]
        flipped += int(cols.size > 1 and cols[0] > cols[-1])
    assert padded > 0 and flipped > 0  # both the padding and the flip happened


def test_jpeg_augmentation_changes_pixels_not_labels():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (64, 64, 3), np.uint8)
    labels = rng.integers(0, 19, (64, 64)).astype(np.uint8)
    aug = Augmentation(scale=(1, 1), crop=(64, 64), flip=False, jpeg=(20, 20), jpeg_probability=1.0)
    im, lb = aug(image, labels, rng)
    np.testing.assert_array_equal(lb, labels)
    assert 5 < np.abs(im.astype(int) - image.astype(int)).mean() < 80
    with pytest.raises(ConfigError, match="jpeg quality"):
        Augmentation(jpeg=(0, 50))


def test_to_tensor_layout():
    image = np.zeros((4, 5, 3), np.uint8)
    image[1, 2] = (255, 0, 51)
    x = to_tensor(image)
    assert x.shape == (1, 3, 4, 5)
    assert x[0, :, 1, 2].tolist() == pytest.approx([1.0, 0.0, 0.2])
