"""Labelled image sets for training and evaluation: synthetic on the fly, Cityscapes-format, CamVid-format.

Every data set is a sequence of ``(image, labels)`` pairs: ``image`` uint8 RGB ``(H, W, 3)``,
``labels`` uint8 ``(H, W)`` class ids with 255 ignored, plus ``classes`` (names, in id order)
and ``colors`` (RGB per class). :func:`open_dataset` turns a spec into one:

- ``"synth"`` or ``"synth:clips=120,frames=10,seed=0,size=512x1024"``: street scenes rendered on
  the fly by :mod:`taplab.data.synth` (cached in memory once rendered). Each clip draws its own
  scene parameters (traffic, pedestrians, pan, horizon, field of view, lighting) from the seed.
  The validation and test splits use other seeds (and a tenth as many clips), so they never share a
  scene with the training split or each other.
- a folder in Cityscapes layout (:mod:`taplab.data.layout`): ``gtFine/**/<stem>_gtFine_labelTrainIds.png``
  with the image at the same relative path under ``leftImg8bit/`` (``<stem>_leftImg8bit.png`` or
  ``.jpg``). Folders written by ``taplab synth`` have this layout too; where they hold no images, the
  frames are decoded from ``video/<clip>.mp4`` (so the network sees the codec's artefacts, as at run time).
  Splits: ``gtFine/<split>/`` when present; otherwise every tenth clip (sub-folder) is the
  validation split.
- a folder in CamVid layout (SegNet's): ``<split>/*.png`` with ``<split>annot/*.png`` holding
  CamVid's 11 class ids; 11 (void) becomes the ignore label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taplab.data import layout
from taplab.data.labels import IGNORE_LABEL, NUM_CLASSES, default_metadata
from taplab.errors import ConfigError
from taplab.files import read_image, read_label_image
from taplab.options import parse_assignments, parse_size

Pair = tuple[np.ndarray, np.ndarray]
CITYSCAPES_CLASSES, CITYSCAPES_COLORS = default_metadata(NUM_CLASSES)
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_COLORS = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                 (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
SPLITS = ("train", "val", "test", "all")


class LabelledImages(Sequence[Pair]):
    """Base: a sequence of (image, labels) with the class names and colours of its label space."""

    classes: tuple[str, ...] = CITYSCAPES_CLASSES
    colors: tuple[tuple[int, int, int], ...] = CITYSCAPES_COLORS
    description: str = ""

    def __getitem__(self, i):  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------- synthetic, on the fly


@dataclass(frozen=True)
class SynthSet:
    """Parameters of an on-the-fly synthetic set: ``clips`` scenes, ``frames`` frames from each
    (``step`` frames apart in a 25 fps clip), all following from ``seed``."""

    clips: int = 120
    frames: int = 10
    step: int = 3
    seed: int = 0
    size: tuple[int, int] = (512, 1024)

    def __post_init__(self) -> None:
        for name in ("clips", "frames", "step"):
            if getattr(self, name) < 1:
                raise ConfigError(f"synth {name} must be >= 1, got {getattr(self, name)}")


#: seeds of validation clips are offset by this, so no validation scene is ever a training scene
VAL_SEED_OFFSET = 1_000_003


class SynthImages(LabelledImages):
    """Frames of :class:`SynthSet` clips, rendered when first asked for and then kept in memory.

    Rendering a clip costs about 0.4 s of set-up and 20 ms per 512x1024 frame; keeping the frames
    costs 2 MB each (the default 1200 training frames: about 2.4 GB), which makes every epoch after
    the first free of rendering."""

    def __init__(self, spec: SynthSet, split: str = "train"):
        self.spec = spec
        self.split = split
        held_out = split in ("val", "test")
        if held_out:  # a tenth as many scenes as for training (at least 2), from seeds training never uses
            spec = SynthSet(max(2, spec.clips // 10), spec.frames, spec.step, spec.seed, spec.size)
            self.spec = spec
        base = spec.seed * 7919 + (VAL_SEED_OFFSET * (1 + (split == "test")) if held_out else 0)
        self.seeds = [base + k for k in range(spec.clips)]
        self._cache: dict[int, list[Pair]] = {}
        self.description = f"synthetic {split}: {spec.clips} clips x {spec.frames} frames at {spec.size[0]}x{spec.size[1]}"

    def __len__(self) -> int:
        return self.spec.clips * self.spec.frames

    def __getitem__(self, i: int) -> Pair:
        if not 0 <= i < len(self):
            raise IndexError(i)
        clip, k = divmod(i, self.spec.frames)
        if clip not in self._cache:
            self._cache[clip] = self._render(self.seeds[clip])
        return self._cache[clip][k]

    def _render(self, seed: int) -> list[Pair]:
        from taplab.data.synth import _Scene

        scene = _Scene(clip_config(seed, self.spec.size, self.spec.frames * self.spec.step))
        return [(f.image, f.labels) for f in (scene.render(k * self.spec.step) for k in range(self.spec.frames))]


def clip_config(seed: int, size: tuple[int, int], frames: int):
    """A :class:`~taplab.data.synth.SynthConfig` whose scene parameters vary with ``seed``, for training variety."""
    from taplab.data.synth import SynthConfig

    rng = np.random.default_rng([seed, 0x5EED])
    return SynthConfig(
        height=size[0], width=size[1], frames=frames, seed=seed,
        hfov_deg=float(rng.uniform(50, 75)), horizon=float(rng.uniform(0.38, 0.52)),
        camera_height_m=float(rng.uniform(1.2, 1.9)), ego_speed_mps=float(rng.uniform(0, 14)),
        pan_deg_per_s=float(rng.uniform(0, 8)), cars=int(rng.integers(2, 16)), people=int(rng.integers(2, 16)),
        cyclists=int(rng.integers(0, 5)), pole_spacing_m=float(rng.uniform(8, 24)),
        tree_spacing_m=float(rng.uniform(8, 24)), lighting_change=float(rng.uniform(0, 0.3)),
        color_jitter=float(rng.uniform(0.1, 0.3)), cloudiness=float(rng.uniform(0, 0.8)),
        noise_std=float(rng.uniform(1, 4)),
    )


def parse_synth_spec(spec: str) -> SynthSet:
    """``synth[:key=value,...]`` -> :class:`SynthSet` (keys: clips, frames, step, seed, size=HxW)."""
    _, _, args = spec.partition(":")
    fields: dict = {}
    for key, value in parse_assignments(filter(None, args.split(",")), f"synthetic data spec {spec!r}").items():
        if key not in ("clips", "frames", "step", "seed", "size"):
            raise ConfigError(f"bad synthetic data spec {spec!r}: expected synth:clips=N,frames=N,step=N,seed=N,size=HxW")
        if key == "size":
            fields[key] = parse_size(value, "synth size")
            continue
        try:
            fields[key] = int(value)
        except ValueError:
            raise ConfigError(f"bad value for {key} in {spec!r}: {value!r}") from None
    if "size" in fields and (min(fields["size"]) < 64 or any(v % 2 for v in fields["size"])):
        raise ConfigError(f"synth size must be HxW, even and >= 64, got {args}")
    return SynthSet(**fields)


# ---------------------------------------------------------------- folders


class PairedFiles(LabelledImages):
    """Image/label file pairs; images may instead be frames of a video (``(video path, index)``).

    A video is decoded whole the first time one of its frames is asked for, and its frames are
    kept (taplab synth clips are short; 30 frames at 512x1024 take 47 MB)."""

    def __init__(self, pairs: list[tuple[Path | tuple[Path, int], Path]], read_labels: Callable[[Path], np.ndarray],
                 classes, colors, description: str):
        self.pairs = pairs
        self.read_labels = read_labels
        self.classes, self.colors, self.description = tuple(classes), tuple(colors), description
        self._videos: dict[Path, list[np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> Pair:
        image_ref, label_path = self.pairs[i]
        labels = self.read_labels(label_path)
        if isinstance(image_ref, tuple):
            video, t = image_ref
            frames = self._video_frames(video)
            if t >= len(frames):
                raise ConfigError(f"{label_path} labels frame {t}, but {video} has {len(frames)} frames")
            image = frames[t]
        else:
            image = read_image(image_ref)
        bad = labels[(labels != IGNORE_LABEL) & (labels >= len(self.classes))]
        if bad.size:
            raise ConfigError(f"{label_path} holds class id {int(bad.max())}, but the data has {len(self.classes)} "
                              f"classes (0..{len(self.classes) - 1}, {IGNORE_LABEL} ignored); labelIds instead of labelTrainIds?")
        if image.shape[:2] != labels.shape[:2]:
            raise ConfigError(f"image and labels differ in size for {label_path}: {image.shape[:2]} vs {labels.shape[:2]}")
        return image, labels

    def _video_frames(self, video: Path) -> list[np.ndarray]:
        if video not in self._videos:
            from taplab.codec import open_video

            with open_video(video) as v:
                self._videos[video] = [f.image for f in v]
        return self._videos[video]


def _camvid_labels(path: Path) -> np.ndarray:
    array = read_label_image(path)
    if array.ndim == 3:
        array = array[..., 0]
    labels = array.astype(np.uint8)
    labels[labels >= len(CAMVID_CLASSES)] = IGNORE_LABEL
    return labels


def cityscapes_folder(root: Path, split: str) -> PairedFiles:
    labels_root = root / layout.LABELS_DIR
    split_dirs = [d.name for d in labels_root.iterdir() if d.is_dir() and d.name in ("train", "val", "test")]
    if split_dirs and split != "all":
        if split not in split_dirs:
            raise ConfigError(f"{root} has no {split!r} split (found: {', '.join(sorted(split_dirs))})")
        label_files = sorted((labels_root / split).rglob(layout.LABEL_GLOB))
    else:
        label_files = sorted(labels_root.rglob(layout.LABEL_GLOB))
        if not split_dirs and split != "all":
            label_files = _hold_out(label_files, labels_root, split)
    pairs = []
    for lp in label_files:
        rel = lp.relative_to(labels_root)
        stem = layout.label_stem(lp.name)
        images = [root / layout.IMAGES_DIR / rel.parent / layout.image_name(stem, ext) for ext in layout.IMAGE_EXTENSIONS]
        image = next((p for p in images if p.exists()), None)
        if image is None:  # a taplab synth folder without images: the frame of the clip's video
            frame = layout.parse_label_name(lp.name)
            video = layout.clip_video_path(root, rel.parts[0])
            if not (frame and video.exists()):
                raise ConfigError(f"no image for {lp}: expected {images[0].relative_to(root)} "
                                  f"(or a taplab synth {video.relative_to(root)})")
            image = (video, frame[1])
        pairs.append((image, lp))
    if not pairs:
        raise ConfigError(f"{root} holds no {layout.LABEL_GLOB} for split {split!r}")
    return PairedFiles(pairs, layout.read_labels, CITYSCAPES_CLASSES, CITYSCAPES_COLORS,
                       f"Cityscapes-format {root} ({split}): {len(pairs)} images")


def _hold_out(files: list[Path], labels_root: Path, split: str) -> list[Path]:
    """Without split folders: every tenth clip (top-level sub-folder, the first included) is the
    validation split, the rest training; with a single clip, both splits are that clip."""
    clip = {f: f.relative_to(labels_root).parts[0] for f in files}
    clips = sorted(set(clip.values()))
    if len(clips) < 2:
        return files
    val = set(clips[::10])
    return [f for f in files if (clip[f] in val) == (split in ("val", "test"))]


def camvid_folder(root: Path, split: str) -> PairedFiles:
    splits = ("train", "val", "test") if split == "all" else (split,)
    pairs = []
    for s in splits:
        images, annots = root / s, root / f"{s}annot"
        if not images.is_dir() or not annots.is_dir():
            if split == "all":
                continue
            raise ConfigError(f"{root} has no CamVid {s!r} split: expected {s}/ and {s}annot/")
        for lp in sorted(annots.glob("*.png")):
            ip = images / lp.name
            if not ip.exists():
                raise ConfigError(f"no image for {lp}: expected {ip}")
            pairs.append((ip, lp))
    if not pairs:
        raise ConfigError(f"{root} holds no CamVid label images for split {split!r}")
    return PairedFiles(pairs, _camvid_labels, CAMVID_CLASSES, CAMVID_COLORS, f"CamVid-format {root} ({split}): {len(pairs)} images")


#: folder formats, tried in order: (name, does this folder look like it, opener)
FORMATS: tuple[tuple[str, Callable[[Path], bool], Callable[[Path, str], PairedFiles]], ...] = (
    ("cityscapes", lambda root: (root / layout.LABELS_DIR).is_dir(), cityscapes_folder),
    ("camvid", lambda root: (root / "trainannot").is_dir() or (root / "testannot").is_dir(), camvid_folder),
)


def open_dataset(spec: str, split: str = "train") -> LabelledImages:
    """A labelled data set from a spec (see the module's docstring); ``split`` in train/val/test/all."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if spec == "synth" or spec.startswith("synth:"):
        return SynthImages(parse_synth_spec(spec), split)
    root = Path(spec)
    if not root.is_dir():
        raise ConfigError(f"data {spec!r} is neither 'synth[:...]' nor a folder")
    for _name, looks_like, opener in FORMATS:
        if looks_like(root):
            return opener(root, split)
    raise ConfigError(f"{root} is not a labelled folder: expected gtFine/ (+ leftImg8bit/ or video/: Cityscapes "
                      "layout, or written by taplab synth) or train/ + trainannot/ (CamVid layout)")
