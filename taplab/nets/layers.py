"""Building blocks shared by taplab's networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: ImageNet statistics (RGB, of inputs in [0, 1]): what taplab's networks normalise their input with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of ``(N, 3, H, W)`` RGB in [0, 1]; ImageNet's statistics by default.

    The statistics are non-persistent buffers: they follow ``.to(device)`` but stay out of the state
    dict, so checkpoints hold weights only (and the files written before this module existed load
    unchanged).
    """

    def __init__(self, mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1, groups: int = 1,
                 relu: bool = True) -> nn.Sequential:
    """Convolution (no bias), batch norm and optionally ReLU; 'same' padding for odd kernels."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, padding=dilation * (kernel - 1) // 2, dilation=dilation,
                  groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution in an ``nn.Sequential`` into that
    convolution (in place; for inference only: the folded network computes the same in eval mode,
    without the normalisation pass, which costs a quarter of a light network's CPU time)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batchnorm(child)
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                if isinstance(child[i], nn.Conv2d) and isinstance(child[i + 1], nn.BatchNorm2d):
                    child[i] = fuse_conv_bn_eval(child[i], child[i + 1])
                    child[i + 1] = nn.Identity()
    return module


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of a feature map to ``size`` (no-op when it already has it)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)``; while torch exports to ONNX, the same from an integral image, because
    the exporter cannot write adaptive pooling over an input of dynamic size (taplab/nets/onnx.py).

    Bin ``i`` of ``bins`` over ``n`` rows spans rows ``floor(i n / bins)`` to ``ceil((i + 1) n / bins)``, as in
    torch; the sum over a bin is four reads of the zero-padded cumulative sums."""
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, bins)
    h, w = x.shape[-2], x.shape[-1]
    total = F.pad(x.cumsum(-1).cumsum(-2), (1, 0, 1, 0))
    i = torch.arange(bins, device=x.device)
    y0, y1 = (i * h) // bins, ((i + 1) * h + bins - 1) // bins
    x0, x1 = (i * w) // bins, ((i + 1) * w + bins - 1) // bins

    def corner(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
        return total.index_select(-2, ys).index_select(-1, xs)

    sums = corner(y1, x1) - corner(y0, x1) - corner(y1, x0) + corner(y0, x0)
    return sums / ((y1 - y0)[:, None] * (x1 - x0)[None, :]).to(x.dtype)


def separable(cin: int, cout: int) -> nn.Sequential:
    """3x3 depthwise then 1x1 pointwise, each with batch norm and ReLU (MobileNet's cheap 3x3)."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, groups=cin), conv_bn_relu(cin, cout, 1))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: average-pool to ``bins`` x ``bins`` grids, project, upsample, concatenate.

    The pooled branches use a biased convolution without batch norm: the 1x1 bin holds one value
    per channel and image, on which batch statistics are degenerate at batch size 1.
    """

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        branch = max(cin // len(bins), 8)
        self.bins = bins
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(cin, branch, 1), nn.ReLU(inplace=True)) for _ in bins)
        self.fuse = conv_bn_relu(cin + branch * len(bins), cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [resize_to(b(adaptive_avg_pool(x, n)), size) for n, b in zip(self.bins, self.branches)]
        return self.fuse(torch.cat([x, *pooled], 1))
