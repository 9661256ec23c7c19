"""The Tamed Warping Network's correction stage: warp an interior layer, re-run the shallow layers, correct.

Where DMNet's fusion (:mod:`taplab.nets.conet`) corrects the warped logits from the frame's pixels,
the Tamed Warping Network (TWNet) warps the model's *deep interior* from the key frame and re-runs the
model's first encoder layers on the current frame (cheap: the stride-4 stage), then finishes the
forward pass from both (:meth:`~taplab.nets.base.SegmentationNet.decode`). Between the warp and the
decoder, two small networks correct the warped interior ``F^``:

- **CFR** (correction of the feature residue), ``ResF = phi_r([F^, f_t])``: what the warp got wrong,
  from the warped interior and the current frame's shallow features ``f_t``;
- **RGA** (residual-guided attention), ``A = phi_a(residual)``: where to apply it, from the codec's
  residual on the frame's cells (its mean level and the share of pixels above
  ``fusion_threshold``); ``F = F^ + A * ResF``.

The corrected interior goes through the model's decoder with ``f_t``: the corrected logits.

Decisions, made here:

- **The split** is the model's (``interior()``/``decode()``, :mod:`taplab.nets.base`; BL2's is
  before its decoder's last fusion, :mod:`taplab.nets.bl2`). A model without one falls back to
  logits: its "deep interior" is its logits, its "shallow features" the frame's colour averaged
  over each cell, and ``decode`` is the identity, so TWNet's correction becomes a CFR on the warped
  logits (:class:`Split`).
- **What the runtime warps** with TWNet is ``[logits, deep]`` in one tensor (:class:`Split.state`):
  the logits keep key frames exact (their labels are the CNN's, as without TWNet), the deep part is
  what TWNet corrects; every mechanism that carries features (accumulated motion, B-frames from both
  anchors, interpolation, the key-frame blend, RGC's region) carries both alike.
- **The networks** are 1x1 and depthwise 3x3 convolutions on the feature grid, batch norms folded at
  run time; CFR's last layer starts at zero and RGA's at 0.5, so an untrained TWNet is FFW's warp
  put through the decoder with the current frame's shallow features.
- **Training** is label-free adaptation (``taplab adapt --kind twnet``, :mod:`taplab.adapt`): the
  decoded logits learn the per-frame model's on the user's footage (soft targets, pseudo-labels,
  DMNet's edge-semantics term; a supervised term where labels exist). That teacher term is the
  consistency loss: the warped-and-corrected output against the model's own output on the frame.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taplab.errors import ModelError
from taplab.nets.checkpoint import read_dict, write_dict
from taplab.nets.engines import choose_runner, probe_image
from taplab.nets.layers import conv_bn_relu, fold_batchnorm
from taplab.nets.onnx import EXPORT_SIZE, Method, Prepared, image_graph
from taplab.ops.bidirectional import cell_errors
from taplab.ops.fusion import residual_map

FORMAT = "taplab-twnet"
VERSION = 1
#: channels of RGA's input: the residual's mean level per cell (/255) and the share of its pixels above the threshold
RESIDUAL_CHANNELS = 2


class TamedNet(nn.Module):
    """CFR and RGA (module docstring): ``(F^ (N, D, h, w), f_t (N, S, h, w), residual (N, 2, h, w))`` ->
    ``(F, A)``, the corrected interior and the attention ``A`` (N, 1, h, w) in [0, 1]."""

    def __init__(self, deep: int, shallow: int, width: int = 32):
        super().__init__()
        self.deep, self.shallow, self.width = int(deep), int(shallow), int(width)
        self.cfr = nn.Sequential(conv_bn_relu(self.deep + self.shallow, self.width, 1),
                                 conv_bn_relu(self.width, self.width, 3, groups=self.width),
                                 nn.Conv2d(self.width, self.deep, 1))
        self.rga = nn.Sequential(nn.Conv2d(RESIDUAL_CHANNELS, 8, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(8, 1, 3, padding=1))
        for last in (self.cfr[-1], self.rga[-1]):  # untrained: FFW's warp, decoded with the current frame
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, warped: torch.Tensor, shallow: torch.Tensor,
                residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attention = torch.sigmoid(self.rga(residual))
        return warped + attention * self.cfr(torch.cat([warped, shallow], 1)), attention


def residual_cells(residual: np.ndarray, grid: tuple[int, int], threshold: float) -> torch.Tensor:
    """RGA's input: ``(H, W)`` uint8 absolute residual -> ``(2, h, w)``: its mean level per cell of ``grid`` over 255
    (:func:`~taplab.ops.bidirectional.cell_errors`), and the share of the cell's pixels above ``threshold``
    (:func:`~taplab.ops.fusion.residual_map`)."""
    return torch.stack([cell_errors(residual, grid) / 255, residual_map(residual, grid, threshold)])


class Split:
    """A model's Tamed split as the runtime and the adaptation use it (module docstring), with the fallback to logits
    for a model without one (``native`` False). Tensors in are RGB ``(N, 3, H, W)`` in [0, 1].

    ``interior()`` and ``shallow()`` run on the model's engine (:mod:`taplab.nets.engines`): under ONNX Runtime, as
    two graphs of their own, each used where it gives torch's outputs on a probe (otherwise torch runs it, with a
    warning); ``decode`` is always torch's (training differentiates it)."""

    def __init__(self, model):
        self.model = model
        module = model.module
        # taplab's networks say whether they have the split; any other module has it if it has the three methods
        methods = all(callable(getattr(module, name, None)) for name in ("interior", "shallow", "decode"))
        self.native = module is not None and bool(getattr(module, "has_interior", methods))
        self.classes = model.num_classes
        if self.native:
            with torch.inference_mode():
                _, shallow, deep = module.interior(model._prepare(torch.zeros(1, 3, 64, 64)))
            self.shallow_channels, self.deep_channels = shallow.shape[1], deep.shape[1]
            self._interior = self._runner("interior", ("logits", "shallow", "deep"))
            self._shallow = self._runner("shallow", ("shallow",))
        else:
            self.shallow_channels, self.deep_channels = 3, self.classes

    def _runner(self, method: str, outputs: tuple[str, ...]):
        """``method`` of the model's module on its engine; None: torch, on the module as the model runs it."""
        model = self.model
        if model.engine == "torch":
            return None
        probe = probe_image(64, 96).to(model.device)

        def agreement(runner, reference) -> float:  # the least share of values within 1% (or 0.01) of torch's
            return min(float(torch.isclose(a, b, rtol=1e-2, atol=1e-2).float().mean())
                       for a, b in zip(runner(probe), reference(probe)))

        runner = choose_runner(Prepared(Method(model.module, method), model._mean, model._std),
                               (probe_image(*EXPORT_SIZE),), image_graph(f"twnet-{method}", outputs=outputs),
                               model.engine, model.device, agreement, f"model {model.source}'s {method}()")
        return None if runner.engine == "torch" else runner

    @torch.inference_mode()
    def state(self, x: torch.Tensor) -> torch.Tensor:
        """What the runtime warps for a key frame: ``[logits, deep]`` ``(N, C + D, h, w)``; the logits are the CNN's."""
        if not self.native:
            logits = self.model.logits(x).float()
            return torch.cat([logits, logits], 1)
        if self._interior is not None:
            logits, _, deep = self._interior(x)
        else:
            logits, _, deep = self.model.module.interior(self.model._prepare(x))
        return torch.cat([logits, deep], 1).float()

    @torch.inference_mode()
    def shallow(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The current frame's shallow features ``(N, S, h, w)`` on the output ``grid``."""
        if not self.native:
            return F.interpolate(x, size=grid, mode="area")
        if self._shallow is not None:
            return self._shallow(x)[0].float()
        return self.model.module.shallow(self.model._prepare(x)).float()

    def decode(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        """Logits from shallow features and a (corrected) deep interior; differentiable in ``deep`` (training)."""
        if not self.native:
            return deep
        return self.model.module.decode(shallow, deep)

    def logits(self, state: torch.Tensor) -> torch.Tensor:
        """The logits part of a state (``(C + D, h, w)`` or batched)."""
        return state[..., : self.classes, :, :]

    def deep(self, state: torch.Tensor) -> torch.Tensor:
        """The deep part of a state."""
        return state[..., self.classes:, :, :]


class Tamed:
    """A trained :class:`TamedNet` as the runtime uses it, for one model: :meth:`__call__` corrects a warped state.

    ``classes`` and ``stride`` are those of the model it was trained for; ``source`` where the file came from."""

    stage = "twnet"

    def __init__(self, net: TamedNet, classes: tuple[str, ...], stride: int, source: str,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = fold_batchnorm(net.eval()).to(self.device)
        if self.device.type == "cpu":  # oneDNN's convolutions are faster channels-last (as CoNet's)
            self.net = self.net.to(memory_format=torch.channels_last)
        self.classes, self.stride, self.source = tuple(classes), int(stride), source
        self.split: Split | None = None

    def check(self, model) -> None:
        """:class:`ModelError` unless this TWNet was trained for ``model`` (its classes, stride and split); binds it."""
        split = Split(model)
        if tuple(model.class_names) != self.classes or model.stride != self.stride \
                or (split.deep_channels, split.shallow_channels) != (self.net.deep, self.net.shallow):
            raise ModelError(f"TWNet correction {self.source} was trained for another model ({len(self.classes)} classes "
                             f"at stride {self.stride}, interior {self.net.deep}+{self.net.shallow} channels) than "
                             f"{model.source} ({model.num_classes} classes at stride {model.stride}, interior "
                             f"{split.deep_channels}+{split.shallow_channels})")
        self.split = split

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor, state: torch.Tensor,
                 residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` (1, 3, H, W) in [0, 1], a warped ``state`` (C + D, h, w), ``residual`` (2, h, w) from
        :func:`residual_cells` -> the corrected state and the attention ``A`` (h, w)."""
        split, dev = self.split, self.device
        grid = tuple(state.shape[-2:])
        shallow = split.shallow(image.to(dev), grid)
        deep, attention = self.net(split.deep(state)[None].to(dev), shallow, residual[None].to(dev))
        logits = split.decode(shallow, deep)
        return torch.cat([logits, deep], 1)[0].float().to(state.device), attention[0, 0].to(state.device)


def save_tamed(path: str | os.PathLike[str], net: TamedNet, classes: tuple[str, ...], stride: int, base: str,
               **extra: Any) -> Path:
    """Write a TamedNet, the classes and stride of the model it corrects and ``extra`` keys to ``path`` atomically."""
    data = {"format": FORMAT, "version": VERSION, "kind": "twnet",
            "arch_args": {"deep": net.deep, "shallow": net.shallow, "width": net.width},
            "state_dict": net.state_dict(), "classes": list(classes), "stride": int(stride), "base": base, **extra}
    return write_dict(path, data)


def is_tamed(path: str | os.PathLike[str]) -> bool:
    """Whether a correction file holds a TWNet (else it is taken for a CoNet)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the CoNet reader reports an unreadable file
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def load_tamed(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Tamed:
    """A :class:`Tamed` from a file written by :func:`save_tamed`."""
    data = read_dict(path, FORMAT, VERSION, "TWNet correction")
    net = TamedNet(**data["arch_args"])
    try:
        net.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit TamedNet{data['arch_args']}: {str(exc).splitlines()[0]}") from None
    return Tamed(net, tuple(data["classes"]), data["stride"], str(path), device)
