"""Distortion maps and fusion (DMNet) on small hand-made tensors."""

import numpy as np
import torch

from taplab.ops.fusion import coarse_distortion, distortion_map, fuse, residual_map


def test_fusion_with_a_zero_map_is_plain_warping_and_with_ones_the_update():
    warped, updated = torch.randn(5, 4, 6), torch.randn(5, 4, 6)
    assert torch.equal(fuse(warped, updated, torch.zeros(4, 6)), warped)
    assert torch.allclose(fuse(warped, updated, torch.ones(4, 6)), updated)
    half = fuse(warped, updated, torch.full((4, 6), 0.25))
    assert torch.allclose(half, 0.75 * warped + 0.25 * updated, atol=1e-6)


def test_distortion_map_weights_coarse_and_edge_maps():
    coarse, edge = torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[0.0, 1.0, 1.0]])
    assert torch.allclose(distortion_map(coarse, edge, 0.5), torch.tensor([[0.5, 0.5, 1.0]]))
    assert torch.allclose(distortion_map(coarse, edge, 0.8), torch.tensor([[0.8, 0.2, 1.0]]))
    assert distortion_map(coarse, None) is coarse


def test_residual_map_is_the_share_of_each_cells_pixels_above_the_threshold():
    residual = np.zeros((8, 12), np.uint8)
    residual[0:2, 0:4] = 31          # 8 of cell (0, 0)'s 16 pixels
    residual[4:8, 8:12] = 200        # all of cell (1, 2)
    residual[4, 4] = 30              # at the threshold: does not count
    m = residual_map(residual, (2, 3), threshold=30)
    expected = torch.tensor([[0.5, 0, 0], [0, 0, 1.0]])
    assert torch.allclose(m, expected)


def test_coarse_distortion_marks_label_changes_invalid_cells_and_residual():
    reference = torch.tensor([[0, 0, 1], [1, 1, 1]])
    warped = torch.zeros(2, 2, 3)
    warped[1, 0, 2] = warped[1, 1, :] = 5.0          # labels [[0, 0, 1], [1, 1, 1]] ...
    warped[1, 1, 0] = -5.0                            # ... but cell (1, 0) turned to class 0
    distorted = torch.zeros(2, 3, dtype=torch.bool)
    distorted[0, 0] = True
    residual = torch.tensor([[0.0, 0.3, 0.0], [0.0, 0.0, 0.9]])
    m = coarse_distortion(warped, reference, distorted, residual)
    assert torch.allclose(m, torch.tensor([[1.0, 0.3, 0.0], [1.0, 0.0, 0.9]]))
    assert torch.equal(coarse_distortion(warped, reference, distorted), (m == 1).float())
