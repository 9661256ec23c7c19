"""The blend of a B-frame's two warped sides (taplab.ops.bidirectional): validity first, then the residual."""

import numpy as np
import torch

from taplab.ops import bidirectional
from taplab.ops.bidirectional import EPSILON


def test_a_side_counts_only_where_its_warp_had_a_source():
    past_error, future_error = torch.full((2, 2), 4.0), torch.full((2, 2), 1.0)
    past_ok = torch.tensor([[True, True], [False, False]])
    future_ok = torch.tensor([[True, False], [True, False]])
    w = bidirectional.future_weights(past_error, past_ok, future_error, future_ok)
    both = (4 + EPSILON) / (4 + 1 + 2 * EPSILON)
    torch.testing.assert_close(w, torch.tensor([[both, 0.0], [1.0, 0.0]]))


def test_the_side_with_less_residual_weighs_more_and_equal_sides_weigh_alike():
    ok = torch.ones(1, 3, dtype=torch.bool)
    w = bidirectional.future_weights(torch.tensor([[0.0, 10.0, 3.0]]), ok, torch.tensor([[0.0, 2.0, 9.0]]), ok)
    assert w[0, 0] == 0.5 and w[0, 1] > 0.5 > w[0, 2]
    # inverse-error weighting: w_future / w_past = (e_past + eps) / (e_future + eps)
    assert np.isclose(float(w[0, 1] / (1 - w[0, 1])), (10 + EPSILON) / (2 + EPSILON))


def test_blend_mixes_features_per_cell():
    past, future = torch.zeros(2, 1, 3), torch.ones(2, 1, 3) * 8
    out = bidirectional.blend(past, future, torch.tensor([[0.0, 0.25, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 2.0, 8.0]]] * 2))


def test_cell_errors_and_the_blended_residual_follow_the_cells():
    residual = np.zeros((4, 8), np.uint8)
    residual[:2, :4] = 40  # the top-left cell of a 2x2 grid of 2x4-pixel cells
    torch.testing.assert_close(bidirectional.cell_errors(residual, (2, 2)), torch.tensor([[40.0, 0.0], [0.0, 0.0]]))
    future = np.full((4, 8), 10, np.uint8)
    mixed = bidirectional.blend_residual(residual, future, torch.tensor([[1.0, 0.0], [0.5, 0.0]]))
    assert (mixed[:2, :4] == 10).all() and (mixed[:2, 4:] == 0).all() and (mixed[2:, :4] == 5).all()
