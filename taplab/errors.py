"""The exceptions taplab raises for bad input.

Every error a user can cause (a wrong path, a broken file, a bad option) is a
:class:`TapLabError`. The CLI prints such errors as one line and exits with
status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TapLabError(Exception):
    """Base class of every error caused by input rather than by a bug."""


class VideoOpenError(TapLabError):
    """A source cannot be opened as a video (missing, unreachable, not a video, no video stream)."""


class DecodeError(TapLabError):
    """A video opened but its frames cannot be decoded (truncated, empty, broken beyond repair)."""


class EncodeError(TapLabError):
    """Frames cannot be encoded as asked (unknown codec, bad parameters, unreadable input)."""


class ModelError(TapLabError):
    """A segmentation model cannot be loaded or does not follow the model contract."""


class OutputError(TapLabError):
    """Outputs cannot be written: a folder that cannot be made or written to, a full disk."""


class ConfigError(TapLabError):
    """A configuration value is out of range or inconsistent with another."""


class TapLabWarning(UserWarning):
    """Base class of taplab's warnings: input that was handled, but not perfectly."""


class CorruptDataWarning(TapLabWarning):
    """A packet or frame was damaged; it was skipped or concealed and decoding went on."""


class LatencyWarning(TapLabWarning):
    """A latency budget that cannot mean what it says: a file read as fast as it decodes."""
