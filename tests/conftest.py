"""Shared fixtures: small real videos encoded on the fly, and the real clips in ../shared/data/real."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from taplab.codec import encode

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a slow end-to-end case (fuzzing, signals, Ray, training): the README's "
                                       "test command and CI run them; -m 'not slow' leaves them out")


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """The tests' exported ONNX graphs go to a folder of their own, not the user's ~/.cache/taplab."""
    import os

    from taplab.nets.onnx import CACHE_ENV

    saved = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("taplab-cache"))
    yield
    if saved is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = saved

#: the known motion of the translation clip: content moves so that current[y, x] = previous[y + DY, x + DX]
DX, DY = 3, -2


def textured_canvas(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (RGB uint8): distinctive everywhere, so motion search is unambiguous."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def translation_frames(n: int, height: int, width: int, dx: float, dy: float, seed: int = 0) -> list[np.ndarray]:
    """Frames of a canvas panning by (dx, dy) per frame: frame[t][y, x] = frame[t-1][y + dy, x + dx].

    Sub-pixel steps are made by cropping a 4x canvas and downsampling (area average).
    """
    up = 4
    margin = int(np.ceil(max(abs(dx), abs(dy)) * n)) + 8
    canvas = textured_canvas((height + 2 * margin) // 1, (width + 2 * margin) // 1, seed)
    big = cv2.resize(canvas, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC)
    frames = []
    for t in range(n):
        x0 = int(round((margin + dx * t) * up))
        y0 = int(round((margin + dy * t) * up))
        crop = big[y0 : y0 + height * up, x0 : x0 + width * up]
        frames.append(cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA))
    return frames


@pytest.fixture(scope="session")
def translation_clip(tmp_path_factory) -> Path:
    """24 frames, 128x256, MPEG-4 Part 2 GOP 12, panning by (DX, DY) pixels per frame."""
    path = tmp_path_factory.mktemp("clips") / "translation.mp4"
    return encode(translation_frames(24, 128, 256, DX, DY), path, gop=12, codec="mpeg4", quality=2)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"the real test data is not at {REAL} (CI always has it)")
    return REAL


@pytest.fixture
def flow_calls(monkeypatch) -> list[str]:
    """The names of the threads the real optical flow runs in, one per estimate (a dense flow, or block vectors, which
    may compute a dense flow inside): a spy around it (it still computes)."""
    import threading

    from taplab.ops.flow import OpticalFlow

    calls: list[str] = []
    inside = threading.local()

    def spying(real):
        def spy(self, *args):
            outer = not getattr(inside, "depth", 0)
            if outer:
                calls.append(threading.current_thread().name)
            inside.depth = getattr(inside, "depth", 0) + 1
            try:
                return real(self, *args)
            finally:
                inside.depth -= 1
        return spy

    monkeypatch.setattr(OpticalFlow, "__call__", spying(OpticalFlow.__call__))
    monkeypatch.setattr(OpticalFlow, "blocks", spying(OpticalFlow.blocks))
    return calls
