"""The features a run carries from frame to frame: the key frame's, the last anchor's, the current frame's.

An *anchor* is an I- or P-frame: past vectors point into the last anchor, and B-frames read the
anchor state but never write it. The key frame's features travel with the motion accumulated since
the key frame (``motion_to_key``: current frame -> key frame on the feature grid), so that each warped
frame samples the key frame's features once (``propagation="accumulate"``); with
``propagation="chain"`` frames warp the last anchor's features instead.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from taplab.codec.reader import Frame
from taplab.data.transforms import to_tensor
from taplab.nets.twnet import Split
from taplab.ops.labels import class_map
from taplab.ops.warp import GridFlow, compose, zero_flow


class Layer:
    """What a run warps for a frame, and the logits of it: the model's logits, its ``features()``
    (``warp_layer="features"``), or, with a TWNet correction, its state ``[logits, deep interior]``
    (:class:`~taplab.nets.twnet.Split`, whose logits part is the CNN's)."""

    def __init__(self, model, warp_layer: str, split: Split | None = None):
        self.model, self.split = model, split
        self.warps_features = warp_layer == "features" and split is None

    def encode(self, image: np.ndarray) -> torch.Tensor:
        """An RGB frame's features, as the run warps them."""
        x = to_tensor(image)
        out = self.split.state(x) if self.split is not None else \
            self.model.features(x) if self.warps_features else self.model.logits(x)
        return out[0].float().contiguous()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        if self.split is not None:
            return self.split.logits(features)
        return self.model.head(features[None])[0] if self.warps_features else features


class Anchors:
    """The key/anchor state of one run.

    Attributes:
        features: the current frame's features (None before the first output).
        anchor_features, anchor_index, anchor_image: the last anchor's features, display index and
            (where a dense motion source needs it) RGB image.
        key_features, key_index: the key frame's features (or a stand-in's, while its CNN runs in the
            background) and the key frame whose CNN output they carry.
        last_key: the last anchor decided a key frame (``key_interval`` counts from it; its CNN may still run).
        motion_to_key: the accumulated motion from the last anchor to the key frame.
    """

    def __init__(self, grid: tuple[int, int]):
        self.grid = grid
        self.features: torch.Tensor | None = None
        self.anchor_features: torch.Tensor | None = None
        self.anchor_index = -1
        self.anchor_image: np.ndarray | None = None
        self.key_features: torch.Tensor | None = None
        self.key_index = -1
        self.last_key = 0
        self.motion_to_key: GridFlow = zero_flow(grid)
        self._key_labels: torch.Tensor | None = None  # arg-max of the key frame's logits, computed when asked

    @property
    def has_source(self) -> bool:
        """Whether there are features to warp from."""
        return self.anchor_features is not None or self.key_features is not None

    def set_key(self, features: torch.Tensor, index: int, anchor: bool) -> None:
        """A key frame's CNN output: the current features; for an anchor, also the new key frame."""
        self.features = features
        if anchor:
            self._restart(features)
            self.key_index = index

    def adopt(self, features: torch.Tensor, index: int) -> None:
        """A background key frame's features (already carried to the current key frame) replace its stand-in;
        the motion accumulated since then carries them on at the next warp."""
        self.key_features, self._key_labels, self.key_index = features, None, index

    def hold(self, stand_in: torch.Tensor | None) -> None:
        """A key frame over budget: ``stand_in`` (None: nothing yet) becomes the current features and the key
        frame the following frames accumulate their motion to, until the CNN's features replace it."""
        self.features = stand_in
        self._restart(stand_in)

    def extend(self, flow: GridFlow) -> GridFlow:
        """An anchor's motion to the last anchor, composed with the motion accumulated so far: the anchor's
        motion to the key frame, which it becomes."""
        self.motion_to_key = compose(flow, self.motion_to_key)
        return self.motion_to_key

    def end_frame(self, frame: Frame, keep_image: bool) -> None:
        """After a frame: an anchor becomes the last anchor (its image kept where ``keep_image``)."""
        if frame.pict_type == "B":
            return
        self.anchor_index = frame.index
        if keep_image:
            self.anchor_image = frame.image
        if self.features is not None:
            self.anchor_features = self.features

    def reference_labels(self, logits: Callable[[torch.Tensor], torch.Tensor], accumulate: bool) -> torch.Tensor:
        """The labels (h, w) a warped frame's are compared with for ``M_coarse``: the key frame's (as the motion
        accumulates to it; computed once per key frame) or, chaining, the last anchor's."""
        if not accumulate:
            return class_map(logits(self.anchor_features))
        if self._key_labels is None:
            self._key_labels = class_map(logits(self.key_features))
        return self._key_labels

    def _restart(self, features: torch.Tensor | None) -> None:
        self.key_features, self.motion_to_key, self._key_labels = features, zero_flow(self.grid), None
