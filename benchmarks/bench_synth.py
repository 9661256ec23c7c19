"""Throughput of the synthetic street generator (taplab.data.synth).

    python benchmarks/bench_synth.py [--frames 60] [--seed 0]

Prints a markdown table: frames/s of generate() (image + labels + flow) at 512x1024 and
256x512, once counting the per-clip set-up (textures, sprites) and once per frame only
("steady"), and the frames/s of write_clip (render + MPEG-4 encode + label PNGs + flow npz).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from taplab.data.synth import SynthConfig, _Scene, generate, write_clip


def _generate_rates(config: SynthConfig) -> tuple[float, float, float]:
    """(set-up seconds, frames/s including set-up, frames/s excluding it)."""
    start = time.perf_counter()
    scene = _Scene(config)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for t in range(config.frames):
        scene.render(t)
    steady = time.perf_counter() - start
    start = time.perf_counter()
    for _ in generate(config):
        pass
    total = time.perf_counter() - start
    return setup, config.frames / total, config.frames / steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per measured clip")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for _ in generate(SynthConfig(height=64, width=64, frames=2)):  # warm up: imports, OpenCV's threads
        pass

    print("| what | size (HxW) | frames | set-up s | frames/s (with set-up) | frames/s (steady) |")
    print("|---|---|---|---|---|---|")
    for h, w in ((512, 1024), (256, 512)):
        config = SynthConfig(height=h, width=w, frames=args.frames, seed=args.seed)
        setup, with_setup, steady = _generate_rates(config)
        print(f"| generate | {h}x{w} | {args.frames} | {setup:.2f} | {with_setup:.1f} | {steady:.1f} |")
    for h, w in ((512, 1024), (256, 512)):
        config = SynthConfig(height=h, width=w, frames=args.frames, seed=args.seed)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            write_clip(out, config, gop=12, codec="mpeg4")
            elapsed = time.perf_counter() - start
        print(f"| write_clip (mpeg4, gop 12) | {h}x{w} | {args.frames} | - | {args.frames / elapsed:.1f} | - |")


if __name__ == "__main__":
    main()
