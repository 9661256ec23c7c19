"""The key-frame blend's weights (taplab.ops.keyblend): the residual and the CNN's doubt decide, holes take none."""

import math

import pytest
import torch

from taplab.ops.keyblend import RESIDUAL_SCALE, previous_weights


def _logits(confidence: float, classes: int = 4) -> torch.Tensor:
    """(C, 1, 1) logits whose softmax puts ``confidence`` on class 0 and shares the rest."""
    probs = torch.full((classes,), (1 - confidence) / (classes - 1))
    probs[0] = confidence
    return probs.log()[:, None, None]


def test_an_undecided_cell_that_the_motion_predicts_takes_the_full_weight_and_a_sure_one_almost_none():
    no_error, none_distorted = torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.bool)
    assert float(previous_weights(no_error, none_distorted, _logits(0.5), 0.7)) == pytest.approx(0.7)
    assert float(previous_weights(no_error, none_distorted, _logits(0.3), 0.7)) == pytest.approx(0.7)  # capped
    assert float(previous_weights(no_error, none_distorted, _logits(0.9), 0.7)) == pytest.approx(0.7 * 0.2)
    assert float(previous_weights(no_error, none_distorted, _logits(0.999), 0.7)) < 0.002


def test_the_weight_falls_with_the_residual_and_is_zero_where_the_carried_output_has_no_source():
    error = torch.tensor([[0.0, RESIDUAL_SCALE, 4 * RESIDUAL_SCALE, 0.0]])
    distorted = torch.tensor([[False, False, False, True]])
    logits = _logits(0.5).expand(4, 1, 4)
    w = previous_weights(error, distorted, logits, 0.5)
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5 / math.e, 0.5 / math.e ** 4, 0.0]]))
    assert previous_weights(error, distorted, logits, 0.0).abs().sum() == 0  # off


def test_a_strength_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="key_blend must be in 0..1"):
        previous_weights(torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.bool), _logits(0.5), 1.5)
