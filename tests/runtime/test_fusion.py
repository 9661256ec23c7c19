"""Distortion-map fusion in the runtime: with a real decoder, the shipped model and real CoNet files."""

import numpy as np
import pytest
import torch

from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ConfigError, ModelError
from taplab.nets.conet import CoNet, save_correction
from taplab.nets.loader import load_model
from taplab.runtime import Segmenter


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A synthetic street clip, 128x256, 8 frames, MPEG-4 GOP 4."""
    out = tmp_path_factory.mktemp("fusion")
    return write_clip(out, SynthConfig(height=128, width=256, frames=8, seed=12, ego_speed_mps=12), gop=4, name="c")


@pytest.fixture(scope="module")
def model():
    return load_model("default")


#: the hand-made networks below (identity, biased) are what they are to show where fusion acts; the self-check would
#: rightly leave them out at the first key frame it probes (tests/runtime/test_selfcheck.py)
RAW = dict(self_check=False)


def _conet_file(path, model, bias_class: int | None = None):
    """A CoNet for ``model``: the identity (an untrained one), or one whose update pushes every cell
    to ``bias_class`` and whose edge map is zero, so that fusion shows exactly where M is."""
    net = CoNet(model.num_classes).eval()
    if bias_class is not None:
        with torch.no_grad():
            net.delta.bias[bias_class] = 1000.0
            net.edge.weight.zero_()
            net.edge.bias.fill_(-1000.0)
    return save_correction(path, net, model.class_names, model.stride, "default")


def test_fusion_with_an_identity_correction_equals_plain_warping(video, model, tmp_path):
    identity = _conet_file(tmp_path / "id.conet.pt", model)
    plain = list(Segmenter(model, rgc=False, rgfs=False, fusion=False).run(video, logits=True))
    fused = list(Segmenter(model, rgc=False, rgfs=False, fusion=True, correction=str(identity), **RAW).run(
        video, logits=True, details=True))
    assert [r.kind for r in fused] == ["key-I", "fused", "fused", "fused"] * 2
    for p, f in zip(plain, fused):
        torch.testing.assert_close(f.logits, p.logits)
        np.testing.assert_array_equal(f.labels, p.labels)
        if f.kind == "fused":
            assert f.timings["fusion"] > 0 and f.distortion.shape == f.logits.shape[1:]
            torch.testing.assert_close(f.warped, p.logits)


def test_fusion_replaces_the_warped_logits_exactly_where_the_distortion_map_says(video, model, tmp_path):
    biased = _conet_file(tmp_path / "b.conet.pt", model, bias_class=18)
    # the formula alone: no correction carried from the frame before (fusion_memory, tested below)
    seg = Segmenter(model, rgc=False, rgfs=False, correction=str(biased), fusion_memory=0, **RAW)
    assert seg.fusion  # fusion=None (auto) turns on where a correction network is given
    results = [r for r in seg.run(video, logits=True, details=True) if r.kind == "fused"]
    assert len(results) == 6
    for r in results:
        m = r.distortion
        assert 0 < (m > 0).float().mean() < 0.9   # the map is neither empty nor everything
        assert torch.all(m <= 0.5 + 1e-6)          # M = 0.5 M_coarse + 0.5 * 0
        untouched = m == 0
        torch.testing.assert_close(r.logits[:, untouched], r.warped[:, untouched])
        assert torch.all(r.logits.argmax(0)[m >= 0.05] == 18)


def test_held_frames_are_fused_too(model, tmp_path):
    """B-frames held for their future anchor and P-frames held for the next key frame (interpolation) get the
    fused logits, not the warped ones: H.264 with B-frames and a key interval, so both holds happen."""
    clip = write_clip(tmp_path, SynthConfig(height=128, width=256, frames=10, seed=12, ego_speed_mps=12), gop=10,
                      name="b", codec="h264", bframes=2)
    biased = _conet_file(tmp_path / "b.conet.pt", model, bias_class=18)
    seg = Segmenter(model, rgc=False, rgfs=False, key_interval=6, correction=str(biased), **RAW)
    results = list(seg.run(clip, logits=True, details=True))
    assert [r.index for r in results] == list(range(10))
    held = [r for r in results if r.kind == "fused" and r.future is not None]
    assert {r.pict_type for r in held} == {"B", "P"}
    for r in held:
        assert torch.all(r.logits.argmax(0)[r.distortion >= 0.05] == 18)
        assert (r.distortion >= 0.05).any()


@pytest.mark.parametrize("interpolation", [True, False])
def test_fusion_memory_carries_each_anchors_correction_to_the_next_within_its_gop(video, model, tmp_path,
                                                                                  interpolation):
    """fusion_memory b: an anchor's correction D = F - F_warped becomes (1 - b) D + b W(D_before); the chain starts
    afresh at every key frame, so the first frame after one is fused as without memory. Held frames
    (interpolation) are corrected in display order after the next key frame came: the same chains."""
    biased = _conet_file(tmp_path / "b.conet.pt", model, bias_class=18)
    # (no key-frame blend: it carries the fused output before a key frame into it, which the memory changes)
    options = dict(rgc=False, rgfs=False, correction=str(biased), interpolation=interpolation, key_blend=0, **RAW)
    plain = list(Segmenter(model, fusion_memory=0, **options).run(video, logits=True, details=True))
    carried = list(Segmenter(model, fusion_memory=0.5, **options).run(video, logits=True, details=True))
    assert [r.kind for r in carried] == [r.kind for r in plain] == ["key-I", "fused", "fused", "fused"] * 2
    before = None  # the previous frame's correction with the memory
    for p, c in zip(plain, carried):
        torch.testing.assert_close(c.warped if c.warped is not None else c.logits,
                                   p.warped if p.warped is not None else p.logits)  # the same warp underneath
        if p.is_key or p.index % 4 == 1:  # a key frame, and the first frame after it: nothing to carry
            torch.testing.assert_close(c.logits, p.logits)
            before = None if p.is_key else c.logits - c.warped
            continue
        own, mine = p.logits - p.warped, c.logits - c.warped
        # later frames: half their own correction, half the one carried, which reaches cells of their own without one
        assert not torch.equal(c.logits, p.logits)
        untouched = p.distortion == 0
        assert (mine[:, untouched].abs() > 1).any() and (own[:, untouched] == 0).all()
        # a blend of its own and of the one before, moved: within their range, per class
        low, high = torch.minimum(own.amin((1, 2)), before.amin((1, 2))), torch.maximum(own.amax((1, 2)), before.amax((1, 2)))
        assert torch.all(mine.amin((1, 2)) >= low - 1e-3) and torch.all(mine.amax((1, 2)) <= high + 1e-3)
        before = mine


def test_fusion_memory_makes_the_shipped_correction_consistent_in_time(model, tmp_path):
    """On two synthetic clips with the shipped correction network, TC (with the true flow) rises with the memory and
    mIoU stays within half a point (the held-out measurements are in docs/runtime.md)."""
    from taplab.data import layout
    from taplab.metrics import ConfusionMatrix, temporal_consistency

    scores = {}
    for seed in (3, 12):
        clip = write_clip(tmp_path, SynthConfig(height=256, width=512, frames=20, seed=seed), gop=10, name=f"c{seed}")
        flows = list(np.load(layout.clip_flow_path(tmp_path, f"c{seed}"))["flow"].astype(np.float32))
        truth = [layout.read_labels(layout.clip_label_path(tmp_path, f"c{seed}", t)) for t in range(20)]
        for memory in (0.0, 0.5):
            labels = [r.labels for r in Segmenter(model, rgc=False, rgfs=False, fusion_memory=memory).run(clip)]
            cm = ConfusionMatrix(model.num_classes)
            for a, b in zip(labels, truth):
                cm.update(a, b)
            scores[seed, memory] = (temporal_consistency(labels, flows, model.num_classes), cm.miou())
    for seed in (3, 12):
        (tc0, miou0), (tc5, miou5) = scores[seed, 0.0], scores[seed, 0.5]
        assert tc5 > tc0 + 0.02 and abs(miou5 - miou0) < 0.005, scores


def test_fusion_runs_before_rgc_whose_region_overrides_it(video, model, tmp_path):
    biased = _conet_file(tmp_path / "b.conet.pt", model, bias_class=18)
    options = dict(rgfs=False, rgc_threshold=0, rgc_alpha=1.0, **RAW)
    fused = [r for r in Segmenter(model, correction=str(biased), **options).run(video, logits=True) if not r.is_key]
    plain = [r for r in Segmenter(model, fusion=False, **options).run(video, logits=True) if not r.is_key]
    assert {r.kind for r in fused} == {"fused+RGC"} and {r.kind for r in plain} == {"warp+RGC"}
    for f, p in zip(fused, plain):
        assert f.region == p.region
        ys, xs = (slice(v // model.stride, (v + n) // model.stride) for v, n in
                  ((f.region.y, f.region.height), (f.region.x, f.region.width)))
        torch.testing.assert_close(f.logits[:, ys, xs], p.logits[:, ys, xs])  # the CNN's, in both
        assert not torch.equal(f.logits, p.logits)  # and fused outside the region


def test_fusion_needs_a_matching_correction_network(video, model, tmp_path):
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.AvgPool2d(4))
    assert not Segmenter(other).fusion  # auto: no correction network for a plain module
    with pytest.raises(ConfigError, match="fusion needs a correction network"):
        Segmenter(other, fusion=True)
    with pytest.raises(ModelError, match="trained for 19 classes"):
        Segmenter(other, correction=str(_conet_file(tmp_path / "x.conet.pt", model)))
    with pytest.raises(ConfigError, match="warp_layer='logits'"):
        Segmenter(model, fusion=True, warp_layer="features")
    with pytest.raises(ConfigError, match="fusion_weight"):
        Segmenter(model, fusion_weight=1.5)
    with pytest.raises(ConfigError, match="fusion_memory must be in 0..1, 1 excluded"):
        Segmenter(model, fusion_memory=1.0)  # a correction carried whole would never change


def test_a_chained_warp_carries_corrections_itself_and_fusion_memory_stays_out(video, model, tmp_path):
    biased = _conet_file(tmp_path / "b.conet.pt", model, bias_class=18)
    options = dict(rgc=False, rgfs=False, correction=str(biased), propagation="chain", interpolation=False, key_blend=0)
    plain, carried = ([r.logits for r in Segmenter(model, fusion_memory=m, **options).run(video, logits=True)]
                      for m in (0.0, 0.5))
    for a, b in zip(plain, carried):
        torch.testing.assert_close(a, b)
    with pytest.raises(ConfigError, match="fusion must be true, false or null"):
        Segmenter(model, fusion=0)  # 0 == False, but `fusion is False` would not hold: refused
