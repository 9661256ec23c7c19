"""PFI's temporal training: the losses on frame pairs, and `taplab train --temporal/--distill/--init` end to end."""

import copy
import json

import numpy as np
import pytest
import torch

from taplab.cli import main
from taplab.data.datasets import open_dataset
from taplab.data.pairs import frame_pairs
from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ConfigError
from taplab.data.transforms import to_tensor
from taplab.nets.loader import Model, load_model
from taplab.pfi import pair_consistency, pairwise_distillation, temporal_loss, warp
from taplab.train import TrainConfig, train

DATA = "synth:clips=3,frames=3,size=64x128,seed=5"
FRAMES = "synth:clips=3,frames=3,size=128x256,seed=5"


def tiny(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{"model": "bl2", "model_args": {"width": 0.5, "decoder_channels": 16}, "data": DATA,
                          "out": str(tmp_path), "epochs": 2, "batch_size": 3, "iters_per_epoch": 4,
                          "crop": (64, 64), "lr": 3e-3, "val_limit": 6, **kw})


def test_warp_follows_the_backward_flow():
    x = torch.arange(5 * 6, dtype=torch.float32).reshape(1, 1, 5, 6)
    flow = torch.zeros(1, 5, 6, 2)
    flow[..., 0] = 2  # current[y, x] = previous[y, x + 2]
    warped, inside = warp(x, flow)
    torch.testing.assert_close(warped[0, 0, :, :4], x[0, 0, :, 2:])
    assert inside[0, :, :4].all() and not inside[0, :, 4:].any()


def test_temporal_loss_counts_disagreement_where_the_flow_holds():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 10)
    flow = torch.zeros(2, 8, 10, 2)
    valid = torch.ones(2, 8, 10, dtype=torch.bool)
    assert temporal_loss(logits, logits, flow, valid).item() == pytest.approx(0, abs=1e-7)
    moved = torch.roll(logits, shifts=-1, dims=3)  # the frame before, the scene one pixel to the left
    flow[..., 0] = -1
    assert temporal_loss(logits, moved, flow, valid).item() == pytest.approx(0, abs=1e-6)  # the flow explains it
    other = torch.randn(2, 4, 8, 10)
    loss = temporal_loss(logits, other, flow * 0, valid)
    p, q = logits.softmax(1), other.softmax(1)
    assert loss.item() == pytest.approx((p - q).pow(2).sum(1).mean().item(), rel=1e-5)
    half = valid.clone()
    half[:, :, 5:] = False
    other[..., 5:] = logits[..., 5:]
    assert temporal_loss(logits, other, flow * 0, ~half).item() == pytest.approx(0, abs=1e-7)  # masked out
    assert temporal_loss(logits, other, flow * 0, valid & False).item() == 0  # no valid pixel: nothing to learn


def test_pairwise_distillation_compares_affinities_not_features():
    torch.manual_seed(1)
    student, student_before = torch.randn(2, 8, 16, 16), torch.randn(2, 8, 16, 16)
    # a teacher of another width and stride with the same affinities: a channel-wise copy, upsampled
    same = [torch.cat([f, f], 1).repeat_interleave(2, -1).repeat_interleave(2, -2) for f in (student, student_before)]
    assert pairwise_distillation(student, student_before, *same, (64, 64)).item() == pytest.approx(0, abs=1e-6)
    other = pairwise_distillation(student, student_before, torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), (64, 64))
    assert other.item() > 0.01
    student.requires_grad_(True)
    pairwise_distillation(student, student_before, *same[::-1], (64, 64)).backward()
    assert student.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["bl1", "bl2", "bl3"])
def test_heads_are_pointwise(arch):
    """Training shows a pair's features to the head side by side (one dropout mask for both frames): that needs heads
    that treat every cell alone, as taplab's networks' do."""
    from taplab.nets.registry import create_model

    torch.manual_seed(0)
    net = create_model(arch, num_classes=5).eval()
    a, b = torch.randn(2, 1, net.classifier[-1].in_channels, 6, 7).unbind(0)
    with torch.no_grad():
        side_by_side = net.head(torch.cat([a, b], dim=-1))
        torch.testing.assert_close(side_by_side, torch.cat([net.head(a), net.head(b)], dim=-1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The shipped model fine-tuned briefly, with and without the temporal loss (a strong weight, to see its effect in
    few steps; a network trained from scratch for so few steps labels everything alike, and crops much smaller than
    128x128 leave batch norm's statistics of a batch far from the model's)."""
    kw = {"model_args": {}, "init": "default", "data": FRAMES, "crop": (128, 128), "batch_size": 4, "iters_per_epoch": 6}
    plain = train(tiny(tmp_path_factory.mktemp("plain"), **kw))
    temporal = train(tiny(tmp_path_factory.mktemp("temporal"), temporal=50.0, **kw))
    return plain, temporal


def test_the_temporal_loss_makes_the_model_consistent(runs):
    plain, temporal = runs
    assert "loss_temporal" in temporal.history[-1] and "loss_temporal" not in plain.history[-1]
    assert 0 < temporal.history[-1]["val_tc"] <= 1 and "val_tc" not in plain.history[-1]
    val = open_dataset(FRAMES, "val")
    pairs = frame_pairs(val)
    assert pair_consistency(Model(temporal.net, "trained"), val, pairs) == pytest.approx(temporal.history[-1]["val_tc"])
    # on held-out pairs, the probabilities of consecutive frames agree better along the motion (the four held-out
    # pairs' labels are too few for TC to tell so small a change: the benchmark measures TC, on whole clips)
    disagreement = [held_out_temporal_loss(r.net, val, pairs) for r in runs]
    assert disagreement[1] < 0.85 * disagreement[0]


def held_out_temporal_loss(net, val, pairs) -> float:
    losses = []
    with torch.no_grad():
        for i in range(len(val)):
            if pairs[i] is None:
                continue
            x = to_tensor([val[i][0], pairs[i].image])
            logits = torch.nn.functional.interpolate(net.eval()(x), size=x.shape[-2:], mode="bilinear")
            losses.append(temporal_loss(logits[:1], logits[1:], torch.from_numpy(pairs[i].flow)[None],
                                        torch.from_numpy(pairs[i].valid)[None]).item())
    return float(np.mean(losses))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A network of non-default arguments, trained for one step: something to start from and to distil."""
    return train(tiny(tmp_path_factory.mktemp("small"), epochs=1, iters_per_epoch=1))


def test_fine_tuning_starts_from_the_weights(tmp_path, small):
    result = train(tiny(tmp_path, model_args={}, init=str(small.last), epochs=1, lr=1e-9, iters_per_epoch=1))
    for a, b in zip(small.net.state_dict().values(), result.net.state_dict().values()):
        if a.is_floating_point() and a.dim() > 1:  # weights (batch norm's running statistics move in training)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    saved = torch.load(result.last, weights_only=True)  # the run takes the init's network arguments
    assert saved["config"]["model_args"] == {"width": 0.5, "decoder_channels": 16}
    assert saved["arch_args"]["width"] == 0.5


def test_distillation_teaches_the_teachers_affinities(small):
    """The loss alone (a unit test: the student in eval mode, so that batch norm's statistics of tiny batches play no
    part): a few steps on training pairs bring the student's cross-frame affinities on held-out pairs closer to those
    of a teacher of another width and stride."""
    teacher = load_model("default", "cpu")
    student = copy.deepcopy(small.net).eval()
    data, val = open_dataset(DATA, "train"), open_dataset(DATA, "val")

    def distance(images: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        both = torch.cat([images, before])
        return pairwise_distillation(*student.features(both).chunk(2), *teacher.features(both).chunk(2), (64, 128))

    def batch(d):
        pairs = frame_pairs(d)
        keep = [i for i in range(len(d)) if pairs[i] is not None]
        return to_tensor([d[i][0] for i in keep]), to_tensor([pairs[i].image for i in keep])

    train_pairs, val_pairs = batch(data), batch(val)
    with torch.no_grad():
        before = distance(*val_pairs).item()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    for _ in range(10):
        optimizer.zero_grad()
        distance(*train_pairs).backward()
        optimizer.step()
    with torch.no_grad():
        assert distance(*val_pairs).item() < 0.7 * before


def test_distillation_in_training(tmp_path, small):
    result = train(tiny(tmp_path, distill=1.0, teacher=str(small.last), epochs=1))
    assert result.history[-1]["loss_distill"] > 0 and np.isfinite(result.history[-1]["val_tc"])


@pytest.mark.parametrize("kw, message", [
    ({"temporal": -1}, "must be >= 0"),
    ({"distill": 1.0}, "needs both a weight"),
    ({"teacher": "default"}, "needs both a weight"),
    ({"model": "conet", "init": "default"}, "not to conet"),  # (temporal is the correction network's consistency)
    ({"init": "bl3"}, "no shipped model or checkpoint"),
    ({"temporal_data": ("clip.mp4",)}, "teach through the temporal losses only"),
])
def test_bad_configs(tmp_path, kw, message):
    with pytest.raises(ConfigError, match=message):
        train(tiny(tmp_path, **kw))


def test_init_must_be_the_same_network(tmp_path, small):
    with pytest.raises(ConfigError, match="is a bl2 with"):
        train(tiny(tmp_path / "a", model="bl1", model_args={}, init=str(small.last)))
    with pytest.raises(ConfigError, match="is a bl2 with"):
        train(tiny(tmp_path / "b", model_args={"width": 0.75}, init=str(small.last)))


def test_cli_temporal_training_with_unlabelled_video(tmp_path, capsys):
    write_clip(tmp_path / "footage", SynthConfig(height=64, width=128, frames=5, seed=3), gop=5, name="a")
    out = tmp_path / "run"
    main(["train", "--model", "bl2", "--model-arg", "width=0.5", "--model-arg", "decoder_channels=16", "--data", DATA,
          "--out", str(out), "--epochs", "1", "--batch-size", "2", "--crop", "64x64", "--val-limit", "3",
          "--temporal", "0.5", "--temporal-data", f"{tmp_path / 'footage' / 'video' / 'a.mp4'}@1:"])
    assert "val TC" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["config"]["temporal_data"][0].endswith("a.mp4@1:")
    record = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert record["loss_temporal"] > 0 and np.isfinite(record["val_tc"])
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", DATA, "--out", str(tmp_path / "x"), "--distill", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "needs both a weight" in err and len(err.strip().splitlines()) == 1
