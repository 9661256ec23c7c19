"""Key frames that do not jump (``key_blend``): a key frame's CNN output blended with the previous output carried
to it, on a real encoded synthetic street clip with the default model."""

import json

import pytest
import torch

from taplab.data import layout
from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ConfigError
from taplab.files import read_label_image
from taplab.metrics import ConfusionMatrix, label_change
from taplab.nets.loader import load_model
from taplab.runtime import RuntimeConfig, Segmenter

QUIET = dict(rgc=False, rgfs=False, fusion=False, key_interval=None)  # the codec's I-frames are the key frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic street clip, 128x256, 24 frames, MPEG-4 GOP 8 (I-frames at 0, 8, 16), and its labels."""
    out = tmp_path_factory.mktemp("keyblend")
    video = write_clip(out, SynthConfig(height=128, width=256, frames=24, seed=31, ego_speed_mps=10), gop=8, name="k")
    return video, [read_label_image(layout.clip_label_path(out, "k", t)) for t in range(24)]


@pytest.fixture(scope="module")
def model():
    return load_model("default")


def _run(model, video, **options):
    return list(Segmenter(model, engine="torch", **{**QUIET, **options}).run(video, logits=True))


@pytest.mark.parametrize("interpolation", [True, False])
def test_key_frames_take_the_previous_output_where_the_cnn_doubts_and_jump_less(clip, model, interpolation):
    video, _ = clip
    cnn = _run(model, video, ffw=False)
    off = _run(model, video, key_blend=0, interpolation=interpolation)
    on = _run(model, video, key_blend=0.7, interpolation=interpolation)
    keys = [r.index for r in on if r.is_key]
    assert keys == [0, 8, 16] and [r.index for r in off if r.is_key] == keys
    # off, and on the first frame (nothing before it), a key frame is the CNN's output
    for i in keys:
        torch.testing.assert_close(off[i].logits, cnn[i].logits)
        assert off[i].carried is None
    torch.testing.assert_close(on[0].logits, cnn[0].logits)
    assert on[0].carried is None
    for i in keys[1:]:
        assert 0 < on[i].carried <= 0.7 and not torch.equal(on[i].logits, cnn[i].logits)
    # the mask changes less at the key frames, and the frames after them follow the blended state
    for i in keys[1:]:
        assert label_change(on[i - 1].labels, on[i].labels) < label_change(off[i - 1].labels, off[i].labels)
    assert not torch.equal(on[9].logits, off[9].logits)  # (a budget's key frames are not: test_latency.py)


def test_key_frame_accuracy_stays_within_half_a_point(clip, model):
    """The issue's bound on the key frames' mIoU, here on one short clip (the held-out figures: docs/runtime.md)."""
    video, labels = clip

    def key_miou(results):
        cm = ConfusionMatrix(model.num_classes)
        for r in results:
            if r.is_key and r.index > 0:
                cm.update(r.labels, labels[r.index])
        return 100 * cm.miou()

    off, on = key_miou(_run(model, video, key_blend=0)), key_miou(_run(model, video))  # the default, 0.5
    assert on > off - 0.5


def test_the_per_frame_baseline_is_not_blended_and_the_setting_is_checked(clip, model):
    video, _ = clip
    per_frame = _run(model, video, ffw=False, key_blend=0.7)
    assert all(r.carried is None for r in per_frame)
    cfg = RuntimeConfig()
    assert cfg.key_blend == 0.5 and RuntimeConfig.describe("key_blend").help.startswith("Key frames that do not jump")
    with pytest.raises(ConfigError, match="key_blend must be in 0..1"):
        RuntimeConfig(key_blend=1.5)


def test_the_frame_log_records_the_blend(clip, tmp_path):
    from taplab.cli import main

    video, _ = clip
    out = tmp_path / "masks"
    main(["segment", str(video), "--out", str(out), "--no-rgc", "--no-rgfs", "--key-interval", "none",
          "--key-blend", "0.5"])
    records = json.loads((out / "frames.json").read_text())
    carried = {r["index"]: r["carried"] for r in records}
    assert carried[0] is None and 0 < carried[8] <= 0.5 and 0 < carried[16] <= 0.5
    assert all(carried[i] is None for i in carried if i % 8)
