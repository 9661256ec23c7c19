"""Training-time augmentation of (image, labels) pairs: the papers' recipe plus codec artefacts.

Random scale (0.5-2.0 in the papers), random crop (padded with the ignore label where the scaled
image is smaller than the crop), horizontal flip, and optionally JPEG re-encoding at a random
quality, which imitates the block artefacts of the decoded video that taplab segments at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from taplab.data.labels import IGNORE_LABEL
from taplab.errors import ConfigError

if TYPE_CHECKING:  # the runtime imports this module; training's pairs stay out of it
    from taplab.data.pairs import Previous


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
        image, labels, _ = self.transform(image, labels, rng)
        return image, labels

    def transform(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  previous: Previous | None = None) -> tuple[np.ndarray, np.ndarray, Previous | None]:
        """One random draw applied to a frame, its labels and, when given, the frame before it
        (:class:`~taplab.data.pairs.Previous`: its image, the backward flow and the flow's valid mask,
        transformed alike: the flow scaled with the image and mirrored with it, padding invalid). The draws
        do not depend on ``previous``, so a run with pairs augments its frames as a run without."""
        s = rng.uniform(*self.scale)
        h, w = labels.shape
        size = (max(1, round(w * s)), max(1, round(h * s)))
        ch, cw = self.crop
        ph, pw = max(ch - size[1], 0), max(cw - size[0], 0)

        def geometry(a: np.ndarray, interpolation: int, fill) -> np.ndarray:
            a = cv2.resize(a, size, interpolation=interpolation)
            if ph or pw:
                a = cv2.copyMakeBorder(a, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=fill)
            return a

        image = geometry(image, cv2.INTER_LINEAR, 0)
        labels = geometry(labels, cv2.INTER_NEAREST, IGNORE_LABEL)
        y = int(rng.integers(0, labels.shape[0] - ch + 1))
        x = int(rng.integers(0, labels.shape[1] - cw + 1))
        flip = self.flip and rng.random() < 0.5
        window = (slice(y, y + ch), slice(x, x + cw), slice(None, None, -1 if flip else 1))

        def place(a: np.ndarray) -> np.ndarray:
            return a[window[0], window[1]][:, window[2]]

        image, labels = place(image), place(labels)
        quality = None
        if self.jpeg is not None and rng.random() < self.jpeg_probability:
            quality = int(rng.integers(self.jpeg[0], self.jpeg[1] + 1))
            image = _jpeg(image, quality)
        if previous is not None:
            flow = geometry(previous.flow, cv2.INTER_LINEAR, 0) * np.float32([size[0] / w, size[1] / h])
            flow = place(flow) * np.float32([-1 if flip else 1, 1])
            valid = place(geometry(previous.valid.astype(np.uint8), cv2.INTER_NEAREST, 0)).astype(bool)
            before = place(geometry(previous.image, cv2.INTER_LINEAR, 0))
            previous = replace(previous, image=np.ascontiguousarray(before if quality is None else _jpeg(before, quality)),
                               flow=np.ascontiguousarray(flow), valid=np.ascontiguousarray(valid))
        return np.ascontiguousarray(image), np.ascontiguousarray(labels), previous


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
    # RGB goes in as if BGR: the round trip keeps the order, only the chroma axes differ
    return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else image


def to_tensor(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 RGB ``(H, W, 3)`` or ``(N, H, W, 3)`` (or a list of equal-size images) -> float ``(N, 3, H, W)`` in [0, 1]."""
    if isinstance(images, list):
        images = np.stack(images)
    if images.ndim == 3:
        images = images[None]
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
