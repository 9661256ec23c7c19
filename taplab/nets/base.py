"""What every taplab network shares: input normalisation, odd sizes, the features()/head() split.

A taplab network is a plain :class:`torch.nn.Module` that honours the model contract
(``(N, 3, H, W)`` float RGB in [0, 1] -> logits ``(N, C, ceil(H/s), ceil(W/s))``), so it can be
used without taplab, or traced to TorchScript (``torch.jit.trace`` at the size it will run at:
the padding to a multiple of 32 is fixed when tracing). On top of the contract it exposes what the runtime
can use: ``stride``, ``num_classes``, ``class_names``, ``palette``, and the split
``forward(x) == head(features(x))`` where ``features`` is an interior layer at the output stride
(the Tamed Warping Network warps such a layer instead of the logits).
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

    # -- the contract
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], ``(N, 3, H, W)`` -> interior features ``(N, D, ceil(H/s), ceil(W/s))``."""
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (m - h % m) % m, (m - w % m) % m
        x = self.normalize(x)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        f = self.extract(x)
        s = self.stride
        return f[..., : (h + s - 1) // s, : (w + s - 1) // s]

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Interior features -> logits ``(N, C, h, w)`` on the same grid."""
        return self.classify(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
