"""taplab train: a short real training run on synthetic frames, checkpoints, resume, errors, the CLI."""

import json

import numpy as np
import pytest
import torch

from taplab.cli import main
from taplab.errors import ConfigError
from taplab.nets.loader import Model, load_model
from taplab.train import TrainConfig, train

DATA = "synth:clips=2,frames=3,size=64x128,seed=5"


def tiny(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{"model": "bl2", "model_args": {"width": 0.5, "decoder_channels": 16}, "data": DATA,
                          "out": str(tmp_path), "epochs": 3, "batch_size": 3, "iters_per_epoch": 4,
                          "crop": (64, 64), "lr": 3e-3, "val_limit": 2, **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(tiny(tmp_path_factory.mktemp("run")))


def test_loss_falls_and_files_are_written(run):
    losses = [r["loss"] for r in run.history]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0]
    assert run.last.exists() and run.best.exists()
    log = [json.loads(line) for line in (run.last.parent / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all(0 <= r["val_miou"] <= 1 for r in log)
    assert run.best_miou == max(r["val_miou"] for r in log)


def test_checkpoint_loads_back_with_the_same_predictions(run):
    from taplab.data.datasets import open_dataset

    image, _ = open_dataset(DATA, "val")[0]
    expected = Model(run.net, "trained").predict(image)
    loaded = load_model(run.last, device="cpu")  # where the expectation was computed, also on a machine with a GPU
    np.testing.assert_array_equal(loaded.predict(image), expected)
    ckpt = torch.load(run.last, weights_only=True)
    assert ckpt["config"]["data"] == DATA and ckpt["epoch"] == 3
    assert ckpt["classes"][0] == "road" and len(ckpt["classes"]) == 19
    assert "optimizer" in ckpt and "optimizer" not in torch.load(run.best, weights_only=True)


def test_resume_takes_the_same_steps(tmp_path, run):
    def interrupt(p):
        if p.epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # the same run as `run`, stopped during its third epoch
        train(tiny(tmp_path), progress=interrupt)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2
    resumed = train(resume=tmp_path / "last.pt")
    for (k, a), b in zip(run.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_resume_writes_into_the_folder_of_the_checkpoint(tmp_path, run, monkeypatch):
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "last.pt").write_bytes(run.last.read_bytes())
    monkeypatch.chdir(tmp_path)  # the saved config's out folder is elsewhere
    resumed = train(resume=moved / "last.pt", epochs=4)
    assert resumed.last == moved / "last.pt" and resumed.best.exists()
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert torch.load(moved / "last.pt", weights_only=True)["epoch"] == 4


def test_batch_size_one_and_smallest_crop(tmp_path):
    result = train(tiny(tmp_path, batch_size=1, epochs=1, iters_per_epoch=2))
    assert result.history[0]["loss"] > 0


def test_bad_configs(tmp_path, run):
    with pytest.raises(ConfigError, match="is not a labelled folder"):
        train(tiny(tmp_path, data=str(tmp_path)))
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        tiny(tmp_path, epochs=0)
    with pytest.raises(ConfigError, match="scale must be a range"):
        tiny(tmp_path, scale=(2.0, 0.5))
    with pytest.raises(ConfigError, match="already holds a training run"):
        train(tiny(run.last.parent))
    with pytest.raises(ConfigError, match="crop must be at least 64x64"):
        tiny(tmp_path, crop=(32, 32))
    with pytest.raises(ConfigError, match="may not set num_classes"):
        tiny(tmp_path, model_args={"num_classes": 5})
    with pytest.raises(ConfigError, match="torch has no CUDA|unknown device"):
        train(tiny(tmp_path, device="cuda" if not torch.cuda.is_available() else "gpu"))
    with pytest.raises(ConfigError, match="holds no training state"):
        from taplab.nets import create_model
        from taplab.nets.checkpoint import save_checkpoint

        save_checkpoint(tmp_path / "plain.pt", create_model("bl2"), "bl2", {})
        train(resume=tmp_path / "plain.pt")


def test_cli_train_eval_models(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["train", "--data", DATA, "--out", str(out), "--epochs", "1", "--batch-size", "2", "--iters-per-epoch", "2",
          "--crop", "64x64", "--model", "bl1", "--model-arg", "decoder_channels=16", "--val-limit", "1"])
    assert "best val mIoU" in capsys.readouterr().out
    main(["eval", str(out / "best.pt"), DATA, "--limit", "2", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["images"] == 2 and 0 <= result["miou"] <= 100 and "road" in result["iou"]
    main(["models"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("bl1", "bl2", "bl3", "stride 4", "stride 8"))


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "/no/such/folder"], "neither 'synth"),
    (["train", "--scale", "2"], "expected LOW,HIGH"),
    (["eval", "nowhere.pt", "synth"], "no model 'nowhere.pt'"),
])
def test_cli_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_resume_rejects_other_options(tmp_path, run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--resume", str(run.last), "--lr", "0.1"])
    assert exit_.value.code == 2 and "only --epochs, --device and --threads may be given (got --lr)" in capsys.readouterr().err


def test_export_strips_training_state(tmp_path, run, capsys):
    main(["export", str(run.last), str(tmp_path / "shipped.pt")])
    assert "wrote" in capsys.readouterr().out
    shipped = torch.load(tmp_path / "shipped.pt", weights_only=True)
    assert "optimizer" not in shipped and "trainer" not in shipped
    assert shipped["config"]["data"] == DATA and shipped["metrics"]["val_miou"] == run.history[-1]["val_miou"]
    assert all(v.dtype != torch.float32 for v in shipped["state_dict"].values())
    assert (tmp_path / "shipped.pt").stat().st_size < 0.4 * run.last.stat().st_size
