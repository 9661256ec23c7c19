"""Sinks: what consumes the runtime's results (per-frame files, the log, the overlay video, the summary)."""

from taplab.io.overlay import OverlayVideo
from taplab.io.sinks import FORMATS, FrameLog, Sink, prepare_output, undo_output
from taplab.io.summary import RunSummary

__all__ = ["FORMATS", "FrameLog", "OverlayVideo", "RunSummary", "Sink", "prepare_output", "undo_output"]
