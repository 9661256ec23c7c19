"""The C motion-compensation kernels equal their numpy references byte for byte."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from taplab.codec.motion import AV_MOTION_VECTOR_DTYPE, rasterize_reference
from taplab.native import kernel, status
from taplab.ops.residual import residual_reference


@pytest.fixture(scope="module")
def mc():
    module = kernel("mc")
    if module is None:
        pytest.skip(status("mc").reason)
    return module


def test_kernel_is_built_where_a_compiler_exists():
    if shutil.which("cc") or shutil.which("gcc"):
        assert kernel("mc") is not None, status("mc").reason


@pytest.mark.parametrize("height,width,block", [(720, 1280, 8), (67, 131, 4), (64, 128, 16), (33, 47, 8)])
def test_residual_matches_reference(mc, height, width, block):
    rng = np.random.default_rng(height * width)
    gh, gw = -(-height // block), -(-width // block)
    # Sub-pel vectors, many pointing out of the frame, and invalid blocks.
    vectors = rng.normal(0, 12, (gh, gw, 2)).astype(np.float32)
    vectors[rng.random((gh, gw)) < 0.05] *= 40
    vectors = np.round(vectors * 4) / 4
    valid = rng.random((gh, gw)) > 0.15
    cur = rng.integers(0, 256, (height, width), np.uint8)
    ref = rng.integers(0, 256, (height, width), np.uint8)
    expect = residual_reference(cur, ref, vectors, valid, block)
    out = np.empty_like(cur)
    mc.mc_residual(cur, ref, np.rint(vectors).astype(np.int16), valid, height, width, gh, gw, block, out)
    assert np.array_equal(out, expect)


@pytest.mark.parametrize("height,width,block", [(720, 1280, 8), (67, 131, 4), (64, 128, 16), (35, 45, 8)])
def test_residual_matches_reference_on_runs_of_equal_vectors(mc, height, width, block):
    """Long runs of one vector (a static background, a pan), which the kernel does as one span,
    including runs whose sources leave the frame on the left or right for part of the span."""
    rng = np.random.default_rng(height + width)
    gh, gw = -(-height // block), -(-width // block)
    choices = np.array([(0, 0), (3, -2), (-37, 5), (41, -9), (-900, 0), (900, 3), (2.6, 0.4)], np.float32)
    run_of = np.cumsum(rng.random((gh, gw)) < 0.08, axis=1)  # ~12 cells per run
    vectors = choices[(run_of * 7 + np.arange(gh)[:, None]) % len(choices)]
    valid = rng.random((gh, gw)) > 0.03
    cur = rng.integers(0, 256, (height, width), np.uint8)
    ref = rng.integers(0, 256, (height, width), np.uint8)
    expect = residual_reference(cur, ref, vectors, valid, block)
    out = np.empty_like(cur)
    mc.mc_residual(cur, ref, np.rint(vectors).astype(np.int16), valid, height, width, gh, gw, block, out)
    assert np.array_equal(out, expect)


def random_partitions(rng, height, width, sign_choices=(-1, 1)):
    """A random tiling of 16x16 macroblocks into 16x16, 16x8, 8x16, 8x8 and 4x4 partitions."""
    records = []
    for my in range(-(-height // 16)):
        for mx in range(-(-width // 16)):
            if rng.random() < 0.1:
                continue  # an intra macroblock: no vector
            shape = [(16, 16), (16, 8), (8, 16), (8, 8), (4, 4)][rng.integers(5)]
            for oy in range(0, 16, shape[1]):
                for ox in range(0, 16, shape[0]):
                    w, h = shape
                    records.append((rng.choice(sign_choices), w, h, 0, 0, mx * 16 + ox + w // 2, my * 16 + oy + h // 2, 0,
                                    int(rng.integers(-200, 200)), int(rng.integers(-200, 200)), int(rng.choice([2, 4]))))
    raw = np.zeros(len(records), AV_MOTION_VECTOR_DTYPE)
    for name, column in zip(AV_MOTION_VECTOR_DTYPE.names, zip(*records)):
        raw[name] = column
    return raw


@pytest.mark.parametrize("height,width,block", [(128, 256, 4), (72, 136, 8), (50, 70, 4), (64, 64, 16)])
@pytest.mark.parametrize("sign", [-1, 1])
def test_rasterize_matches_reference(mc, height, width, block, sign):
    rng = np.random.default_rng(block * 1000 + height)
    raw = random_partitions(rng, height, width)
    vectors, valid = rasterize_reference(raw, width, height, block, sign)
    gh, gw = valid.shape
    out_v, out_ok = np.empty_like(vectors), np.empty_like(valid)
    mc.rasterize(raw, len(raw), block, gh, gw, sign, out_v, out_ok)
    assert valid.any() and np.array_equal(out_ok, valid) and np.array_equal(out_v, vectors)


def test_kernels_reject_short_buffers(mc):
    small = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="buffer"):
        mc.mc_residual(small, small, np.zeros((1, 1, 2), np.int16), np.ones((1, 1), bool), 8, 8, 1, 1, 8, small)
