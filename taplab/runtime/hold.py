"""Frames held back for a later frame's features, and what those features add when they come.

Two things make a frame wait, and both keep the output in display order:

- **A B-frame warped from both anchors** (``b_frames="both"``) waits for its future anchor, which comes
  after it in display order; its future side is warped from that anchor's features
  (:mod:`taplab.ops.bidirectional`).
- **With interpolation** (``interpolation``, on for files), every warped frame waits for the next key
  frame: the next key frame's features are carried back to each warped anchor by splatting along the
  anchors' vectors (:mod:`taplab.ops.interpolation`) and blended with its forward-warped ones by the
  error each side accumulated on its way. A B-frame's future side then comes from its future anchor's
  blended and corrected features. The chain starts with the key frame's step back to its previous
  anchor: its own vectors, or for an I-frame (which has none) an optical flow the scheduler estimates.

The hold is bounded (:class:`Hold`): past its bound the oldest frame goes out with what it has (no next
key frame's side). So do all the frames held at the stream's end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from taplab.codec.reader import Frame
from taplab.ops import bidirectional, interpolation
from taplab.ops.warp import GridFlow
from taplab.runtime.result import FrameResult, Module

#: the most frames held with interpolation: about a second of video (memory: a frame and its features each)
MAX_HOLD = 32


@dataclass
class Held:
    """A frame whose result waits: the result so far (complete for a held B-frame that was a key frame), and for
    a warped frame its forward side.

    Attributes:
        features, mask: the features warped from the past side, and the cells they could not fill (None: no
            past side, or a complete result).
        modules: the corrections to apply once its features are final.
        flow: a held anchor's motion to its previous anchor on the feature grid (the backward chain's step).
        error: a held anchor's error accumulated since the key frame, per cell (:mod:`taplab.ops.interpolation`).
        step: a held anchor's own residual per cell: the error of the step from it back to its previous anchor.
        reference: the labels fusion's ``M_coarse`` compares with, as they were when it was warped.
        previous: an anchor's previous anchor (display index), where ``flow`` goes.
    """

    frame: Frame
    result: FrameResult
    arrival: float | None
    features: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    modules: frozenset[Module] = frozenset()
    flow: GridFlow | None = None
    error: torch.Tensor | None = None
    step: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    previous: int | None = None

    @property
    def anchor(self) -> bool:
        return self.frame.pict_type != "B"

    @property
    def carry(self) -> tuple[int, GridFlow] | None:
        """Where fusion's memory carries a correction from (:class:`~taplab.runtime.corrections.Fusion`): an anchor's
        previous anchor and its motion there; None for B-frames and frames without that motion."""
        if not self.anchor or self.flow is None or self.previous is None:
            return None
        return self.previous, self.flow


class Hold:
    """The held frames in display order, at most ``bound``."""

    def __init__(self, bound: int):
        self.bound = bound
        self.items: list[Held] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Held) -> list[Held]:
        """Hold ``item``; returns the oldest ones beyond the bound, to go out with what they have."""
        self.items.append(item)
        return self.take(len(self.items) - self.bound) if len(self.items) > self.bound else []

    def last_features(self, default: torch.Tensor | None) -> torch.Tensor | None:
        """The features of the last held anchor that has some (final once settled), else ``default``."""
        held = [h.features for h in self.items if h.anchor and h.features is not None]
        return held[-1] if held else default

    def take(self, count: int | None = None) -> list[Held]:
        """The first ``count`` held frames (all by default), no longer held."""
        count = len(self.items) if count is None else count
        taken, self.items = self.items[:count], self.items[count:]
        return taken


def interpolate(held: list[Held], key: torch.Tensor, flow: GridFlow, step: torch.Tensor) -> None:
    """Blend the next key frame's features (``key``, with its ``flow`` to its previous anchor and its residual per
    cell ``step``) into the held anchors' forward sides, in place (``features``, ``mask``, ``result.future``: the
    mean weight of the key frame's side). The held anchors are consecutive: each one's ``flow`` is the next
    step back (interpolation needs accumulated propagation, which keeps every anchor's motion). The time it takes
    is shared among the held anchors' ``interpolation`` stage."""
    start = time.perf_counter()
    source, cover, accumulated = key, torch.ones(key.shape[1:]), torch.zeros(key.shape[1:])
    for h in reversed([h for h in held if h.anchor and h.features is not None]):
        source, cover = interpolation.splat(source, cover, flow)
        accumulated = accumulated + step + interpolation.STEP
        ok = interpolation.received(cover)
        weight = bidirectional.future_weights(h.error, ~h.mask, accumulated, ok)
        h.features = bidirectional.blend(h.features, source, weight)
        h.mask = h.mask & ~ok
        h.result.future = float(weight.mean())
        flow, step = h.flow, h.step  # the next step back: from this anchor (its backward side alone) to the one before
    share = (time.perf_counter() - start) / max(1, sum(h.anchor for h in held))
    for h in held:
        if h.anchor:
            h.result.timings["interpolation"] = h.result.timings.get("interpolation", 0.0) + share


def blend_future(frame: Frame, past: torch.Tensor | None, past_mask: torch.Tensor | None, ahead: torch.Tensor,
                 ahead_mask: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A B-frame's past side (None: it had none) and its future side warped from its future anchor, blended by
    validity and each side's residual (:mod:`taplab.ops.bidirectional`); the frame's residual becomes the
    blend's. Returns the features, the cells neither side filled, and the future side's mean weight."""
    past_error = bidirectional.cell_errors(frame.residual, grid)
    future_residual = frame.residual_future
    future_error = past_error if future_residual is None else bidirectional.cell_errors(future_residual, grid)
    past_ok = torch.zeros_like(ahead_mask) if past_mask is None else ~past_mask
    weight = bidirectional.future_weights(past_error, past_ok, future_error, ~ahead_mask)
    features = ahead if past is None else bidirectional.blend(past, ahead, weight)
    mask = ahead_mask if past_mask is None else past_mask & ahead_mask
    if future_residual is not None:
        frame.replace_residual(bidirectional.blend_residual(frame.residual, future_residual, weight))
    return features, mask, float(weight.mean())
