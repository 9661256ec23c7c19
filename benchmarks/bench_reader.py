"""Reader throughput: taplab (image + motion + residual) beside plain PyAV RGB decode and mv-extractor.

Plain PyAV RGB decode without vectors is the physical limit of any reader that
hands out RGB frames; the target is taplab >= 0.6x of it. All readers run in one
process, interleaved, repeated; the table gives the median frames/s and the ratio.

    python benchmarks/bench_reader.py [--repeats 5]
    python benchmarks/bench_reader.py --threading    # decoding, frame against slice threading

``--threading`` times FFmpeg's decoding alone (vectors exported, no RGB) of the real 720p clips with
frame threading allowed (AUTO: what MPEG-4 files get) and slice threading only (what live sources get,
for no frame delay).

Data: the real 1280x720 clips in ../shared/data/real (MPEG-4 Part 2 and H.264) and
the 30-frame 2048x1024 Cityscapes sequence there, encoded once to MPEG-4 GOP 12.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
from mvextractor.videocap import VideoCap

from taplab.codec import encode, open_video
from taplab.native import status

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def plain_pyav(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"  # the same threading taplab uses
        return sum(1 for f in container.decode(stream) if f.to_ndarray(format="rgb24") is not None)


def mv_extractor(path: Path) -> int:
    cap = VideoCap()
    cap.open(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def taplab_reader(path: Path) -> int:
    n = 0
    with open_video(path) as video:
        for frame in video:
            frame.image, frame.residual  # noqa: B018 - force both lazy fields
            n += 1
    return n


READERS = {"plain PyAV RGB": plain_pyav, "mv-extractor": mv_extractor, "taplab (image+motion+residual)": taplab_reader}


def measure(path: Path, repeats: int) -> dict[str, float]:
    rates: dict[str, list[float]] = {name: [] for name in READERS}
    for _ in range(repeats):
        for name, read in READERS.items():
            start = time.perf_counter()
            frames = read(path)
            rates[name].append(frames / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def decode_ms(path: Path, thread_type: str) -> float:
    """Milliseconds per frame to decode ``path`` with vectors exported, as the pyav backend does."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        stream.codec_context.thread_type = thread_type
        start, n = time.perf_counter(), sum(1 for _ in container.decode(stream))
        return 1000 * (time.perf_counter() - start) / n


def threading_table(repeats: int) -> None:
    print(f"## Decoding alone (vectors exported, no RGB), ms per frame, median of {repeats} runs\n")
    print("| clip | AUTO (frame threading allowed) | SLICE (live sources) |")
    print("|---|---:|---:|")
    for name in ("vid_mpeg4_part2.mp4", "vid_h264.mp4"):
        times = {t: statistics.median(decode_ms(REAL / name, t) for _ in range(repeats)) for t in ("AUTO", "SLICE")}
        print(f"| {name} | {times['AUTO']:.2f} | {times['SLICE']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threading", action="store_true", help="decoding alone, frame against slice threading")
    args = parser.parse_args()
    if args.threading:
        threading_table(args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        city = encode(REAL / "cityscapes_lindau_000000", Path(tmp) / "lindau.mp4", gop=12, codec="mpeg4")
        clips = [
            ("1280x720 MPEG-4 Part 2", REAL / "vid_mpeg4_part2.mp4"),
            ("1280x720 H.264", REAL / "vid_h264.mp4"),
            ("2048x1024 MPEG-4 Part 2 (Cityscapes)", city),
        ]
        print(f"mc kernels: {status('mc').reason}; median of {args.repeats} runs, frames/s\n")
        print("| clip | " + " | ".join(READERS) + " | taplab / plain |")
        print("|---|" + "---:|" * (len(READERS) + 1))
        for label, path in clips:
            r = measure(path, args.repeats)
            cells = " | ".join(f"{v:.0f}" for v in r.values())
            print(f"| {label} | {cells} | {r['taplab (image+motion+residual)'] / r['plain PyAV RGB']:.2f}x |")


if __name__ == "__main__":
    main()
