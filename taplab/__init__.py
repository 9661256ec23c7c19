"""taplab: compressed-domain video semantic segmentation.

Public API (the rest is internal and may change):

    from taplab import open_video, encode        # the compressed-domain reader and encoder
    from taplab import TapLabError                # base class of every input error
"""

from taplab.codec import MotionField, encode, open_video, probe
from taplab.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    ModelError,
    TapLabError,
    VideoOpenError,
)

__version__ = "0.1.0"

__all__ = [
    "open_video",
    "encode",
    "probe",
    "MotionField",
    "TapLabError",
    "VideoOpenError",
    "DecodeError",
    "EncodeError",
    "ModelError",
    "ConfigError",
    "__version__",
]
