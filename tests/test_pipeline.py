"""taplab.segment (reader -> runtime -> sinks) and the command line generated from RuntimeConfig."""

import json

import numpy as np
import pytest

import taplab
from taplab.cli import main
from taplab.data.synth import SynthConfig, write_clip
from taplab.runtime import RuntimeConfig, Segmenter


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A synthetic street clip, 128x256, 9 frames, MPEG-4 GOP 9 (one I-frame, then P-frames)."""
    return write_clip(tmp_path_factory.mktemp("clip"), SynthConfig(height=128, width=256, frames=9, seed=5), gop=9)


def test_segment_from_python_writes_what_the_cli_writes(clip, tmp_path):
    summary = taplab.segment(clip, tmp_path / "api", formats=("color",), overlay=tmp_path / "o.mp4", rgc=False)
    main(["segment", str(clip), "--out", str(tmp_path / "cli"), "--format", "color", "--no-rgc"])
    api = sorted(p.name for p in (tmp_path / "api").rglob("*.png"))
    assert api == sorted(p.name for p in (tmp_path / "cli").rglob("*.png")) and len(api) == 9
    assert not list((tmp_path / "api").glob("frame_*.png"))  # --format color writes color/ only
    kinds = [r["kind"] for r in json.loads((tmp_path / "api" / "frames.json").read_text())]
    assert kinds == [r["kind"] for r in json.loads((tmp_path / "cli" / "frames.json").read_text())]
    assert summary.frames == 9 and (tmp_path / "o.mp4").is_file() and f"overlay video: {tmp_path / 'o.mp4'}" in summary.format()


def test_every_runtime_field_is_a_segment_option():
    import click

    from taplab.cli import segment

    with click.Context(segment) as ctx:
        names = {p.name for p in segment.get_params(ctx)}
    assert set(RuntimeConfig.field_names()) <= names


def test_a_rate_means_rate_mode_in_the_api_as_on_the_command_line(clip, tmp_path):
    """With a threshold no frame reaches, absolute mode selects none; a rate given selects by rate, both ways."""
    model = "default"
    api = [r.kind for r in Segmenter(model, rgc=False, fusion=False, rgfs_threshold=255, rgfs_rate=0.4).run(clip)]
    main(["segment", str(clip), "--out", str(tmp_path / "m"), "--no-rgc", "--no-fusion", "--rgfs-threshold", "255",
          "--rgfs-rate", "0.4"])
    cli = [r["kind"] for r in json.loads((tmp_path / "m" / "frames.json").read_text())]
    absolute = [r.kind for r in Segmenter(model, rgc=False, fusion=False, rgfs_threshold=255).run(clip)]
    assert api == cli and api.count("key-RGFS") >= 2 and absolute.count("key-RGFS") == 0


def test_config_file_values_hold_where_no_flag_overrides_them(clip, tmp_path):
    config = tmp_path / "runtime.json"
    config.write_text(json.dumps({"rgc": False, "fusion": False, "rgfs": False, "labels": "nearest"}))
    main(["segment", str(clip), "--out", str(tmp_path / "m"), "--config", str(config), "--rgfs", "--limit", "3"])
    log = json.loads((tmp_path / "m" / "frames.json").read_text())
    assert all("RGC" not in r["kind"] and "fused" not in r["kind"] for r in log)  # RGC and fusion stay off
    assert all(r["residual_score"] is not None for r in log[1:])  # RGFS, back on, scores the P-frames


@pytest.mark.parametrize("args, message", [
    (["bench", "--out", "B", "--set", "rgc_alpha=0.5,high"], "rgc_alpha must be a number, got 'high'"),
    (["bench", "--out", "B", "--set", "alpha=0.5"], "unknown runtime option 'alpha'"),
    (["bench", "--out", "B", "--set", "rgc_alpha"], "--set: expected FIELD=V1,V2"),
    (["segment", "VIDEO", "--out", "B", "--source-option", "udp"], "--source-option: expected KEY=VALUE"),
])
def test_option_text_errors_are_one_line(clip, tmp_path, args, message, capsys):
    args = [str(clip) if a == "VIDEO" else str(tmp_path / "b") if a == "B" else a for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err and not (tmp_path / "b").exists()


def test_progress_on_a_file_shows_an_eta(clip, tmp_path, capsys):
    from taplab.cli import _SegmentProgress
    from taplab.io import RunSummary

    progress, summary = _SegmentProgress(), RunSummary(total=100, seconds=2.0)
    for _ in range(50):
        summary.frames += 1
        progress(None, summary)
    progress.close()
    assert "segmenting: 50/100 frames  25.0 frames/s" in capsys.readouterr().err and "ETA 2 s" in progress.text


def test_predict_takes_an_image_file(tmp_path):
    import cv2

    model = taplab.load_model("default", device="auto")
    image = np.zeros((64, 128, 3), np.uint8)
    image[32:] = (128, 64, 128)
    cv2.imwrite(str(tmp_path / "x.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(model.predict(str(tmp_path / "x.png")), model.predict(image))


@pytest.mark.parametrize("args, message", [
    (["--motion-source", "truth"], "'truth' is not one of"),  # needs run(truth_flow=...): the API only
    (["--overlay", "NOWHERE/o.mp4"], "overlay video folder does not exist"),
    (["--format", "color", "--config", "CONFIG"], "rgc_alpha must be a number, got '0.5'"),
    (["--rgc-size", "1.5"], "rgc_size must be an integer"),
])
def test_bad_options_fail_before_the_output_folder_exists(clip, tmp_path, args, message, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"rgc_alpha": "0.5"}))
    args = [str(tmp_path / "config.json") if a == "CONFIG" else a.replace("NOWHERE", str(tmp_path / "nowhere"))
            for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(clip), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_run_that_fails_before_its_first_frame_leaves_no_trace(tmp_path):
    """A file that opens but holds no decodable frame: the output folder is removed again, so a second try
    is not refused as 'not empty'."""
    from taplab.errors import DecodeError

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x01\xb3" + bytes(4000))  # an MPEG video start code, then nothing decodable
    with pytest.raises((DecodeError, taplab.VideoOpenError)):
        taplab.segment(broken, tmp_path / "out", formats=("labels", "color"))
    assert not (tmp_path / "out").exists()


def test_optional_fields_can_be_unset_over_a_config_file(clip, tmp_path):
    config = tmp_path / "runtime.json"
    config.write_text(json.dumps({"rgc_size": 32, "fusion": False, "rgfs": False}))
    regions = {}
    for name, extra in (("file", []), ("unset", ["--rgc-size", "none"])):
        main(["segment", str(clip), "--out", str(tmp_path / name), "--config", str(config), *extra])
        log = json.loads((tmp_path / name / "frames.json").read_text())
        regions[name] = {r["region"][2] for r in log if r["region"]}
    assert regions == {"file": {32}, "unset": {64}}  # the default: half the frame's height


def test_the_lists_bench_help_shows_without_torch_are_the_librarys():
    import re

    from taplab.bench.sweep import BASELINES, MODULES
    from taplab.cli import ENCODERS, MODULES_NAMES, bench
    from taplab.codec import CODECS

    assert MODULES_NAMES == (*MODULES, *BASELINES) and ENCODERS == tuple(CODECS)
    motion = next(p for p in bench.params if p.name == "motion").help
    listed = re.findall(r"[a-z][a-z-]+", motion.split(":", 1)[1].split("[")[0])
    assert tuple(listed) == RuntimeConfig.describe("motion_source").choices


def test_the_demo_fails_before_writing_anything_on_a_bad_device(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--out", str(tmp_path / "d"), "--device", "cuda", "--frames", "4", "--size", "128x256"])
    assert exit_.value.code == 2 and "torch has no CUDA" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_a_codec_without_vectors_is_noted_in_the_summary_the_log_and_probe(clip, tmp_path):
    from taplab.codec import encode, probe
    from tests.conftest import translation_frames

    video = encode(translation_frames(8, 128, 256, 3, -2), tmp_path / "v.mp4", gop=8, codec="vp9")
    summary = taplab.segment(video, tmp_path / "m", rgc=False, rgfs=False, fusion=False)
    text = summary.format()
    assert "note: vp9 exports no motion vectors: taplab estimated block vectors with dis-ultrafast" in text
    assert "motion: optical flow (dis-ultrafast) on 7 frames" in text
    log = json.loads((tmp_path / "m" / "frames.json").read_text())
    assert [r["motion"] for r in log] == [None] + ["dis-ultrafast"] * 7
    result = probe(video)
    assert not result.exports_vectors and "vp9 exports no motion vectors" in result.format()
    assert "note:" not in taplab.segment(clip, tmp_path / "n", rgc=False, limit=3).format()  # MPEG-4: vectors


def test_hevc_from_the_command_line_and_the_key_interval_unset(clip, tmp_path, capsys):
    """taplab encode --codec hevc, then segment it with and without the bound on drift."""
    main(["encode", str(clip), str(tmp_path / "h.mp4"), "--codec", "hevc", "--gop", "9"])
    for name, extra in (("bound", ["--key-interval", "4"]), ("none", ["--key-interval", "none"])):
        main(["segment", str(tmp_path / "h.mp4"), "--out", str(tmp_path / name), "--no-rgfs", "--no-rgc", "--no-fusion",
              *extra])
    kinds = {name: [r["kind"] for r in json.loads((tmp_path / name / "frames.json").read_text())]
             for name in ("bound", "none")}
    assert kinds["bound"] == ["key-I", "warp", "warp", "warp", "key-interval", "warp", "warp", "warp", "key-interval"]
    assert kinds["none"] == ["key-I"] + ["warp"] * 8
    out = capsys.readouterr().out
    assert "key frames 33%" in out and "key frames 11%" in out  # key-interval frames count as key frames


def test_a_gop_sweep_runs_without_the_key_interval_unless_it_is_swept():
    from taplab.bench import BenchConfig

    plain = BenchConfig(gops=(24,), modules=("FFW",)).points()
    swept = BenchConfig(gops=(24,), modules=("FFW",), sweep={"key_interval": [12]}).points()
    assert [p.options["key_interval"] for p in plain] == [None] and [p.options["key_interval"] for p in swept] == [12]


def test_a_truncated_file_says_how_many_of_its_indexed_frames_were_lost(translation_clip, tmp_path):
    import warnings

    import av

    from taplab.pipeline import lost_frames, segment

    fast = tmp_path / "fast.mp4"  # the index first (faststart), so that cutting the file keeps it
    with av.open(str(translation_clip)) as src, av.open(str(fast), "w", options={"movflags": "+faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: int(fast.stat().st_size * 0.6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the decoder's complaints about the missing data
        summary = segment(cut, tmp_path / "out", rgc=False)
    assert 0 < summary.frames < 24
    assert f"{24 - summary.frames} of the 24 frames the file's index lists could not be decoded" in summary.format()
    assert [lost_frames(24, 10, None, False), lost_frames(24, 10, 10, False), lost_frames(None, 10, None, False),
            lost_frames(24, 24, None, False), lost_frames(24, 5, None, True)] == [14, 0, 0, 0, 0]
