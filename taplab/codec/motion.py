"""Block motion fields: the codec's motion vectors on a regular block grid.

Conventions (the single source of truth for the rest of taplab):

- A vector is ``(dx, dy)`` in pixels, sub-pel kept, and points from the current
  frame into its reference: ``current[y, x] ~= reference[y + dy, x + dx]``.
  FFmpeg exports ``src = dst + motion / motion_scale`` with ``dst`` in the
  current frame and ``src`` in the reference, so ``dx = motion_x / motion_scale``.
- The grid cell ``block`` is the smallest partition the codec can code (MPEG-4
  Part 2: 8x8 with 4MV; H.264: 4x4), fixed for the whole stream so that every
  frame's field has the same shape. A larger partition fills all the cells it covers.
- ``direction`` says which reference the vectors use: ``"past"`` (FFmpeg's
  ``source < 0``) or ``"future"`` (``source > 0``, B-frames only).
- ``source`` says where the vectors come from: ``"codec"`` (exported by the
  decoder) or, for codecs that export none (HEVC, VP9, AV1), the optical flow that
  estimated them from the decoded luma (:meth:`MotionField.from_blocks`): the motion an
  encoder would have searched, on the same block grid, so that everything downstream
  (the residual, RGC, RGFS, the warp) works alike. The side data
  carries no reference index: taplab assumes a past vector points into the
  previous anchor (I/P) frame in display order, recorded as ``reference``. That is
  exact for MPEG-4 Part 2 and for H.264 encoded with one reference frame (what
  :func:`taplab.codec.encode` does); for other H.264 streams a vector into an
  older frame shows up as a large residual, which the runtime treats as distortion.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taplab.native import bind
from taplab.ops.flow import flow_to_blocks

#: FFmpeg's AVMotionVector as PyAV exports it (``MotionVectors.to_ndarray()``).
AV_MOTION_VECTOR_DTYPE = np.dtype(
    {
        "names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale"],
        "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
        "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32],
        "itemsize": 40,
        "aligned": True,
    }
)

#: the decoders FFmpeg exports motion vectors from (``flags2=+export_mvs``): its MPEG-video family and
#: H.264. HEVC, VP9 and AV1 export none: the reader can estimate vectors for them (:meth:`MotionField.from_blocks`).
VECTOR_CODECS = frozenset({"mpeg1video", "mpeg2video", "mpeg4", "h263", "h263p", "h263i", "flv1", "msmpeg4v1",
                           "msmpeg4v2", "msmpeg4v3", "wmv1", "wmv2", "h264"})

#: the smallest block each codec can code; unknown codecs get 4, which divides every partition.
CODEC_BLOCK: dict[str, int] = {"mpeg4": 8, "h263": 8, "h263p": 8, "msmpeg4v3": 8, "mpeg1video": 8, "mpeg2video": 8, "h264": 4}
DEFAULT_BLOCK = 4

DIRECTIONS = ("past", "future")


@dataclass(frozen=True)
class MotionField:
    """One frame's motion vectors for one reference direction, on a block grid.

    Attributes:
        vectors: ``(ceil(H/block), ceil(W/block), 2)`` float32, ``(dx, dy)`` in pixels
            (see the module docstring for the sign convention); 0 where not ``valid``.
        valid: ``(ceil(H/block), ceil(W/block))`` bool, False where a block has no vector
            (intra-coded, or coded only from the other direction).
        block: grid cell size in pixels.
        raw: the codec's own vectors for this direction (:data:`AV_MOTION_VECTOR_DTYPE`).
        direction: ``"past"`` or ``"future"``.
        reference: display index of the frame the vectors are taken to point into, if known.
        source: ``"codec"``, or the optical-flow method that estimated the vectors.
        foreign: blocks whose vector was found to point into an older reference than ``reference`` and
            marked invalid (:mod:`taplab.codec.references`).
    """

    vectors: np.ndarray
    valid: np.ndarray
    block: int
    raw: np.ndarray = field(repr=False)
    direction: str = "past"
    reference: int | None = None
    source: str = "codec"
    foreign: int = 0

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.valid.shape

    def dense(self, height: int, width: int) -> np.ndarray:
        """Per-pixel vectors ``(height, width, 2)`` float32 by block replication (invalid blocks are 0)."""
        v = np.repeat(np.repeat(self.vectors, self.block, axis=0), self.block, axis=1)
        return v[:height, :width]

    @classmethod
    def from_raw(
        cls,
        raw: np.ndarray,
        width: int,
        height: int,
        block: int,
        direction: str = "past",
        reference: int | None = None,
    ) -> "MotionField":
        """Rasterise FFmpeg's per-partition vectors of one direction onto the block grid."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        sign = -1 if direction == "past" else 1
        raw = np.ascontiguousarray(raw, AV_MOTION_VECTOR_DTYPE)
        kernels = bind("mc")
        if kernels is None:
            vectors, valid = rasterize_reference(raw, width, height, block, sign)
        else:
            vectors, valid = kernels.rasterize(raw, block, (-(-height // block), -(-width // block)), sign)
        mine = np.sign(raw["source"]) == sign
        return cls(vectors=vectors, valid=valid, block=block, raw=raw if mine.all() else raw[mine], direction=direction, reference=reference)

    @classmethod
    def from_flow(cls, flow: np.ndarray, block: int, method: str, reference: int | None = None,
                  direction: str = "past") -> MotionField:
        """Block vectors estimated from a dense flow ``(H, W, 2)`` in pixels into ``reference`` (taplab's convention:
        ``current[y, x] ~= reference[y + dy, x + dx]``), every block valid; ``method`` names the flow."""
        return cls.from_blocks(flow_to_blocks(flow, block), block, method, reference, direction)

    @classmethod
    def from_blocks(cls, vectors: np.ndarray, block: int, method: str, reference: int | None = None,
                    direction: str = "past") -> MotionField:
        """Block vectors ``(gh, gw, 2)`` estimated by ``method`` (e.g. :meth:`taplab.ops.flow.OpticalFlow.blocks`),
        every block valid."""
        return cls(vectors=vectors, valid=np.ones(vectors.shape[:2], bool), block=block,
                   raw=np.zeros(0, AV_MOTION_VECTOR_DTYPE), direction=direction, reference=reference, source=method)


def rasterize_reference(raw: np.ndarray, width: int, height: int, block: int, sign: int) -> tuple[np.ndarray, np.ndarray]:
    """The numpy definition of rasterisation (the C kernel in ``native/cpu/mc.c`` must match it).

    Uses the records whose ``source`` has the sign ``sign``. Each partition fills the
    ``max(w // block, 1) x max(h // block, 1)`` cells from its top-left corner
    ``dst - size / 2``; cells past the grid are dropped. Valid streams never overlap
    partitions of one direction; where a broken one does, which vector wins is unspecified.
    Returns ``(vectors (gh, gw, 2) float32, valid (gh, gw) bool)``.
    """
    raw = raw[np.sign(raw["source"]) == sign]
    gh, gw = -(-height // block), -(-width // block)
    if not len(raw):
        return np.zeros((gh, gw, 2), np.float32), np.zeros((gh, gw), bool)
    w = raw["w"].astype(np.int64)
    h = raw["h"].astype(np.int64)
    # dst is the partition's centre; its top-left corner is dst - size/2.
    cx0 = np.maximum(raw["dst_x"] - w // 2, 0) // block
    cy0 = np.maximum(raw["dst_y"] - h // 2, 0) // block
    scale = raw["motion_scale"].astype(np.float32)
    scale[scale == 0] = 1.0
    v = np.stack([raw["motion_x"].astype(np.float32) / scale, raw["motion_y"].astype(np.float32) / scale], axis=1)
    ncx, ncy = np.maximum(w // block, 1), np.maximum(h // block, 1)
    # Scatter on a grid padded to whole macroblocks, then crop: partitions may
    # overhang the picture's right and bottom edges.
    ph, pw = max(gh, int((cy0 + ncy).max())), max(gw, int((cx0 + ncx).max()))
    # (dx, dy) float32 pairs travel as one 8-byte item: a 1-D scatter is much faster.
    flat_v = np.zeros(ph * pw, np.int64)
    flat_ok = np.zeros(ph * pw, bool)
    v64 = np.ascontiguousarray(v).view(np.int64)[:, 0]
    # One scatter per partition shape (a handful per frame), never a loop over partitions.
    shape_code = ncy * 64 + ncx
    for code in np.unique(shape_code).tolist():
        ny, nx = divmod(code, 64)
        m = shape_code == code
        cells = (np.arange(ny)[:, None] * pw + np.arange(nx)[None, :]).ravel()
        idx = ((cy0[m] * pw + cx0[m])[:, None] + cells[None, :]).ravel()
        flat_v[idx] = np.repeat(v64[m], len(cells))
        flat_ok[idx] = True
    vectors = np.ascontiguousarray(flat_v.view(np.float32).reshape(ph, pw, 2)[:gh, :gw])
    valid = np.ascontiguousarray(flat_ok.reshape(ph, pw)[:gh, :gw])
    return vectors, valid


def raw_from_columns(columns: np.ndarray) -> np.ndarray:
    """mv-extractor's ``(N, 10)`` int32 table -> :data:`AV_MOTION_VECTOR_DTYPE` records.

    mv-extractor's columns are FFmpeg's fields without ``flags``:
    source, w, h, src_x, src_y, dst_x, dst_y, motion_x, motion_y, motion_scale.
    """
    columns = np.asarray(columns).reshape(-1, 10)
    raw = np.zeros(len(columns), AV_MOTION_VECTOR_DTYPE)
    for i, name in enumerate(("source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "motion_x", "motion_y", "motion_scale")):
        raw[name] = columns[:, i]
    return raw
