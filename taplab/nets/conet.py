"""CoNet: the DMNet paper's light correction network, and the files it ships in.

CoNet sees what the warp cannot: the current frame. It takes the frame, the warped logits of a
segmentation model and the coarse distortion map (:func:`taplab.ops.fusion.coarse_distortion`),
and returns

- ``updated``: corrected logits ``F_updated = F_warped + delta`` (C channels, the feature grid);
- ``edge``: the logit of an edge / thin-object map ``M_edge`` on the same grid.

The runtime fuses them (:func:`taplab.ops.fusion.fuse`) where the distortion map says warping failed.
A CoNet belongs to one segmentation model (its classes, its stride, its logits' scale); it is
trained for it with ``taplab train --model conet --base MODEL`` (:mod:`taplab.train_correction`).

Design, chosen for a CPU budget of a few ms per 720p frame: the frame enters at twice the grid's
resolution (:data:`IMAGE_SCALE`; area-downsampled by :func:`correction_image`), one strided 3x3
convolution brings it to the grid, where it is concatenated with the softmax of the warped logits
and the coarse map; a two-level encoder-decoder of depthwise-separable convolutions (the lower level
dilated, for a receptive field of a few cells' motion) follows, then two 1x1 heads. 15.8 k parameters
for 19 classes at width 32. It is memory-bound: at 1280x720 a 32-channel map of the 180x320 grid is
7 MB, and every layer reads and writes one (its cost: ``benchmarks/bench_conet.py``, docs/runtime.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taplab.errors import ModelError
from taplab.nets.checkpoint import read_dict, write_dict
from taplab.nets.engines import check_engine, choose_runner, label_agreement, probe_image
from taplab.nets.layers import Normalize, conv_bn_relu, fold_batchnorm, separable
from taplab.nets.onnx import image_graph

FORMAT = "taplab-correction"
VERSION = 1
#: CoNet sees the frame at this many times the resolution of the feature grid (area-downsampled): its
#: stride-2 stem brings it to the grid, keeping detail finer than a cell. Trained weights depend on it.
IMAGE_SCALE = 2


def image_size(grid: tuple[int, int], scale: int = 1) -> tuple[int, int]:
    """The frame's size as a CoNet of ``scale`` takes it for the feature grid ``grid = (h, w)``: :data:`IMAGE_SCALE`
    times its working grid, which is the feature grid divided by ``scale``, rounded up."""
    h, w = grid
    return IMAGE_SCALE * -(-h // scale), IMAGE_SCALE * -(-w // scale)


def correction_image(image: np.ndarray, grid: tuple[int, int], scale: int = 1) -> np.ndarray:
    """The frame as CoNet takes it: uint8 RGB ``(H, W, 3)`` -> uint8 RGB of :func:`image_size` (``(IMAGE_SCALE * h,
    IMAGE_SCALE * w, 3)`` at ``scale`` 1), area-resized, for the feature grid ``grid = (h, w)`` (cells of the
    logits it corrects) and a network of ``scale``.

    The runtime and the trainer both prepare the frame with this (OpenCV's area resize of the uint8
    frame), so that CoNet is trained on exactly what it sees at run time; ``CoNet.forward`` resizes an
    image of any other size itself, in float.
    """
    height, width = image_size(grid, 1)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if scale > 1:  # in two steps, as the trainers' samples (at scale 1) reach it: and OpenCV halves faster
        height, width = image_size(grid, scale)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


class CoNet(nn.Module):
    """``forward(image, warped, coarse) -> (updated, edge)``.

    ``scale`` 2 runs the network on a grid half the feature grid's size (the frame at the feature grid's
    size, the warped logits averaged and the coarse map max-pooled over 2x2 cells) and upsamples its
    outputs bilinearly: a quarter of the cells, for coarser corrections (files written before ``scale``
    existed load at 1).

    Args:
        image: ``(N, 3, H, W)`` RGB in [0, 1] at any size (area-resized to :func:`image_size` unless it has that
            size already, as :func:`correction_image` makes it).
        warped: ``(N, C, h, w)`` warped logits on the feature grid.
        coarse: ``(N, 1, h, w)`` coarse distortion map in [0, 1].
    """

    def __init__(self, num_classes: int, width: int = 32, scale: int = 1):
        super().__init__()
        if scale not in (1, 2):
            raise ModelError(f"CoNet's scale is 1 (the feature grid) or 2 (half of it), got {scale!r}")
        self.num_classes, self.width, self.scale = int(num_classes), int(width), int(scale)
        self.normalize = Normalize()
        self.stem = conv_bn_relu(3, 16, 3, stride=2)
        self.enter = nn.Sequential(conv_bn_relu(16 + num_classes + 1, width, 1), separable(width, width))
        self.down = nn.Sequential(conv_bn_relu(width, width, 3, stride=2, groups=width), conv_bn_relu(width, 2 * width, 1),
                                  conv_bn_relu(2 * width, 2 * width, 3, dilation=2, groups=2 * width),
                                  conv_bn_relu(2 * width, 2 * width, 1))
        self.up = nn.Sequential(conv_bn_relu(3 * width, width, 1), separable(width, width))
        self.delta = nn.Conv2d(width, num_classes, 1)
        self.edge = nn.Conv2d(width, 1, 1)
        nn.init.zeros_(self.delta.weight)  # start as the identity: F_updated = F_warped
        nn.init.zeros_(self.delta.bias)

    def forward(self, image: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = warped.shape[-2:]
        size = image_size((h, w), self.scale)
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="area")
        scores, flags = warped, coarse
        if self.scale > 1:
            scores = F.avg_pool2d(warped, self.scale, ceil_mode=True)
            flags = F.max_pool2d(coarse, self.scale, ceil_mode=True)
        x = self.stem(self.normalize(image))
        x = self.enter(torch.cat([x, scores.softmax(1), flags], 1))
        low = self.down(x)
        x = self.up(torch.cat([x, F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)], 1))
        delta, edge = self.delta(x), self.edge(x)
        if self.scale > 1:
            delta = F.interpolate(delta, size=(h, w), mode="bilinear", align_corners=False)
            edge = F.interpolate(edge, size=(h, w), mode="bilinear", align_corners=False)
        return warped + delta, edge


class Correction:
    """A trained CoNet as the runtime uses it: the module on its device, the engine that runs it
    (:mod:`taplab.nets.engines`; ``engine="auto"`` is torch, measured the faster for CoNet on CPU)
    and what it was trained for.

    ``classes`` are the segmentation model's class names and ``stride`` its stride; ``source`` is
    where the file came from.
    """

    def __init__(self, net: CoNet, classes: tuple[str, ...], stride: int, source: str,
                 device: str | torch.device = "cpu", engine: str = "torch"):
        self.device = torch.device(device)
        self.net = fold_batchnorm(net.eval()).to(device)
        if self.device.type == "cpu":
            # oneDNN's convolutions are faster channels-last, as for the segmentation models (at 720p, 40 -> 27
            # ms, median of 8 alternating runs); the frame from to_tensor has that layout already
            self.net = self.net.to(memory_format=torch.channels_last)
        self.classes, self.stride, self.source = tuple(classes), int(stride), source
        self.scale = net.scale  #: the frame's size for it: correction_image(frame, grid, scale)
        # auto is torch here: ONNX Runtime runs CoNet's depthwise layers slower than oneDNN's channels-last
        # convolutions (benchmarks/bench_engines.py --part networks, docs/engines.md)
        engine = "torch" if check_engine(engine) == "auto" else engine
        probe = tuple(t.to(self.device) for t in _probe(len(self.classes), self.scale, PROBE_GRID))
        self._run = choose_runner(self.net, _probe(len(self.classes), self.scale, EXPORT_GRID),
                                  image_graph("conet", ("image", "warped", "coarse"), ("updated", "edge")),
                                  engine, self.device,
                                  lambda runner, reference: _agreement(runner(*probe), reference(*probe)),
                                  f"correction network {source}")
        self.engine = getattr(self._run, "engine", "torch")

    def __call__(self, image: torch.Tensor, warped: torch.Tensor, coarse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` (3, H, W) in [0, 1] (:func:`correction_image`'s size), ``warped`` (C, h, w), ``coarse`` (h, w)
        -> ``updated`` (C, h, w) and ``M_edge`` (h, w), a probability."""
        dev = self.device
        updated, edge = self._run(image[None].to(dev), warped[None].to(dev), coarse[None, None].to(dev))
        return updated[0].to(warped.device), torch.sigmoid(edge[0, 0]).to(warped.device)

    def check(self, model) -> None:
        """:class:`ModelError` unless this CoNet was trained for ``model``'s classes and stride."""
        if tuple(model.class_names) != self.classes or model.stride != self.stride:
            raise ModelError(f"correction network {self.source} was trained for {len(self.classes)} classes at stride "
                             f"{self.stride}, but the model {model.source} has {model.num_classes} at stride {model.stride}")


#: the feature grid a CoNet is exported at (traced: the frame then has exactly image_size(grid, scale), as at
#: run time), and the other grid its ONNX graph is checked against torch on
EXPORT_GRID, PROBE_GRID = (34, 50), (45, 80)


def _probe(classes: int, scale: int, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Deterministic inputs of a CoNet at ``grid``: a probe frame, confident warped logits, a coarse map of ~30%
    ones."""
    g = torch.Generator().manual_seed(1)
    h, w = grid
    warped = 4 * torch.randn(1, classes, h, w, generator=g)
    coarse = (torch.rand(1, 1, h, w, generator=g) > 0.7).float()
    return probe_image(*image_size(grid, scale)), warped, coarse


def _agreement(outputs: tuple[torch.Tensor, ...], reference: tuple[torch.Tensor, ...]) -> float:
    """The lesser of the updated logits' label agreement and the share of edge-map cells within 0.01 (probabilities)."""
    (u1, e1), (u0, e0) = outputs, reference
    close = float(((torch.sigmoid(e1) - torch.sigmoid(e0)).abs() <= 0.01).float().mean())
    return min(label_agreement(u1, u0), close)


def save_correction(path: str | os.PathLike[str], net: CoNet, classes: tuple[str, ...], stride: int, base: str,
                    half: bool = False, **extra: Any) -> Path:
    """Write a CoNet, the classes and stride of the model it corrects and ``extra`` keys to ``path`` atomically."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    arch = {"num_classes": net.num_classes, "width": net.width, "scale": net.scale}
    data = {"format": FORMAT, "version": VERSION, "arch_args": arch, "state_dict": state, "classes": list(classes),
            "stride": int(stride), "base": base, **extra}
    return write_dict(path, data)


def read_correction(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dict of a CoNet file; :class:`ModelError` if ``path`` is not one."""
    return read_dict(path, FORMAT, VERSION, "correction network")


def load_correction(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                    engine: str = "torch") -> Correction:
    """A :class:`Correction` from a file written by :func:`save_correction`, run by ``engine``."""
    data = read_correction(path)
    return Correction(_build(data, path), tuple(data["classes"]), data["stride"], str(path), device, engine)


def _build(data: dict[str, Any], source) -> CoNet:
    classes = data["arch_args"].get("num_classes")
    if len(data.get("classes", ())) != classes:
        raise ModelError(f"{source}: a correction network for {classes} classes cannot carry "
                         f"{len(data.get('classes', ()))} class names")
    net = CoNet(**data["arch_args"])
    try:
        net.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in data["state_dict"].items()})
    except RuntimeError as exc:
        raise ModelError(f"{source}: weights do not fit CoNet{data['arch_args']}: {str(exc).splitlines()[0]}") from None
    return net


def export_correction(src: str | os.PathLike[str], dst: str | os.PathLike[str], half: bool = True) -> Path:
    """A training run's CoNet file without its training state (float16 weights when ``half``): what ships in ``models/``."""
    data = read_correction(src)
    net = _build(data, src)
    extra = {k: v for k, v in data.items()
             if k not in ("format", "version", "arch_args", "state_dict", "classes", "stride", "base", "optimizer", "trainer")}
    return save_correction(dst, net, tuple(data["classes"]), data["stride"], data["base"], half=half, **extra)
