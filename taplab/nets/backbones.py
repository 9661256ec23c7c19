"""The encoders, written here because torchvision cannot be used with taplab's CPU torch.

Each backbone maps a normalised image to a list of feature maps, one per stage, and says
their strides and channel counts (``strides``, ``channels``), so decoders are written
against those lists, not against a particular backbone.
"""

from __future__ import annotations

import torch
from torch import nn

from taplab.nets.layers import conv_bn_relu

# ---------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            conv_bn_relu(cin, width, 3, stride, dilation),
            conv_bn_relu(width, cout, 3, 1, dilation, relu=False),
        )
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a shortcut (ResNet-50/101); stride on the 3x3."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            conv_bn_relu(cin, width, 1),
            conv_bn_relu(width, width, 3, stride, dilation),
            conv_bn_relu(width, cout, 1, relu=False),
        )
        self.shortcut = _shortcut(cin, cout, stride)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return conv_bn_relu(cin, cout, 1, stride, relu=False)


class ResNet(nn.Module):
    """ResNet encoder: a 3-conv stem (stride 4 after max pooling) and four stages.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18, (3, 4, 6, 3) for ResNet-50.
        widths: the stages' inner widths (outputs are ``width * block.expansion``).
        dilate: for each of the last two stages, dilate instead of striding (PSPNet's output stride 8).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...],
                 widths: tuple[int, ...] = (64, 128, 256, 512), stem: int = 64,
                 dilate: tuple[bool, bool] = (False, False)):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(3, stem // 2, 3, 2),
            conv_bn_relu(stem // 2, stem // 2, 3),
            conv_bn_relu(stem // 2, stem, 3),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, cin, stride, dilation = [], stem, 4, 1
        self.strides, self.channels = [], []
        for i, (n, width) in enumerate(zip(layers, widths)):
            step = 1 if i == 0 else 2
            if i >= 2 and dilate[i - 2]:
                step, dilation = 1, dilation * 2
            stride *= step
            blocks = [block(cin, width, step, dilation)]
            cin = width * block.expansion
            blocks += [block(cin, width, 1, dilation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            self.strides.append(stride)
            self.channels.append(cin)
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


# ---------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn_relu(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_relu(hidden, hidden, 3, stride, groups=hidden), conv_bn_relu(hidden, cout, 1, relu=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def _round_channels(c: float, divisor: int = 8) -> int:
    return max(divisor, int(c + divisor / 2) // divisor * divisor)


class MobileNetV2(nn.Module):
    """MobileNetV2 encoder (Sandler et al. 2018) with a width multiplier; stages at strides 4, 8, 16, 32.

    ReLU instead of ReLU6 (the difference does not matter for segmentation and ReLU fuses better on CPU).
    """

    #: (expansion, channels, blocks, stride) per group, as in the paper
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
    #: the stage outputs returned: after these setting groups (strides 4, 8, 16, 32)
    TAPS = (1, 2, 4, 6)

    def __init__(self, width: float = 1.0):
        super().__init__()
        cin = _round_channels(32 * width)
        self.stem = conv_bn_relu(3, cin, 3, 2)
        groups = []
        self.strides, self.channels = [], []
        stride = 2
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            cout = _round_channels(c * width)
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(cin, cout, s if j == 0 else 1, t))
                cin = cout
            stride *= s
            groups.append(nn.Sequential(*blocks))
            if i in self.TAPS:
                self.strides.append(stride)
                self.channels.append(cout)
        self.groups = nn.ModuleList(groups)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, group in enumerate(self.groups):
            x = group(x)
            if i in self.TAPS:
                out.append(x)
        return out
