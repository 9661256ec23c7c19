"""A long run: resident memory and OS threads of `taplab segment` over 10,000 frames.

    python benchmarks/bench_longrun.py [--frames 10000] [--size 360x640] [--every 500]

The clip: the real 1280x720 H.264 clip in ../shared/data/real, scaled to ``--size`` and played forwards and
backwards until it has ``--frames`` frames (so that motion stays continuous), encoded as H.264 with GOP 12; without
../shared, a synthetic street clip looped the same way. It is segmented in this process with the default model and
configuration (``taplab.segment``, label PNGs written), and every ``--every`` frames the progress callback samples
the process's resident memory (``VmRSS``) and OS threads (``Threads``, from ``/proc/self/status``) and the decoded
frames alive (objects of taplab's ``Frame`` the garbage collector tracks). The table gives the samples; the last
lines the growth of resident memory from the first sample after warm-up (``--warmup`` frames) to the end, and the
most threads seen.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "vid_h264.mp4"


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def looped(images: list, frames: int) -> list:
    """``images`` forwards, backwards, forwards... until ``frames`` of them."""
    cycle = images + images[-2:0:-1]
    return [cycle[i % len(cycle)] for i in range(frames)]


def make_clip(path: Path, frames: int, size: tuple[int, int]) -> str:
    import cv2

    from taplab.codec import encode, open_video

    if REAL.is_file():
        with open_video(REAL) as video:
            images = [cv2.resize(f.image, size[::-1], interpolation=cv2.INTER_AREA) for f in video]
        origin = f"the real H.264 clip at {size[0]}x{size[1]}, looped"
    else:
        from taplab.data.synth import SynthConfig, generate

        images = [f.image for f in generate(SynthConfig(height=size[0], width=size[1], frames=60, seed=0))]
        origin = "a synthetic street clip (../shared/data/real not found), looped"
    encode(looped(images, frames), path, codec="h264", gop=12, fps=25)
    return origin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10000)
    parser.add_argument("--size", default="360x640", help="HxW")
    parser.add_argument("--every", type=int, default=500, help="frames between samples")
    parser.add_argument("--warmup", type=int, default=1000, help="frames before the reference sample")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    import taplab
    from taplab.codec.reader import Frame

    with tempfile.TemporaryDirectory(prefix="bench-longrun-") as tmp:
        clip = Path(tmp) / "long.mp4"
        origin = make_clip(clip, args.frames, size)
        print(f"{args.frames} frames: {origin} (H.264, GOP 12)", flush=True)
        samples = []

        def progress(result, summary) -> None:
            if summary.frames % args.every == 0:
                alive = sum(isinstance(o, Frame) for o in gc.get_objects())
                samples.append((summary.frames, status("VmRSS") / 1024, status("Threads"), alive))
                print(f"{summary.frames:>7} frames  {samples[-1][1]:7.1f} MB  {samples[-1][2]:4d} threads  "
                      f"{alive:4d} frames alive", flush=True)

        summary = taplab.segment(clip, Path(tmp) / "masks", progress=progress)
    reference = next(s for s in samples if s[0] >= args.warmup)
    growth = samples[-1][1] / reference[1] - 1
    print(f"{summary.frames} frames at {summary.fps:.1f} frames/s; resident memory {reference[1]:.1f} MB at "
          f"{reference[0]} frames, {samples[-1][1]:.1f} MB at {samples[-1][0]}: {100 * growth:+.1f}%; "
          f"threads at most {max(s[2] for s in samples)}; decoded frames alive at most {max(s[3] for s in samples)}")


if __name__ == "__main__":
    main()
