"""Frame pairs for temporal training: each sample's previous frame, the motion between them, and where it holds.

PFI's temporal loss and pairwise-frame distillation (:mod:`taplab.pfi`) compare a network's outputs on two
consecutive frames. ``pairs = frame_pairs(dataset)`` gives, for sample ``i`` of a labelled set, ``pairs[i]``:
a :class:`Previous` (the frame before, the backward flow of sample ``i``'s frame to it, in taplab's
convention, and the pixels where that flow can be trusted), or None where the sample has no frame before it.

Sources, by the data set's kind (:data:`SOURCES`):

- **synthetic clips** (``synth:...``): the renderer's exact flow. A pixel is valid where the previous
  frame's label, carried along the flow, is its own label: occluded and newly uncovered pixels, where
  the label changes along the flow, drop out, and so do pixels whose source lies outside the frame.
  The first frame of a clip (frame 0) has no frame before it.
- **frames decoded from video with their exact flow** (folders written by ``taplab synth``, which keep
  ``flow/<clip>.npz``): the decoded frames, with the codec's noise that differs from frame to frame (an
  I-frame is coded differently from the P-frame before it), and the renderer's flow, masked by the labels
  as for synthetic clips: what the model must not react to, with motion it can trust.
- **frames decoded from video** (any other labelled set whose images are video frames, and unlabelled
  video, :mod:`taplab.data.videos`): optical flow (DIS, OpenCV's
  medium preset) between the decoded frames, valid where the forward and backward flows agree:
  ``|b + f(x + b)|^2 <= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5`` (the usual forward-backward check), the
  source inside the frame.
- **labelled and unlabelled sets joined** (:class:`~taplab.data.videos.Joined`): each part's own pairs.

Pairs are computed when first asked for and kept, as the data sets keep their frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import cv2
import numpy as np

from taplab.data import layout
from taplab.data.datasets import LabelledImages, PairedFiles, SynthImages, clip_config
from taplab.data.videos import Joined, UnlabelledFrames
from taplab.errors import ConfigError


@dataclass
class Previous:
    """The frame before a sample: ``image`` uint8 RGB ``(H, W, 3)``; ``flow`` float32 ``(H, W, 2)``, the backward
    flow of the sample's frame (``sample[y, x] ~= image[y + dy, x + dx]``); ``valid`` bool ``(H, W)``."""

    image: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


def inside(flow: np.ndarray) -> np.ndarray:
    """Pixels whose flow's source lies inside the frame (bool ``(H, W)``)."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    sx, sy = xs + flow[..., 0], ys + flow[..., 1]
    return (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)


def label_consistent(labels: np.ndarray, previous_labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Where the previous frame's label, carried along an exact ``flow`` (nearest pixel), equals ``labels``."""
    from taplab.ops.flow import warp_labels

    return (warp_labels(previous_labels, flow) == labels) & inside(flow)


def forward_backward(backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """The forward-backward check: a backward flow ``b`` is valid where the forward flow at its source,
    ``f(x + b)``, brings it back: ``|b + f(x + b)|^2 <= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5``."""
    h, w = backward.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    back_at = cv2.remap(forward, xs + backward[..., 0], ys + backward[..., 1], cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    error = ((backward + back_at) ** 2).sum(-1)
    bound = 0.01 * ((backward ** 2).sum(-1) + (back_at ** 2).sum(-1)) + 0.5
    return (error <= bound) & inside(backward)


class FramePairs:
    """``pairs[i]``: sample ``i``'s :class:`Previous`, or None. ``make(i)`` computes it when first asked for, and
    may compute others with it (a synthetic clip's pairs all come from one scene); the flows are kept in
    float16 (half the memory: the default 1200 synthetic training frames keep about 5 GB of pairs)."""

    def __init__(self, dataset: LabelledImages, make: Callable[[int], dict[int, Previous | None]], description: str):
        self.dataset, self._make, self.description = dataset, make, description
        self._cache: dict[int, Previous | None] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Previous | None:
        if i not in self._cache:
            for k, previous in self._make(i).items():
                self._cache[k] = None if previous is None else replace(previous, flow=previous.flow.astype(np.float16))
        previous = self._cache[i]
        return None if previous is None else replace(previous, flow=previous.flow.astype(np.float32))


def _synthetic(dataset: SynthImages) -> FramePairs:
    from taplab.data.synth import _Scene

    spec = dataset.spec

    def make(i: int) -> dict[int, Previous | None]:
        """All pairs of sample ``i``'s clip: frame ``t = k * step`` and frame ``t - 1`` (none for ``t = 0``)."""
        clip = i // spec.frames
        scene = _Scene(clip_config(dataset.seeds[clip], spec.size, spec.frames * spec.step))
        made: dict[int, Previous | None] = {clip * spec.frames: None}
        for k in range(1, spec.frames):
            t = k * spec.step
            before, frame = scene.render(t - 1), scene.render(t)
            made[clip * spec.frames + k] = Previous(before.image, frame.flow,
                                                    label_consistent(frame.labels, before.labels, frame.flow))
        return made

    return FramePairs(dataset, make, "the renderer's exact flow; occlusions masked by the labels")


def _optical(current: np.ndarray, before: np.ndarray, estimator) -> Previous:
    backward, forward = estimator(current, before), estimator(before, current)
    return Previous(before, backward, forward_backward(backward, forward))


def _video(dataset: PairedFiles) -> FramePairs:
    from taplab.ops.flow import OpticalFlow

    if not all(isinstance(ref, tuple) for ref, _ in dataset.pairs):
        raise ConfigError(f"{dataset.description}: the temporal losses need consecutive frames, and these images "
                          "are not frames of a video (use synth:... or a folder written by taplab synth)")
    estimator = OpticalFlow("dis-medium")
    where = {ref: i for i, (ref, _) in enumerate(dataset.pairs)}  # (video, frame) -> sample

    def make(i: int) -> dict[int, Previous | None]:
        (video, t), _ = dataset.pairs[i]
        frames = dataset._video_frames(video)
        exact = layout.clip_flow_path(video.parent.parent, video.stem)
        if not exact.exists():
            return {i: None if t == 0 else _optical(frames[t], frames[t - 1], estimator)}
        flows = np.load(exact)["flow"]  # every labelled frame of the clip at once: the file is read once
        made: dict[int, Previous | None] = {}
        for (v, k), j in where.items():
            if v == video:
                before = where.get((video, k - 1))
                made[j] = None if before is None else Previous(
                    frames[k - 1], flows[k].astype(np.float32),
                    label_consistent(dataset[j][1], dataset[before][1], flows[k].astype(np.float32)))
        return made

    return FramePairs(dataset, make, "decoded frames; the clips' exact flow where they keep it (masked by the labels), "
                      "else optical flow (DIS medium) with the forward-backward check")


def _unlabelled(dataset: UnlabelledFrames) -> FramePairs:
    from taplab.ops.flow import OpticalFlow

    estimator = OpticalFlow("dis-medium")

    def make(i: int) -> dict[int, Previous | None]:
        return {i: None if i == 0 else _optical(dataset.frames[i], dataset.frames[i - 1], estimator)}

    return FramePairs(dataset, make, "optical flow (DIS medium) between the video's frames; forward-backward check")


class _JoinedPairs(FramePairs):
    """The pairs of a :class:`~taplab.data.videos.Joined` set: each part's own, which keep them."""

    def __init__(self, dataset: Joined):
        self.parts = [frame_pairs(p) for p in dataset.parts]
        super().__init__(dataset, lambda i: {}, "; ".join(p.description for p in self.parts))

    def __getitem__(self, i: int) -> Previous | None:
        part, j = self.dataset.locate(i)
        return self.parts[part][j]


#: how each kind of data set finds a sample's previous frame
SOURCES: dict[type, Callable[[LabelledImages], FramePairs]] = {
    SynthImages: _synthetic, PairedFiles: _video, UnlabelledFrames: _unlabelled, Joined: _JoinedPairs}


def frame_pairs(dataset: LabelledImages) -> FramePairs:
    """The frame pairs of ``dataset`` (see the module docstring); :class:`ConfigError` for data without frames in time."""
    for kind, source in SOURCES.items():
        if isinstance(dataset, kind):
            return source(dataset)
    what = getattr(dataset, "description", type(dataset).__name__)
    raise ConfigError(f"{what}: the temporal losses need video data (synth:... or a folder written by "
                      "taplab synth)")
