"""The correction network's cost per 1280x720 frame as the runtime runs it, against the layouts it avoids.

    python benchmarks/bench_conet.py [--repeats 8] [--widths 16,8] [--scales 1,2]

The shipped CoNet (models/bl2-synth.conet.pt) on a 180x320 grid (BL2's stride 4 at 720p), median of
``--repeats`` alternating rounds of 5 calls: as trained (batch norms, contiguous layout), with its
batch norms folded into the convolutions, and folded and channels-last (what
``taplab.nets.conet.Correction`` runs on CPU). ``--widths`` adds untrained CoNets of other widths,
folded and channels-last, timed in the same rounds (the cost of a narrower network, before training one), at each
of ``--scales`` (2: the network on half the feature grid, fed the frame at its own size). Then the fusion stage's
other parts: the frame resized for the network, ``M_coarse`` and the blend.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from taplab.nets.conet import CoNet, _build, correction_image, image_size, read_correction
from taplab.nets.layers import fold_batchnorm
from taplab.ops.fusion import coarse_distortion, distortion_map, fuse, residual_map
from taplab.ops.labels import class_map

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "bl2-synth.conet.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--widths", default="", help="comma-separated widths of untrained CoNets to time as well")
    parser.add_argument("--scales", default="1", help="comma-separated scales of those CoNets (1, 2)")
    args = parser.parse_args()
    trained = _build(read_correction(SHIPPED), SHIPPED).eval()
    folded = fold_batchnorm(copy.deepcopy(trained))
    variants = {"as trained": trained, "batch norm folded": folded,
                "folded, channels-last (the runtime's)": copy.deepcopy(folded).to(memory_format=torch.channels_last)}
    for width in filter(None, args.widths.split(",")):
        for scale in (int(v) for v in args.scales.split(",")):
            net = fold_batchnorm(CoNet(trained.num_classes, width=int(width), scale=scale).eval())
            variants[f"width {width}, scale {scale} (untrained), folded, channels-last"] = \
                net.to(memory_format=torch.channels_last)
    grid = (180, 320)
    # the frame as to_tensor gives it (channels-last strides), at each network's size
    images = {name: torch.rand(*image_size(grid, net.scale), 3).permute(2, 0, 1)[None] for name, net in variants.items()}
    warped, coarse = torch.randn(1, 19, 180, 320), torch.rand(1, 1, 180, 320)
    times = {k: [] for k in variants}
    with torch.inference_mode():
        for name, net in variants.items():
            net(images[name], warped, coarse)
        for _ in range(args.repeats):
            for name, net in variants.items():
                start = time.perf_counter()
                for _ in range(5):
                    net(images[name], warped, coarse)
                times[name].append(200 * (time.perf_counter() - start))  # ms per call
    print(f"## CoNet at 1280x720 (grid 180x320), {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| variant | ms per frame |")
    print("|---|---:|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.1f} |")
    print()
    stage_parts(args.repeats, warped[0], coarse[0, 0])


def stage_parts(repeats: int, warped: torch.Tensor, coarse: torch.Tensor) -> None:
    """The fusion stage's other parts at 1280x720: the frame resized for the network, M_coarse, the blend."""
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), np.uint8)
    residual = np.random.default_rng(1).integers(0, 40, (720, 1280), np.uint8)
    reference, unfilled = class_map(warped), torch.zeros(warped.shape[-2:], dtype=torch.bool)
    grid = tuple(warped.shape[-2:])
    parts = {
        "the frame resized (scale 1)": lambda: correction_image(frame, grid, 1),
        "the frame resized (scale 2)": lambda: correction_image(frame, grid, 2),
        "M_coarse": lambda: coarse_distortion(warped, reference, unfilled, residual_map(residual, grid, 30.0)),
        "the blend": lambda: fuse(warped, warped, distortion_map(coarse, coarse)),
    }
    times = {name: [] for name in parts}
    for _ in range(repeats):
        for name, part in parts.items():
            start = time.perf_counter()
            for _ in range(5):
                part()
            times[name].append(200 * (time.perf_counter() - start))
    print("| the fusion stage's other parts | ms per frame |")
    print("|---|---:|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} |")


if __name__ == "__main__":
    main()
