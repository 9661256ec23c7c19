"""BL3: PSPNet-style pyramid pooling on a dilated ResNet-50, output stride 8 (the accurate, slow baseline).

The last two ResNet stages are dilated instead of strided (output stride 8, as in PSPNet), and
a pyramid pooling module (bins 1, 2, 3, 6) adds global context. ``features()`` is the fused
512-channel stride-8 map; ``head()`` a 1x1 classifier. PSPNet's auxiliary loss on stage 3 is left
out.

Cost (19 classes, defaults): stride 8, 46.6 M parameters, 2852 GFLOPs at 1024x2048 (torch's
FLOP counter: a multiply-add counts 2).
"""

from __future__ import annotations

import torch
from torch import nn

from taplab.nets.backbones import Bottleneck, ResNet
from taplab.nets.base import SegmentationNet
from taplab.nets.layers import PyramidPooling
from taplab.nets.registry import register_model


class PSPNet(SegmentationNet):
    stride = 8

    def __init__(self, num_classes: int = 19, layers: tuple[int, ...] = (3, 4, 6, 3),
                 decoder_channels: int = 512, dropout: float = 0.1, **meta):
        super().__init__(num_classes, **meta)
        self.backbone = ResNet(Bottleneck, tuple(layers), dilate=(True, True))
        self.decoder = PyramidPooling(self.backbone.channels[-1], decoder_channels)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(decoder_channels, num_classes, 1))

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone(x)[-1])

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@register_model
def bl3(num_classes: int = 19, **kwargs) -> PSPNet:
    """BL3: PSPNet pyramid pooling on a dilated ResNet-50, stride 8 (most accurate, slowest)."""
    return PSPNet(num_classes, **kwargs)
