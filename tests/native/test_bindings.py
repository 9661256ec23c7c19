"""The typed bindings (taplab.native.bind): one per kernel family, checked inputs, allocated outputs; the
CUDA kernel's reference is handed over by taplab.ops.warp, never imported by taplab.native."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import taplab.native as native
from taplab.codec.motion import AV_MOTION_VECTOR_DTYPE, rasterize_reference
from taplab.native import bind, kernel, register_reference, status
from taplab.native.cpu import LabelKernels, MotionKernels
from taplab.native.warp import CpuWarp, CudaWarp, WarpKernels, WarpReference
from taplab.ops.residual import residual_reference
from taplab.ops.warp import motion_to_grid, warp_reference
from tests.native.test_mc import random_partitions


@pytest.mark.parametrize("name, binding", [("mc", MotionKernels), ("labels", LabelKernels), ("warp", CpuWarp)])
def test_bind_gives_one_typed_binding_over_the_raw_module(name, binding):
    if kernel(name) is None:
        pytest.fail(f"the {name} kernel is not built here: {status(name).reason}")
    bound = bind(name)
    assert isinstance(bound, binding) and bind(name) is bound
    assert bound.compiled is kernel(name)


def test_bind_is_none_where_the_kernel_is_off(monkeypatch):
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_bound", {})
    monkeypatch.setenv("TAPLAB_NATIVE", "0")
    assert all(bind(name) is None for name in ("mc", "labels", "warp", "warp_cuda"))
    assert status("mc").reason == "disabled by TAPLAB_NATIVE=0"


def test_both_warp_bindings_share_one_interface():
    assert issubclass(CpuWarp, WarpKernels) and issubclass(CudaWarp, WarpKernels)
    assert CpuWarp.warp is CudaWarp.warp and CpuWarp.warp_blocks is CudaWarp.warp_blocks


def test_native_imports_nothing_above_it():
    """taplab.native is the lowest floor: the references it needs are passed in (no import circle)."""
    for path in Path(native.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                assert not name.startswith("taplab") or name.startswith("taplab.native"), f"{path.name}: {name}"


def test_ops_warp_registers_the_reference_of_the_cuda_kernel():
    assert native._REFERENCES["warp_cuda"] == WarpReference(warp_reference, motion_to_grid)
    with pytest.raises(ValueError, match="takes no reference"):
        register_reference("mc", object())


def test_the_cuda_kernel_waits_for_its_reference_and_that_is_not_final(monkeypatch):
    """Without a reference the CUDA kernel is not used, and that status is not cached: once the
    reference is registered, the next look loads the library and self-tests it against that reference."""
    from taplab.native import cuda

    loads = []
    monkeypatch.delenv("TAPLAB_NATIVE", raising=False)
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_bound", {})
    monkeypatch.setattr(native, "_REFERENCES", {"warp_cuda": None})
    monkeypatch.setattr(cuda, "unavailable", lambda: None)  # as on a machine with a GPU and nvcc
    monkeypatch.setattr(cuda, "load", lambda reference: loads.append(reference) or ("library", "compiled CUDA kernel"))
    waiting = status("warp_cuda")
    assert waiting.module is None and "taplab.ops.warp" in waiting.reason and bind("warp_cuda") is None
    assert "warp_cuda" not in native._loaded and not loads
    reference = WarpReference(warp_reference, motion_to_grid)
    register_reference("warp_cuda", reference)
    assert kernel("warp_cuda") == "library" and loads == [reference]
    assert isinstance(bind("warp_cuda"), CudaWarp) and status("warp_cuda").reason == "compiled CUDA kernel"
    status("warp_cuda")
    assert loads == [reference]  # final now: loaded once


def test_without_a_gpu_the_cuda_status_is_final_and_true(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    monkeypatch.delenv("TAPLAB_NATIVE", raising=False)
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_REFERENCES", {"warp_cuda": None})
    reason = status("warp_cuda").reason
    assert "no CUDA" in reason  # a CPU build of torch, or no device visible: true without any reference
    assert native._loaded["warp_cuda"].reason == reason


@pytest.fixture(scope="module")
def mc() -> MotionKernels:
    if bind("mc") is None:
        pytest.skip(status("mc").reason)
    return bind("mc")


def test_mc_binding_allocates_and_returns_what_the_references_give(mc):
    rng = np.random.default_rng(5)
    cur, ref = rng.integers(0, 256, (2, 37, 45), np.uint8)
    vectors, valid = rng.normal(0, 6, (5, 6, 2)), rng.random((5, 6)) > 0.2
    out = mc.residual(cur, ref, vectors, valid, 8)
    assert out.dtype == np.uint8 and np.array_equal(out, residual_reference(cur, ref, vectors, valid, 8))
    raw = random_partitions(rng, 40, 72)
    vectors, valid = mc.rasterize(raw, 4, (10, 18), -1)
    expect = rasterize_reference(raw, 72, 40, 4, -1)
    assert np.array_equal(vectors, expect[0]) and np.array_equal(valid, expect[1])


def test_mc_binding_checks_shapes_and_dtypes(mc):
    frame, ok = np.zeros((16, 16), np.uint8), np.ones((2, 2), bool)
    with pytest.raises(ValueError, match="uint8 planes"):
        mc.residual(frame.astype(np.float32), frame, np.zeros((2, 2, 2)), ok, 8)
    with pytest.raises(ValueError, match="do not cover"):
        mc.residual(frame, frame, np.zeros((2, 2, 2)), ok, 4)
    with pytest.raises(ValueError, match="do not cover"):
        mc.residual(frame, frame, np.zeros((2, 3, 2)), ok, 8)
    with pytest.raises(ValueError, match="AVMotionVector"):
        mc.rasterize(np.zeros(3, np.int64), 4, (4, 4), -1)
    with pytest.raises(ValueError, match="sign"):
        mc.rasterize(np.zeros(3, AV_MOTION_VECTOR_DTYPE), 4, (4, 4), 0)


def test_labels_binding_checks_shapes_and_dtypes():
    labels = bind("labels")
    if labels is None:
        pytest.skip(status("labels").reason)
    out = labels.upsample(np.zeros((3, 2, 2), np.float32), (5, 7))
    assert out.shape == (5, 7) and out.dtype == np.uint8
    for bad in (np.zeros((3, 2, 2)), np.zeros((2, 2), np.float32), np.zeros((257, 2, 2), np.float32)):
        with pytest.raises(ValueError, match="float32"):
            labels.upsample(bad, (4, 4))


def test_warp_binding_checks_shapes_and_dtypes():
    warp = bind("warp")
    if warp is None:
        pytest.skip(status("warp").reason)
    x, flow, ok = torch.zeros(2, 3, 4), torch.zeros(3, 4, 2), torch.ones(3, 4, dtype=torch.bool)
    out, distorted = warp.warp(x, flow, ok, False)
    assert out.shape == x.shape and distorted.dtype == torch.bool and distorted.shape == (3, 4)
    for features in (x[None], x.double(), x.half(), x.clone().requires_grad_()):
        with pytest.raises(ValueError, match="takes unbatched cpu features"):
            warp.warp(features, flow, ok, False)
    with pytest.raises(ValueError, match="takes unbatched cuda features"):  # checked before any pointer is taken
        CudaWarp(compiled=None).warp(x, flow, ok, False)
    with pytest.raises(ValueError, match="do not fit"):
        warp.warp(x, flow[:, :3], ok, False)
    with pytest.raises(ValueError, match="not a valid block field"):
        warp.warp_blocks(x, np.zeros((1, 1, 2)), np.ones((1, 1), bool), 0, (4, 4), False)
    with pytest.raises(ValueError, match="not a valid block field"):
        warp.warp_blocks(x, np.zeros((1, 2, 2)), np.ones((1, 1), bool), 16, (4, 4), False)
    with pytest.raises(ValueError, match="not a valid block field"):
        warp.warp_blocks(x, np.zeros((1, 1, 2)), np.ones((1, 1), bool), 16, (4, 0), False)
