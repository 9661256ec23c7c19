"""``taplab demo``: taplab's main job end to end on something it makes itself, with nothing beside the checkout.

It renders a short synthetic street clip with labels on every frame (:mod:`taplab.data.synth`,
encoded as the papers' MPEG-4 Part 2, GOP 12), segments it with the shipped default model into masks,
an overlay video and a log (:func:`taplab.segment`), runs the same model on every frame beside it, and
reports the speed-up and the accuracy of both against the clip's labels, with the fidelity of the
accelerated output to the per-frame one. Deterministic: the same seed gives the same clip and figures
(times aside).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taplab.data.layout import clip_labels_dir, read_clip_labels
from taplab.data.synth import SynthConfig, write_clip
from taplab.io.sinks import prepare_output
from taplab.io.summary import RunSummary
from taplab.metrics import ConfusionMatrix
from taplab.pipeline import segment_to_folder
from taplab.runtime import FrameResult, Segmenter


@dataclass
class DemoResult:
    """What the demo made and measured. Accuracy figures are mIoU in percent."""

    video: Path
    masks: Path
    overlay: Path
    summary: RunSummary
    miou: float  #: the accelerated output against the clip's labels
    per_frame_miou: float  #: the model on every frame, against the labels
    fidelity: float  #: the accelerated output against the per-frame output
    speedup: float  #: frames/s of the accelerated run (not counting its file writes) over the per-frame run's

    def format(self) -> str:
        return (f"{self.summary.format()}\n\n"
                f"accuracy against the clip's labels: mIoU {self.miou:.1f}% (the model on every frame: "
                f"{self.per_frame_miou:.1f}%); fidelity to the per-frame output {self.fidelity:.1f}%\n"
                f"speed-up over the model on every frame: {self.speedup:.1f}x (file writes not counted)\n"
                f"clip: {self.video}")


def run_demo(out: str | Path, frames: int = 48, size: tuple[int, int] = (512, 1024), seed: int = 700001,
             model="default", device: str = "auto", overwrite: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> DemoResult:
    """Make a clip of ``frames`` frames of ``size`` (height, width) from ``seed`` in ``out/clip``, segment it into
    ``out/masks`` (label and colour PNGs, frames.json/.csv) and ``out/overlay.mp4``; ``progress(phase, done,
    total)`` after each rendered or segmented frame (phases ``"rendering"``, ``"segmenting"``, ``"per-frame"``)."""
    out = Path(out)
    prepare_output(out, overwrite)
    tell = progress or (lambda phase, done, total: None)
    rendered = iter(range(1, frames + 1))
    video = write_clip(out / "clip", SynthConfig(height=size[0], width=size[1], frames=frames, seed=seed),
                       gop=12, name="demo", progress=lambda _t: tell("rendering", next(rendered), frames))
    truth = read_clip_labels(clip_labels_dir(out / "clip", "demo"))
    segmenter = Segmenter(model, device=device)
    outputs: list[FrameResult] = []

    def collect(result: FrameResult, summary: RunSummary) -> None:
        outputs.append(result)
        tell("segmenting", summary.frames, frames)

    summary = segment_to_folder(segmenter, video, out / "masks", ("labels", "color"), overwrite, progress=collect,
                                overlay=out / "overlay.mp4")
    per_frame, start = [], time.perf_counter()
    for r in Segmenter(segmenter.model, ffw=False).run(video):
        per_frame.append(r.labels)
        tell("per-frame", len(per_frame), frames)
    per_frame_fps = len(per_frame) / (time.perf_counter() - start)
    n = segmenter.model.num_classes
    accelerated, baseline, fidelity = ConfusionMatrix(n), ConfusionMatrix(n), ConfusionMatrix(n)
    for r, labels, reference in zip(outputs, truth, per_frame):
        accelerated.update(r.labels, labels)
        baseline.update(reference, labels)
        fidelity.update(r.labels, reference)
    accelerated_fps = summary.frames / (summary.seconds - summary.stages.get("write", 0.0))
    return DemoResult(video, out / "masks", out / "overlay.mp4", summary, 100 * accelerated.miou(),
                      100 * baseline.miou(), 100 * fidelity.miou(), accelerated_fps / per_frame_fps)
