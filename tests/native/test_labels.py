"""The C label-upsampling kernel agrees with its numpy reference (taplab/ops/labels.py)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from taplab.native import kernel, status
from taplab.ops.labels import upsample_labels, upsample_labels_reference


@pytest.fixture(scope="module")
def built():
    if kernel("labels") is None:
        pytest.fail(f"the labels kernel is not built here: {status('labels').reason}")


def smooth_logits(classes: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Spatially smooth random logits: regions and boundaries like a real model's, not white noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, classes, max(2, h // 4), max(2, w // 4), generator=g) * 4
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0] + 0.1 * torch.randn(classes, h, w, generator=g)


@pytest.mark.parametrize("classes, grid, size", [(19, (45, 80), (180, 320)), (19, (180, 320), (720, 1280)),
                                                 (5, (17, 33), (66, 130)), (2, (9, 13), (67, 93)),
                                                 (19, (8, 8), (8, 8)), (3, (1, 1), (5, 7)), (11, (12, 20), (30, 50))])
def test_kernel_agrees_with_the_reference(built, classes, grid, size):
    logits = smooth_logits(classes, *grid, seed=sum(size))
    native = upsample_labels(logits, size)
    reference = upsample_labels_reference(logits, size)
    assert native.shape == size and native.dtype == np.uint8
    # float32 sums in another order may flip exact ties only
    assert (native == reference).mean() > 0.9999


def test_kernel_rejects_short_buffers(built):
    with pytest.raises(ValueError, match="logits: buffer holds"):
        kernel("labels").upsample_labels(np.zeros(10, np.float32), 19, 4, 4, 8, 8, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="bad sizes"):
        kernel("labels").upsample_labels(np.zeros(10, np.float32), 0, 4, 4, 8, 8, np.zeros((8, 8), np.uint8))
