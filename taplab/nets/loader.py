"""``load_model``: any model spec -> a :class:`Model`, checked against the model contract.

The contract: a :class:`torch.nn.Module` mapping float RGB ``(N, 3, H, W)`` in [0, 1] to logits
``(N, C, H/s, W/s)`` (rounded either way). The stride ``s`` and class count ``C`` are read from
the output, so a model written anywhere works unchanged. Optional attributes that taplab uses
when present: ``class_names`` (C strings), ``palette`` (C RGB triples), ``mean`` and ``std``
(3 floats each: taplab then feeds ``(x - mean) / std`` instead of ``x``), and methods
``features(x)`` / ``head(f)`` with ``head(features(x)) == forward(x)``, which let the runtime warp
an interior layer instead of the logits (the Tamed Warping Network's idea).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib
import itertools
import math
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from taplab.data.labels import default_metadata
from taplab.errors import ConfigError, ModelError, TapLabWarning
from taplab.files import read_image
from taplab.nets.adapted import is_adapted, read_adapted
from taplab.nets.checkpoint import build_from_checkpoint, read_checkpoint
from taplab.nets.engines import (
    AGREEMENT,
    ENGINES,
    OrtRunner,
    TorchRunner,
    check_engine,
    choose_runner,
    failure,
    label_agreement,
    probe_image,
)
from taplab.nets.onnx import (
    EXPORT_SIZE,
    Method,
    Prepared,
    export_graph,
    image_graph,
    network_digest,
    read_metadata,
    write_bytes,
)
from taplab.nets.registry import create_model, list_architectures
from taplab.nets.zoo import find_shipped, shipped_models
from taplab.ops.labels import logits_to_labels

#: size of the forward pass that checks a model's contract when it is loaded (height, width)
PROBE_SIZE = (128, 256)


@dataclass(frozen=True)
class Geometry:
    """What a model's output looks like for one input size."""

    stride: int
    num_classes: int
    size: tuple[int, int]  # (h, w) of the logits


class Model:
    """A segmentation model as taplab uses it: the network, the engine that runs it, its device, metadata and
    output geometry.

    Attributes:
        module: the wrapped :class:`torch.nn.Module`, in eval mode on ``device`` (None for an ONNX file).
        source: where it came from (a name, a path, ``package.module:factory``, ``<module>``).
        engine: the engine running it (:mod:`taplab.nets.engines`): ``"torch"`` or ``"onnxruntime"``.
        num_classes, stride: read from a forward pass (:data:`PROBE_SIZE`).
        class_names, colors: from the model (or its checkpoint or ONNX metadata) when it has them; otherwise
            Cityscapes' names and colours for 19 classes, ``class k`` and grey levels else.
        has_split: whether the model has ``features()``/``head()``.
        channels_last: whether the module runs in channels-last memory format under torch. On CPU it does:
            oneDNN's convolutions are 1.5-2x faster that way (BL2 at 720x1280 on 2 cores: 467 ->
            251 ms), and the logits equal the contiguous layout's to 1e-5. The module is converted
            in place, as ``.to(device)`` would; outputs may be channels-last tensors. The trainer's
            validation passes ``channels_last=False`` so that training stays in one layout.

    ``engine`` (``"torch"``, ``"onnxruntime"`` or ``"auto"``) is tried as :func:`taplab.nets.engines.choose_runner`
    says: an ONNX Runtime graph is used only where its labels agree with torch's on a probe, at
    :data:`PROBE_SIZE` now and at every new input size the first time :meth:`geometry` sees it (a
    traced graph may hold a branch that another size would not take); otherwise torch runs it, with a
    warning.
    """

    def __init__(self, module: nn.Module | None, source: str, device: str | torch.device = "cpu",
                 probe_size: tuple[int, int] = PROBE_SIZE, channels_last: bool | None = None, engine: str = "torch",
                 onnx: OrtRunner | None = None):
        self.source = source
        self.device = torch.device(device)
        self.module = module
        self._onnx = onnx
        self._geometry: dict[tuple[int, int], Geometry] = {}
        if module is None:  # an ONNX file: its session is the only way to run it
            metadata_source = _Attributes(read_metadata(onnx.metadata))
            self.channels_last, self.has_split, self.engine = False, False, "onnxruntime"
            self._mean, self._std = _normalisation(metadata_source, self.device)
            self._graphs = {"logits": lambda x: onnx(self._normalise(x.to(self.device)))[0]}
        else:
            self.channels_last = self.device.type == "cpu" if channels_last is None else channels_last
            self.module = module.eval().to(device)
            if self.channels_last:
                self.module = self.module.to(memory_format=torch.channels_last)
            self.has_split = callable(getattr(module, "features", None)) and callable(getattr(module, "head", None))
            self._mean, self._std = _normalisation(module, self.device)
            self._use_torch()
            metadata_source = module
        g = self.geometry(*probe_size)
        self.num_classes, self.stride = g.num_classes, g.stride
        self.class_names, self.colors = _metadata(metadata_source, self.num_classes)
        self.requested_engine = check_engine(engine)
        if engine != "torch" and module is not None:
            self._use_engine(engine, probe_size)

    def __repr__(self) -> str:
        return f"Model({self.source!r}, {self.num_classes} classes, stride {self.stride}, {self.device}, {self.engine})"

    @functools.cached_property
    def digest(self) -> str:
        """What the model computes, as a hash: its architecture and weights (an ONNX file: its bytes), not where it was
        loaded from, so that the same model on two machines has the same digest (batch runs' resume compares it)."""
        if self.module is not None:
            return network_digest(self.module)
        graph = self._onnx.graph  # the ONNX file's path, or its bytes
        return hashlib.sha256(graph if isinstance(graph, bytes) else Path(graph).read_bytes()).hexdigest()

    # -- engines

    def _use_torch(self) -> None:
        m = self.module
        self.engine = "torch"
        self._graphs = {"logits": lambda x: m(self._prepare(x))}
        if self.has_split:
            self._torch_split()

    def _torch_split(self) -> None:
        m = self.module
        self._graphs.update(features=lambda x: m.features(self._prepare(x)), head=lambda f: m.head(f))

    def _use_engine(self, engine: str, probe_size: tuple[int, int]) -> None:
        """Run the logits with the first engine that agrees with torch at ``probe_size``; ``features``/``head``
        follow it on first use (:meth:`_split_graphs`)."""
        probe = probe_image(*probe_size).to(self.device)
        runner = choose_runner(Prepared(self.module, self._mean, self._std), (probe_image(*EXPORT_SIZE),),
                               image_graph("logits"), engine, self.device, _agreement_on(probe), f"model {self.source}",
                               metadata=self._onnx_metadata())
        if not isinstance(runner, TorchRunner):
            self.engine = runner.engine
            self._graphs["logits"] = lambda x: runner(x)[0]
            if self.has_split:  # exported when first used: most runs warp the logits
                self._graphs.pop("features"), self._graphs.pop("head")

    def _split_graphs(self) -> None:
        """``features`` and ``head`` as two graphs of the model's engine, used where ``head(features(probe))`` gives
        torch's labels; otherwise torch runs them, with a warning."""
        m, probe, example = self.module, probe_image(*PROBE_SIZE).to(self.device), probe_image(*EXPORT_SIZE)
        engine = ENGINES[self.engine]
        try:
            features = engine.runner(Prepared(Method(m, "features"), self._mean, self._std), (example,),
                                     image_graph("features", outputs=("features",)), self.device)
            head = engine.runner(Method(m, "head"), (features(example.to(self.device))[0].cpu(),),
                                 image_graph("head", ("features",)), self.device)
            with torch.inference_mode():
                score = label_agreement(head(features(probe)[0])[0], m(self._prepare(probe)))
        except Exception as exc:  # noqa: BLE001 - as choose_runner: the export may fail in many ways
            score, reason = 0.0, failure(exc)
        else:
            reason = f"its features()/head() give torch's labels on {score:.1%} of a probe"
        if score >= AGREEMENT:
            self._graphs.update(features=lambda x: features(x)[0], head=lambda f: head(f)[0])
            return
        warnings.warn(f"model {self.source}: {self.engine} cannot run its split ({reason}); running features() and "
                      "head() with torch", TapLabWarning, stacklevel=5)
        self._torch_split()

    def _graph(self, name: str):
        if name not in self._graphs:
            self._split_graphs()
        return self._graphs[name]

    # -- tensors in, tensors out (float RGB (N, 3, H, W) in [0, 1] on any device)

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._graphs["logits"](x)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The interior layer the runtime may warp: ``features()`` where the model has it, else the logits."""
        return self._graph("features")(x) if self.has_split else self.logits(x)

    @torch.inference_mode()
    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Features from :meth:`features` -> logits (the identity for models without a split)."""
        return self._graph("head")(features) if self.has_split else features

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._mean) / self._std if self._mean is not None else x

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normalise(x.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    # -- images in, labels out

    @torch.inference_mode()
    def predict(self, images: np.ndarray | str | os.PathLike[str]) -> np.ndarray:
        """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)``, or the path of an image file (read with OpenCV, as
        RGB) -> uint8 labels ``(H, W)`` / ``(N, H, W)`` at full size (logits upsampled bilinearly, then arg-max).

        Raises :class:`~taplab.errors.ConfigError` for a file that is missing or not an image, and for
        anything else that is not such an array (a float, grey or BGRA array, a list, ...)."""
        from taplab.data.transforms import to_tensor

        if isinstance(images, (str, os.PathLike)):
            images = read_image(images)
        _check_images(images)
        single = images.ndim == 3
        x = to_tensor(images)
        labels = logits_to_labels(self.logits(x), x.shape[-2:])
        out = labels.cpu().numpy()
        return out[0] if single else out

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """The only input size an ONNX file exported with fixed height and width takes; None for every other model."""
        return self._onnx.fixed_size() if self._onnx is not None else None

    def export_onnx(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as an ONNX file that :func:`load_model` (or any ONNX runtime) takes: float RGB in [0, 1]
        ``(N, 3, H, W)`` in (normalisation inside), logits out, height and width dynamic, class names and
        palette in its metadata. The file is checked in ONNX Runtime against torch before it is written
        (:class:`ModelError` if it does not agree; nothing is written then)."""
        if self.module is None:
            raise ModelError(f"{self.source} is an ONNX file already")
        data = export_graph(Prepared(self.module, self._mean, self._std), (probe_image(*EXPORT_SIZE).to(self.device),),
                            image_graph("logits"), self._onnx_metadata())
        probe = probe_image(*PROBE_SIZE)
        runner = OrtRunner(data, torch.device("cpu"), ["CPUExecutionProvider"])
        with torch.inference_mode():
            score = label_agreement(runner(probe)[0], self.module(self._prepare(probe.to(self.device))).cpu())
        if score < AGREEMENT:
            raise ModelError(f"{self.source}: its ONNX export gives torch's labels on {score:.1%} of a probe only; not written")
        return write_bytes(path, data)

    def _onnx_metadata(self) -> dict:
        return {"class_names": list(self.class_names), "palette": [list(c) for c in self.colors]}

    def geometry(self, height: int, width: int) -> Geometry:
        """Stride, class count and logits size for ``height x width`` input (one forward pass, cached). Under an
        engine other than torch, the first call at a size also checks that engine against torch there."""
        key = (height, width)
        if key not in self._geometry:
            geometry, out = _check_output(self, height, width)
            if self.engine != "torch" and self.module is not None and not self._agrees_at(height, width, out):
                self._use_torch()
            self._geometry[key] = geometry
        return self._geometry[key]

    def _agrees_at(self, height: int, width: int, out: torch.Tensor) -> bool:
        """Whether ``out``, the engine's logits of the ``height x width`` probe, gives torch's labels there."""
        probe = probe_image(height, width).to(self.device)
        with torch.inference_mode():
            score = label_agreement(out, self.module(self._prepare(probe)))
        if score < AGREEMENT:
            warnings.warn(f"model {self.source}: {self.engine} gives torch's labels on {score:.1%} of a {height}x{width} "
                          f"probe, under {AGREEMENT:.1%}; running it with torch", TapLabWarning, stacklevel=4)
        return score >= AGREEMENT


class _Attributes:
    """An ONNX file's metadata as the attributes a module would have (``class_names``, ``palette``, ``mean``, ``std``)."""

    def __init__(self, meta: dict):
        self.__dict__.update(meta)


def _agreement_on(probe: torch.Tensor):
    """An agreement check of two logits runners on ``probe``."""
    return lambda runner, reference: label_agreement(runner(probe)[0], reference(probe)[0])


def _check_images(images: Any) -> None:
    if not isinstance(images, np.ndarray):
        got = f"a {type(images).__name__}"
    elif images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[-1] != 3:
        got = f"a {images.dtype} array of shape {images.shape}"
    else:
        return
    raise ConfigError(f"predict() takes uint8 RGB images (H, W, 3) or (N, H, W, 3), or an image file's path; got {got}")


def _check_output(model: Model, height: int, width: int) -> tuple[Geometry, torch.Tensor]:
    """The model's geometry at ``height x width`` from its logits of the probe there, and those logits;
    :class:`ModelError` for an output that breaks the model contract."""
    x = probe_image(height, width).to(model.device)
    try:
        out = model.logits(x)
    except Exception as exc:  # noqa: BLE001 - the user's model may raise anything
        fixed = model.fixed_size
        if fixed is not None and fixed != (height, width):
            raise ModelError(f"{model.source} takes {fixed[0]}x{fixed[1]} frames only, not {height}x{width}: export it "
                             "with dynamic height and width") from None
        raise ModelError(f"{model.source}: forward pass on a (1, 3, {height}, {width}) input failed: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(f"{model.source}: the output is {type(out).__name__}, not a tensor of logits "
                         "(models returning dicts or tuples need a wrapper that returns the logits)")
    if out.ndim != 4 or out.shape[0] != 1 or not out.is_floating_point():
        raise ModelError(f"{model.source}: the output must be 4-D float logits (N, C, H/s, W/s); "
                         f"got {tuple(out.shape)} {out.dtype} for input (1, 3, {height}, {width})")
    c, h, w = out.shape[1:]
    if c < 2:
        raise ModelError(f"{model.source}: the output has {c} channel(s); a segmentation model needs >= 2 classes")
    stride = _stride(height, width, int(h), int(w), getattr(model, "stride", None))
    if stride is None:
        raise ModelError(f"{model.source}: output {h}x{w} for input {height}x{width} is not the input "
                         "divided by one integer stride")
    return Geometry(stride, int(c), (int(h), int(w))), out


def _stride(height: int, width: int, h: int, w: int, known: int | None) -> int | None:
    """The integer stride s with h in {H // s, ceil(H / s)} and the same for w; ``known`` (the stride
    found at the probe size) first, then the one nearest H / h (small inputs can fit several)."""
    candidates = ([known] if known else []) + sorted(range(1, max(height, width) + 1), key=lambda s: abs(s - height / max(h, 1)))
    return next((s for s in candidates if _fits(height, h, s) and _fits(width, w, s)), None)


def _fits(n: int, m: int, stride: int) -> bool:
    return m in (n // stride, math.ceil(n / stride))


def _normalisation(module: nn.Module, device: torch.device):
    mean, std = getattr(module, "mean", None), getattr(module, "std", None)
    if mean is None or std is None or isinstance(mean, torch.Tensor) and mean.ndim > 1:
        return None, None
    try:
        m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        s = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    except (TypeError, ValueError, RuntimeError):
        raise ModelError(f"the model's mean/std must be 3 numbers each, got {mean!r} / {std!r}") from None
    return m, s


def _metadata(module: nn.Module, n: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    names, colors = default_metadata(n)
    own_names, own_colors = getattr(module, "class_names", None), getattr(module, "palette", None)
    if own_names is not None and len(own_names) == n:
        names = tuple(str(s) for s in own_names)
    if own_colors is not None and len(own_colors) == n:
        colors = tuple(tuple(int(v) for v in c) for c in own_colors)
    return names, colors


# ---------------------------------------------------------------- resolving a spec


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def load_model(spec: Any, device: str | torch.device = "auto", num_classes: int | None = None,
               probe_size: tuple[int, int] = PROBE_SIZE, engine: str = "auto") -> Model:
    """Load a model and check it against the contract.

    ``spec`` is one of: ``"default"`` or the name of a shipped model (``taplab models`` lists them);
    a built-in network name (``"bl1"``, ``"bl2"``, ``"bl3"``: untrained, with a warning); a taplab
    checkpoint file; a TorchScript file; an ONNX file (``*.onnx``, from any framework: float RGB in [0, 1]
    ``(N, 3, H, W)`` in, logits out, height and width dynamic; ``class_names``, ``palette``, ``mean`` and ``std``
    read from its metadata where present); a folder written by ``taplab adapt`` (the model it refers to); an
    :class:`torch.nn.Module`; ``"package.module:factory"`` (a callable returning a module); or a :class:`Model`
    (returned as is, moved to ``device``, and to ``engine`` when one is named).
    ``num_classes``, when given, is checked against the model's output.

    ``device`` is ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``: a :class:`Model` or module given as
    ``spec`` stays where it is (a module without weights goes to the CPU), anything else goes to
    :func:`resolve_device`'s choice (``cuda`` where torch sees a GPU). A module that has to move is
    moved in place, as ``.to(device)`` moves it.

    ``engine``: ``"auto"`` (ONNX Runtime where it runs the model as torch does, else torch), ``"torch"`` or
    ``"onnxruntime"`` (:mod:`taplab.nets.engines`; an ONNX file always runs in ONNX Runtime).

    Raises :class:`~taplab.errors.ModelError` for anything that is not a working model, and
    :class:`~taplab.errors.ConfigError` for an unavailable device or an unknown engine.
    """
    check_engine(engine)
    if _is_auto(device) and isinstance(spec, Model):
        device = spec.device
    elif _is_auto(device) and isinstance(spec, nn.Module):
        device = next(itertools.chain(spec.parameters(), spec.buffers()), torch.empty(0)).device
    device = resolve_device(device)
    if isinstance(spec, Model):
        model = _moved(spec, device, probe_size, engine)
    elif isinstance(spec, nn.Module):
        model = Model(spec, f"<{type(spec).__name__}>", device, probe_size, engine=engine)
    elif isinstance(spec, (str, Path)):
        onnx_file = _onnx_file(str(spec))
        model = (_from_onnx(onnx_file, str(spec), device, probe_size, engine) if onnx_file
                 else Model(_module_from_string(str(spec)), str(spec), device, probe_size, engine=engine))
    else:
        raise ModelError(f"cannot load a model from a {type(spec).__name__}; expected a name, a file, "
                         "'package.module:factory' or an nn.Module")
    if num_classes is not None and model.num_classes != num_classes:
        raise ModelError(f"{model.source}: class count does not match: the model outputs {model.num_classes} "
                         f"classes, {num_classes} expected")
    return model


def _moved(model: Model, device: torch.device, probe_size: tuple[int, int], engine: str) -> Model:
    """``model`` on ``device`` and ``engine`` (``auto``: the engine it has), itself where it is there already."""
    wanted = model.requested_engine if engine == "auto" else engine
    if model.device == device and (engine == "auto" or model.engine == engine):
        return model
    if model.module is None:
        return load_model(model.source, device, probe_size=probe_size, engine=wanted)
    module = copy.deepcopy(model.module) if model.device != device else model.module
    return Model(module, model.source, device, probe_size, engine=wanted)


def _onnx_file(spec: str) -> Path | None:
    """The ONNX file ``spec`` names (itself, or the model of a folder written by ``taplab adapt``), or None."""
    path = Path(spec)
    if is_adapted(path):
        return _onnx_file(read_adapted(path).model)
    return path if path.suffix.lower() == ".onnx" and path.is_file() else None


def _from_onnx(path: Path, source: str, device: torch.device, probe_size: tuple[int, int], engine: str) -> Model:
    if engine == "torch":
        raise ConfigError(f"{source} is an ONNX file: it runs in onnxruntime, not torch (use engine auto or onnxruntime)")
    why = ENGINES["onnxruntime"].unavailable(device)
    if why:
        raise ConfigError(f"{source}: cannot run an ONNX file: {why}")
    try:
        runner = OrtRunner(path, device, ENGINES["onnxruntime"].providers(device))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
        raise ModelError(f"{path}: not a model ONNX Runtime can load: {failure(exc)}") from None
    fixed = runner.fixed_size()
    if fixed is not None:  # a graph exported for one size is probed at it; another size fails in geometry()
        probe_size = fixed
    return Model(None, source, device, probe_size, engine="onnxruntime", onnx=runner)


def _module_from_string(spec: str) -> nn.Module:
    shipped = find_shipped(spec)
    if shipped is not None:
        return _from_file(shipped.path)
    if spec == "default":
        raise ModelError("the default model is not installed (models/ is missing from this installation); "
                         "reinstall taplab or pass a checkpoint")
    if spec in {a.name for a in list_architectures()}:
        warnings.warn(f"{spec} is an untrained network (random weights); train it with `taplab train --model {spec}` "
                      "or pass a checkpoint", TapLabWarning, stacklevel=3)
        return create_model(spec)
    path = Path(spec)
    if is_adapted(path):  # a folder written by `taplab adapt`: the model it refers to
        return _module_from_string(read_adapted(path).model)
    if path.exists():
        return _from_file(path)
    if _FACTORY.match(spec):
        return _from_factory(spec)
    raise ModelError(f"no model {spec!r}: not a file, not 'package.module:factory', not a built-in network "
                     f"({', '.join(a.name for a in list_architectures())}) or a shipped model "
                     f"({', '.join(['default', *shipped_models()])})")


def _from_file(path: Path) -> nn.Module:
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a model file")
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{path}: cannot load the TorchScript file: {str(exc).splitlines()[0]}") from None
    return build_from_checkpoint(read_checkpoint(path), str(path))


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``code/`` folder and ``constants.pkl``; ``torch.save`` zips have neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _from_factory(spec: str) -> nn.Module:
    module_name, attr = spec.split(":")
    try:
        imported = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - importing user code may raise anything
        raise ModelError(f"{spec}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    factory = getattr(imported, attr, None)
    if factory is None:
        raise ModelError(f"{spec}: {module_name} has no {attr!r}")
    if not callable(factory):
        raise ModelError(f"{spec}: {attr} is not callable")
    try:
        module = factory()
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"{spec}: the factory returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:N"`` -> a device that exists here; :class:`ConfigError` otherwise.
    ``"auto"``: ``cuda`` where torch sees a GPU, else ``cpu``."""
    if _is_auto(device):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device}: torch has no CUDA here (use --device cpu)")
    return d


def _is_auto(device: str | torch.device) -> bool:
    return isinstance(device, str) and device == "auto"
