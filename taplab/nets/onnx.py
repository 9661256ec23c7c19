"""ONNX files: a torch network exported once (dynamic height and width) and cached, and ONNX files' metadata.

A network runs in ONNX Runtime (:mod:`taplab.nets.engines`) as an ONNX graph. taplab makes that graph
from the torch module with ``torch.onnx.export``'s TorchScript tracer (``dynamo=False``, opset
:data:`OPSET`): it takes ``dynamic_axes``, needs no extra package, and traces the networks here
exactly. A trace records the branches the example input took, so the example is a size that is
not a multiple of 32 in either direction (:data:`EXPORT_SIZE`): the padding and resizing branches of
a network's ``forward`` are then the ones recorded, and the graph is valid at every size. The
loader still checks the graph against torch at every new input size (:mod:`taplab.nets.loader`).

The graph is cached in :func:`cache_dir` under a key made of the network's architecture and weights,
the graph's name and inputs, torch's version and :data:`EXPORT_VERSION`: loading the same model again
reads the file instead of exporting. An export that fails is remembered beside them (``*.failed``), so
that it is not tried on every load. A cache that cannot be written is skipped: the graph is then
exported in memory on every load.

Metadata: an exported segmentation model carries ``class_names`` and ``palette`` (JSON) in the ONNX
file's ``metadata_props``, and :func:`read_metadata` reads them (and ``mean``/``std``) from any ONNX file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from taplab.errors import ModelError
from taplab.files import atomic_path

#: the ONNX opset of exported graphs (ONNX Runtime 1.16 and later run it)
OPSET = 17
#: bumped whenever the export changes, so that cached graphs of an older export are not reused
EXPORT_VERSION = 1
#: (height, width) of the example input a model is traced with: not a multiple of 32 either way
EXPORT_SIZE = (136, 200)
#: environment variable naming the cache folder (default: $XDG_CACHE_HOME/taplab or ~/.cache/taplab)
CACHE_ENV = "TAPLAB_CACHE"


class ExportError(ModelError):
    """A network could not be exported to ONNX (an operation the exporter does not know, control flow ...)."""


@dataclass(frozen=True)
class GraphSpec:
    """What one exported graph takes and gives: input and output names, and which of their axes vary
    (``{name: {axis: label}}``; the batch axis and the spatial ones vary in taplab's graphs)."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]


def image_graph(name: str, inputs: tuple[str, ...] = ("image",), outputs: tuple[str, ...] = ("logits",)) -> GraphSpec:
    """A graph whose inputs and outputs are all ``(N, C, H, W)`` maps with N, H and W free (each its own label:
    a model's output grid is the input's divided by its stride)."""
    axes = {n: {0: "batch", 2: f"{n}_height", 3: f"{n}_width"} for n in (*inputs, *outputs)}
    return GraphSpec(name, inputs, outputs, axes)


class Method(nn.Module):
    """One method of a module (``features``, ``head``) as a module's forward, for export."""

    def __init__(self, module: nn.Module, method: str):
        super().__init__()
        self.inner, self.method = module, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.inner, self.method)(x)


class Prepared(nn.Module):
    """A model with its input normalisation (``mean``/``std``) inside, so that an exported graph takes RGB in [0, 1]."""

    def __init__(self, module: nn.Module, mean: torch.Tensor | None, std: torch.Tensor | None):
        super().__init__()
        self.inner = module
        self.register_buffer("mean", None if mean is None else mean.detach().clone())
        self.register_buffer("std", None if std is None else std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - self.mean) / self.std if self.mean is not None else x)


def cache_dir() -> Path:
    """Where exported graphs are kept: ``$TAPLAB_CACHE``, else ``$XDG_CACHE_HOME/taplab``, else ``~/.cache/taplab``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "taplab"


def network_digest(module: nn.Module) -> str:
    """A hash of a network's architecture (its class and ``repr``) and every tensor of its state."""
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}\n{module!r}".encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export_graph(module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec,
                 metadata: dict[str, Any] | None = None) -> bytes:
    """``module(*example)`` as an ONNX graph (bytes), with ``spec``'s names and dynamic axes and ``metadata``'s
    entries (JSON-encoded) in its ``metadata_props``. :class:`ExportError` when the exporter fails."""
    buffer = io.BytesIO()
    # the exporter restores the module's training flag recursively afterwards: a wrapper left in training mode
    # would put the wrapped network's batch norms into training mode with it
    module.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _output_silenced():
            warnings.simplefilter("ignore")  # the tracer's advice; agreement with torch is checked on load
            torch.onnx.export(module, example, buffer, dynamo=False, verbose=False, opset_version=OPSET,
                              input_names=list(spec.inputs), output_names=list(spec.outputs),
                              dynamic_axes=spec.dynamic_axes, do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001 - the exporter raises many kinds for unsupported code
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {message}") from None
    data = buffer.getvalue()
    return with_metadata(data, metadata) if metadata else data


@contextlib.contextmanager
def _output_silenced():
    """File descriptors 1 and 2 pointed at /dev/null: when an export fails, torch's exporter prints the whole
    traced graph from C++ (its switch for that log is always on in torch 2.13), which is not for users."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def with_metadata(data: bytes, metadata: dict[str, Any]) -> bytes:
    """An ONNX file's bytes with ``metadata``'s entries (JSON-encoded values) set in its ``metadata_props``."""
    import onnx

    proto = onnx.load_from_string(data)
    kept = [p for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return proto.SerializeToString()


def cached_graph(module: nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec,
                 metadata: dict[str, Any] | None = None) -> Path | bytes:
    """The ONNX graph of ``module`` for ``spec``: the path of the cached file (exported and written there on the
    first call), or the graph's bytes where the cache cannot be written."""
    key = hashlib.sha256("\n".join([
        network_digest(module), repr(spec), json.dumps(metadata, sort_keys=True), torch.__version__,
        str(OPSET), str(EXPORT_VERSION), ",".join(str(tuple(x.shape)) for x in example)]).encode()).hexdigest()[:32]
    path = cache_dir() / "onnx" / f"{spec.name}-{key}.onnx"
    failed = path.with_suffix(".failed")  # an export that failed is not tried again on every load
    if path.is_file():
        return path
    if failed.is_file():
        raise ExportError(failed.read_text())
    try:
        data = export_graph(module, example, spec, metadata)
    except ExportError as exc:
        _write(failed, str(exc).encode())
        raise
    return path if _write(path, data) else data


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (folders created): a concurrent reader sees the whole file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return path


def _write(path: Path, data: bytes) -> bool:
    """:func:`write_bytes`, False where the file cannot be written (a read-only cache)."""
    try:
        write_bytes(path, data)
    except OSError:
        return False
    return True


def read_metadata(props: dict[str, str]) -> dict[str, Any]:
    """taplab's entries of an ONNX file's metadata (``class_names``, ``palette``, ``mean``, ``std``), decoded from
    JSON; an entry that is not valid JSON is read as a comma-separated list."""
    out: dict[str, Any] = {}
    for key in ("class_names", "palette", "mean", "std"):
        if key in props:
            try:
                out[key] = json.loads(props[key])
            except json.JSONDecodeError:
                out[key] = [s.strip() for s in props[key].split(",")]
    return out
