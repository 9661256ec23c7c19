"""The runtime: decides per frame what to do (key frame, warp, region correction) and does it with taplab.ops."""

from taplab.runtime.config import RuntimeConfig
from taplab.runtime.segmenter import FrameResult, RunSummary, Segmenter, segment_to_folder
from taplab.runtime.stream import Stream, stream

__all__ = ["FrameResult", "RunSummary", "RuntimeConfig", "Segmenter", "Stream", "segment_to_folder", "stream"]
