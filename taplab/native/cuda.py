"""The CUDA warp kernel (``native/cuda/warp.cu``): compiled with nvcc on first use, cached, called through ctypes.

Why not a setup.py extension: pip builds in an isolated environment that cannot see which torch
(CPU or CUDA) the package will run with, and the kernel needs no torch headers. So the first
warp on a CUDA tensor compiles the source for the local GPU (``nvcc -arch=native``; about 5-20 s)
into ``$TAPLAB_CACHE`` (default ``~/.cache/taplab``)``/cuda/warp-<hash>.so``, named by a hash of
the source and the nvcc version, so later runs (and processes) load it at once.

The library is called with the tensors' device pointers and torch's current CUDA stream.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

#: argument types of the C entry points (see warp.cu)
_P, _I, _D = ctypes.c_void_p, ctypes.c_int, ctypes.c_double
_SIGNATURES = {
    "taplab_warp_f32": [_P, _I, _I, _I, _P, _P, _I, _P, _P, _P],
    "taplab_warp_f16": [_P, _I, _I, _I, _P, _P, _I, _P, _P, _P],
    "taplab_warp_blocks_f32": [_P, _I, _I, _I, _P, _P, _I, _I, _I, _D, _D, _I, _P, _P, _P],
    "taplab_warp_blocks_f16": [_P, _I, _I, _I, _P, _P, _I, _I, _I, _D, _D, _I, _P, _P, _P],
}


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
        cmd = [nvcc_path, "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch={arch}", "-o", str(target), str(src)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nvcc failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
        os.replace(target, out)
    return out


def load() -> tuple[ctypes.CDLL | None, str]:
    """The compiled library and why it is (or is not) in use."""
    import torch

    if torch.version.cuda is None:
        return None, "torch has no CUDA (a CPU build); using the torch reference on CUDA tensors"
    if not torch.cuda.is_available():
        return None, "no CUDA device visible"
    src, compiler = source(), nvcc()
    if src is None:
        return None, "warp.cu is not installed"
    if compiler is None:
        return None, "nvcc not found (set CUDA_HOME); using the torch reference"
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    digest = hashlib.sha256(src.read_bytes() + version.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("TAPLAB_CACHE", Path.home() / ".cache" / "taplab")) / "cuda" / f"warp-{digest}.so"
    try:
        if not cache.exists():
            compile_library(compiler, src, cache)
        lib = ctypes.CDLL(str(cache))
    except (RuntimeError, OSError) as exc:
        return None, f"CUDA kernel not built ({exc}); using the torch reference"
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
    return lib, f"compiled CUDA kernel ({cache})"
