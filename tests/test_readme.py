"""The README's examples run as written and do what they say: `taplab demo`, then its Python blocks on the demo's clip."""

import re
from pathlib import Path

import numpy as np
import pytest

from taplab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def test_the_setup_commands_are_install_then_the_demo():
    install, demo = blocks("bash")[0].strip().splitlines()
    assert "pip install torch==2.13.0" in install and 'pip install -e ".[test,ray]"' in install
    assert 'pip install -q -e ".[test,ray]"' in (README.parent / ".ci" / "run").read_text()  # CI installs the same
    assert demo == "taplab demo --out demo/" and "../shared" not in blocks("bash")[0]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    """What `taplab demo --out demo/` makes, smaller (the README's command with fewer, smaller frames)."""
    cwd = tmp_path_factory.mktemp("readme")
    main(["demo", "--out", str(cwd / "demo"), "--frames", "14", "--size", "128x256"])
    return cwd


def test_the_demo_writes_what_the_readme_says(demo_folder, capsys):
    demo = demo_folder / "demo"
    assert (demo / "clip" / "video" / "demo.mp4").is_file() and (demo / "overlay.mp4").is_file()
    assert len(list((demo / "masks").glob("frame_*.png"))) == 14 == len(list((demo / "masks" / "color").glob("*.png")))
    assert (demo / "masks" / "frames.json").is_file() and (demo / "masks" / "frames.csv").is_file()


def test_the_python_examples_run_as_written(demo_folder, monkeypatch):
    monkeypatch.chdir(demo_folder)
    scope: dict = {}
    for code in blocks("python"):
        exec(compile(code, str(README), "exec"), scope)  # noqa: S102 - the README's own examples
    frame, labels, summary, r = scope["frame"], scope["labels"], scope["summary"], scope["r"]
    assert frame.index == 13 and labels.shape == frame.image.shape[:2] and labels.dtype == np.uint8
    assert summary.frames == 14 and len(list(Path("masks/color").glob("*.png"))) == 14 and Path("overlay.mp4").is_file()
    assert r.index == 13 and r.labels is not None and r.latency is not None  # the stream's last frame, labelled
