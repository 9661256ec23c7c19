"""Loader of taplab's compiled kernels (sources in ``native/``), with the reason when one is missing.

Every kernel has a numpy/torch reference in :mod:`taplab.ops` or :mod:`taplab.codec`
that defines its semantics. Callers ask :func:`bind` for a kernel family's typed binding
(numpy arrays or tensors in, outputs allocated and returned: :mod:`taplab.native.cpu`,
:mod:`taplab.native.warp`) and fall back to the reference when it returns ``None``.
:func:`kernel` gives the raw compiled module (or ctypes library) itself, for tests of its
own argument checks. Setting the environment variable ``TAPLAB_NATIVE=0`` turns all
compiled kernels off (for comparisons and debugging).

References are passed in, never imported: this package imports nothing from the layers
above it (``taplab.ops``, ``taplab.codec``, ...). The one kernel that checks itself against
its reference before use, the CUDA warp (``"warp_cuda"``, see :mod:`taplab.native.cuda`),
is handed that reference by :mod:`taplab.ops.warp` when it is imported
(``register_reference("warp_cuda", WarpReference(warp_reference, motion_to_grid))``). Until
then the CUDA kernel is not used, and its status says so without being cached, so that
the first look after the registration loads and checks it.
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


#: kernel family -> importable module built by setup.py (the CUDA warp is compiled on first use instead)
_MODULES = {"mc": "taplab.native._mc", "labels": "taplab.native._labels", "warp": "taplab.native._warp",
            "warp_cuda": None}
#: kernel family -> (module, class) of its typed binding, imported on first use: the warp bindings need
#: torch, which the codec's reader (a user of the mc kernels) does without
_BINDINGS = {"mc": ("taplab.native.cpu", "MotionKernels"), "labels": ("taplab.native.cpu", "LabelKernels"),
             "warp": ("taplab.native.warp", "CpuWarp"), "warp_cuda": ("taplab.native.warp", "CudaWarp")}
#: kernel families checked against their reference before use -> the reference, once registered
_REFERENCES: dict[str, object | None] = {"warp_cuda": None}
_loaded: dict[str, KernelStatus] = {}
_bound: dict[str, object] = {}


def _load(name: str) -> tuple[KernelStatus, bool]:
    """The status of kernel family ``name`` and whether it is final (it is not while a reference is missing)."""
    if os.environ.get("TAPLAB_NATIVE", "1") == "0":
        return KernelStatus(name, None, "disabled by TAPLAB_NATIVE=0"), True
    if name == "warp_cuda":  # compiled on first use, not imported (see taplab/native/cuda.py)
        from taplab.native import cuda

        why = cuda.unavailable()
        if why is not None:
            return KernelStatus(name, None, why), True
        if _REFERENCES[name] is None:
            return KernelStatus(name, None, "not loaded yet: it is checked against the torch reference, which "
                                            "taplab.ops.warp registers when imported"), False
        return KernelStatus(name, *cuda.load(_REFERENCES[name])), True
    try:
        module = importlib.import_module(_MODULES[name])
    except ImportError as exc:
        return KernelStatus(name, None, f"not built ({exc}); using the numpy reference"), True
    return KernelStatus(name, module, "compiled C kernel" if name != "warp" else "compiled C++ kernel (OpenMP)"), True


def status(name: str) -> KernelStatus:
    """Whether kernel family ``name`` is compiled and in use, and why (remembered once final: not while the
    CUDA kernel waits for its reference)."""
    if name in _loaded:
        return _loaded[name]
    found, final = _load(name)
    if final:
        _loaded[name] = found
    return found


def kernel(name: str):
    """The raw compiled module (ctypes library for ``"warp_cuda"``) of kernel family ``name``, or ``None``."""
    return status(name).module


def bind(name: str):
    """The typed binding of kernel family ``name`` (:class:`taplab.native.cpu.MotionKernels` for ``"mc"``,
    :class:`~taplab.native.cpu.LabelKernels` for ``"labels"``, :class:`~taplab.native.warp.CpuWarp` for
    ``"warp"``, :class:`~taplab.native.warp.CudaWarp` for ``"warp_cuda"``), or ``None`` to use the reference."""
    module = kernel(name)
    if module is None:
        return None
    if name not in _bound:
        path, cls = _BINDINGS[name]
        _bound[name] = getattr(importlib.import_module(path), cls)(module)
    return _bound[name]


def register_reference(name: str, reference: object) -> None:
    """Hand kernel family ``name`` the reference it must equal before it is used: for ``"warp_cuda"``
    (the only such family) a :class:`taplab.native.warp.WarpReference`."""
    if name not in _REFERENCES:
        raise ValueError(f"kernel family {name!r} takes no reference; those that do: {sorted(_REFERENCES)}")
    _REFERENCES[name] = reference
