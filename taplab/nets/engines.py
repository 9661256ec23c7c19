"""Inference engines: what runs a network's forward pass on the frame path.

Every network on the frame path (the segmentation model on key frames and RGC regions, its
``features``/``head`` split, the correction network) runs through a *runner*: a callable from torch
tensors to a tuple of torch tensors. An engine makes runners:

- ``"torch"``: the module itself, in inference mode;
- ``"onnxruntime"``: the module exported to ONNX once (:mod:`taplab.nets.onnx`, cached) and run by an ONNX
  Runtime session, with the CPU provider, or on a GPU the TensorRT and CUDA providers where the
  installed onnxruntime has them (on a GPU without them, the engine is unavailable).

``"auto"`` (the default) tries ONNX Runtime first where it is available, then torch (the correction network
maps it to torch, measured the faster for it): the loaders keep the first engine whose runner agrees with
torch on a probe (:func:`choose_runner`, :func:`label_agreement`, :data:`AGREEMENT`), with one warning
line for each engine that fails or disagrees. The measurements behind this order are in docs/engines.md
(``benchmarks/bench_engines.py``).

A new engine is a class with the members of :class:`Engine`, added to :data:`ENGINES`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from taplab.errors import ConfigError
from taplab.nets.onnx import GraphSpec, cached_graph
from taplab.threads import inference_threads

#: the engine names a user may give (``auto``: the fastest available engine that agrees with torch)
ENGINE_CHOICES = ("auto", "torch", "onnxruntime")
#: the least share of a probe's labels an engine must give as torch does to be used
AGREEMENT = 0.995

Runner = Callable[..., tuple[torch.Tensor, ...]]


class Engine(Protocol):
    name: str

    def unavailable(self, device: torch.device) -> str | None:
        """Why this engine cannot run on ``device`` here, or None where it can."""

    def describe(self) -> str:
        """One line for ``taplab info``: version and what it can run on."""

    def runner(self, module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec,
               device: torch.device, metadata: dict | None = None) -> Runner:
        """A runner of ``module`` (its forward on inputs like ``example``) on ``device``."""


class TorchEngine:
    name = "torch"

    def unavailable(self, device: torch.device) -> str | None:
        return None

    def describe(self) -> str:
        return f"torch {torch.__version__} (cpu{', cuda' if torch.cuda.is_available() else ''})"

    def runner(self, module, example, spec, device, metadata=None) -> Runner:
        return TorchRunner(module)


class TorchRunner:
    """A module's forward in inference mode, its output as a tuple."""

    engine = "torch"

    def __init__(self, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]]):
        self.fn = fn

    @torch.inference_mode()
    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.fn(*inputs)
        return out if isinstance(out, tuple) else (out,)


class OnnxRuntimeEngine:
    name = "onnxruntime"
    #: the GPU providers taplab uses, best first, where the installed onnxruntime has them
    GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def _ort(self):
        try:
            import onnxruntime
        except ImportError:
            return None
        return onnxruntime

    def providers(self, device: torch.device) -> list[str]:
        ort = self._ort()
        if ort is None:
            return []
        have = ort.get_available_providers()
        if device.type == "cuda":
            gpu = [p for p in self.GPU_PROVIDERS if p in have]
            return [*gpu, "CPUExecutionProvider"] if gpu else []
        return ["CPUExecutionProvider"]

    def unavailable(self, device: torch.device) -> str | None:
        if self._ort() is None:
            return "onnxruntime is not installed (pip install onnxruntime)"
        if not self.providers(device):
            return f"the installed onnxruntime has no provider for {device.type} (pip install onnxruntime-gpu)"
        return None

    def describe(self) -> str:
        ort = self._ort()
        if ort is None:
            return "onnxruntime not installed"
        providers = ", ".join(p.removesuffix("ExecutionProvider") for p in ort.get_available_providers())
        return f"onnxruntime {ort.__version__} ({providers})"

    def runner(self, module, example, spec, device, metadata=None) -> Runner:
        example = tuple(x.to(device) for x in example)  # traced on the module's device
        return OrtRunner(cached_graph(module, example, spec, metadata), device, self.providers(device))

    def session(self, graph: Path | bytes, providers: list[str], threads: int):
        """An ONNX Runtime session for an ONNX file or its bytes, with ``threads`` intra-op threads."""
        ort = self._ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about providers and not for users
        # idle pool threads sleep instead of spinning: a shared CPU keeps its cores (taplab.threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = str(graph) if isinstance(graph, Path) else graph
        return ort.InferenceSession(source, options, providers=providers)


class OrtRunner:
    """An ONNX Runtime session as a runner: torch tensors in (any device), torch tensors out on ``device``.

    Inputs cross as numpy arrays (zero-copy for contiguous float32 CPU tensors, a copy otherwise) and
    outputs come back as numpy arrays wrapped without copying. A session's thread count is fixed when it
    is made, so the runner keeps one per count that :func:`taplab.threads.inference_threads` has asked for
    (the thread governor lowers it while other processes hold CPUs)."""

    engine = "onnxruntime"

    def __init__(self, graph: Path | bytes, device: torch.device, providers: list[str]):
        self.graph, self.device, self.providers = graph, device, providers
        self._sessions: dict[int, object] = {}
        session = self._session()  # a file ONNX Runtime cannot load fails here, not at the first frame
        self.inputs = [i.name for i in session.get_inputs()]
        self.metadata = dict(session.get_modelmeta().custom_metadata_map)

    def fixed_size(self) -> tuple[int, int] | None:
        """The (height, width) the graph's first input is fixed at, or None where either is dynamic."""
        shape = self._session().get_inputs()[0].shape
        return (shape[2], shape[3]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[2:]) else None

    def _session(self):
        threads = inference_threads()
        if threads not in self._sessions:
            self._sessions[threads] = ENGINES["onnxruntime"].session(self.graph, self.providers, threads)
        return self._sessions[threads]

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feeds = {name: np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
                 for name, x in zip(self.inputs, inputs)}
        outs = self._session().run(None, feeds)
        return tuple(torch.from_numpy(o).to(self.device) for o in outs)


ENGINES: dict[str, Engine] = {e.name: e for e in (TorchEngine(), OnnxRuntimeEngine())}


def check_engine(name: str) -> str:
    """``name`` if it is an engine name or ``"auto"``; :class:`ConfigError` otherwise."""
    if name not in ENGINE_CHOICES:
        raise ConfigError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_CHOICES)}")
    return name


def candidates(requested: str, device: torch.device) -> tuple[str, ...]:
    """The engines to try, in order, for ``requested`` on ``device``: ``auto`` is ONNX Runtime where it can run,
    then torch; a named engine is tried before torch, the fallback of every engine. Pure but for the
    availability check."""
    check_engine(requested)
    first = ("onnxruntime",) if requested == "auto" else (requested,)
    usable = tuple(n for n in first if n != "torch" and ENGINES[n].unavailable(device) is None)
    return (*usable, "torch")


def label_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """The share of positions whose arg-max over axis 1 is the same in two ``(N, C, h, w)`` logits."""
    if a.shape != b.shape:
        return 0.0
    return float((a.argmax(1) == b.argmax(1)).float().mean())


def probe_image(height: int, width: int) -> torch.Tensor:
    """A deterministic ``(1, 3, height, width)`` RGB probe in [0, 1]: smooth colour regions with fine noise, so
    that a segmentation model gives several classes and boundaries on it, as on a photograph."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, max(2, height // 24), max(2, width // 24), generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(1, 3, height, width, generator=g)).clamp(0, 1)


def engine_lines() -> list[str]:
    """``taplab info``'s lines: one per engine."""
    return [f"engine        {name:<12} {engine.describe()}" for name, engine in ENGINES.items()]


def choose_runner(module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec, requested: str,
                  device: torch.device, agreement: Callable[[Runner, Runner], float], what: str,
                  metadata: dict | None = None) -> Runner:
    """The runner of the first of :func:`candidates` that works and agrees with torch: ``agreement(runner, torch's)``
    at least :data:`AGREEMENT`. An engine that fails or disagrees is reported in one warning line (naming
    ``what``) and the next is tried; torch is the last."""
    reference = TorchRunner(module)
    why = None if requested in ("auto", "torch") else ENGINES[requested].unavailable(device)
    if why:
        _fallback(f"{what}: {requested} is not available here ({why})")
    for name in candidates(requested, device):
        if name == "torch":
            return reference
        try:
            runner = ENGINES[name].runner(module, example, spec, device, metadata)
            score = agreement(runner, reference)
        except Exception as exc:  # noqa: BLE001 - an export or a session may fail in many ways; torch still works
            _fallback(f"{what}: {name} cannot run it ({failure(exc)})")
            continue
        if score >= AGREEMENT:
            return runner
        _fallback(f"{what}: {name} gives torch's labels on {score:.1%} of a probe, under {AGREEMENT:.1%}")
    return reference


def failure(exc: BaseException) -> str:
    """An exporter's or a session's error in a few words: its first sentence, at most 200 characters."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0][:200]


def _fallback(message: str) -> None:
    import warnings

    from taplab.errors import TapLabWarning

    warnings.warn(f"{message}; running it with torch", TapLabWarning, stacklevel=3)
