"""What every taplab network shares: input normalisation, odd sizes, the features()/head() split.

A taplab network is a plain :class:`torch.nn.Module` that honours the model contract
(``(N, 3, H, W)`` float RGB in [0, 1] -> logits ``(N, C, ceil(H/s), ceil(W/s))``), so it can be
used without taplab, or traced to TorchScript (``torch.jit.trace`` at the size it will run at:
the padding to a multiple of 32 is fixed when tracing). On top of the contract it exposes what the runtime
can use: ``stride``, ``num_classes``, ``class_names``, ``palette``, and the split
``forward(x) == head(features(x))`` where ``features`` is an interior layer at the output stride.

A network may also expose the Tamed Warping Network's split (``has_interior``): ``interior(x)`` gives
its shallow features (the first encoder layers, cheap to re-run on every frame) and its deep
interior (what those layers feed into the decoder from deeper down), both on the output grid, and
``decode(shallow, deep)`` finishes the forward pass from them: ``forward(x) == decode(*interior(x))``.
A network implements ``split_extract(x)``/``split_decode(shallow, deep)`` for it
(:class:`~taplab.nets.bl2.MobileNetFPN` does); the runtime falls back to warping logits for one that does not
(:mod:`taplab.nets.twnet`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taplab.data.labels import default_metadata
from taplab.nets.layers import Normalize


class SegmentationNet(nn.Module):
    """Base of taplab's networks.

    Subclasses set ``stride`` (the output stride) and implement ``extract(x)``: normalised input
    padded to a multiple of ``pad_multiple`` -> the interior features at ``stride``, and
    ``classify(features)`` -> logits. The base pads the input (edge replication, right and bottom)
    so that any size works, and crops the result to ``ceil(H / stride) x ceil(W / stride)``.
    """

    stride: int = 8
    #: the input is padded to a multiple of this (the deepest backbone stride)
    pad_multiple: int = 32

    def __init__(self, num_classes: int, class_names: tuple[str, ...] | None = None,
                 colors: list[tuple[int, int, int]] | None = None):
        super().__init__()
        self.num_classes = int(num_classes)
        default_names, default_colors = default_metadata(self.num_classes)
        self.class_names = tuple(class_names) if class_names is not None else default_names
        self.palette = [tuple(int(v) for v in c) for c in (colors if colors is not None else default_colors)]
        self.normalize = Normalize()  # ImageNet's statistics, applied inside: the input stays RGB in [0, 1]

    # -- to implement
    def extract(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    #: optional, the Tamed Warping Network's split: padded normalised input -> (shallow, deep) at ``stride``
    split_extract = None
    #: optional, with ``split_extract``: (shallow, deep) -> logits
    split_decode = None
    #: optional: padded normalised input -> shallow alone (default: ``split_extract``'s first part)
    split_shallow = None

    # -- the contract
    def _run(self, extract, x: torch.Tensor):
        """``extract`` on the normalised input padded to ``pad_multiple``, its outputs cropped to the output grid."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (m - h % m) % m, (m - w % m) % m
        x = self.normalize(x)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = extract(x)
        s = self.stride
        crop = (Ellipsis, slice(0, (h + s - 1) // s), slice(0, (w + s - 1) // s))
        return tuple(o[crop] for o in out) if isinstance(out, tuple) else out[crop]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], ``(N, 3, H, W)`` -> interior features ``(N, D, ceil(H/s), ceil(W/s))``."""
        return self._run(self.extract, x)

    @property
    def has_interior(self) -> bool:
        """Whether the network has the Tamed Warping Network's split (``interior()``/``decode()``)."""
        return self.split_extract is not None and self.split_decode is not None

    def interior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RGB in [0, 1] -> ``(logits, shallow, deep)`` on the output grid, the logits ``forward(x)``'s. Decoding
        the cropped parts, ``decode(shallow, deep)``, gives them too, but for the last row and column of cells
        where the input was padded (the decoder's 3x3 layers see the padding there)."""
        def split(padded):
            shallow, deep = self.split_extract(padded)
            return self.split_decode(shallow, deep), shallow, deep
        return self._run(split, x)

    def shallow(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> the shallow part of :meth:`interior` alone (what a warped frame re-runs)."""
        return self._run(self.split_shallow or (lambda p: self.split_extract(p)[0]), x)

    def decode(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        """The forward pass finished from :meth:`interior`'s two parts: logits on the same grid."""
        return self.split_decode(shallow, deep)

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Interior features -> logits ``(N, C, h, w)`` on the same grid."""
        return self.classify(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
