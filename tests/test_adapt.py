"""Label-free adaptation (taplab.adapt): a real synthetic clip encoded on the fly, the shipped model as the teacher."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from taplab import ConfigError, ModelError, RuntimeConfig, Segmenter, load_model
from taplab.adapt import AdaptConfig, Sample, _batch, adapt, adaptation_losses, decide, label_edges, train
from taplab.cli import main
from taplab.data.datasets import clip_config
from taplab.data.synth import write_clip
from taplab.nets.adapted import ADAPTED_FILE, is_adapted, read_adapted, write_adapted
from taplab.nets.conet import CoNet, load_correction
from taplab.nets.zoo import find_correction

#: a short run: the clip's warped training frames, 300 steps of 4 crops (seconds on 2 cores; +1.5 points here). On the
#: feature grid (scale 1): this tiny clip's grid is 64x128, and on half of it 300 steps gain less (+0.4)
QUICK = AdaptConfig(steps=300, batch_size=4, crop=32, lr=5e-3, labels=False, seed=0, frames=36, scale=1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """36 frames of a synthetic street at 256x512, MPEG-4 GOP 12, with labels (a `taplab synth` folder)."""
    folder = tmp_path_factory.mktemp("footage")
    return write_clip(folder, clip_config(123, (256, 512), 36), gop=12, name="street")


@pytest.fixture(scope="module")
def adapted(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapted") / "street-adapted"
    return adapt("default", [str(clip)], out, QUICK, device="cpu")


@pytest.fixture(scope="module")
def tamed(clip, tmp_path_factory):
    """TWNet's correction adapted the same way (--kind twnet), on the same clip."""
    out = tmp_path_factory.mktemp("adapted") / "street-twnet"
    return adapt("default", [str(clip)], out, dataclasses.replace(QUICK, kind="twnet"), device="cpu")


@pytest.mark.slow
def test_label_free_adaptation_raises_held_out_fidelity(adapted):
    fusion = adapted.report["fusion"]
    assert adapted.report["samples"]["train"] >= 20 and adapted.report["samples"]["held_out"] >= 8
    assert fusion["fidelity_with"] > fusion["fidelity_without"]
    assert fusion["enabled"] and adapted.enabled
    # trained without labels, it still moves the warped frames towards the truth the teacher approximates
    labels = adapted.report["labels"]
    assert labels["miou_with"] > labels["miou_without"]
    assert adapted.report["training"]["steps"] == QUICK.steps and not adapted.report["training"]["stopped_by_clock"]


def test_the_folder_is_a_model_with_its_correction_and_options(adapted, clip):
    folder = adapted.folder
    assert sorted(p.name for p in folder.iterdir()) == ["adapted.json", "correction.pt", "report.md"]
    assert is_adapted(folder) and read_adapted(folder).model == "default"
    assert find_correction(str(folder)) == folder / "correction.pt"
    assert RuntimeConfig.for_model(folder).fusion is True
    seg = Segmenter(str(folder), device="cpu")
    assert seg.fusion and seg.model.num_classes == load_model("default", device="cpu").num_classes
    results = list(seg.run(clip))
    assert len(results) == 36 and any("fused" in str(r.kind) for r in results)
    # options given override the folder's
    assert not Segmenter(str(folder), device="cpu", fusion=False).fusion
    assert "fidelity" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_twnets_correction_adapts_too_and_its_folder_runs_it(tamed, clip):
    fusion = tamed.report["fusion"]
    assert tamed.report["kind"] == "twnet" and tamed.report["samples"]["train"] >= 20
    assert fusion["fidelity_with"] > fusion["fidelity_without"] and tamed.enabled
    assert tamed.report["labels"]["miou_with"] > tamed.report["labels"]["miou_without"]
    assert "adapted twnet" in (tamed.folder / "report.md").read_text()
    cfg = RuntimeConfig.for_model(tamed.folder)
    assert cfg.fusion is True and cfg.correction_kind == "twnet"
    # a loaded model counts by where it came from (taplab bench --model FOLDER loads it first)
    assert RuntimeConfig.for_model(load_model(str(tamed.folder), device="cpu")) == cfg
    seg = Segmenter(str(tamed.folder), device="cpu")
    results = list(seg.run(clip, details=True))
    fused = [r for r in results if "fused" in str(r.kind)]
    assert len(results) == 36 and fused and all(r.state is not None for r in fused)
    # DMNet's network cannot be asked of it: the folder holds TWNet's
    with pytest.raises(ConfigError, match="is a twnet correction network"):
        Segmenter(str(tamed.folder), device="cpu", correction_kind="dmnet")


def test_the_cli_segments_with_the_adapted_folder(adapted, clip, tmp_path):
    out = tmp_path / "masks"
    main(["segment", str(clip), "--out", str(out), "--model", str(adapted.folder), "--limit", "13"])
    frames = json.loads((out / "frames.json").read_text())
    assert any("fused" in f["kind"] for f in frames)


def test_a_correction_that_does_not_help_is_left_off(clip, tmp_path):
    # demanding more gain than any correction gives: the folder is written with fusion off, and says why (the default
    # network, on half the feature grid, trained and saved on the way)
    result = adapt("default", [str(clip)], tmp_path / "off", AdaptConfig(steps=20, batch_size=2, crop=16,
                                                                         min_gain=50.0, frames=36))
    assert not result.enabled and result.report["fusion"]["enabled"] is False
    assert "needs more than" in result.report["fusion"]["why"]
    assert read_adapted(tmp_path / "off").correction is None
    assert load_correction(tmp_path / "off" / "correction.pt").scale == AdaptConfig().scale == 2
    assert RuntimeConfig.for_model(tmp_path / "off").fusion is False
    assert not Segmenter(str(tmp_path / "off"), device="cpu").fusion


def test_a_users_own_model_is_referred_to_by_its_absolute_path(clip, tmp_path, monkeypatch):
    # a TorchScript model of 5 classes at stride 4 (untrained: only the mechanics are checked here)
    torch.manual_seed(0)
    torch.jit.script(torch.nn.Conv2d(3, 5, 4, stride=4)).save(str(tmp_path / "mine.pt"))
    monkeypatch.chdir(tmp_path)
    result = adapt("mine.pt", [str(clip)], "mine-adapted", AdaptConfig(steps=5, batch_size=2, crop=16, frames=36))
    assert read_adapted(tmp_path / "mine-adapted").model == str(tmp_path / "mine.pt")
    assert load_correction(tmp_path / "mine-adapted" / "correction.pt").classes == tuple(f"class {k}" for k in range(5))
    monkeypatch.chdir(tmp_path.parent)  # the folder works from anywhere
    seg = Segmenter(str(tmp_path / "mine-adapted"), device="cpu")
    assert seg.model.num_classes == 5 and seg.fusion == result.enabled
    with pytest.raises(ConfigError, match="untrained"):
        adapt("bl1", [str(clip)], tmp_path / "x")


def test_decide():
    assert decide(60.0, 65.0, 0.0) == (True, "it raised held-out fidelity by 5.0 points")
    assert decide(60.0, 59.0, 0.0)[0] is False
    assert decide(60.0, 61.0, 2.0)[0] is False
    assert decide(None, 61.0, 0.0)[0] is False


def test_label_edges():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2]]])
    assert label_edges(labels).tolist() == [[[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]]]


def _samples(n: int, seed: int) -> list[Sample]:
    """A fake of the runtime's samples, isolating the training loop (random logits and frames)."""
    rng = np.random.default_rng(seed)
    return [Sample(rng.integers(0, 255, (32, 32, 3), np.uint8), rng.normal(size=(5, 16, 16)).astype(np.float16),
                   rng.random((16, 16)).astype(np.float16), rng.normal(size=(5, 16, 16)).astype(np.float16), None,
                   0, i) for i in range(n)]


def test_training_is_deterministic_and_bounded_by_steps():
    cfg = AdaptConfig(steps=5, batch_size=2, crop=8)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        net = CoNet(5, width=8)
        samples = _samples(4, 1)
        done = train(net, lambda rng: adaptation_losses(net, *_batch(samples, cfg, rng), 0.5), cfg)
        assert done["steps"] == 5 and not done["stopped_by_clock"]
        weights.append(torch.cat([p.flatten() for p in net.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_the_clock_stops_training():
    net, samples, cfg = CoNet(5, width=8), _samples(4, 1), AdaptConfig(steps=10**6, minutes=1e-4, batch_size=2, crop=8)
    done = train(net, lambda rng: adaptation_losses(net, *_batch(samples, cfg, rng), 0.5), cfg)
    assert done["stopped_by_clock"] and done["steps"] < 10**6


@pytest.mark.parametrize("bad", [{"holdout": 0}, {"holdout": 1.0}, {"steps": 0}, {"minutes": 0}, {"lr": -1},
                                 {"kind": "cfr"}])
def test_config_is_validated(bad):
    with pytest.raises(ConfigError):
        AdaptConfig(**bad)


def _fails(args: list[str], capsys) -> str:
    """The one line of error ``taplab ARGS`` prints (after any progress bar's), with exit status 2."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert exit_.value.code == 2 and lines[-1].startswith("error:") and "Traceback" not in err, err
    return lines[-1]


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, clip, capsys):
    out = tmp_path / "never"
    assert "no such file" in _fails(["adapt", "default", str(tmp_path / "missing.mp4"), "--out", str(out)], capsys)
    assert not out.exists() and not list(tmp_path.glob(".never*"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("keep")
    assert "--overwrite" in _fails(["adapt", "default", str(clip), "--out", str(tmp_path / "taken")], capsys)
    assert (tmp_path / "taken" / "x").read_text() == "keep"
    err = _fails(["adapt", "default", str(clip), "--out", str(out), "--holdout", "0.99", "--frames", "13"], capsys)
    assert "warped frames" in err and not out.exists() and not list(tmp_path.glob(".never*"))
    assert "holdout" in _fails(["adapt", "default", str(clip), "--out", str(out), "--holdout", "2"], capsys)


def test_broken_folders_are_model_errors(tmp_path):
    (tmp_path / ADAPTED_FILE).write_text("{not json")
    with pytest.raises(ModelError):
        read_adapted(tmp_path)
    write_adapted(tmp_path, "default", "correction.pt", {}, {})
    with pytest.raises(ModelError, match="missing"):
        read_adapted(tmp_path)
    (tmp_path / "inner").mkdir()
    write_adapted(tmp_path / "inner", "default", None, {}, {})
    write_adapted(tmp_path, str(tmp_path / "inner"), None, {}, {})
    with pytest.raises(ModelError, match="adapted model itself"):
        load_model(str(tmp_path), device="cpu")
    write_adapted(tmp_path, "default", None, {"no_such_option": 1}, {})
    with pytest.raises(ConfigError, match="no_such_option"):
        RuntimeConfig.for_model(tmp_path)


def test_the_samples_memory_is_checked_before_collecting(clip):
    from taplab.adapt import MEMORY_SHARE, check_memory, footage_bytes

    model = load_model("default", device="cpu")
    needed, what = footage_bytes(model, [str(clip)], AdaptConfig(frames=300), 100)
    h, w = model.geometry(256, 512).size
    assert needed == 36 * h * w * 100 and what == f"{h * w * 100 / 2**20:.0f} MB per frame at 512x256"  # its 36 frames
    assert footage_bytes(model, [str(clip)], AdaptConfig(frames=10), 100)[0] == 10 * h * w * 100
    check_memory(needed, None, what)  # unknown memory: not checked
    check_memory(needed, int(needed / MEMORY_SHARE) + 1, what)
    with pytest.raises(ConfigError, match=r"would hold up to .* GB of samples .*--frames"):
        check_memory(needed, needed, what)


def test_rgas_residual_is_the_runtimes_on_a_codec_without_vectors(tmp_path):
    """TWNet's samples read the residual in a second pass: on HEVC (no vectors exported) it must be taken with the
    vectors the runtime estimates, as at run time, not against the unmoved previous frame."""
    from taplab.adapt.twnet import _residuals
    from taplab.codec import encode
    from tests.conftest import translation_frames

    clip = encode(translation_frames(12, 128, 256, 3, 0), tmp_path / "pan.mp4", gop=12, codec="hevc")
    estimated = _residuals(str(clip), 12, (32, 64), RuntimeConfig())
    unmoved = _residuals(str(clip), 12, (32, 64), RuntimeConfig(motion_source="codec"))
    assert len(estimated) == len(unmoved) >= 10 and all(r.shape == (2, 32, 64) for r in estimated.values())
    level = {name: float(np.mean([r[0].mean() for r in found.values()]))
             for name, found in (("estimated", estimated), ("unmoved", unmoved))}
    assert level["estimated"] < 0.5 * level["unmoved"], level  # a 3-pixel pan, compensated
