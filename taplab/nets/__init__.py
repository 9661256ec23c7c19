"""The segmentation CNNs (the papers' phi): taplab's networks, their registry and the model loader."""

from taplab.nets.base import SegmentationNet
from taplab.nets.registry import create_model, list_architectures, register_model

__all__ = ["SegmentationNet", "create_model", "list_architectures", "register_model"]
