"""The segmentation CNNs (the papers' phi): taplab's networks, their registry and the model loader."""

# the built-in networks register themselves on import (the registry imports none of them)
from taplab.nets import bl1, bl2, bl3  # noqa: F401
from taplab.nets.base import SegmentationNet
from taplab.nets.registry import create_model, list_architectures, register_model

__all__ = ["SegmentationNet", "create_model", "list_architectures", "register_model"]
