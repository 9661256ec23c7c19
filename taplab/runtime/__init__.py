"""The runtime: decides per frame what to do (key frame, warp, correction) and does it with taplab.ops and taplab.nets.

It yields :class:`FrameResult` s; writing them is for the sinks (:mod:`taplab.io`, :func:`taplab.segment`).
"""

from taplab.runtime.config import RuntimeConfig
from taplab.runtime.result import KINDS, FrameKind, FrameResult, Kind, Module
from taplab.runtime.segmenter import Segmenter
from taplab.runtime.stream import Stream, stream

__all__ = ["FrameKind", "FrameResult", "KINDS", "Kind", "Module", "RuntimeConfig", "Segmenter", "Stream", "stream"]
