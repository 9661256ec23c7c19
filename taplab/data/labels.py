"""The label space: Cityscapes' 19 train classes.

Train ids 0..18 index :data:`CLASSES`; 255 is the ignore label. The palette is
Cityscapes' own (RGB), so colour masks look like the data set's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_LABEL = 255


@dataclass(frozen=True)
class LabelClass:
    train_id: int
    name: str
    color: tuple[int, int, int]  # RGB


CLASSES: tuple[LabelClass, ...] = (
    LabelClass(0, "road", (128, 64, 128)),
    LabelClass(1, "sidewalk", (244, 35, 232)),
    LabelClass(2, "building", (70, 70, 70)),
    LabelClass(3, "wall", (102, 102, 156)),
    LabelClass(4, "fence", (190, 153, 153)),
    LabelClass(5, "pole", (153, 153, 153)),
    LabelClass(6, "traffic light", (250, 170, 30)),
    LabelClass(7, "traffic sign", (220, 220, 0)),
    LabelClass(8, "vegetation", (107, 142, 35)),
    LabelClass(9, "terrain", (152, 251, 152)),
    LabelClass(10, "sky", (70, 130, 180)),
    LabelClass(11, "person", (220, 20, 60)),
    LabelClass(12, "rider", (255, 0, 0)),
    LabelClass(13, "car", (0, 0, 142)),
    LabelClass(14, "truck", (0, 0, 70)),
    LabelClass(15, "bus", (0, 60, 100)),
    LabelClass(16, "train", (0, 80, 100)),
    LabelClass(17, "motorcycle", (0, 0, 230)),
    LabelClass(18, "bicycle", (119, 11, 32)),
)

NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
TRAIN_ID = {c.name: c.train_id for c in CLASSES}


def default_metadata(num_classes: int) -> tuple[tuple[str, ...], tuple[tuple[int, int, int], ...]]:
    """Class names and RGB colours for a model that brings none: Cityscapes' for 19 classes,
    ``class k`` and evenly spaced grey levels otherwise."""
    if num_classes == NUM_CLASSES:
        return CLASS_NAMES, tuple(c.color for c in CLASSES)
    greys = np.linspace(0, 255, num_classes).round().astype(int) if num_classes > 1 else [0]
    return tuple(f"class {k}" for k in range(num_classes)), tuple((int(v), int(v), int(v)) for v in greys)


def palette() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table: train id -> colour; the ignore label and unused ids are black."""
    lut = np.zeros((256, 3), np.uint8)
    for c in CLASSES:
        lut[c.train_id] = c.color
    return lut


def colorize(labels: np.ndarray) -> np.ndarray:
    """(H, W) train ids -> (H, W, 3) uint8 RGB colour image."""
    return palette()[labels]
