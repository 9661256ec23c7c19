"""BL1: an ICNet-like cascade of three resolutions on a light ResNet, output stride 8.

ICNet (Zhao et al. 2018) spends the deep computation on a quarter-resolution input and only a
few convolutions on the full resolution:

- low branch: the image at 1/2 goes through the ResNet's stem and first two stages (-> 1/16),
  is pooled to 1/32 and goes through the last two (dilated) stages and pyramid pooling;
- middle branch: that same 1/16 map (the branches share the first stages, as in ICNet);
- high branch: three strided 3x3 convolutions on the full image (-> 1/8).

Cascade feature fusion (CFF) merges low into middle, then into high. ``features()`` is the
fused stride-8 map; ``head()`` a 1x1 classifier. ICNet's auxiliary cascade losses are left out:
training uses the final output only.

Cost (19 classes, defaults): stride 8, 4.54 M parameters, 41.9 GFLOPs at 1024x2048 (torch's
FLOP counter: a multiply-add counts 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from taplab.nets.backbones import BasicBlock, ResNet
from taplab.nets.base import SegmentationNet
from taplab.nets.layers import PyramidPooling, conv_bn_relu, resize_to
from taplab.nets.registry import register_model


class CascadeFusion(nn.Module):
    """ICNet's CFF: upsample the coarse map x2, dilated 3x3 on it, 1x1 on the fine map, sum, ReLU."""

    def __init__(self, coarse: int, fine: int, cout: int):
        super().__init__()
        self.coarse = conv_bn_relu(coarse, cout, 3, dilation=2, relu=False)
        self.fine = conv_bn_relu(fine, cout, 1, relu=False)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return F.relu(self.coarse(resize_to(coarse, fine.shape[-2:])) + self.fine(fine))


class ICNetDecoder(nn.Module):
    def __init__(self, low: int, middle: int, high: int, channels: int):
        super().__init__()
        self.ppm = PyramidPooling(low, channels * 2)
        self.low_middle = CascadeFusion(channels * 2, middle, channels)
        self.middle_high = CascadeFusion(channels, high, channels)

    def forward(self, low: torch.Tensor, middle: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return self.middle_high(self.low_middle(self.ppm(low), middle), high)


class ICNet(SegmentationNet):
    stride = 8

    def __init__(self, num_classes: int = 19, widths: tuple[int, ...] = (32, 64, 128, 256),
                 decoder_channels: int = 128, dropout: float = 0.1, **meta):
        super().__init__(num_classes, **meta)
        self.backbone = ResNet(BasicBlock, (2, 2, 2, 2), tuple(widths), stem=widths[0], dilate=(True, True))
        self.high = nn.Sequential(conv_bn_relu(3, 32, 3, 2), conv_bn_relu(32, 32, 3, 2), conv_bn_relu(32, 64, 3, 2))
        c = self.backbone.channels
        self.decoder = ICNetDecoder(c[3], c[1], 64, decoder_channels)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(decoder_channels, num_classes, 1))

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        stages = self.backbone.stages
        middle = stages[1](stages[0](self.backbone.stem(half)))          # 1/16
        low = F.avg_pool2d(middle, 2, ceil_mode=True)                    # 1/32
        low = stages[3](stages[2](low))                                  # dilated: stays at 1/32
        return self.decoder(low, middle, self.high(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)


@register_model
def bl1(num_classes: int = 19, **kwargs) -> ICNet:
    """BL1: ICNet-like three-resolution cascade on a light ResNet-18, stride 8 (fastest)."""
    return ICNet(num_classes, **kwargs)
