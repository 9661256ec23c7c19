"""BL2: a MobileNetV2 encoder with an FPN decoder, output stride 4 (the TapLab paper's default baseline).

The decoder follows the FPN segmentation design (Kirillov et al.'s panoptic FPN, as in
segmentation_models_pytorch): lateral 1x1 projections of the four encoder stages, a top-down
pathway, then each pyramid level is refined and upsampled to stride 4 and the levels are summed.
Convolutions in the decoder are depthwise-separable to keep it light on CPU next to the encoder.

``features()`` is the summed stride-4 map (``decoder_channels`` channels); ``head()`` is a 1x1
classifier on it.

Cost (19 classes, defaults): stride 4, 1.86 M parameters, 26.0 GFLOPs at 1024x2048 (torch's
FLOP counter: a multiply-add counts 2).
"""

from __future__ import annotations

import torch
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


@register_model
def bl2(num_classes: int = 19, **kwargs) -> MobileNetFPN:
    """BL2: MobileNetV2 + FPN decoder, stride 4 (the papers' default; light)."""
    return MobileNetFPN(num_classes, **kwargs)
