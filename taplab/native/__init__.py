"""Loader of taplab's compiled kernels (sources in ``native/``), with the reason when one is missing.

Every kernel has a numpy/torch reference in :mod:`taplab.ops` or :mod:`taplab.codec`
that defines its semantics; callers ask :func:`kernel` and fall back to the
reference when it returns ``None``. Setting the environment variable
``TAPLAB_NATIVE=0`` turns all compiled kernels off (for comparisons and debugging).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelStatus:
    name: str
    module: object | None
    reason: str  # why it is or is not in use


#: kernel family -> importable module built by setup.py
_MODULES = {"mc": "taplab.native._mc", "labels": "taplab.native._labels", "warp": "taplab.native._warp",
            "warp_cuda": None}
_loaded: dict[str, KernelStatus] = {}


def _load(name: str) -> KernelStatus:
    if os.environ.get("TAPLAB_NATIVE", "1") == "0":
        return KernelStatus(name, None, "disabled by TAPLAB_NATIVE=0")
    if name == "warp_cuda":  # compiled on first use, not imported (see taplab/native/cuda.py)
        from taplab.native.cuda import load

        return KernelStatus(name, *load())
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        return KernelStatus(name, None, f"not built ({exc}); using the numpy reference")
    return KernelStatus(name, module, "compiled C kernel" if name != "warp" else "compiled C++ kernel (OpenMP)")


def status(name: str) -> KernelStatus:
    """Whether kernel family ``name`` is compiled and in use, and why."""
    if name not in _loaded:
        _loaded[name] = _load(name)
    return _loaded[name]


def kernel(name: str):
    """The compiled module for kernel family ``name``, or ``None`` to use the reference."""
    return status(name).module
