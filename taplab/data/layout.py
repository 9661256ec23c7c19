"""The Cityscapes file layout, and taplab's extension of it for synthetic clips: names, patterns, readers.

Cityscapes keeps an image and its labels at the same relative path under two roots:

- ``leftImg8bit/<rel>/<stem>_leftImg8bit.png`` (or ``.jpg``): the image;
- ``gtFine/<rel>/<stem>_gtFine_labelTrainIds.png``: its labels, 8-bit single channel, train ids
  (0..18, 255 ignored);

where ``<stem>`` is ``<snippet>_<frame:06d>`` (Cityscapes' ``<city>_<seq>``; a frame index within
the sequence). A folder written by ``taplab synth`` (:func:`taplab.data.synth.write_clip`) follows it
with one sub-folder per clip named after the clip (``<rel>`` = ``<clip>``, the snippet = ``<clip>``) and adds
``video/<clip>.mp4`` (the encoded frames, index = frame) and ``flow/<clip>.npz`` (key ``flow``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from taplab.errors import ConfigError
from taplab.files import read_label_image

LABELS_DIR = "gtFine"
IMAGES_DIR = "leftImg8bit"
VIDEOS_DIR = "video"
FLOWS_DIR = "flow"
LABEL_SUFFIX = "_gtFine_labelTrainIds.png"
IMAGE_SUFFIX = "_leftImg8bit"
#: the image formats looked for, in order
IMAGE_EXTENSIONS = ("png", "jpg")
#: glob patterns of label and image files (for ``Path.rglob``)
LABEL_GLOB = f"*{LABEL_SUFFIX}"
IMAGE_GLOB = f"*{IMAGE_SUFFIX}.*"

_LABEL_NAME = re.compile(rf"^(?P<snippet>.+)_(?P<frame>\d{{6}}){re.escape(LABEL_SUFFIX)}$")
_IMAGE_NAME = re.compile(rf"^(?P<snippet>.+)_(?P<frame>\d{{6}}){IMAGE_SUFFIX}\.(?P<ext>{'|'.join(IMAGE_EXTENSIONS)})$")


def frame_stem(snippet: str, frame: int) -> str:
    """``<snippet>_<frame:06d>``: the part of a file name before ``_leftImg8bit`` / ``_gtFine_...``."""
    return f"{snippet}_{frame:06d}"


def label_name(stem: str) -> str:
    """The label file name of a stem (``<stem>_gtFine_labelTrainIds.png``)."""
    return stem + LABEL_SUFFIX


def image_name(stem: str, ext: str = "png") -> str:
    """The image file name of a stem (``<stem>_leftImg8bit.<ext>``)."""
    return f"{stem}{IMAGE_SUFFIX}.{ext}"


def label_stem(name: str) -> str | None:
    """The stem of a label file name; None when ``name`` is not one."""
    return name[: -len(LABEL_SUFFIX)] if name.endswith(LABEL_SUFFIX) else None


def parse_label_name(name: str) -> tuple[str, int] | None:
    """``<snippet>_<frame:06d>_gtFine_labelTrainIds.png`` -> ``(snippet, frame)``; None for other names."""
    m = _LABEL_NAME.match(name)
    return (m["snippet"], int(m["frame"])) if m else None


def parse_image_name(name: str) -> tuple[str, int, str] | None:
    """``<snippet>_<frame:06d>_leftImg8bit.<png|jpg>`` -> ``(snippet, frame, ext)``; None for other names."""
    m = _IMAGE_NAME.match(name)
    return (m["snippet"], int(m["frame"]), m["ext"]) if m else None


# ---------------------------------------------------------------- a taplab synth folder: one sub-folder per clip


def clip_labels_dir(root: str | os.PathLike[str], clip: str) -> Path:
    """``<root>/gtFine/<clip>``: the folder of a clip's label files."""
    return Path(root) / LABELS_DIR / clip


def clip_images_dir(root: str | os.PathLike[str], clip: str) -> Path:
    """``<root>/leftImg8bit/<clip>``: the folder of a clip's image files."""
    return Path(root) / IMAGES_DIR / clip


def clip_label_path(root: str | os.PathLike[str], clip: str, frame: int) -> Path:
    """``<root>/gtFine/<clip>/<clip>_<frame:06d>_gtFine_labelTrainIds.png``."""
    return clip_labels_dir(root, clip) / label_name(frame_stem(clip, frame))


def clip_image_path(root: str | os.PathLike[str], clip: str, frame: int, ext: str = "png") -> Path:
    """``<root>/leftImg8bit/<clip>/<clip>_<frame:06d>_leftImg8bit.<ext>``."""
    return clip_images_dir(root, clip) / image_name(frame_stem(clip, frame), ext)


def clip_video_path(root: str | os.PathLike[str], clip: str) -> Path:
    """``<root>/video/<clip>.mp4``: the clip's encoded frames."""
    return Path(root) / VIDEOS_DIR / f"{clip}.mp4"


def clip_flow_path(root: str | os.PathLike[str], clip: str) -> Path:
    """``<root>/flow/<clip>.npz``: the clip's ground-truth flow (key ``flow``)."""
    return Path(root) / FLOWS_DIR / f"{clip}.npz"


def clip_videos(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``<root>/video/*.mp4``, sorted by name (a clip's name is its file's stem)."""
    return sorted((Path(root) / VIDEOS_DIR).glob("*.mp4"))


# ---------------------------------------------------------------- reading labels


def read_labels(path: str | os.PathLike[str]) -> np.ndarray:
    """A label file as uint8 ``(H, W)`` train ids; :class:`ConfigError` when it cannot be read or has
    more than one channel."""
    array = read_label_image(path)
    if array.ndim != 2:
        raise ConfigError(f"{path}: Cityscapes label images must be single-channel (labelTrainIds)")
    return array.astype(np.uint8, copy=False)


def read_clip_labels(folder: str | os.PathLike[str]) -> list[np.ndarray]:
    """Every label file in ``folder`` (one clip's, e.g. :func:`clip_labels_dir`), in name order (= frame
    order); :class:`ConfigError` when there is none."""
    files = sorted(Path(folder).glob(LABEL_GLOB))
    if not files:
        raise ConfigError(f"no labels ({LABEL_GLOB}) in {folder}")
    return [read_labels(f) for f in files]
