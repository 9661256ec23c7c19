"""The Cityscapes file layout: names, patterns, the synth folder's paths, reading labels."""

import cv2
import numpy as np
import pytest

from taplab.data import layout
from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ConfigError


def test_names_and_their_parsing():
    stem = layout.frame_stem("aachen_000012", 19)
    assert stem == "aachen_000012_000019"
    assert layout.label_name(stem) == "aachen_000012_000019_gtFine_labelTrainIds.png"
    assert layout.image_name(stem) == "aachen_000012_000019_leftImg8bit.png"
    assert layout.image_name(stem, "jpg") == "aachen_000012_000019_leftImg8bit.jpg"
    assert layout.label_stem(layout.label_name(stem)) == stem and layout.label_stem("x.png") is None
    assert layout.parse_label_name(layout.label_name(stem)) == ("aachen_000012", 19)
    assert layout.parse_image_name(layout.image_name(stem, "jpg")) == ("aachen_000012", 19, "jpg")
    for other in ("aachen_000012_19_leftImg8bit.png", "aachen_000012_000019_leftImg8bit.bmp", "notes.txt"):
        assert layout.parse_image_name(other) is None
    assert layout.parse_label_name("aachen_000012_000019_gtFine_labelIds.png") is None


def test_the_synth_folder_is_where_the_layout_says(tmp_path):
    video = write_clip(tmp_path, SynthConfig(height=64, width=128, frames=2, seed=1), gop=2, name="a", images=True)
    assert video == layout.clip_video_path(tmp_path, "a") and layout.clip_videos(tmp_path) == [video]
    assert layout.clip_flow_path(tmp_path, "a").exists()
    for t in range(2):
        assert layout.clip_image_path(tmp_path, "a", t).exists()
        expected = cv2.imread(str(layout.clip_label_path(tmp_path, "a", t)), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(layout.read_clip_labels(layout.clip_labels_dir(tmp_path, "a"))[t], expected)
    assert sorted(p.name for p in layout.clip_images_dir(tmp_path, "a").iterdir()) == \
        [layout.image_name(layout.frame_stem("a", t)) for t in range(2)]


def test_label_reading_errors(tmp_path):
    with pytest.raises(ConfigError, match="no labels \\(\\*_gtFine_labelTrainIds.png\\) in"):
        layout.read_clip_labels(tmp_path)
    colour = tmp_path / layout.label_name("c_000000_000000")
    assert cv2.imwrite(str(colour), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ConfigError, match="must be single-channel"):
        layout.read_labels(colour)
    with pytest.raises(ConfigError, match="cannot read image"):
        layout.read_labels(tmp_path / "missing.png")
