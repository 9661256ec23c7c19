"""The codec layer: read compressed streams (frames, picture types, motion, residuals) and encode them."""

from taplab.codec.encoder import CODECS, encode
from taplab.codec.motion import MotionField
from taplab.codec.probe import ProbeResult, probe
from taplab.codec.reader import Frame, Video, open_video

__all__ = ["open_video", "Video", "Frame", "MotionField", "encode", "CODECS", "probe", "ProbeResult"]
