"""Training a correction network (CoNet) for the shipped model, on real encoded synthetic clips."""

import json

import pytest
import torch

from taplab.cli import main
from taplab.nets.conet import CoNet, read_correction
from taplab.nets.loader import load_model
from taplab.train import TrainConfig, train
from taplab.train_correction import boundary_cells, collect_samples, correction_losses, labelled_clips

DATA = "synth:clips=2,frames=9,size=128x256"


def tiny(tmp_path, **kw) -> TrainConfig:
    options = dict(model="conet", base="default", data=DATA, gop=4, out=str(tmp_path / "run"), epochs=2,
                   batch_size=4, crop=(64, 128), lr=5e-3, seed=3, threads=1)
    return TrainConfig(**{**options, **kw})


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    clips = labelled_clips(DATA, "train", tmp_path_factory.mktemp("clips"), gop=4)
    return clips, collect_samples(load_model("default"), clips)


def test_samples_are_the_warped_p_frames_with_their_labels(samples):
    clips, data = samples
    assert len(clips) == 2 and all(len(labels) == 9 for _, labels in clips)
    assert len(data) == 2 * 6  # GOP 4 over 9 frames: I-frames at 0, 4, 8
    assert sorted({s.distance for s in data}) == [1, 2, 3]
    s = data[0]
    assert s.image.shape == (64, 128, 3) and s.warped.shape == (19, 32, 64) and s.coarse.shape == (32, 64)
    assert s.labels.shape == (128, 256) and s.labels is clips[0][1][1]
    assert 0 <= s.coarse.min() and s.coarse.max() <= 1 and 0 < s.coarse.mean() < 0.8


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
    main(["segment", str(clips[0][0]), "--out", str(out), "--correction", str(tmp_path / "m.conet.pt"), "--no-rgfs",
          "--no-rgc"])
    kinds = [r["kind"] for r in json.loads((out / "frames.json").read_text())]
    assert kinds == ["key-I", "fused", "fused", "fused"] * 2 + ["key-I"]
    assert len(list(out.glob("frame_*.png"))) == 9
    main(["segment", str(clips[0][0]), "--out", str(out), "--overwrite", "--no-fusion", "--no-rgfs", "--no-rgc"])
    kinds = [r["kind"] for r in json.loads((out / "frames.json").read_text())]
    assert kinds == ["key-I", "warp", "warp", "warp"] * 2 + ["key-I"]
