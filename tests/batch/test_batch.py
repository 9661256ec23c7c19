"""Many videos into one folder (taplab.segment_many, `taplab segment A B ...`): real clips, real worker processes,
a real local Ray."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

import taplab
from taplab.cli import BATCH_FAILED
from taplab.data.synth import SynthConfig, write_clip
from taplab.errors import ModelError
from tests.batch.dying_model import DEADLY_HEIGHT

FRAMES = (9, 7, 9, 6)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of four synthetic street clips (128x256, different scenes and lengths) and a truncated one."""
    root = tmp_path_factory.mktemp("batch")
    folder = root / "videos"
    folder.mkdir()
    for k, frames in enumerate(FRAMES):
        video = write_clip(root / f"src{k}", SynthConfig(height=128, width=256, frames=frames, seed=40 + k), gop=6)
        shutil.copy(video, folder / f"clip{k}.mp4")
    (folder / "broken.mp4").write_bytes((folder / "clip0.mp4").read_bytes()[:3000])
    return folder


def outputs(folder):
    """Every file a run wrote, by name: bytes for the masks, the per-frame records without their timings."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.name == "frames.json":
            found[str(path.relative_to(folder))] = [{k: v for k, v in r.items() if k not in ("ms", "latency_ms")}
                                                    for r in json.loads(path.read_text())]
        elif path.suffix == ".png":
            found[str(path.relative_to(folder))] = path.read_bytes()
    return found


@pytest.fixture(scope="module")
def single(clips, tmp_path_factory):
    """The batch in this process (one worker): the reference the other ways of running it must equal."""
    out = tmp_path_factory.mktemp("single") / "masks"
    return out, taplab.segment_many(clips, out, workers=1)


def test_good_clips_have_complete_outputs_and_the_broken_one_is_named(clips, single):
    out, batch = single
    assert [(r.name, r.status) for r in batch.videos] == [("broken", "failed"), ("clip0", "done"), ("clip1", "done"),
                                                          ("clip2", "done"), ("clip3", "done")]
    assert batch.videos[0].error.startswith("not a video file, or truncated")
    for k, frames in enumerate(FRAMES):
        folder = out / f"clip{k}"
        assert sorted(p.name for p in folder.glob("frame_*.png")) == [f"frame_{i:06d}.png" for i in range(frames)]
        record = json.loads((folder / "summary.json").read_text())
        assert record["complete"] and record["summary"]["frames"] == frames and record["source"] == str(clips / f"clip{k}.mp4")
    assert not (out / "broken").exists()
    written = json.loads((out / "summary.json").read_text())
    assert written["counts"] == {"done": 4, "skipped": 0, "failed": 1, "interrupted": 0} and written["frames"] == sum(FRAMES)


def test_the_command_line_prints_the_table_and_exits_3_when_a_video_failed(clips, tmp_path):
    run = subprocess.run([sys.executable, "-m", "taplab.cli", "segment", str(clips / "clip1.mp4"),
                          str(clips / "broken.mp4"), "--out", str(tmp_path / "m"), "--workers", "1"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == BATCH_FAILED == 3, run.stderr
    table = run.stdout.splitlines()
    assert table[1].split()[:2] == ["clip1", str(FRAMES[1])] and table[1].endswith("done")
    assert table[2].startswith("broken") and "failed: not a video file" in table[2]
    assert "Traceback" not in run.stderr and "[2/2]" in run.stderr  # one progress line per video off a terminal


def test_a_rerun_skips_complete_videos_and_redoes_interrupted_ones(clips, single, tmp_path):
    out = tmp_path / "masks"
    shutil.copytree(single[0], out)
    (out / "clip2" / "summary.json").unlink()  # as a run killed before its end leaves it
    (out / "clip2" / "frame_000004.png").unlink()
    (out / "clip2" / ".taplab-half.png").write_bytes(b"half")
    before = {p: p.stat().st_mtime_ns for p in (out / "clip1").glob("frame_*.png")}
    batch = taplab.segment_many(clips, out, workers=1)
    assert [r.status for r in batch.videos] == ["failed", "skipped", "skipped", "done", "skipped"]
    assert batch.videos[1].summary["frames"] == FRAMES[0]  # a skipped video reports its earlier run
    assert {p: p.stat().st_mtime_ns for p in (out / "clip1").glob("frame_*.png")} == before
    assert outputs(out / "clip2") == outputs(single[0] / "clip2") and not (out / "clip2" / ".taplab-half.png").exists()
    again = taplab.segment_many(clips, out, workers=1, overwrite=True)
    assert [r.status for r in again.videos] == ["failed", "done", "done", "done", "done"]


def test_other_settings_are_refused_without_overwrite(clips, single, tmp_path):
    out = tmp_path / "masks"
    shutil.copytree(single[0] / "clip0", out / "clip0")
    batch = taplab.segment_many([clips / "clip0.mp4", clips / "clip1.mp4"], out, rgc=False, workers=1)
    assert [r.status for r in batch.videos] == ["failed", "done"]
    assert "made with other settings; pass --overwrite" in batch.videos[0].error
    assert outputs(out / "clip0") == outputs(single[0] / "clip0")  # left as it was


def test_two_worker_processes_give_the_single_process_outputs_byte_for_byte(clips, single, tmp_path):
    batch = taplab.segment_many(clips, tmp_path / "masks", workers=2)
    assert (batch.executor, batch.workers, batch.threads) == ("processes", 2, 1)
    assert [r.status for r in batch.videos] == [r.status for r in single[1].videos]
    found, reference = outputs(tmp_path / "masks"), outputs(single[0])
    assert found == reference and len([k for k in reference if k.endswith(".png")]) == sum(FRAMES)


@pytest.mark.slow
def test_ray_gives_the_single_process_outputs_byte_for_byte(clips, single, tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        batch = taplab.segment_many(clips, tmp_path / "masks", ray=True)
    finally:
        ray.shutdown()
    assert (batch.executor, batch.workers, batch.threads) == ("ray", 2, 1)
    assert [r.status for r in batch.videos] == [r.status for r in single[1].videos]
    assert outputs(tmp_path / "masks") == outputs(single[0])


def test_a_model_that_cannot_load_ends_the_batch_with_its_error_and_leaves_nothing(clips, tmp_path):
    with pytest.raises(ModelError, match="no-such-model"):
        taplab.segment_many(clips, tmp_path / "masks", model="no-such-model.pt", workers=2)
    assert not (tmp_path / "masks").exists()


def deadly_clips(folder, n):
    """Clips 96 pixels high, on which the fake model of tests/batch/dying_model.py ends its worker process."""
    from taplab.codec import encode
    from tests.conftest import translation_frames

    frames = translation_frames(6, DEADLY_HEIGHT, 128, 1, 0)
    return [encode(frames, folder / f"deadly{k}.mp4", gop=6) for k in range(n)]


def test_a_worker_that_dies_fails_its_video_and_the_others_go_on(clips, tmp_path):
    """Two workers: the first, a thread of this process, takes the first video; the second, a process, the next,
    the deadly one, and dies on it. That video fails, and the slot gets a new process for the ones after."""
    videos = [clips / "clip0.mp4", *deadly_clips(tmp_path, 1), clips / "clip1.mp4", clips / "clip2.mp4"]
    batch = taplab.segment_many(videos, tmp_path / "masks", model="tests.batch.dying_model:make", engine="torch",
                                workers=2)
    assert [r.status for r in batch.videos] == ["done", "failed", "done", "done"]
    assert batch.videos[1].error.startswith("the worker running it died (its process ended")
    assert [r.frames for r in batch.videos] == [FRAMES[0], 0, FRAMES[1], FRAMES[2]]


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_a_rerun_finishes_the_batch(clips, tmp_path):
    from taplab.codec import encode
    from tests.conftest import translation_frames

    long_clip = encode(translation_frames(400, 128, 256, 1, 0), tmp_path / "long.mp4", gop=12)
    out = tmp_path / "masks"
    command = [sys.executable, "-m", "taplab.cli", "segment", str(long_clip), str(clips / "clip0.mp4"), "--out",
               str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 300  # a bound on a broken run only
    while not (out / "long" / "frame_000010.png").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1].decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and err.decode().strip().endswith("error: interrupted")
    written = json.loads((out / "summary.json").read_text())
    assert written["interrupted"] and written["videos"][0]["status"] == "interrupted"
    assert not (out / "long" / "summary.json").exists()
    batch = taplab.segment_many([long_clip, clips / "clip0.mp4"], out, workers=1, limit=None)
    assert batch.videos[0].status == "done" and batch.videos[0].frames == 400
    assert len(list((out / "long").glob("frame_*.png"))) == 400


@pytest.mark.parametrize("args, message", [
    (["{clip}", "--workers", "2"], "error: --workers is for several videos; for one video, --threads sets"),
    (["{clip}", "--ray"], "error: --ray is for several videos"),
    (["{folder}", "--live"], "error: --live is for one video or stream, not a batch"),
    (["{folder}", "--timeout", "3"], "error: --timeout is for one video or stream, not a batch"),
    (["{folder}", "-"], "error: - (standard input) is one stream: segment it on its own, not in a batch"),
    (["{folder}", "--overlay", "sub/o.mp4"], "error: in a batch, overlay is a file name written in each video's"),
    (["{empty}"], "error: folder {empty} holds no videos"),
])
def test_command_lines_that_cannot_run_fail_in_one_line_before_anything_is_written(clips, tmp_path, args, message,
                                                                                  capsys):
    from taplab.cli import main

    (tmp_path / "empty").mkdir()
    names = {"clip": clips / "clip0.mp4", "folder": clips, "empty": tmp_path / "empty"}
    with pytest.raises(SystemExit) as exit_:
        main(["segment", *(a.format(**names) for a in args), "--out", str(tmp_path / "masks")])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().startswith(message.format(**names))
    assert not (tmp_path / "masks").exists()


def test_ray_that_is_not_installed_says_how_to_install_it(clips, tmp_path, monkeypatch):
    """``sys.modules["ray"] = None`` makes ``import ray`` fail as where the extra is not installed."""
    from taplab.errors import ConfigError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"--ray needs Ray, an optional extra: pip install -e '\.\[ray\]'"):
        taplab.segment_many(clips, tmp_path / "masks", ray=True)
    assert not (tmp_path / "masks").exists()
