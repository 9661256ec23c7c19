"""Training a correction network (CoNet) for the shipped model, on real encoded synthetic clips."""

import json
import shutil

import numpy as np
import pytest
import torch

from taplab.cli import main
from taplab.errors import ConfigError
from taplab.nets.conet import CoNet, read_correction
from taplab.nets.loader import load_model
from taplab.ops.flow import warp_labels
from taplab.train import TrainConfig, train
from taplab.train_correction import (Pairs, _batch, _crop, _window, boundary_cells, collect_samples,
                                     correction_losses, labelled_clips)

DATA = "synth:clips=2,frames=9,size=128x256"


def tiny(tmp_path, **kw) -> TrainConfig:
    options = dict(model="conet", base="default", data=DATA, gop=4, out=str(tmp_path / "run"), epochs=2,
                   batch_size=4, crop=(64, 128), lr=5e-3, seed=3, threads=1)
    return TrainConfig(**{**options, **kw})


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    clips = labelled_clips(DATA, "train", tmp_path_factory.mktemp("clips"), gop=4)
    return clips, collect_samples(load_model("default"), clips, pairs=True)


def test_samples_are_the_warped_p_frames_with_their_labels(samples):
    clips, data = samples
    assert len(clips) == 2 and all(len(clip.labels) == 9 and clip.flow.exists() for clip in clips)
    assert len(data) == 2 * 6  # GOP 4 over 9 frames: I-frames at 0, 4, 8
    assert sorted({s.distance for s in data}) == [1, 2, 3]
    s = data[0]
    assert s.image.shape == (64, 128, 3) and s.warped.shape == (19, 32, 64) and s.coarse.shape == (32, 64)
    assert s.labels.shape == (128, 256) and s.labels is clips[0].labels[1]
    assert 0 <= s.coarse.min() and s.coarse.max() <= 1 and 0 < s.coarse.mean() < 0.8


def centres(labels: np.ndarray, stride: int = 4) -> np.ndarray:
    return labels[stride // 2::stride, stride // 2::stride]


def test_pairs_link_consecutive_warped_frames_with_the_true_flow_in_cells(samples):
    _, data = samples
    # GOP 4 over 9 frames: P-frames 1-3 and 5-7; the frame after a key frame has no warped frame before it
    assert [(data[s.previous].labels is not None and s.distance) for s in data if s.previous is not None] == [2, 3, 2, 3] * 2
    assert all(data[s.previous].distance == s.distance - 1 for s in data if s.previous is not None)
    for s in (s for s in data if s.previous is not None):
        assert s.flow.shape == (32, 64, 2) and s.valid.shape == (32, 64) and 0.5 < s.valid.mean() < 1
        assert np.abs(s.flow).max() > 0.25  # the camera moves
        # the flow, in cells, carries the frame before's labels onto this frame's cell centres where it holds; on the
        # cells that move half a cell or more, the flow turned round (the wrong convention) is far worse
        flow = s.flow.astype(np.float32)
        moving = s.valid & (np.abs(flow).max(-1) >= 0.5)
        carried, reversed_ = (warp_labels(centres(data[s.previous].labels), f, fill=255) for f in (flow, -flow))
        assert (carried == centres(s.labels))[s.valid].mean() > 0.93
        assert (carried == centres(s.labels))[moving].mean() > (reversed_ == centres(s.labels))[moving].mean() + 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_pairs_share_their_samples_crops_and_flips(samples, seed):
    _, data = samples
    picks = np.arange(len(data))
    image, warped, coarse, labels, pairs = _batch(data, picks, (64, 128), 4, np.random.default_rng(seed), True,
                                                  torch.device("cpu"), pairs=True)
    plain = _batch(data, picks, (64, 128), 4, np.random.default_rng(seed), True, torch.device("cpu"))
    for a, b in zip((image, warped, coarse, labels), plain[:4]):
        assert torch.equal(a, b)  # the pairs draw nothing: training without them takes the same crops
    assert plain[4] is None and isinstance(pairs, Pairs)
    assert pairs.index.tolist() == [k for k, s in enumerate(data) if s.previous is not None]
    assert pairs.image.shape[1:] == image.shape[1:] and pairs.flow.shape == (len(pairs.index), 16, 32, 2)
    rng = np.random.default_rng(seed)
    windows = [_window(data[i], (64, 128), 4, rng, True) for i in picks]
    assert any(w[-1] for w in windows) and not all(w[-1] for w in windows)
    held, right, turned = [], [], []  # whether the flow agrees where it holds; where cells move sideways, whether it
    # and the flow with x turned round do
    for row, k in enumerate(pairs.index.tolist()):
        before = data[data[k].previous]
        _, wp, co, lab_before = _crop(before, windows[k], 4)
        assert np.array_equal(pairs.warped[row].numpy(), wp.astype(np.float32))
        assert np.array_equal(pairs.coarse[row].numpy(), co.astype(np.float32))
        # the crop's flow carries the frame before's labels (cropped and mirrored the same way) onto the sample's;
        # with its x turned round, as a mirrored crop whose flow was not mirrored would have it, far worse
        flow, valid, now = pairs.flow[row].numpy(), pairs.valid[row].numpy(), centres(labels[k].numpy())
        carried, wrong = (warp_labels(np.ascontiguousarray(centres(lab_before)), f, fill=255)
                          for f in (flow, flow * np.float32([-1, 1])))
        valid &= carried != 255  # sources outside the crop: the loss leaves them out too
        assert valid.mean() > 0.3
        held.extend((carried == now)[valid])
        sideways = valid & (wrong != 255) & (np.abs(flow[..., 0]) >= 0.5)
        right.extend((carried == now)[sideways])
        turned.extend((wrong == now)[sideways])
    assert np.mean(held) > 0.93  # cells rounded to the nearest
    assert len(right) > 200 and np.mean(right) > np.mean(turned) + 0.03


def test_consistency_loss_is_zero_for_a_frame_and_itself_and_reaches_the_network(samples):
    _, data = samples
    s = data[0]
    net = CoNet(19)
    torch.nn.init.normal_(net.delta.weight, std=0.1)  # a network that corrects (at the identity start it would not)
    image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255
    warped, coarse = torch.from_numpy(s.warped)[None].float(), torch.from_numpy(s.coarse)[None].float()
    labels = torch.from_numpy(s.labels)[None].long()
    still = torch.zeros(1, 32, 64, 2)
    valid = torch.ones(1, 32, 64, dtype=torch.bool)
    net.eval()  # batch norm's statistics would differ between a batch of one and of two
    base, _ = correction_losses(net, image, warped, coarse, labels, 4, 0.5)
    same = Pairs(image, warped, coarse, torch.tensor([0]), still, valid)
    with_itself, _ = correction_losses(net, image, warped, coarse, labels, 4, 0.5, same, 10.0)
    torch.testing.assert_close(with_itself, base)
    moved = Pairs(image, warped, coarse, torch.tensor([0]), still + 3, valid)
    with_moved, _ = correction_losses(net, image, warped, coarse, labels, 4, 0.5, moved, 10.0)
    assert with_moved > base + 1e-3
    (with_moved - base).backward()
    assert net.delta.weight.grad.abs().sum() > 0


def test_consistency_needs_the_clips_flow(tmp_path, samples):
    clips, _ = samples
    folder = tmp_path / "clips"
    shutil.copytree(clips[0].video.parent.parent, folder)
    assert all(clip.flow is not None for clip in labelled_clips(str(folder), "train", tmp_path, gop=4))
    shutil.rmtree(folder / "flow")
    assert all(clip.flow is None for clip in labelled_clips(str(folder), "train", tmp_path, gop=4))
    with pytest.raises(ConfigError, match="ground-truth flow"):
        train(tiny(tmp_path, data=str(folder), temporal=1.0))
    with pytest.raises(ConfigError, match="not to conet"):
        tiny(tmp_path, distill=1.0, teacher="default")


def test_boundary_cells():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, :, 5:] = 3     # a vertical boundary between pixel columns 4 and 5: cell column 1 of stride 4
    labels[0, 1, 1] = 7      # a one-pixel object in cell (0, 0)
    cells = boundary_cells(labels, 4, (2, 2))
    assert torch.equal(cells, torch.tensor([[[1.0, 1.0], [0.0, 1.0]]]))


def test_losses_reach_both_heads(samples):
    _, data = samples
    s = data[0]
    net = CoNet(19)
    image = torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255
    loss, fused = correction_losses(net, image, torch.from_numpy(s.warped)[None].float(),
                                    torch.from_numpy(s.coarse)[None].float(),
                                    torch.from_numpy(s.labels)[None].long(), 4, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and fused.shape == (1, 19, 32, 64)
    assert net.delta.weight.grad.abs().sum() > 0 and net.edge.weight.grad.abs().sum() > 0


def test_training_writes_files_and_resumes_with_the_same_steps(tmp_path):
    full = train(tiny(tmp_path / "a"))
    assert (tmp_path / "a" / "run" / "best.pt").exists()
    records = [json.loads(line) for line in open(tmp_path / "a" / "run" / "log.jsonl")]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 < r["val_miou"] <= 1 and 0 < r["val_miou_warped"] <= 1 for r in records)
    assert records[0]["val_miou_warped"] == records[1]["val_miou_warped"]  # the frozen model's warp
    saved = read_correction(full.last)
    assert saved["base"] == "default" and saved["stride"] == 4 and "optimizer" in saved

    def interrupt(p):
        if p.phase == "train" and p.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the same run, stopped in its second epoch
        train(tiny(tmp_path / "b"), progress=interrupt)
    resumed = train(resume=tmp_path / "b" / "run" / "last.pt")
    for (k, a), b in zip(full.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_cli_trains_exports_and_segments_with_the_correction_network(tmp_path, samples, capsys):
    clips, _ = samples
    run = tmp_path / "run"
    main(["train", "--model", "conet", "--base", "default", "--data", DATA, "--gop", "4", "--out", str(run),
          "--epochs", "1", "--batch-size", "4", "--crop", "64x128", "--threads", "1"])
    assert "best val mIoU" in capsys.readouterr().out
    main(["export", str(run / "best.pt"), str(tmp_path / "m.conet.pt")])
    assert "optimizer" not in read_correction(tmp_path / "m.conet.pt")
    out = tmp_path / "masks"
    # the self-check would leave out a correction one epoch leaves no better than the warp: this is the network's run
    main(["segment", str(clips[0][0]), "--out", str(out), "--correction", str(tmp_path / "m.conet.pt"), "--no-rgfs",
          "--no-rgc", "--no-self-check"])
    kinds = [r["kind"] for r in json.loads((out / "frames.json").read_text())]
    assert kinds == ["key-I", "fused", "fused", "fused"] * 2 + ["key-I"]
    assert len(list(out.glob("frame_*.png"))) == 9
    main(["segment", str(clips[0][0]), "--out", str(out), "--overwrite", "--no-fusion", "--no-rgfs", "--no-rgc"])
    kinds = [r["kind"] for r in json.loads((out / "frames.json").read_text())]
    assert kinds == ["key-I", "warp", "warp", "warp"] * 2 + ["key-I"]
