"""probe and encode, through the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

from taplab.codec import encode, open_video, probe
from tests.conftest import translation_frames


def test_probe_summarises_gop_vectors_and_residuals(translation_clip):
    result = probe(translation_clip)
    assert result.pict_types == ("I" + "P" * 11) * 2 and result.gops == [12, 12]
    assert result.frames == 24 and (result.width, result.height, result.block) == (256, 128, 8)
    assert result.vectors[0] == 0 and min(result.vectors[1:12]) > 0.8 * (128 // 8) * (256 // 8)
    assert result.mean_residual[0] == 0 and result.mean_residual[12] > 5 * max(result.mean_residual[1:12])


def test_cli_probe_json(translation_clip):
    out = subprocess.run([sys.executable, "-m", "taplab.cli", "probe", str(translation_clip), "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert data["codec"] == "mpeg4" and data["gops"] == [12, 12] and len(data["vectors"]) == 24


@pytest.mark.parametrize("codec,gop", [("mpeg4", 5), ("h264", 4)])
def test_encode_image_folder_with_fixed_gop(tmp_path, codec, gop):
    folder = tmp_path / "leftImg8bit_sequence"
    folder.mkdir()
    for i, frame in enumerate(translation_frames(10, 64, 128, 2, 1)):
        cv2.imwrite(str(folder / f"city_000000_{i:06d}_leftImg8bit.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = tmp_path / "seq.mp4"
    subprocess.run([sys.executable, "-m", "taplab.cli", "encode", str(folder), str(out), "--gop", str(gop), "--codec", codec], check=True, capture_output=True)
    with open_video(out) as video:
        types = "".join(f.pict_type for f in video)
    assert types == "".join("I" if i % gop == 0 else "P" for i in range(10))


def test_reencode_a_video_keeps_frames_and_rate(translation_clip, tmp_path):
    out = encode(translation_clip, tmp_path / "gop4.mp4", gop=4)
    with open_video(out) as video:
        types = "".join(f.pict_type for f in video)
        assert video.fps == 25
    assert types == "IPPP" * 6


def test_probe_reads_a_video_without_importing_torch(translation_clip):
    """The reader takes its decoder threads from the thread policy; reading that must not pull in torch."""
    code = ("import sys; from taplab.cli import main; main(['probe', sys.argv[1]]); "
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, str(translation_clip)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "24 frames" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "no torch"
