"""``taplab demo``: taplab's main job end to end on something it makes itself, with nothing beside the checkout.

It renders a short synthetic street clip with labels on every frame (:mod:`taplab.data.synth`,
encoded as the papers' MPEG-4 Part 2, GOP 12), segments it with the shipped default model into masks,
an overlay video and a log (:func:`taplab.segment`), then runs the accelerated segmenter and the same
model on every frame side by side (both warm, without writing anything) for the speed-up, the
accuracy of both against the clip's labels and the fidelity of the accelerated output to the
per-frame one. Deterministic: the same seed gives the same clip and accuracy figures (times vary).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from taplab.data.layout import clip_labels_dir, read_clip_labels
from taplab.data.synth import SynthConfig, write_clip
from taplab.io.sinks import prepare_output
from taplab.io.summary import RunSummary
from taplab.metrics import ConfusionMatrix, percent
from taplab.pipeline import segment_to_folder
from taplab.runtime import Segmenter


@dataclass
class DemoResult:
    """What the demo made and measured. Accuracy figures are mIoU in percent."""

    video: Path
    masks: Path
    overlay: Path
    summary: RunSummary  #: the run that wrote the masks and the overlay video
    miou: float  #: the accelerated output against the clip's labels
    per_frame_miou: float  #: the model on every frame, against the labels
    fidelity: float  #: the accelerated output against the per-frame output
    speedup: float  #: frames/s of the accelerated segmenter over the per-frame model's, neither writing files

    def format(self) -> str:
        return (f"{self.summary.format()}\n\n"
                f"accuracy against the clip's labels: mIoU {self.miou:.1f}% (the model on every frame: "
                f"{self.per_frame_miou:.1f}%); fidelity to the per-frame output {self.fidelity:.1f}%\n"
                f"speed-up over the model on every frame: {self.speedup:.1f}x (side by side, without file writes)\n"
                f"clip: {self.video}")


def run_demo(out: str | Path, frames: int = 48, size: tuple[int, int] = (512, 1024), seed: int = 700001,
             model="default", device: str = "auto", overwrite: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """Make a clip of ``frames`` frames of ``size`` (height, width) from ``seed`` in ``out/clip``, segment it into
    ``out/masks`` (label and colour PNGs, frames.json/.csv) and ``out/overlay.mp4``, and measure it;
    ``progress(phase, done, total)`` after each frame of each phase (``"rendering"``, ``"segmenting"``,
    ``"timing"``, ``"per-frame"``). Bad arguments fail before ``out`` is touched."""
    out = Path(out)
    config = SynthConfig(height=size[0], width=size[1], frames=frames, seed=seed)
    segmenter = Segmenter(model, device=device)
    prepare_output(out, overwrite)
    tell = progress or (lambda phase, done, total: None)
    video = write_clip(out / "clip", config, gop=12, name="demo",
                       progress=lambda t: tell("rendering", t + 1, frames))
    truth = read_clip_labels(clip_labels_dir(out / "clip", "demo"))
    summary = segment_to_folder(segmenter, video, out / "masks", ("labels", "color"), overwrite=overwrite,
                                overlay=out / "overlay.mp4",
                                progress=lambda _r, s: tell("segmenting", s.frames, frames))
    accelerated, accelerated_fps = _timed(segmenter, video, lambda n: tell("timing", n, frames))
    per_frame, per_frame_fps = _timed(Segmenter(segmenter.model, ffw=False), video, lambda n: tell("per-frame", n, frames))
    n = segmenter.model.num_classes
    ours, baseline, fidelity = ConfusionMatrix(n), ConfusionMatrix(n), ConfusionMatrix(n)
    for labels, reference, true in zip(accelerated, per_frame, truth):
        ours.update(labels, true)
        baseline.update(reference, true)
        fidelity.update(labels, reference)
    return DemoResult(video, out / "masks", out / "overlay.mp4", summary, percent(ours.miou()),
                      percent(baseline.miou()), percent(fidelity.miou()), accelerated_fps / per_frame_fps)


def _timed(segmenter: Segmenter, video: Path, tell: Callable[[int], None]) -> tuple[list[np.ndarray], float]:
    """Every frame's labels and the run's frames/s."""
    labels, start = [], time.perf_counter()
    for r in segmenter.run(video):
        labels.append(r.labels)
        tell(len(labels))
    return labels, len(labels) / (time.perf_counter() - start)
