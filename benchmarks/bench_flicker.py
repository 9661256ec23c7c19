"""How much a per-frame model's masks change from frame to frame, by picture type: where its flicker comes from.

    python benchmarks/bench_flicker.py [--models default,runs/x/best.pt] [--videos A.mp4,B.mp4] [--frames 120]

Each model segments the first ``--frames`` frames of each video on its own (no warping), and the share of
pixels whose label differs from the previous frame's (``taplab.metrics.label_change``) is averaged over
all frames and over the frames of each picture type: at an I-frame the codec starts afresh, and a model
that reacts to the codec's noise changes its mind there more than the motion explains. Without
``--videos``: the real MPEG-4 Part 2 and H.264 clips in ``../shared/data/real``. Prints a markdown table;
accuracy figures only, so the machine's load does not matter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from taplab.codec import open_video
from taplab.metrics import label_change
from taplab.nets.loader import load_model

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def changes(model, video: str, frames: int) -> tuple[list[float], list[str]]:
    """The label change of every frame after the first, and each frame's picture type."""
    previous, change, kinds = None, [], []
    with open_video(video) as v:
        for _, frame in zip(range(frames), v):
            labels = model.predict(frame.image)
            if previous is not None:
                change.append(label_change(previous, labels))
                kinds.append(frame.pict_type)
            previous = labels
    return change, kinds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default")
    parser.add_argument("--videos", default=f"{REAL / 'vid_mpeg4_part2.mp4'},{REAL / 'vid_h264.mp4'}")
    parser.add_argument("--frames", type=int, default=120)
    args = parser.parse_args()
    print("| video | model | frames | change % | at I-frames % (n) | at P-frames % (n) | at B-frames % (n) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for video in args.videos.split(","):
        for name in args.models.split(","):
            change, kinds = changes(load_model(name, device="cpu"), video, args.frames)
            change, kinds = np.array(change), np.array(kinds)
            by_type = []
            for kind in "IPB":
                picked = change[kinds == kind]
                by_type.append(f"{100 * picked.mean():.2f} ({picked.size})" if picked.size else "-")
            print(f"| {Path(video).name} | {name} | {len(change) + 1} | {100 * change.mean():.2f} | {' | '.join(by_type)} |",
                  flush=True)


if __name__ == "__main__":
    main()
