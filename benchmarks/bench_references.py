"""Which reference frames the runtime warps from: B-frames' two anchors, MPEG-4 direct mode, older H.264 references.

    python benchmarks/bench_references.py [--frames 90] [--size 640x360]

The real H.264 clip in ../shared/data/real, its first ``--frames`` frames scaled to ``--size``, is
re-encoded (in a temporary folder) as the streams each question needs. The default model runs on
every frame first: its labels are the reference (real footage has no labels). Each variant then
runs with fusion off (the shipped correction network was trained on synthetic streets) and, to
isolate the question, without interpolation; key frames are the same in the variants compared.

1. **B-frames** (H.264, HEVC, MPEG-4 Part 2, 2 B-frames, GOP 250 or 12): B-frames as key frames,
   warped from the past anchor, or from both (``b_frames``); RGC and RGFS off so that the
   warped B-frames are the same frames in the last two. Scored on the warped B-frames.
2. **MPEG-4 direct mode**: FFmpeg exports MPEG-4 B-frames' vectors as zeros. The variant
   *derived* replaces them, for this measurement only, by what direct mode derives: the future
   anchor's co-located vector scaled by the temporal distances (a reader that holds each B-frame
   until its future anchor is read, defined here).
3. **Older H.264 references** (4 references, GOP 250, I/P): vectors found to point into older
   anchors are marked invalid (taplab's rule, ``taplab.codec.references``); *trusted*: read as
   pointing one anchor back (the check switched off here, for this measurement only); FFW alone
   from one key frame, and the default schedule without RGC.

Figures: pixel agreement with the per-frame labels (%) and fidelity (mIoU against them).
Deterministic: the same command gives the same figures.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from unittest import mock

import cv2
import numpy as np

import taplab.codec.reader as reader
from taplab.codec import encode, open_video
from taplab.metrics import ConfusionMatrix, percent
from taplab.runtime import Segmenter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def scaled_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    height, width = size
    with open_video(REAL / "vid_h264.mp4") as video:
        return [cv2.resize(f.image, (width, height), interpolation=cv2.INTER_AREA) for f in itertools.islice(video, count)]


def score(results, reference, pick=lambda r: True) -> str:
    chosen = [r for r in results if pick(r)]
    cm = ConfusionMatrix(19)
    for r in chosen:
        cm.update(r.labels, reference[r.index])
    agreement = np.mean([(r.labels == reference[r.index]).mean() for r in chosen])
    return f"{100 * agreement:.2f} | {percent(cm.miou()):.1f} | {len(chosen)}"


class DirectModeVideo(reader.Video):
    """MPEG-4 B-frames with direct-mode vectors derived from their future anchor (this benchmark's variant): each
    B-frame is held until that anchor is read, then given ``trb / trd`` (past) and ``(trb - trd) / trd`` (future)
    times the anchor's co-located vectors, ``trd`` the anchors' distance and ``trb`` the B-frame's from the past one."""

    def _frames(self):
        held, past_anchor = [], None
        for frame in super()._frames():
            if frame.pict_type == "B":
                held.append(frame)
                continue
            m = frame.motion
            for b in held:
                if m is not None and past_anchor is not None:
                    trd, trb = frame.index - past_anchor, b.index - past_anchor
                    b._motion = replace(m, vectors=m.vectors * (trb / trd), reference=past_anchor)
                    b.motion_future = replace(m, vectors=m.vectors * ((trb - trd) / trd), direction="future",
                                              reference=frame.index)
                    b.__dict__.pop("residual", None)
                yield b
            held, past_anchor = [], frame.index
            yield frame
        yield from held


@contextmanager
def trusted_references():
    """The reader's check of older references switched off: every past vector read as pointing one anchor back."""
    with mock.patch.object(reader, "_without_foreign", lambda luma, anchors, field: field):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--size", default="640x360", help="WxH")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    frames = scaled_frames(args.frames, (height, width))
    quiet = dict(fusion=False, interpolation=False)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"## B-frames ({args.frames} frames, {width}x{height}, 2 B-frames; warped B-frames only)\n")
        print("| stream | b_frames | agreement % | fidelity % | frames |")
        print("|---|---|---:|---:|---:|")
        streams = {"h264": dict(codec="h264", gop=250), "hevc": dict(codec="hevc", gop=250),
                   "mpeg4": dict(codec="mpeg4", gop=12)}
        for name, options in streams.items():
            path = encode(frames, Path(tmp) / f"{name}_b.mp4", bframes=2, **options)
            reference = [r.labels for r in Segmenter(ffw=False).run(path)]
            for mode in ("key", "past", "both"):
                results = list(Segmenter(b_frames=mode, rgc=False, rgfs=False, **quiet).run(path))
                pick = (lambda r: r.pict_type == "B") if mode == "key" else (lambda r: r.pict_type == "B" and not r.is_key)
                keys = 100 * np.mean([r.is_key for r in results])
                print(f"| {name} | {mode} ({keys:.0f}% key frames) | {score(results, reference, pick)} |", flush=True)
            if name == "mpeg4":
                for mode in ("past", "both"):
                    with open_video(path) as plain:
                        video = DirectModeVideo(plain._backend, plain.name)
                        results = list(Segmenter(b_frames=mode, rgc=False, rgfs=False, **quiet).run(video))
                    print(f"| mpeg4, direct mode derived | {mode} | "
                          f"{score(results, reference, lambda r: r.pict_type == 'B' and not r.is_key)} |", flush=True)

        print(f"\n## Older H.264 references ({args.frames} frames, {width}x{height}, 4 references, I/P)\n")
        print("| configuration | vectors into older anchors | agreement % | fidelity % | frames |")
        print("|---|---|---:|---:|---:|")
        path = encode(frames, Path(tmp) / "refs4.mp4", codec="h264", gop=250, refs=4)
        reference = [r.labels for r in Segmenter(ffw=False).run(path)]
        configurations = {"FFW from one key frame": dict(rgc=False, rgfs=False, key_interval=None),
                          "default schedule, no RGC": dict(rgc=False)}
        for name, options in configurations.items():
            for rule in ("marked invalid", "trusted"):
                if rule == "trusted":
                    with trusted_references():
                        results = list(Segmenter(**quiet, **options).run(path))
                else:
                    results = list(Segmenter(**quiet, **options).run(path))
                print(f"| {name} | {rule} | {score(results, reference)} |", flush=True)


if __name__ == "__main__":
    main()
