"""TWNet's correction in fusion's place (correction_kind="twnet"): a real decoder, the shipped model, real TWNet files."""

import numpy as np
import pytest
import torch

from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ConfigError
from taplab.nets.conet import CoNet, save_correction
from taplab.nets.loader import load_model
from taplab.nets.twnet import Split, TamedNet, save_tamed
from taplab.runtime import RuntimeConfig, Segmenter


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A synthetic street clip, 128x256, 12 frames, MPEG-4 GOP 6."""
    out = tmp_path_factory.mktemp("twnet")
    return write_clip(out, SynthConfig(height=128, width=256, frames=12, seed=21, ego_speed_mps=12), gop=6, name="c")


@pytest.fixture(scope="module")
def model():
    """In torch: a TWNet run's key frames are torch's (their interior), compared here with a plain run's."""
    return load_model("default", device="cpu", engine="torch")


def _tamed_file(path, model, push_class: int | None = None):
    """An untrained TWNet for ``model``, or one whose correction, applied everywhere, adds 1000 to ``push_class``'s
    share of the deep interior (the deeper levels' logits), so that every corrected cell takes that class."""
    split = Split(model)
    net = TamedNet(split.deep_channels, split.shallow_channels, width=8).eval()
    if push_class is not None:
        with torch.no_grad():
            net.cfr[-1].bias[split.deep_channels - model.num_classes + push_class] = 1000.0
            net.rga[-1].bias.fill_(100.0)
    return save_tamed(path, net, model.class_names, model.stride, "default")


def test_warped_frames_take_twnets_correction_and_key_frames_stay_the_cnns(video, model, tmp_path):
    pushed = _tamed_file(tmp_path / "push.twnet.pt", model, push_class=7)
    # a network made to push every cell to one class, which the self-check would leave out: this is TWNet's stage
    options = dict(rgc=False, rgfs=False, interpolation=False, key_blend=0.0, self_check=False)
    plain = list(Segmenter(model, fusion=False, **options).run(video))
    tamed = list(Segmenter(model, fusion=True, correction=str(pushed), correction_kind="twnet", **options)
                 .run(video, details=True))
    assert [r.kind for r in tamed] == ["fused" if p.kind == "warp" else p.kind for p in plain]
    for p, t in zip(plain, tamed):
        if t.is_key:
            assert np.array_equal(p.labels, t.labels) and t.state is None
        else:
            assert (t.labels == 7).all() and not (p.labels == 7).all()
            assert t.state.shape[0] == model.num_classes + Split(model).deep_channels
            assert torch.allclose(t.distortion, torch.ones_like(t.distortion))  # RGA's attention


def test_an_untrained_twnet_keeps_close_to_ffw(video, model, tmp_path):
    untrained = _tamed_file(tmp_path / "id.twnet.pt", model)
    options = dict(rgc=False, rgfs=False, key_blend=0.0)  # the key frames' blend would carry each run's own output
    plain = list(Segmenter(model, fusion=False, **options).run(video, details=True))
    tamed = list(Segmenter(model, fusion=True, correction=str(untrained), correction_kind="twnet", **options)
                 .run(video, details=True))
    warped = [(p, t) for p, t in zip(plain, tamed) if not t.is_key]
    assert len(warped) >= 8
    for p, t in warped:  # the same warped logits, then decoded with the frame's own shallow features
        torch.testing.assert_close(t.warped, p.warped, atol=1e-3, rtol=0)
        assert (t.labels == p.labels).mean() > 0.9


def test_the_kind_and_the_file_must_agree(video, model, tmp_path):
    conet = save_correction(tmp_path / "m.conet.pt", CoNet(model.num_classes).eval(), model.class_names, model.stride,
                            "default")
    tamed = _tamed_file(tmp_path / "m.twnet.pt", model)
    with pytest.raises(ConfigError, match="is a dmnet correction network, but correction_kind is 'twnet'"):
        Segmenter(model, fusion=True, correction=str(conet), correction_kind="twnet")
    with pytest.raises(ConfigError, match="is a twnet correction network, but correction_kind is 'dmnet'"):
        Segmenter(model, fusion=True, correction=str(tamed))
    # the shipped model comes with both; a plain module with neither: asked for, TWNet's is missing, and in auto mode
    # fusion is off
    shipped = Segmenter(model, correction_kind="twnet")
    assert shipped.fusion and shipped.correction.source.endswith("bl2-synth.twnet.pt")
    torch.manual_seed(0)
    plain = torch.nn.Sequential(torch.nn.Conv2d(3, 19, 3, padding=1), torch.nn.AvgPool2d(4))
    with pytest.raises(ConfigError, match=r"correction network \(twnet\).*--kind twnet"):
        Segmenter(plain, fusion=True, correction_kind="twnet")
    assert not Segmenter(plain, correction_kind="twnet").fusion
    with pytest.raises(ConfigError, match="leave warp_layer at 'logits'"):
        RuntimeConfig(correction_kind="twnet", warp_layer="features")
    with pytest.raises(ConfigError, match="correction_kind must be one of"):
        RuntimeConfig(correction_kind="cfr")


def test_the_shipped_twnet_brings_warped_frames_closer_to_the_per_frame_output(tmp_path):
    """The default model's TWNet (models/bl2-synth.twnet.pt, adapted on 16 training scenes) on a scene seed it never saw."""
    from taplab.metrics import ConfusionMatrix

    clip = write_clip(tmp_path, SynthConfig(height=256, width=512, frames=24, seed=700011), gop=12, name="c")
    per_frame = [r.labels for r in Segmenter("default", device="cpu", ffw=False).run(clip)]
    fidelity = {}
    for kind, fusion in (("none", False), ("twnet", True)):
        scores = ConfusionMatrix(19)
        for r in Segmenter("default", device="cpu", fusion=fusion, correction_kind=kind if fusion else "dmnet",
                           rgc=False, rgfs=False).run(clip):
            if not r.is_key:
                scores.update(r.labels, per_frame[r.index])
        fidelity[kind] = 100 * scores.miou()
    assert fidelity["twnet"] > fidelity["none"] + 2, fidelity


def test_the_self_check_scores_twnets_stage_and_leaves_a_wrong_one_out(video, model, tmp_path):
    """TWNet's stage in the self-check's probe (it corrects the warped state, not the logits): a network that pushes
    every cell to one class scores below the plain warp at the first key frame probed and is left out after it."""
    pushed = _tamed_file(tmp_path / "push.twnet.pt", model, push_class=7)
    options = dict(rgc=False, rgfs=False, key_blend=0.0)
    checked = list(Segmenter(model, fusion=True, correction=str(pushed), correction_kind="twnet", **options).run(video))
    plain = list(Segmenter(model, fusion=False, **options).run(video))
    probe = next(r.check for r in checked if r.check is not None)
    # far below: left out of the choice at once, its score in ``behind``
    assert probe["behind"]["fused"] < probe["fidelity"]["warp"] and probe["kept"] == "warp"
    assert [r.kind for r in checked] == [r.kind for r in plain]  # every warped frame left as warped: "warp"
    for c, p in zip(checked, plain):
        assert np.array_equal(c.labels, p.labels)
