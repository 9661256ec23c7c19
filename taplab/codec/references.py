"""Which reference frame a past vector points into, where the stream lets a block choose among several.

H.264 and HEVC let each block of a P-frame predict from any of up to 16 earlier frames. FFmpeg's exported
vectors carry the direction (``source`` -1 or +1) but not the reference index, and taplab holds the
features of the previous anchor only. A vector into an older frame, read as pointing into the previous
anchor, carries features from the wrong place.

Decisions, made here:

- **When to look.** Only where the stream may use more than one past reference: the H.264 sequence
  parameter set's ``max_num_ref_frames`` above 1 on a stream without B-frames, above 2 with them
  (a B-frame keeps its future anchor among the references) (:func:`reference_frames`); unknown
  counts as several. Streams encoded with one reference (``taplab encode``'s default, with or
  without B-frames; MPEG-4 Part 2, MPEG-2) pay nothing. The older anchors tried go back to the
  last I-frame at most.
- **How to tell.** Each block's vector is tried on the previous anchor and on the older anchors the
  stream may reference: the mean absolute luma difference of the block against the block its vector
  points at in each (integer-pel block copy, as :mod:`taplab.ops.residual`). A block whose prediction
  from an older anchor is at most ``RATIO`` times its error from the previous anchor, and whose error
  from the previous anchor is over ``FLOOR`` levels (a flat block fits every frame), points into that
  older anchor (:func:`foreign_blocks`).
- **What then.** Those blocks are marked invalid: the warp treats them as blocks without a vector
  (distorted, left to the corrections), never as motion from the previous anchor. Measured on the real
  clip re-encoded with 4 references (docs/streams.md), against reading them as pointing one anchor back.
"""

from __future__ import annotations

import cv2
import numpy as np

from taplab.ops.residual import residual

#: a block points into an older anchor when that one's error is at most this share of the previous anchor's
RATIO = 0.5
#: ... and the previous anchor's error is above this many 8-bit levels
FLOOR = 4.0
#: the most older anchors tried (H.264 allows 16 references; x264's presets use up to 16, most 1-5)
MAX_OLDER = 3


def block_errors(current: np.ndarray, reference: np.ndarray, vectors: np.ndarray, valid: np.ndarray,
                 block: int) -> np.ndarray:
    """``(gh, gw)`` float32: each block's mean absolute luma difference from its vector's prediction in ``reference``,
    rounded to whole levels (an area resize of the 8-bit residual: 0.3 ms at 720p). Blocks the frame's edge cuts
    short get 0, so they are never judged to point elsewhere."""
    diff = residual(current, reference, vectors, valid, block)
    gh, gw = valid.shape
    whole_h, whole_w = diff.shape[0] // block, diff.shape[1] // block
    out = np.zeros((gh, gw), np.float32)
    if whole_h and whole_w:
        core = diff[:whole_h * block, :whole_w * block]
        out[:whole_h, :whole_w] = cv2.resize(core, (whole_w, whole_h), interpolation=cv2.INTER_AREA)
    return out


def foreign_blocks(current: np.ndarray, anchors: list[np.ndarray], vectors: np.ndarray, valid: np.ndarray,
                   block: int) -> np.ndarray:
    """``(gh, gw)`` bool: the valid blocks whose vector fits an older anchor (``anchors[1:]``, most recent first)
    rather than the previous one (``anchors[0]``); see the module docstring."""
    own = block_errors(current, anchors[0], vectors, valid, block)
    older = np.full_like(own, np.inf)
    for reference in anchors[1:1 + MAX_OLDER]:
        np.minimum(older, block_errors(current, reference, vectors, valid, block), out=older)
    return valid & (own > FLOOR) & (older <= RATIO * own)


def reference_frames(codec: str, extradata: bytes | None, b_frames: bool = False) -> int | None:
    """The most past reference frames a block of the stream may choose from: for H.264, the sequence parameter
    set's ``max_num_ref_frames`` (from an ``avcC`` record or Annex B start codes), less one where the stream has
    B-frames (which keep their future anchor among the references); 1 for the codecs with one reference per
    direction; None where unknown."""
    if codec in ("mpeg4", "mpeg1video", "mpeg2video", "h263", "h263p", "msmpeg4v3", "flv1"):
        return 1
    if codec != "h264" or not extradata:
        return None
    try:
        sps = _sequence_parameter_set(extradata)
        if sps is None:
            return None
        return max(1, _max_num_ref_frames(_unescape(sps)) - (1 if b_frames else 0))
    except (IndexError, ValueError):
        return None


def _sequence_parameter_set(extradata: bytes) -> bytes | None:
    """The first SPS NAL unit of H.264 extradata: an ``avcC`` record (MP4) or Annex B (MPEG-TS: start codes)."""
    if extradata[0] == 1:  # avcC: version, profile, compatibility, level, length size, SPS count, SPS length, SPS
        if len(extradata) < 8 or not extradata[5] & 0x1F:
            return None
        length = int.from_bytes(extradata[6:8], "big")
        nal = extradata[8:8 + length]
    else:
        nal = next((unit for unit in _annex_b_units(extradata) if unit and unit[0] & 0x1F == 7), None)
    return nal if nal and nal[0] & 0x1F == 7 else None


def _annex_b_units(data: bytes) -> list[bytes]:
    """The NAL units between ``00 00 01`` start codes (a four-byte ``00 00 00 01`` leaves a trailing zero)."""
    starts, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    ends = [s - 3 for s in starts[1:]] + [len(data)]
    return [data[a:b].rstrip(b"\x00") for a, b in zip(starts, ends)]


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]  # IndexError past the end: a truncated SPS
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: emulation-prevention bytes (``00 00 03``) removed."""
    out, zeros = bytearray(), 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


#: the H.264 profiles whose SPS carries chroma format, bit depths and scaling matrices
_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135, 144}


def _max_num_ref_frames(sps: bytes) -> int:
    """H.264 7.3.2.1.1, read up to ``max_num_ref_frames``."""
    bits = _Bits(sps[1:])  # after the NAL header
    profile = bits.u(8)
    bits.u(16)  # constraint flags, level
    bits.ue()  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        chroma = bits.ue()
        if chroma == 3:
            bits.u(1)
        bits.ue()
        bits.ue()
        bits.u(1)
        if bits.u(1):  # seq_scaling_matrix_present_flag
            for i in range(12 if chroma == 3 else 8):
                if bits.u(1):
                    last = following = 8
                    for _ in range(16 if i < 6 else 64):
                        if following:
                            following = (last + bits.se() + 256) % 256
                        last = following or last
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()
    elif poc_type == 1:
        bits.u(1)
        bits.se()
        bits.se()
        for _ in range(bits.ue()):
            bits.se()
    return bits.ue()
