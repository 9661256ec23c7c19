"""Unlabelled video for training: frames that teach consistency in time, not classes.

PFI's temporal loss (:mod:`taplab.pfi`) needs no labels: only two consecutive frames and the motion
between them. ``taplab train --temporal W --temporal-data VIDEO[@START:END]`` adds the frames of the
user's own footage to the labelled training data, so that the model learns to be consistent on video
like theirs. Their labels are all the ignore label, so the cross-entropy passes them by.

- :class:`UnlabelledFrames`: the frames ``START`` to ``END`` (exclusive; either may be left out) of a
  video, decoded once and kept (a 1280x720 frame takes 2.7 MB).
- :class:`Joined`: labelled and unlabelled sets as one training set, in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from taplab.data.datasets import LabelledImages
from taplab.data.labels import IGNORE_LABEL
from taplab.errors import ConfigError


def parse_video_spec(spec: str) -> tuple[Path, int, int | None]:
    """``PATH`` or ``PATH@START:END`` -> (path, start, end or None)."""
    path, at, span = spec.rpartition("@") if "@" in spec else (spec, "", "")
    start, end = 0, None
    if at:
        first, colon, last = span.partition(":")
        try:
            start = int(first) if first else 0
            end = int(last) if last else None
        except ValueError:
            raise ConfigError(f"bad video spec {spec!r}: expected PATH or PATH@START:END (frame numbers)") from None
        if not colon or start < 0 or (end is not None and end <= start):
            raise ConfigError(f"bad video spec {spec!r}: expected PATH@START:END with 0 <= START < END")
    if not Path(path).is_file():
        raise ConfigError(f"no video {path!r}")
    return Path(path), start, end


class UnlabelledFrames(LabelledImages):
    """The frames of one video (``PATH[@START:END]``), labelled with the ignore label only, in the label space
    ``classes``/``colors`` of the data they join."""

    def __init__(self, spec: str, classes: Sequence[str], colors: Sequence[tuple[int, int, int]]):
        from taplab.codec import open_video

        path, start, end = parse_video_spec(spec)
        self.frames = []
        with open_video(path) as video:
            for frame in video:
                if end is not None and frame.index >= end:
                    break
                if frame.index >= start:
                    self.frames.append(frame.image)
        if len(self.frames) < 2:
            raise ConfigError(f"{spec}: fewer than two frames in that range, no pair to learn from")
        self.classes, self.colors = tuple(classes), tuple(colors)
        self.description = f"unlabelled video {path.name}: frames {start}-{start + len(self.frames) - 1}"

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int):
        image = self.frames[i]
        return image, np.full(image.shape[:2], IGNORE_LABEL, np.uint8)


class Joined(LabelledImages):
    """Several sets of one label space as one: the samples of ``parts[0]``, then those of ``parts[1]``, ..."""

    def __init__(self, parts: Sequence[LabelledImages]):
        self.parts = list(parts)
        first = self.parts[0]
        if any(tuple(p.classes) != tuple(first.classes) for p in self.parts):
            raise ConfigError("the joined data sets have different classes")
        self.classes, self.colors = tuple(first.classes), tuple(first.colors)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])
        self.description = " + ".join(p.description for p in self.parts)

    def locate(self, i: int) -> tuple[int, int]:
        """Sample ``i`` -> (part, index within the part)."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return part, i - int(self.offsets[part])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        part, j = self.locate(i)
        return self.parts[part][j]
