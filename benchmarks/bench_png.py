"""Label PNGs: time and size per frame of each PNG row filter, on the default run's labels of the real clip.

    python benchmarks/bench_png.py [--frames 96] [--rounds 5]

The masks ``taplab segment`` writes are single-channel PNGs of class ids (``frame_000000.png``), one per frame:
at 720p about 2 ms each, and about three times the bytes of the H.264 video they come from (docs/scale.md). PNG filters each row before
zlib: against the row to its left (``sub``, OpenCV's default), above (``up``), none, or the best of all five
per row (``all``). Label maps are long runs of one value, and rows repeat the row above: the filter decides
how well zlib finds that. Each setting encodes the same frames (``cv2.imencode``, in memory: the disk is not
timed), the settings alternating within each round; medians of ``--rounds`` rounds. Every setting decodes
back to the same labels (checked).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from taplab.codec import open_video
from taplab.runtime import Segmenter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "vid_mpeg4_part2.mp4"
FILTERS = {"sub (OpenCV's default)": [], "none": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE],
           "up": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP],
           "paeth": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_PAETH],
           "all": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_ALL_FILTERS]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with open_video(REAL) as video:
        video.stop_after(args.frames)
        labels = [r.labels for r in Segmenter("default", device="cpu").run(video)]
    times: dict[str, list[float]] = {name: [] for name in FILTERS}
    sizes: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, params in FILTERS.items():
            start = time.perf_counter()
            encoded = [cv2.imencode(".png", frame, params)[1] for frame in labels]
            times[name].append(1000 * (time.perf_counter() - start) / len(labels))
            sizes[name] = float(np.mean([len(e) for e in encoded])) / 1024
    for name, params in FILTERS.items():  # lossless, whatever the filter
        for frame in labels[:8]:
            back = cv2.imdecode(cv2.imencode(".png", frame, params)[1], cv2.IMREAD_UNCHANGED)
            assert np.array_equal(back, frame), name
    base = statistics.median(times[next(iter(FILTERS))])
    print(f"{len(labels)} label maps of {REAL.name} ({labels[0].shape[1]}x{labels[0].shape[0]}), "
          f"{args.rounds} rounds\n")
    print("| filter | ms per frame | vs sub | KB per frame |\n|---|---:|---:|---:|")
    for name in FILTERS:
        ms = statistics.median(times[name])
        print(f"| {name} | {ms:.2f} | {ms / base:.2f} | {sizes[name]:.1f} |")


if __name__ == "__main__":
    main()
