"""The correction network's cost per 1280x720 frame as the runtime runs it, against the layouts it avoids.

    python benchmarks/bench_conet.py [--repeats 8] [--widths 16,8] [--scales 1,2]

The shipped CoNet (models/bl2-synth.conet.pt) on a 180x320 grid (BL2's stride 4 at 720p), median of
``--repeats`` alternating rounds of 5 calls: as trained (batch norms, contiguous layout), with its
batch norms folded into the convolutions, and folded and channels-last (what
``taplab.nets.conet.Correction`` runs on CPU). ``--widths`` adds untrained CoNets of other widths,
folded and channels-last, timed in the same rounds (the cost of a narrower network, before training one), at each
of ``--scales`` (2: the network on half the feature grid, fed the frame at its own size).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch

from taplab.nets.conet import CoNet, _build, image_size, read_correction
from taplab.nets.layers import fold_batchnorm

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


if __name__ == "__main__":
    main()
