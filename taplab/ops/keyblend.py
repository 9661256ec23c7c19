"""Key frames that do not jump: a key frame's CNN output blended with the previous output carried to it.

Between key frames the output follows the motion, so it changes little from frame to frame. At a
key frame the CNN's output replaces it at once, and the mask jumps wherever the two disagree: where
the warped state had drifted, but also where the CNN changes its mind between two similar frames (on
real video an I-frame is coded differently from the P-frame before it, and the per-frame model's
output changes most there). The runtime blends the two per cell of the feature grid
(``key_blend`` in :class:`~taplab.runtime.RuntimeConfig`):

    F_key = (1 - a) F_cnn + a F_previous,    a = key_blend * exp(-e / RESIDUAL_SCALE) * min(1, 2 (1 - p))

``F_previous`` is the previous anchor's output carried to the key frame along the key frame's motion
(its vectors, or for an I-frame the optical flow the runtime estimates), ``e`` the mean absolute luma
residual of that motion over the cell (8-bit levels), and ``p`` the CNN's confidence in the cell (its
largest class probability).

Decisions, made here and measured in docs/runtime.md (``taplab bench --set key_blend=0,0.5,0.7``):

- **The residual and the CNN's doubt decide, not agreement.** The issue's first idea was to blend
  where the two agree and the residual is low. Where they agree the blend moves nothing but sub-cell
  boundaries, and a trial gated by agreement (during development, not kept as an option) left most of
  the real clip's jump in place: the jump is where they disagree. There the residual tells a frame
  that the motion predicts (the previous output still fits) from a scene that changed, and the CNN's
  confidence tells a change of mind on an ambiguous cell (flicker: ``p`` near 1/2 or below, the
  weight full) from a confident finding (``p`` near 1, the weight near 0), which the key frame must
  keep: a trial gated by the residual alone (likewise not kept) cost key frames more than the 0.5
  mIoU the issue allows, on held-out synthetic clips without interpolation.
- **The CNN keeps the larger share.** ``key_blend`` (0.5 by default: the smallest of the values
  measured that keeps the real clip's default configuration within the issue's 2x) is the previous
  output's weight where the motion is perfect and the CNN undecided, and the most it gets. The key
  frame still resets at least half of any drift.
- **Cells the motion could not fill** (no vector, source outside the frame) take the CNN's output alone.
- **The blend is the new key frame's state.** The frames after it warp the blended features, so the
  mask does not jump back on the next frame.
- **The cost is agreement with the per-frame model.** A key frame that keeps part of the previous
  output no longer equals the CNN's output on that frame, so fidelity (agreement with the per-frame
  run) falls where the per-frame output itself jumps, as it does at a real stream's I-frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from taplab.ops import bidirectional
from taplab.ops.warp import GridFlow, warp

#: the residual (8-bit levels, a cell's mean) at which the previous output's weight falls to 1/e of ``key_blend``
RESIDUAL_SCALE = 8.0


def previous_weights(error: torch.Tensor, distorted: torch.Tensor, logits: torch.Tensor,
                     strength: float) -> torch.Tensor:
    """The previous output's weight ``a`` per cell, ``(h, w)`` float32 in [0, strength] (see the module docstring):
    from the motion's residual per cell ``error`` ``(h, w)``, the cells the carried output has no source in
    (``distorted``, where ``a`` is 0) and the key frame's ``logits`` ``(C, h, w)``."""
    if not 0 <= strength <= 1:
        raise ValueError(f"key_blend must be in 0..1, got {strength}")
    confidence = torch.softmax(logits.float(), 0).amax(0)
    doubt = (2 * (1 - confidence)).clamp(max=1)
    weight = strength * torch.exp(-error.float().clamp(min=0) / RESIDUAL_SCALE) * doubt
    return torch.where(distorted, torch.zeros_like(weight), weight)


def blend_key(key: torch.Tensor, previous: torch.Tensor, flow: GridFlow, error: torch.Tensor,
              logits: Callable[[torch.Tensor], torch.Tensor], strength: float,
              sampling: str = "bilinear") -> tuple[torch.Tensor, float]:
    """A key frame's features ``key`` ``(C, h, w)`` blended with the ``previous`` output's features, carried to it
    along the key frame's ``flow`` back to that output's frame (``sampling`` as FFW's), with that motion's
    residual per cell ``error``; ``logits`` turns features into the logits the CNN's confidence is read from.
    Returns the blended features and the previous output's mean weight."""
    carried, distorted = warp(previous, flow, sampling)
    weight = previous_weights(error, distorted, logits(key), strength)
    return bidirectional.blend(key, carried, weight), float(weight.mean())
