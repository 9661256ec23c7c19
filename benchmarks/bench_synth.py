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


def flow_accuracy(seeds: tuple[int, ...] = (0, 1), frames: int = 10) -> tuple[float, float, float]:
    """How well the ground-truth flow predicts the next frame at 512x1024, without noise or lighting change:
    (mean abs error warped, mean abs error not warped, share of labels that warping reproduces)."""
    import cv2
    import numpy as np

    warped, still, labels = [], [], []
    for seed in seeds:
        config = SynthConfig(height=512, width=1024, frames=frames, seed=seed, noise_std=0, lighting_change=0)
        prev = None
        gx, gy = np.meshgrid(np.arange(1024, dtype=np.float32), np.arange(512, dtype=np.float32))
        for f in generate(config):
            if prev is not None:
                mx, my = gx + f.flow[..., 0], gy + f.flow[..., 1]
                pred = cv2.remap(prev.image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                warped.append(np.abs(pred.astype(float) - f.image).mean())
                still.append(np.abs(prev.image.astype(float) - f.image).mean())
                lab = cv2.remap(prev.labels, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
                labels.append((lab == f.labels).mean())
            prev = f
    return float(np.mean(warped)), float(np.mean(still)), float(np.mean(labels))


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
    warped, still, labels = flow_accuracy()
    print(f"\nflow at 512x1024 (seeds 0, 1; 10 frames; no noise or lighting change): mean abs error "
          f"{warped:.1f} levels warped, {still:.1f} not warped; warped labels agree on {100 * labels:.1f}% of pixels")


if __name__ == "__main__":
    main()
