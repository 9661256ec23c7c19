"""The native warp kernels (C++ on CPU, CUDA on a GPU) agree with the torch reference (taplab/ops/warp.py)."""

import shutil

import numpy as np
import pytest
import torch

from taplab.native import kernel, status
from taplab.native.cuda import compile_library, source
from taplab.native import bind
from taplab.ops.interpolation import splat, splat_reference
from taplab.ops.warp import GridFlow, compose, compose_reference, motion_to_grid, warp, warp_blocks, warp_reference


@pytest.fixture(scope="module")
def built():
    if kernel("warp") is None:
        pytest.fail(f"the warp kernel is not built here: {status('warp').reason}")


def random_motion(h: int, w: int, seed: int, reach: float = 3.0) -> GridFlow:
    """Sub-cell flows, some reaching out of the grid, and a tenth of the cells without a vector."""
    g = torch.Generator().manual_seed(seed)
    flow = (torch.rand(h, w, 2, generator=g) * 2 - 1) * reach
    flow[0, :, 1] = -reach - 1.3  # the top row points above the grid
    return GridFlow(flow, torch.rand(h, w, generator=g) > 0.1)


@pytest.mark.parametrize("channels, h, w", [(19, 45, 80), (3, 17, 33), (1, 1, 1), (64, 8, 5), (2, 1, 9)])
@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_kernel_agrees_with_the_reference(built, channels, h, w, sampling):
    features = torch.randn(channels, h, w, generator=torch.Generator().manual_seed(h * w))
    motion = random_motion(h, w, seed=channels + h)
    out, distorted = warp(features, motion, sampling)
    ref, ref_distorted = warp_reference(features, motion, sampling)
    assert torch.equal(distorted, ref_distorted) and distorted[0].all()  # the top row's sources are outside
    if sampling == "nearest":
        assert torch.equal(out, ref)
    else:  # the reference's round trip through grid_sample's [-1, 1] coordinates rounds differently
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("h, w", [(30, 40), (1, 1), (7, 2), (45, 80)])
def test_composition_kernel_equals_the_reference(built, monkeypatch, h, w):
    step, so_far = random_motion(h, w, 1, reach=2), random_motion(h, w, 2, reach=5)
    native = compose(step, so_far)
    # bit for bit the reference's stacking through the warp kernel, whose sampling it repeats
    exact = compose_reference(step, so_far)
    assert torch.equal(native.flow, exact.flow) and torch.equal(native.valid, exact.valid)
    assert h * w == 1 or (native.valid.any() and not native.valid.all())  # both kinds of cell compared
    monkeypatch.setattr("taplab.ops.warp.bind", lambda name: None)  # the torch reference throughout
    ref = compose(step, so_far)  # grid_sample's coordinates round differently (as in the warp's test)
    torch.testing.assert_close(native.flow, ref.flow, atol=1e-4, rtol=1e-4)
    assert torch.equal(native.valid, ref.valid)
    with pytest.raises(ValueError, match="not one grid's motion"):
        bind("warp").compose(step.flow, step.valid, so_far.flow[:-1], so_far.valid)


def test_whole_cell_vectors_move_features_exactly(built):
    features = torch.arange(2 * 6 * 8, dtype=torch.float32).reshape(2, 6, 8)
    vectors = np.zeros((3, 4, 2), np.float32)
    vectors[..., 0] = 8  # 8 px right at stride 4: two cells
    motion = motion_to_grid(vectors, np.ones((3, 4), bool), 16, (6, 8), 4)
    for sampling in ("nearest", "bilinear"):
        out, distorted = warp(features, motion, sampling)
        assert torch.equal(out[:, :, :6], features[:, :, 2:])
        assert distorted[:, 6:].all() and not distorted[:, :6].any()


@pytest.mark.parametrize("channels, h, w", [(19, 45, 80), (3, 17, 33), (1, 1, 1), (64, 8, 5)])
def test_splat_kernel_agrees_with_the_reference(built, channels, h, w):
    g = torch.Generator().manual_seed(channels * h)
    features = torch.randn(channels, h, w, generator=g)
    cover = torch.rand(h, w, generator=g)
    cover[:, 0] = 0  # cells that send nothing
    motion = random_motion(h, w, seed=h + w)  # some landing outside the grid, a tenth without a vector
    (out, weight), (ref, ref_weight) = splat(features, cover, motion), splat_reference(features, cover, motion)
    torch.testing.assert_close(weight, ref_weight, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert weight.max() <= 1 and (h * w == 1 or weight.min() < 1)  # clipped; and some cells received less
    with pytest.raises(ValueError, match="do not fit"):
        bind("warp").splat(features, cover[:-1], motion.flow, motion.valid)


def test_kernel_rejects_buffers_too_small_for_the_sizes(built):
    args = [np.zeros((4, 4, 2), np.float32), np.ones((4, 4), bool), True, np.zeros((19, 4, 4), np.float32),
            np.zeros((4, 4), bool)]
    with pytest.raises(ValueError, match="features: buffer holds 40 bytes"):
        kernel("warp").warp(np.zeros(10, np.float32), 19, 4, 4, *args)
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        kernel("warp").warp(np.zeros(10, np.float32), 0, 4, 4, *args)


def test_taplab_info_reports_every_kernel_and_the_correction_network(built, capsys):
    from taplab.cli import main

    main(["info"])
    out = capsys.readouterr().out
    for name in ("mc kernels", "labels kernel", "warp kernel"):
        assert f"{name}".ljust(14) + "compiled C" in out
    assert "bl2-synth.conet.pt (fusion on by default)" in out


def random_blocks(gh: int, gw: int, seed: int, reach: float = 20.0):
    """A codec-like block field: sub-pel vectors in pixels, a tenth of the blocks intra (no vector)."""
    rng = np.random.default_rng(seed)
    vectors = (rng.uniform(-reach, reach, (gh, gw, 2)) * 4).round() / 4  # quarter-pel
    return vectors.astype(np.float32), rng.random((gh, gw)) > 0.1


@pytest.mark.parametrize("channels, grid, blocks, block, stride", [
    (19, (180, 320), (45, 80), 16, 4),      # 720p, BL2's stride, MPEG-4 macroblocks
    (19, (90, 160), (90, 160), 8, 8),       # 8x8 blocks at stride 8
    (128, (33, 65), (17, 33), 16, 8),       # odd sizes: the grid overhangs the last block
    (3, (13, 9), (5, 3), 16, (5.5, 6.25)),  # non-integer strides
])
@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_block_field_kernel_equals_resampling_then_warping(built, channels, grid, blocks, block, stride, sampling):
    vectors, valid = random_blocks(*blocks, seed=channels)
    features = torch.randn(channels, *grid, generator=torch.Generator().manual_seed(1))
    out, distorted = warp_blocks(features, vectors, valid, block, stride, sampling)
    ref, ref_distorted = warp_reference(features, motion_to_grid(vectors, valid, block, grid, stride), sampling)
    assert torch.equal(distorted, ref_distorted) and 0 < distorted.float().mean() < 1
    if sampling == "nearest":
        assert torch.equal(out, ref)
    else:  # grid_sample's [-1, 1] round trip loses ~1e-5 of a coordinate of up to 320 cells
        torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-4)


def test_runtime_labels_are_the_same_with_and_without_the_native_kernel(built, translation_clip, monkeypatch):
    from taplab.runtime import Segmenter

    def labels(**options):
        seg = Segmenter("default", rgc=False, rgfs=False, fusion=False, **options)
        return [r.labels for r in seg.run(translation_clip)]

    native = {s: labels(warp_sampling=s) for s in ("nearest", "bilinear")}
    monkeypatch.setattr("taplab.ops.warp.bind", lambda name: None)
    for s, results in native.items():
        reference = labels(warp_sampling=s)
        agree = np.mean([(a == b).mean() for a, b in zip(results, reference)])
        assert agree == 1.0 if s == "nearest" else agree > 0.9999


needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")


@pytest.fixture(scope="module")
def cuda_library(tmp_path_factory):
    """warp.cu compiled for a generic architecture (this runs wherever nvcc is, GPU or not)."""
    return compile_library(shutil.which("nvcc"), source(), tmp_path_factory.mktemp("cuda") / "warp.so", arch="sm_80")


@needs_nvcc
def test_cuda_source_compiles(cuda_library):
    assert cuda_library.stat().st_size > 0


@needs_nvcc
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_cuda_kernels_per_cell_code_agrees_with_the_reference_on_the_host(cuda_library, dtype, sampling):
    """The CUDA kernels' per-cell code (warp_cell, warp_blocks_cell), compiled by nvcc and run on the host
    through warp.cu's host entry points: the kernels' arithmetic, checked without a GPU. (What it cannot
    check: the launch, and device code generation such as fused multiply-adds.)"""
    import ctypes

    lib = ctypes.CDLL(str(cuda_library))
    suffix = "f16" if dtype == torch.float16 else "f32"
    P, I, D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
    host_warp, host_blocks = getattr(lib, f"taplab_host_warp_{suffix}"), getattr(lib, f"taplab_host_warp_blocks_{suffix}")
    host_warp.argtypes, host_warp.restype = [P, I, I, I, P, P, I, P, P], None
    host_blocks.argtypes, host_blocks.restype = [P, I, I, I, P, P, I, I, I, D, D, I, P, P], None
    bilinear = int(sampling == "bilinear")
    tol = 1e-3 if dtype == torch.float32 else 2e-2
    for channels, h, w, block, stride in [(19, 45, 80, 16, 4), (3, 17, 33, 8, 8), (1, 1, 1, 16, 4), (2, 35, 9, 8, 285 / 35)]:
        features = torch.randn(channels, h, w, generator=torch.Generator().manual_seed(h * w)).to(dtype)
        motion = random_motion(h, w, seed=channels + h)
        out, distorted = torch.empty_like(features), torch.empty(h, w, dtype=torch.bool)
        host_warp(features.data_ptr(), channels, h, w, motion.flow.contiguous().data_ptr(),
                  motion.valid.contiguous().data_ptr(), bilinear, out.data_ptr(), distorted.data_ptr())
        ref, ref_distorted = warp_reference(features.float(), motion, sampling)
        assert torch.equal(distorted, ref_distorted)
        if sampling == "nearest":
            assert torch.equal(out.float(), ref)
        else:
            torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
        gh, gw = max(1, round(h * stride / block)), max(1, round(w * stride / block))
        vectors, valid = random_blocks(gh, gw, seed=w)
        host_blocks(features.data_ptr(), channels, h, w, torch.from_numpy(vectors).data_ptr(),
                    torch.from_numpy(valid).data_ptr(), gh, gw, block, stride, stride, bilinear, out.data_ptr(),
                    distorted.data_ptr())
        ref, ref_distorted = warp_reference(features.float(), motion_to_grid(vectors, valid, block, (h, w), stride),
                                            sampling)
        assert torch.equal(distorted, ref_distorted)
        if sampling == "nearest":
            assert torch.equal(out.float(), ref)
        else:
            torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (the CUDA kernel needs a GPU to run)")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("sampling", ["nearest", "bilinear"])
def test_cuda_kernel_agrees_with_the_reference(dtype, sampling):
    assert kernel("warp_cuda") is not None, status("warp_cuda").reason
    tol = 1e-3 if dtype == torch.float32 else 2e-2  # grid_sample's own rounding reaches 1.6e-4 at 180x320
    for channels, h, w in [(19, 180, 320), (128, 33, 65), (1, 1, 1)]:
        features = torch.randn(channels, h, w, generator=torch.Generator().manual_seed(h)).to("cuda", dtype)
        motion = random_motion(h, w, seed=channels)
        out, distorted = warp(features, motion, sampling)
        ref, ref_distorted = warp_reference(features.float(), GridFlow(motion.flow.cuda(), motion.valid.cuda()), sampling)
        assert out.dtype == dtype and torch.equal(distorted, ref_distorted)
        torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
        vectors, valid = random_blocks((h + 3) // 4, (w + 3) // 4, seed=w)
        out, distorted = warp_blocks(features, vectors, valid, 16, 4, sampling)
        ref, ref_distorted = warp_reference(features.float().cpu(), motion_to_grid(vectors, valid, 16, (h, w), 4), sampling)
        assert torch.equal(distorted.cpu(), ref_distorted)
        torch.testing.assert_close(out.float().cpu(), ref, atol=tol, rtol=tol)


def test_cuda_entry_points_match_their_ctypes_signatures():
    """Without a GPU the CUDA kernel never runs here: at least its C prototypes and the ctypes
    argument types (taplab/native/cuda.py) must agree, or a GPU run would pass garbage."""
    import ctypes
    import re

    from taplab.native.cuda import _SIGNATURES

    text = source().read_text()
    macros = dict(re.findall(r"#define (TAPLAB_WARP\w*)\(NAME, T\)\s*\\\s*extern \"C\" int NAME\(([^)]*)\)", text))
    kinds = {"int": ctypes.c_int, "double": ctypes.c_double}
    for macro, params in macros.items():
        params = re.sub(r"\\", " ", params).split(",")  # the macro's line continuations
        types = [ctypes.c_void_p if "*" in p else kinds[p.split()[0]] for p in params]
        for name in re.findall(rf"^{macro}\((\w+),", text, re.M):
            assert _SIGNATURES[name] == types, name
    assert set(_SIGNATURES) == set(re.findall(r"^TAPLAB_WARP\w*\((taplab_\w+),", text, re.M)) and len(macros) == 2
