"""taplab: compressed-domain video semantic segmentation.

Public API (the rest is internal and may change):

    from taplab import open_video, encode        # the compressed-domain reader and encoder
    from taplab import load_model, Model          # any segmentation model, checked against the contract
    from taplab import Segmenter, RuntimeConfig   # the accelerated segmentation of a video: FrameResults
    from taplab import segment                    # the same into a folder: masks, log, overlay video, summary
    from taplab import stream                     # the same on a live source, with bounded latency
    from taplab import segment_many               # many videos: worker processes or Ray, resumable
    from taplab import TapLabError                # base class of every input error
"""

from taplab.codec import MotionField, encode, open_video, probe
from taplab.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    ModelError,
    OutputError,
    TapLabError,
    VideoOpenError,
)

__version__ = "0.1.0"

#: imported on first use, so that commands that need no torch (probe, encode) start fast
_LAZY = {"load_model": "taplab.nets.loader", "Model": "taplab.nets.loader", "Segmenter": "taplab.runtime",
         "RuntimeConfig": "taplab.runtime", "FrameResult": "taplab.runtime", "stream": "taplab.runtime",
         "segment": "taplab.pipeline",
         "segment_many": "taplab.batch"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taplab' has no attribute {name!r}")

__all__ = [
    "open_video",
    "encode",
    "probe",
    "MotionField",
    "load_model",
    "Model",
    "Segmenter",
    "RuntimeConfig",
    "FrameResult",
    "segment",
    "segment_many",
    "stream",
    "TapLabError",
    "VideoOpenError",
    "DecodeError",
    "EncodeError",
    "ModelError",
    "OutputError",
    "ConfigError",
    "__version__",
]
