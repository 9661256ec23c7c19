"""Motion sources: where FFW's motion comes from, as a strategy the scheduler calls.

Every source gives a frame's motion to the last anchor on the feature grid (:class:`GridFlow`, in
cells), in taplab's convention (a vector points into the reference; see :mod:`taplab.codec.motion`):

- ``"codec"``: the stream's block vectors (taplab's point), onto the grid by
  ``motion_resampling``; their conversion is counted in the ``warp`` stage;
- an optical-flow method (``"dis-fast"``, ...; :data:`taplab.ops.flow.METHODS`): a dense flow from
  the decoded frame to the last anchor's, the baseline the compressed domain must beat, its cost in
  the ``flow`` stage;
- ``"truth"``: a synthetic clip's ground-truth flow to the previous frame (the upper bound of any
  warping), for I/P streams whose anchor is the previous frame;
- ``"auto"`` (the default): the frames' motion fields, which are the codec's vectors where the
  stream's codec exports them (:data:`taplab.codec.motion.VECTOR_CODECS`), and where it exports none
  block vectors that the reader estimates with the optical flow ``motion_fallback``
  (:meth:`taplab.codec.reader.Video.estimate_motion`), so that the residual, RGC and RGFS see them as
  they see a codec's. Decided per stream, not per frame: a P-frame of a vector codec that carries no
  vectors (all intra-coded, a damaged packet) becomes a key frame, as a scene cut should.

A new source is a class with the members of :class:`MotionSource`, registered in :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from taplab.codec.motion import DEFAULT_BLOCK, MotionField
from taplab.codec.reader import Frame
from taplab.errors import ConfigError
from taplab.ops import bidirectional
from taplab.ops.flow import METHODS as FLOW_METHODS
from taplab.ops.flow import OpticalFlow
from taplab.ops.residual import residual as compute_residual
from taplab.ops.warp import GridFlow, dense_to_grid, motion_to_grid
from taplab.runtime.anchors import Anchors
from taplab.runtime.config import RuntimeConfig


class MotionSource(Protocol):
    """What the scheduler asks of a motion source."""

    name: str  #: the ``motion_source`` it is (``"codec"``, ``"dis-ultrafast"``, ...): what results record
    stage: str  #: the timing stage its cost is counted in (``warp`` or ``flow``)
    needs_images: bool  #: it reads decoded RGB frames (the anchor's image is then kept)
    blocks: bool  #: it holds the codec's block field (chained nearest warps use it in one kernel pass)

    def available(self, frame: Frame) -> bool:
        """Whether the frame has motion from this source (else it cannot be warped)."""

    def flow(self, frame: Frame, anchors: Anchors) -> GridFlow:
        """The frame's motion to the last anchor on the feature grid, in cells."""

    def future(self, frame: Frame, anchors: Anchors) -> GridFlow | None:
        """A B-frame's motion to its future anchor, which ``anchors`` holds as the last anchor now (None: this
        source has none)."""

    def origin(self, frame: Frame) -> str:
        """What gave this frame's motion, as results record it (``"codec"``, ``"dis-ultrafast"``, ...)."""


class CodecVectors:
    """The frames' block motion fields: the codec's vectors on P-frames (and B-frames' past references) of codecs
    that export them, or vectors the reader estimated (``motion_source="auto"`` on a codec without vectors)."""

    stage = "warp"
    needs_images = False
    blocks = True

    def __init__(self, name: str, cfg: RuntimeConfig, grid: tuple[int, int], stride: tuple[int, int],
                 truth_flow: Sequence[np.ndarray] | None = None):
        self.name, self.grid, self.stride, self.resampling = name, grid, stride, cfg.motion_resampling

    def available(self, frame: Frame) -> bool:
        return frame.motion is not None

    def flow(self, frame: Frame, anchors: Anchors) -> GridFlow:
        return self._grid(frame.motion)

    def future(self, frame: Frame, anchors: Anchors) -> GridFlow | None:
        m = frame.motion_future
        return None if m is None else self._grid(m)

    def _grid(self, m) -> GridFlow:
        return motion_to_grid(m.vectors, m.valid, m.block, self.grid, self.stride, self.resampling)

    def origin(self, frame: Frame) -> str:
        return (frame.motion or frame.motion_future).source


class _DenseFlow:
    """A dense backward flow in pixels (every cell valid), area-averaged onto the feature grid."""

    stage = "flow"
    needs_images = False
    blocks = False

    def __init__(self, name: str, grid: tuple[int, int], stride: tuple[int, int],
                 pixels: Callable[[Frame, Anchors], np.ndarray]):
        self.name, self.grid, self.stride, self._pixels = name, grid, stride, pixels

    def available(self, frame: Frame) -> bool:
        return True

    def flow(self, frame: Frame, anchors: Anchors) -> GridFlow:
        return dense_to_grid(self._pixels(frame, anchors), self.grid, self.stride)

    def future(self, frame: Frame, anchors: Anchors) -> GridFlow | None:
        return None

    def origin(self, frame: Frame) -> str:
        return self.name


class OpticalFlowSource(_DenseFlow):
    """Optical flow (OpenCV) from the decoded frame to the last anchor's."""

    needs_images = True

    def __init__(self, name: str, cfg: RuntimeConfig, grid: tuple[int, int], stride: tuple[int, int],
                 truth_flow: Sequence[np.ndarray] | None = None):
        estimator = self._estimator = OpticalFlow(name)
        super().__init__(name, grid, stride, lambda frame, anchors: estimator(frame.image, anchors.anchor_image))

    def future(self, frame: Frame, anchors: Anchors) -> GridFlow | None:
        """The flow into the future anchor, whose image ``anchors`` holds as the last anchor's by now."""
        return dense_to_grid(self._estimator(frame.image, anchors.anchor_image), self.grid, self.stride)


class GroundTruthFlow(_DenseFlow):
    """A synthetic clip's ground-truth backward flow to the previous frame, per frame (``taplab synth`` writes it)."""

    def __init__(self, name: str, cfg: RuntimeConfig, grid: tuple[int, int], stride: tuple[int, int],
                 truth_flow: Sequence[np.ndarray] | None = None):
        if truth_flow is None:
            raise ConfigError("motion_source='truth' needs the clip's flows: run(..., truth_flow=flows)")
        self.flows = truth_flow
        super().__init__(name, grid, stride, self._truth)

    def _truth(self, frame: Frame, anchors: Anchors) -> np.ndarray:
        """The flow goes to the previous frame, so only where that is the last anchor."""
        flows = self.flows
        if frame.index >= len(flows) or frame.index - 1 != anchors.anchor_index:
            raise ConfigError(f"ground-truth flow for frame {frame.index}: the clip's flows ({len(flows)}) go to the "
                              "previous frame, which must be the last anchor (I/P streams without B-frames)")
        flow = np.asarray(flows[frame.index], np.float32)  # taplab synth stores float16
        if flow.shape != (frame.height, frame.width, 2):
            raise ConfigError(f"ground-truth flow of frame {frame.index} is {flow.shape}, "
                              f"expected {(frame.height, frame.width, 2)}")
        return flow


#: ``motion_source`` -> its class, built as ``cls(name, config, grid, stride, truth_flow)``. ``"auto"`` reads the
#: frames' motion fields as ``"codec"`` does: where the codec exports none, the reader fills them in
#: (:class:`~taplab.runtime.segmenter.Segmenter` asks it to).
SOURCES: dict[str, Callable[..., MotionSource]] = {"codec": CodecVectors, "auto": CodecVectors,
                                                  "truth": GroundTruthFlow,
                                                  **{method: OpticalFlowSource for method in FLOW_METHODS}}


def estimated_step(frame: Frame, estimator: OpticalFlow, grid: tuple[int, int], stride: tuple[int, int],
                   block: int = DEFAULT_BLOCK) -> tuple[GridFlow, torch.Tensor] | None:
    """A frame's motion to its previous anchor estimated by optical flow on the luma planes, on the feature grid,
    and the residual it leaves, per cell (None for the first frame): an I-frame's step back for interpolation
    and the key-frame blend, which its codec gives no vectors for (one flow per key frame)."""
    if frame.reference_luma is None:
        return None
    m = MotionField.from_blocks(estimator.blocks(frame.luma, frame.reference_luma, block), block, estimator.method)
    flow = motion_to_grid(m.vectors, m.valid, m.block, grid, stride)
    residual = compute_residual(frame.luma, frame.reference_luma, m.vectors, m.valid, m.block)
    return flow, bidirectional.cell_errors(residual, grid)


def motion_source(cfg: RuntimeConfig, grid: tuple[int, int], stride: tuple[int, int],
                  truth_flow: Sequence[np.ndarray] | None = None) -> MotionSource:
    """The motion source ``cfg.motion_source`` names, for a feature grid of ``grid`` cells of ``stride`` pixels
    (``truth_flow``: a synthetic clip's flows, for ``"truth"``)."""
    return SOURCES[cfg.motion_source](cfg.motion_source, cfg, grid, stride, truth_flow)
