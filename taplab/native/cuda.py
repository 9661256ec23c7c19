"""The CUDA warp kernel (``native/cuda/warp.cu``): compiled with nvcc on first use, cached, called through ctypes.

Why not a setup.py extension: pip builds in an isolated environment that cannot see which torch
(CPU or CUDA) the package will run with, and the kernel needs no torch headers. So the first
warp on a CUDA tensor compiles the source for the local GPUs (``nvcc -arch=native``; about 1 s)
into ``$TAPLAB_CACHE`` (default ``~/.cache/taplab``)``/cuda/warp-<hash>.so``, named by a hash of
the source, the nvcc version and flags and the visible GPUs' compute capabilities (a library built
for another GPU has no kernel for this one), so later runs (and processes) load it at once.

Before it is used, the library warps a small tensor and must match the torch reference exactly:
a library that cannot run here (a driver older than the nvcc that built it, a GPU it was not built
for) leaves the reference in use, with the reason in ``taplab info``, rather than failing every warp.
The reference is ``taplab.ops.warp``'s, handed over when that module is imported
(:func:`taplab.native.register_reference`): this package does not import the layers above it, and
until then the library is not loaded.

Its typed binding, :class:`taplab.native.warp.CudaWarp`, calls it with the tensors' device pointers,
their device and torch's current CUDA stream.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from taplab.native.warp import CudaWarp, WarpReference

#: argument types of the C entry points (see warp.cu)
_P, _I, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_SIGNATURES = {
    "taplab_warp_f32": [_P, _I, _I, _I, _P, _P, _I, _P, _P, _I, _P],
    "taplab_warp_f16": [_P, _I, _I, _I, _P, _P, _I, _P, _P, _I, _P],
    "taplab_warp_blocks_f32": [_P, _I, _I, _I, _P, _P, _I, _I, _I, _D, _D, _I, _P, _P, _I, _P],
    "taplab_warp_blocks_f16": [_P, _I, _I, _I, _P, _P, _I, _I, _I, _D, _D, _I, _P, _P, _I, _P],
}
#: -fmad=false: the block lookup must round like the CPU reference (see warp.cu)
NVCC_FLAGS = ("-O3", "-fmad=false", "-shared", "-Xcompiler", "-fPIC")


def source() -> Path | None:
    """``warp.cu``: installed as package data (``taplab._cuda``) or in a source checkout's ``native/cuda``."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "_cuda" / "warp.cu", package.parent / "native" / "cuda" / "warp.cu"):
        if candidate.is_file():
            return candidate
    return None


def nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidate = Path(home, "bin", "nvcc") if home else None
    return str(candidate) if candidate and candidate.is_file() else None


def compile_library(nvcc_path: str, src: Path, out: Path, arch: str = "native") -> Path:
    """``nvcc -O3 -shared`` ``src`` into ``out`` (written atomically); ``RuntimeError`` with nvcc's message on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        target = Path(tmp) / out.name
        cmd = [nvcc_path, *NVCC_FLAGS, f"-arch={arch}", "-o", str(target), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            message = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise RuntimeError(f"nvcc failed: {message}")
        os.replace(target, out)
    return out


def unavailable() -> str | None:
    """Why the CUDA kernel cannot be built and run here at all, or ``None`` where it may be."""
    if torch.version.cuda is None:
        return "torch has no CUDA (a CPU build); using the torch reference on CUDA tensors"
    if not torch.cuda.is_available():
        return "no CUDA device visible"
    if source() is None:
        return "warp.cu is not installed"
    if nvcc() is None:
        return "nvcc not found (set CUDA_HOME); using the torch reference"
    return None


def load(reference: WarpReference) -> tuple[ctypes.CDLL | None, str]:
    """The compiled library (built on a cache miss) where it equals ``reference`` in the self-test, and why
    it is (or is not) in use. Call it where :func:`unavailable` finds nothing missing."""
    src, compiler = source(), nvcc()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
        gpus = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
        key = src.read_bytes() + f"{version}|{NVCC_FLAGS}|{sorted(set(gpus))}".encode()
        digest = hashlib.sha256(key).hexdigest()[:16]
        cache = Path(os.environ.get("TAPLAB_CACHE", Path.home() / ".cache" / "taplab")) / "cuda" / f"warp-{digest}.so"
        if not cache.exists():
            compile_library(compiler, src, cache)
        lib = ctypes.CDLL(str(cache))
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        _self_test(CudaWarp(lib), reference)
    except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError) as exc:
        return None, f"CUDA kernel not in use ({exc}); using the torch reference"
    return lib, f"compiled CUDA kernel ({cache})"


def _self_test(kernels: CudaWarp, reference: WarpReference) -> None:
    """Warp a small tensor with every entry point on every visible GPU; it must equal the reference
    exactly (nearest sampling). Raises what went wrong."""
    vectors = np.array([[[4.0, 0.0], [0.0, -4.0]], [[-4.0, 4.0], [0.0, 0.0]]], np.float32)
    valid = np.array([[True, True], [False, True]])
    motion = reference.motion_to_grid(vectors, valid, 4, (4, 4), 2)
    for device in range(torch.cuda.device_count()):
        for dtype in (torch.float32, torch.float16):
            x = torch.arange(3 * 16, dtype=torch.float32).reshape(3, 4, 4).to(f"cuda:{device}", dtype)
            ref, ref_distorted = reference.warp(x.float().cpu(), motion, "nearest")
            for name in ("warp", "warp_blocks"):
                if name == "warp":
                    out, distorted = kernels.warp(x, motion.flow, motion.valid, False)
                else:
                    out, distorted = kernels.warp_blocks(x, vectors, valid, 4, (2.0, 2.0), False)
                torch.cuda.synchronize(x.device)
                if not (torch.equal(out.float().cpu(), ref) and torch.equal(distorted.cpu(), ref_distorted)):
                    raise RuntimeError(f"the self-test's {name} ({dtype}) on cuda:{device} differs from the reference")
