"""Training-time augmentation of (image, labels) pairs: the papers' recipe plus codec artefacts.

Random scale (0.5-2.0 in the papers), random crop (padded with the ignore label where the scaled
image is smaller than the crop), horizontal flip, and optionally JPEG re-encoding at a random
quality, which imitates the block artefacts of the decoded video that taplab segments at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from taplab.data.labels import IGNORE_LABEL
from taplab.errors import ConfigError


@dataclass(frozen=True)
class Augmentation:
    """Args:
        scale: range of the random scale factor (uniform).
        crop: (height, width) of the random crop, pixels.
        flip: flip horizontally with probability 1/2.
        jpeg: range of the JPEG quality for re-encoding, or None for none.
        jpeg_probability: share of samples re-encoded.

    The JPEG artefacts approximate, not reproduce, those of the video codec: blocking and ringing at
    a random quality (and chroma subsampling on slightly different colour axes, since OpenCV reads
    the RGB image as BGR).
    """

    scale: tuple[float, float] = (0.5, 2.0)
    crop: tuple[int, int] = (384, 384)
    flip: bool = True
    jpeg: tuple[int, int] | None = (40, 95)
    jpeg_probability: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale must be a range 0 < low <= high, got {self.scale}")
        if min(self.crop) < 64:  # a 2x2 map at stride 32: batch norm needs more than one value at batch 1
            raise ConfigError(f"crop must be at least 64x64, got {self.crop}")
        if not 0 <= self.jpeg_probability <= 1:
            raise ConfigError(f"jpeg_probability must be in 0..1, got {self.jpeg_probability}")
        if self.jpeg is not None and not 1 <= self.jpeg[0] <= self.jpeg[1] <= 100:
            raise ConfigError(f"jpeg quality range must lie in 1..100, got {self.jpeg}")

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        s = rng.uniform(*self.scale)
        h, w = labels.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        labels = cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST)
        ch, cw = self.crop
        ph, pw = max(ch - labels.shape[0], 0), max(cw - labels.shape[1], 0)
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            labels = cv2.copyMakeBorder(labels, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=IGNORE_LABEL)
        y = int(rng.integers(0, labels.shape[0] - ch + 1))
        x = int(rng.integers(0, labels.shape[1] - cw + 1))
        image, labels = image[y:y + ch, x:x + cw], labels[y:y + ch, x:x + cw]
        if self.flip and rng.random() < 0.5:
            image, labels = image[:, ::-1], labels[:, ::-1]
        if self.jpeg is not None and rng.random() < self.jpeg_probability:
            quality = int(rng.integers(self.jpeg[0], self.jpeg[1] + 1))
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:  # RGB goes in as if BGR: the round trip keeps the order, only the chroma axes differ
                image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` (or a list of equal-size images) -> float ``(N, 3, H, W)`` in [0, 1]."""
    if isinstance(images, list):
        images = np.stack(images)
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
