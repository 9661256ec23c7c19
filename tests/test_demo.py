"""taplab demo: a clip made, segmented and scored; the same seed gives the same figures."""

import pytest

from taplab.demo import run_demo
from taplab.errors import ConfigError


def test_the_demo_is_deterministic_and_scores_against_the_clips_labels(tmp_path):
    first = run_demo(tmp_path / "a", frames=8, size=(128, 256))
    second = run_demo(tmp_path / "b", frames=8, size=(128, 256))
    assert (first.miou, first.per_frame_miou, first.fidelity) == (second.miou, second.per_frame_miou, second.fidelity)
    assert 0 < first.miou <= 100 and 0 < first.per_frame_miou <= 100 and 0 < first.fidelity <= 100
    assert first.summary.frames == 8 and first.summary.kinds["key-I"] == 1
    other = run_demo(tmp_path / "c", frames=8, size=(128, 256), seed=3)
    assert other.miou != first.miou  # another scene
    text = first.format()
    assert "mIoU" in text and "speed-up" in text and str(first.video) in text


def test_the_demo_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not empty"):
        run_demo(tmp_path, frames=4, size=(128, 256))
    assert (tmp_path / "mine.txt").read_text() == "keep"
