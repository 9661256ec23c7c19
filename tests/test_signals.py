"""Ending `taplab segment` from outside: SIGTERM as Ctrl-C does, and a second signal does not cut the outputs short.

Each test runs the real CLI in a subprocess on a clip it encodes, paced at its frame rate (`--live`) so
that the run is still going when the signal comes; the signal is sent once a few frames are written.
"""

import json
import signal
import subprocess
import sys
import time

import pytest

from taplab.codec import encode, open_video
from tests.conftest import translation_frames


pytestmark = pytest.mark.slow  # real processes stopped by signals (README: Tests)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    """200 frames at 25 frames/s: 8 s paced, far longer than the tests wait."""
    return encode(translation_frames(200, 64, 128, 1, 0), tmp_path_factory.mktemp("long") / "long.mp4", gop=12)


def run_until(tmp_path, clip, signals, *extra):
    """Start `taplab segment --live`, wait for its 4th frame, send ``signals`` (a short pause between), and return
    the finished process and its output folder."""
    out = tmp_path / "masks"
    process = subprocess.Popen([sys.executable, "-m", "taplab.cli", "segment", str(clip), "--out", str(out), "--live",
                                *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120  # a bound on a broken run only: the frame arrives within a second normally
    while not (out / "frame_000003.png").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1].decode()
        time.sleep(0.05)
    for k, signum in enumerate(signals):
        if k:
            time.sleep(0.05)
        process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err.decode(), out


def written_frames(out):
    return json.loads((out / "frames.json").read_text())


def test_sigterm_ends_the_run_as_ctrl_c_does_keeping_the_log_and_the_overlay(tmp_path, long_clip):
    code, err, out = run_until(tmp_path, long_clip, [signal.SIGTERM], "--overlay", str(tmp_path / "overlay.mp4"))
    assert code == 143 and err.strip().splitlines()[-1] == "error: terminated" and "Traceback" not in err
    frames = written_frames(out)
    assert 4 <= len(frames) < 200 and (out / "frames.csv").exists()
    assert len(list(out.glob("frame_*.png"))) == len(frames)
    with open_video(tmp_path / "overlay.mp4") as video:
        assert sum(1 for _ in video) == len(frames)
    assert not list(tmp_path.rglob(".taplab-*"))


def test_a_second_ctrl_c_does_not_cut_the_outputs_short(tmp_path, long_clip):
    code, err, out = run_until(tmp_path, long_clip, [signal.SIGINT, signal.SIGINT, signal.SIGTERM])
    assert code == 130 and err.strip().splitlines()[-1] == "error: interrupted" and "Traceback" not in err
    frames = written_frames(out)
    assert 4 <= len(frames) < 200 and len(list(out.glob("frame_*.png"))) == len(frames)
    assert not list(tmp_path.rglob(".taplab-*"))
