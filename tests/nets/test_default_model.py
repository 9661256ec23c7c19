"""The shipped default model: found from anywhere, and it really segments unseen synthetic street scenes."""

import subprocess
import sys

from taplab.data.labels import CLASS_NAMES
from taplab.data.synth import SynthConfig, generate
from taplab.metrics import ConfusionMatrix
from taplab.nets.loader import load_model
from taplab.nets.zoo import DEFAULT_MODEL, find_shipped


def test_default_model_is_shipped_with_its_card():
    shipped = find_shipped("default")
    assert shipped is not None and shipped.name == DEFAULT_MODEL
    assert shipped.card is not None and "mIoU" in shipped.card.read_text()
    assert shipped.path.stat().st_size < 8e6


def test_default_model_segments_an_unseen_scene():
    model = load_model("default")
    assert (model.num_classes, model.stride, model.class_names) == (19, 4, CLASS_NAMES)
    # a seed far from the training (0..119) and validation seeds, and scene parameters of its own
    config = SynthConfig(height=512, width=1024, frames=13, seed=987_654, cars=10, people=10)
    cm = ConfusionMatrix(19)
    for frame in generate(config):
        if frame.index % 12 == 0:
            cm.update(model.predict(frame.image), frame.labels)
    assert cm.pixel_accuracy() > 0.85
    assert cm.miou() > 0.5
    iou = cm.iou()
    for name in ("road", "building", "sky", "car"):
        assert iou[CLASS_NAMES.index(name)] > 0.7, name


def test_default_model_is_found_from_any_directory(tmp_path):
    code = "import taplab; m = taplab.load_model('default'); print(m.num_classes, m.stride)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["19", "4"]
