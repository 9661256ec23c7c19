"""BL2: a MobileNetV2 encoder with an FPN decoder, output stride 4 (the TapLab paper's default baseline).

The decoder follows the FPN segmentation design (Kirillov et al.'s panoptic FPN, as in
segmentation_models_pytorch): lateral 1x1 projections of the four encoder stages, a top-down
pathway, then each pyramid level is refined and upsampled to stride 4 and the levels are summed.
Convolutions in the decoder are depthwise-separable to keep it light on CPU next to the encoder.

``features()`` is the summed stride-4 map (``decoder_channels`` channels); ``head()`` is a 1x1
classifier on it.

The Tamed Warping Network's split (``interior()``/``decode()``, :mod:`taplab.nets.base`) is before the
decoder's last fusion, the sum of its levels. *Shallow*: the encoder's stride-4 stage (24 channels at
width 1), which a warped frame re-runs on itself. *Deep*: the top-down context the finest level receives
(``decoder_channels``), and the deeper levels' share of the logits (``C`` channels: the classifier is
1x1 and linear, so the deeper levels' sum is carried as its logits, ``W R + b``, not as 64 channels).
``decode`` adds the finest level, refined from the shallow features and the context, to that share.

Cost (19 classes, defaults): stride 4, 1.86 M parameters, 26.0 GFLOPs at 1024x2048 (torch's
FLOP counter: a multiply-add counts 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taplab.nets.backbones import MobileNetV2
from taplab.nets.base import SegmentationNet
from taplab.nets.layers import resize_to, separable
from taplab.nets.registry import register_model


class FPNDecoder(nn.Module):
    """Encoder stages (strides 4..32) -> one map at the finest stage's stride."""

    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        # the deeper a level, the more upsampling it needs; one refinement per level is enough here
        self.refine = nn.ModuleList(separable(channels, channels) for _ in in_channels)

    def context(self, stages: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The finest level's top-down context (upsampled to it) and the deeper levels' refined sum, at its size."""
        top = deeper = None
        for i in reversed(range(1, len(stages))):
            lat = self.lateral[i](stages[i])
            top = lat if top is None else lat + resize_to(top, lat.shape[-2:])
            level = resize_to(self.refine[i](top), stages[0].shape[-2:])
            deeper = level if deeper is None else deeper + level
        return resize_to(top, stages[0].shape[-2:]), deeper

    def finest(self, shallow: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The finest level's refined map from the encoder's finest stage and its top-down context."""
        return self.refine[0](self.lateral[0](shallow) + context)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        pyramid = [None] * len(stages)
        top = None
        for i in reversed(range(len(stages))):
            lat = self.lateral[i](stages[i])
            top = lat if top is None else lat + resize_to(top, lat.shape[-2:])
            pyramid[i] = top
        size = pyramid[0].shape[-2:]
        return sum(resize_to(refine(p), size) for refine, p in zip(self.refine, pyramid))


class MobileNetFPN(SegmentationNet):
    stride = 4

    def __init__(self, num_classes: int = 19, width: float = 1.0, decoder_channels: int = 64,
                 dropout: float = 0.1, **meta):
        super().__init__(num_classes, **meta)
        self.encoder = MobileNetV2(width)
        self.decoder = FPNDecoder(self.encoder.channels, decoder_channels)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(decoder_channels, num_classes, 1))

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    # -- the Tamed Warping Network's split (module docstring)
    def split_shallow(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder.stem(x)
        for group in self.encoder.groups[: self.encoder.TAPS[0] + 1]:
            x = group(x)
        return x

    def split_extract(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stages = self.encoder(x)
        context, deeper = self.decoder.context(stages)
        conv = self.classifier[-1]
        return stages[0], torch.cat([context, F.conv2d(deeper, conv.weight, conv.bias)], 1)

    def split_decode(self, shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        channels = self.decoder.lateral[0].out_channels
        finest = self.decoder.finest(shallow, deep[:, :channels])
        return F.conv2d(finest, self.classifier[-1].weight) + deep[:, channels:]


@register_model
def bl2(num_classes: int = 19, **kwargs) -> MobileNetFPN:
    """BL2: MobileNetV2 + FPN decoder, stride 4 (the papers' default; light)."""
    return MobileNetFPN(num_classes, **kwargs)
