"""The runtime on real encoded synthetic clips with the shipped model: kinds, accuracy, modules, outputs."""

import json
import threading

import cv2
import numpy as np
import pytest

from taplab.cli import main
from taplab.codec import open_video
from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ConfigError
from taplab.metrics import ConfusionMatrix
from taplab.nets.loader import load_model
from taplab.pipeline import segment_to_folder
from taplab.runtime import RuntimeConfig, Segmenter


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A labelled synthetic street clip, 128x256, 8 frames, MPEG-4 GOP 4."""
    out = tmp_path_factory.mktemp("synth")
    video = write_clip(out, SynthConfig(height=128, width=256, frames=8, seed=11, ego_speed_mps=10), gop=4, name="c")
    labels = [cv2.imread(str(out / "gtFine" / "c" / f"c_{t:06d}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
              for t in range(8)]
    return video, labels


def stop_after(frames: int):
    """A progress callback that interrupts a run after so many frames, as Ctrl-C would."""

    def progress(result, summary):
        if summary.frames == frames:
            raise KeyboardInterrupt

    return progress


@pytest.fixture(scope="module")
def model():
    return load_model("default")


def test_per_frame_configuration_equals_the_model_on_every_frame(clip, model):
    video, _ = clip
    results = list(Segmenter(model, ffw=False, labels="exact").run(video))  # predict() upsamples all logits
    with open_video(video) as v:
        expected = [model.predict(f.image) for f in v]
    assert [r.kind for r in results] == ["key-I", "key", "key", "key"] * 2
    for r, e in zip(results, expected):
        np.testing.assert_array_equal(r.labels, e)


def test_ffw_warps_p_frames_and_stays_close_to_per_frame(clip, model):
    video, truth = clip
    per_frame = [r.labels for r in Segmenter(model, ffw=False).run(video)]
    results = list(Segmenter(model, rgc=False, rgfs=False, fusion=False).run(video, logits=True))
    assert [r.kind for r in results] == ["key-I", "warp", "warp", "warp"] * 2
    assert all(r.labels.shape == (128, 256) and r.labels.dtype == np.uint8 for r in results)
    assert results[1].logits.shape == (19, 32, 64)
    agree = np.mean([(r.labels == p).mean() for r, p in zip(results, per_frame)])
    assert agree > 0.85
    cm_warp, cm_frame = ConfusionMatrix(19), ConfusionMatrix(19)
    for r, p, t in zip(results, per_frame, truth):
        cm_warp.update(r.labels, t)
        cm_frame.update(p, t)
    assert cm_warp.pixel_accuracy() > cm_frame.pixel_accuracy() - 0.08
    assert all(r.timings["warp"] > 0 for r in results if r.kind == "warp")


def test_accumulated_motion_beats_chained_nearest_warps(clip, model):
    video, _ = clip
    per_frame = [r.labels for r in Segmenter(model, ffw=False).run(video)]

    def agreement(**options):
        results = Segmenter(model, rgc=False, rgfs=False, fusion=False, **options).run(video)
        return np.mean([(r.labels == p).mean() for r, p in zip(results, per_frame) if r.kind == "warp"])

    accumulated = agreement(propagation="accumulate", warp_sampling="nearest")
    chained = agreement(propagation="chain", warp_sampling="nearest")
    assert accumulated > chained


def test_rgc_corrects_the_region_with_residual(clip, model):
    video, _ = clip
    results = list(Segmenter(model, rgfs=False, fusion=False, rgc_alpha=1.0, propagation="chain").run(video, logits=True))
    corrected = [r for r in results if r.kind == "warp+RGC"]
    assert corrected and all(r.region is not None for r in corrected)
    r = corrected[0]
    # with alpha = 1 the region holds exactly the CNN's output on the crop
    with open_video(video) as v:
        image = [f.image for f in v][r.index]
    ys, xs = r.region.slices()
    crop_logits = model.logits(__import__("taplab").data.transforms.to_tensor(np.ascontiguousarray(image[ys, xs])))[0]
    s = model.stride
    inside = r.logits[:, r.region.y // s:(r.region.y + r.region.height) // s, r.region.x // s:(r.region.x + r.region.width) // s]
    np.testing.assert_allclose(inside.numpy(), crop_logits.numpy(), atol=1e-4)


def test_rgfs_threshold_zero_makes_every_p_frame_a_key_frame(clip, model):
    video, _ = clip
    results = list(Segmenter(model, rgc=False, rgfs_threshold=0.0).run(video))
    assert [r.kind for r in results] == ["key-I", "key-RGFS", "key-RGFS", "key-RGFS"] * 2
    assert all(r.residual_score > 0 for r in results if r.kind == "key-RGFS")


def test_b_frames_are_key_frames_where_asked(tmp_path, model):
    video = write_clip(tmp_path, SynthConfig(height=64, width=128, frames=7, seed=2), gop=7, codec="h264", bframes=1)
    results = list(Segmenter(model, b_frames="key").run(video))
    kinds = {r.pict_type: set() for r in results}
    for r in results:
        kinds[r.pict_type].add(r.kind)
    assert kinds["B"] == {"key"} and kinds["I"] == {"key-I"}
    assert kinds["P"] <= {"fused", "fused+RGC", "key-RGFS"}  # the default model has a correction network


def test_closing_the_run_early_stops_the_decoding_thread(clip, model):
    video, _ = clip
    before = threading.active_count()
    run = Segmenter(model).run(video)
    next(run)
    run.close()
    assert threading.active_count() == before


def test_config_validation():
    with pytest.raises(ConfigError, match="rgc_threshold"):
        RuntimeConfig(rgc_threshold=300)
    with pytest.raises(ConfigError, match="warp_sampling must be one of"):
        RuntimeConfig(warp_sampling="cubic")
    with pytest.raises(ConfigError, match="unknown runtime option"):
        RuntimeConfig.from_dict({"thr": 3})
    with pytest.raises(ConfigError, match="rgfs_rate"):
        Segmenter("default", rgfs_rate=2.0)


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_segment_cli_writes_one_mask_per_frame(tmp_path, codec, capsys):
    video = write_clip(tmp_path / "clip", SynthConfig(height=64, width=128, frames=5, seed=4), gop=5, codec=codec)
    out = tmp_path / "masks"
    main(["segment", str(video), "--out", str(out), "--format", "labels", "--format", "color"])
    masks = sorted(out.glob("frame_*.png"))
    assert [m.name for m in masks] == [f"frame_{t:06d}.png" for t in range(5)]
    for m in masks:
        labels = cv2.imread(str(m), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (64, 128) and labels.dtype == np.uint8 and labels.max() < 19
    assert len(list((out / "color").glob("*.png"))) == 5
    log = json.loads((out / "frames.json").read_text())
    assert [r["kind"] for r in log][0] == "key-I" and len(log) == 5
    assert all(r["ms"]["write"] > 0 and r["ms"]["labels"] > 0 for r in log)  # every stage timed, writing too
    assert "5 frames" in capsys.readouterr().out


def test_interrupted_run_leaves_complete_files_only(clip, model, tmp_path):
    video, _ = clip
    out = tmp_path / "masks"
    with pytest.raises(KeyboardInterrupt):
        segment_to_folder(Segmenter(model), video, out, ("labels", "npz"), progress=stop_after(3))
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "frame_000000.npz", "frame_000000.png", "frame_000001.npz", "frame_000001.png",
        "frame_000002.npz", "frame_000002.png", "frames.csv", "frames.json"]
    assert len(json.loads((out / "frames.json").read_text())) == 3
    assert np.load(out / "npz" / "frame_000002.npz")["labels"].shape == (128, 256)


@pytest.mark.parametrize("args, message", [
    (["segment", "/no/such.mp4", "--out", "OUT"], "no such file"),
    (["segment", "VIDEO", "--out", "OUT", "--rgc-alpha", "3"], "rgc_alpha must be in 0..1"),
    (["segment", "VIDEO", "--out", "OUT", "--model", "nowhere.pt"], "no model 'nowhere.pt'"),
])
def test_segment_cli_errors(clip, tmp_path, args, message, capsys):
    video, _ = clip
    args = [str(video) if a == "VIDEO" else str(tmp_path / "out") if a == "OUT" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing half-made


def test_segment_cli_refuses_a_non_empty_folder(clip, tmp_path, capsys):
    video, _ = clip
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(SystemExit):
        main(["segment", str(video), "--out", str(out), "--limit", "2"])
    assert "not empty" in capsys.readouterr().err
    main(["segment", str(video), "--out", str(out), "--limit", "2", "--overwrite"])
    assert (out / "mine.txt").read_text() == "keep" and len(list(out.glob("frame_*.png"))) == 2


def test_overlay_video_and_csv_log(clip, model, tmp_path):
    video, _ = clip
    out, overlay = tmp_path / "masks", tmp_path / "overlay.mp4"
    segment_to_folder(Segmenter(model), video, out, overlay=str(overlay), side_by_side=True)
    with open_video(overlay) as v:
        frames = [f.image for f in v]
    assert len(frames) == 8 and frames[0].shape == (128, 512, 3)  # frame | mask
    with open_video(video) as v:
        source = [f.image for f in v]
    assert np.abs(frames[3][:, :256].astype(int) - source[3]).mean() < 8  # the left half is the frame
    rows = (out / "frames.csv").read_text().splitlines()
    assert rows[0].startswith("index,pict_type,kind,residual_score") and len(rows) == 9
    assert rows[1].split(",")[:3] == ["0", "I", "key-I"]


def test_interrupted_run_keeps_the_overlay_of_the_frames_done(clip, model, tmp_path):
    video, _ = clip
    overlay = tmp_path / "overlay.mp4"
    with pytest.raises(KeyboardInterrupt):
        segment_to_folder(Segmenter(model), video, tmp_path / "masks", overlay=str(overlay), progress=stop_after(2))
    with open_video(overlay) as v:  # once discarded: the run's log kept its frames, its video did not
        assert sum(1 for _ in v) == 2
    assert len(json.loads((tmp_path / "masks" / "frames.json").read_text())) == 2
    assert not list(tmp_path.glob(".taplab-*"))


def test_b_frames_warp_from_their_anchor_not_from_the_previous_b_frame(tmp_path, model):
    from taplab.ops.warp import motion_to_grid, warp

    video = write_clip(tmp_path, SynthConfig(height=64, width=128, frames=9, seed=2), gop=9, codec="h264", bframes=2)
    seg = Segmenter(model, b_frames="past", propagation="chain", rgc=False, rgfs=False, fusion=False)
    results = list(seg.run(video, logits=True))
    with open_video(video) as v:
        frames = list(v)
    anchor = None
    checked = 0
    for r, f in zip(results, frames):
        if r.pict_type == "B" and r.kind == "warp" and anchor is not None:
            m = f.motion
            assert m.reference == anchor.index
            flow = motion_to_grid(m.vectors, m.valid, m.block, tuple(anchor.logits.shape[1:]), (model.stride, model.stride))
            expected, _ = warp(anchor.logits, flow, "bilinear")
            np.testing.assert_allclose(r.logits.numpy(), expected.numpy(), atol=1e-5)
            checked += 1
        if r.pict_type != "B":
            anchor = r
    assert checked >= 2  # at least one B-frame that follows another B-frame
