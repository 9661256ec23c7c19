"""`taplab bench`: a small sweep end to end on real encoded synthetic clips, and its bad input."""

import csv
import json

import pytest

from taplab.bench import BenchConfig, run_sweep
from taplab.cli import main
from taplab.errors import ConfigError

DATA = "synth:clips=1,frames=9,size=128x256"


def test_a_two_point_sweep_writes_its_csv_table_plots_and_json(tmp_path, capsys):
    out = tmp_path / "bench"
    main(["bench", "--data", DATA, "--gop", "4", "--modules", "per-frame,FFW", "--out", str(out)])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["gop"], r["label"]) for r in rows] == [("4", "per-frame"), ("4", "FFW")]
    per_frame, ffw = rows
    assert per_frame["fidelity"] == "100.0" and per_frame["key_share"] == "100.0"
    assert float(ffw["key_share"]) == pytest.approx(100 * 3 / 9, abs=0.1)  # I-frames 0, 4, 8
    assert 0 < float(ffw["fidelity"]) < 100 and 0 < float(ffw["miou"]) <= 100
    # TC where the ground-truth flow holds leaves out the pixels whose true label changes: above plain TC, and the
    # truth's own TC (the scale TC is read on) below 100
    assert float(ffw["tc"]) < float(ffw["tc_held"]) <= 100
    # speeds are reported, not compared: which is faster is the benchmarks' question (a loaded machine reverses it)
    assert float(ffw["fps"]) > 0 and float(per_frame["fps"]) > 0 and float(ffw["ms_warp"]) > 0
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["gops"] == [4] and record["versions"]["torch"] and len(record["records"]) == 2
    assert set(record["records"][1]["miou_by_distance"]) == {"0", "1", "2", "3"}
    truth = record["records"][0]["truth_tc"]
    assert 50 < truth < 100 and record["records"][1]["truth_tc"] == truth
    assert f"The ground truth's own TC: {truth}%" in (out / "results.md").read_text()
    for name in ("accuracy_vs_speed.png", "accuracy_by_distance.png", "stages.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 4 | 128x256 | FFW |" in (out / "results.md").read_text() and "| 4 | 128x256 | FFW |" in capsys.readouterr().out


def test_sweeps_are_deterministic_in_accuracy_and_expand_every_combination():
    config = BenchConfig(data=DATA, gops=(4,), modules=("per-frame", "FFW+RGC"), motion=("codec",),
                         sweep={"rgc_alpha": [0.5, 1.0]})
    assert [p.label for p in config.points()] == ["per-frame", "FFW+RGC, rgc_alpha=0.5", "FFW+RGC, rgc_alpha=1.0"]
    first, second = run_sweep(config), run_sweep(config)
    keys = ("miou", "fidelity", "tc", "change_key", "change_warped", "key_jump", "cl", "key_share")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]
    assert first[1]["miou"] != first[2]["miou"]  # alpha changes the outcome
    per_frame, warped = first[0], first[1]
    assert per_frame["change_warped"] is None and per_frame["key_jump"] is None and per_frame["change_key"] > 0
    assert 0 < warped["change_warped"] < 100 and 0 < warped["change_key"] < 100
    assert warped["key_jump"] == pytest.approx(warped["change_key"] / warped["change_warped"], rel=0.01)


@pytest.mark.parametrize("args, message", [
    (["--modules", "FFW+magic"], "unknown module combination 'FFW+magic'"),
    (["--gop", "0"], "GOPs must be integers >= 1"),
    (["--set", "rgc_alpha=2"], "rgc_alpha must be in 0..1"),
    (["--set", "nonsense=1"], "unknown runtime option"),
    (["--motion", "raft"], "motion_source must be one of"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--data", DATA, "--out", str(tmp_path / "b"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()


def test_bench_config_rejects_a_video_too_short(tmp_path):
    with pytest.raises(ConfigError, match="frames must be >= 2"):
        BenchConfig(data="x.mp4", frames=1)


def test_interpolation_baseline_blends_the_key_frames_logits(translation_clip):
    """ITP on the real encoded translation clip (GOP 12) with a stand-in model whose 'logits' are the
    frame's pooled RGB (said so here: it isolates the interpolation)."""
    import numpy as np
    import torch

    from taplab.bench.baselines import interpolate_keys
    from taplab.nets.loader import load_model
    from taplab.ops.labels import upsample_labels

    model = load_model(torch.nn.AvgPool2d(4))
    results = list(interpolate_keys(model, translation_clip))
    assert [r.index for r in results] == list(range(24))
    assert [r.kind for r in results] == (["key-I"] + ["interp"] * 11) * 2
    per_frame = {r.index: r.logits for r in __import__("taplab").Segmenter(model, ffw=False).run(translation_clip, logits=True)}
    for t, r in enumerate(results):
        if t < 12:  # between the key frames 0 and 12: (1 - t/12) L0 + (t/12) L12
            expected = per_frame[0] * (1 - t / 12) + per_frame[12] * (t / 12)
        else:  # after the last key frame: held
            expected = per_frame[12]
        np.testing.assert_array_equal(r.labels, upsample_labels(expected, r.labels.shape))


def test_cityscapes_protocol_scores_the_annotated_frame_at_the_asked_distance(tmp_path):
    """A Cityscapes-format folder made of real encoded synthetic frames with labels on frame 19."""
    import cv2

    from taplab.data.synth import SynthConfig, generate

    folder = tmp_path / "seq" / "leftImg8bit_sequence" / "val" / "town"
    folder.mkdir(parents=True)
    frames = list(generate(SynthConfig(height=64, width=128, frames=24, seed=5)))
    for f in frames:
        cv2.imwrite(str(folder / f"town_000007_{f.index:06d}_leftImg8bit.png"), cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
    gt = tmp_path / "seq" / "gtFine" / "val" / "town"
    gt.mkdir(parents=True)
    cv2.imwrite(str(gt / "town_000007_000019_gtFine_labelTrainIds.png"), frames[19].labels)
    config = BenchConfig(data=str(tmp_path / "seq"), gops=(6,), modules=("per-frame", "FFW"), key_distance=4)
    per_frame, ffw = run_sweep(config)
    assert ffw["frames"] == 6 and ffw["key_share"] == pytest.approx(100 / 6, abs=0.1)  # frames 15..20
    assert set(ffw["miou_by_distance"]) == {4}  # only the annotated frame, 4 after the key frame
    assert per_frame["miou"] is not None and ffw["miou"] is not None and ffw["fidelity"] < 100
    with pytest.raises(ConfigError, match="does not fit GOP"):
        run_sweep(BenchConfig(data=str(tmp_path / "seq"), gops=(4,), modules=("FFW",), key_distance=4))


def test_resolution_and_model_sweeps():
    config = BenchConfig(data=DATA, gops=(4,), modules=("FFW",), scales=(0.5, 1), models=("default", "bl2-synth"))
    records = run_sweep(config)
    assert [(r["size"], r["model"]) for r in records] == [("64x128", "default"), ("64x128", "bl2-synth"),
                                                           ("128x256", "default"), ("128x256", "bl2-synth")]
    assert records[0]["label"] == "FFW, x0.5" and records[1]["label"] == "FFW, bl2-synth, x0.5"
    assert records[2]["miou"] == records[3]["miou"]  # "default" is bl2-synth: the same model, the same figures
    assert records[0]["miou"] != records[2]["miou"]
