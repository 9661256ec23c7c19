"""Per-frame latency and cost of taplab's networks on this machine's CPU.

    python benchmarks/bench_models.py [--models bl1,bl2,bl3,default] [--sizes 512x1024,720x1280,1024x2048]
                                      [--threads N] [--budget 3]

For every network and input size: parameters, GFLOPs (torch's FLOP counter, multiply-adds
counted as 2), and the median latency of a forward pass at batch 1 in inference mode, as taplab
runs it (channels-last memory format on CPU), with its speed-up over the same module in the
default contiguous layout, the two timed alternately (one warm-up each, then pairs of runs until
``--budget`` seconds or 5 pairs, at least one). ``default`` is the shipped model (BL2 weights);
the others are untrained, which does not change their latency. Everything runs in one process,
side by side, so ratios are comparable even where the machine is shared and its absolute speed
varies. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from taplab.nets.loader import Model, load_model


def latency(model, baseline, x: torch.Tensor, budget: float) -> tuple[float, float]:
    """Median seconds of ``model`` and of ``baseline`` (the same module, other layout), timed alternately."""
    model.logits(x)
    baseline.logits(x)  # warm-up
    times: tuple[list[float], list[float]] = ([], [])
    start = time.perf_counter()
    while not times[0] or (len(times[0]) < 5 and time.perf_counter() - start < budget):
        for m, ts in zip((model, baseline), times):
            t = time.perf_counter()
            m.logits(x)
            ts.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


def gflops(model, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as counter:
        model.logits(x)
    return counter.get_total_flops() / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bl1,bl2,bl3,default")
    parser.add_argument("--sizes", default="512x1024,720x1280,1024x2048")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per entry (at least one run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    import warnings

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, float32, inference mode\n")
    print("| model | stride | params (M) | " + " | ".join(f"GFLOPs {h}x{w}" for h, w in sizes) + " | "
          + " | ".join(f"ms {h}x{w} (x vs NCHW)" for h, w in sizes) + " |")
    print("|---" * (3 + 2 * len(sizes)) + "|")
    for name in args.models.split(","):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "untrained network": irrelevant for latency
            model = load_model(name, device="cpu")  # these are CPU figures (channels-last vs NCHW)
            baseline = Model(copy.deepcopy(model.module).to(memory_format=torch.contiguous_format), name,
                             channels_last=False)
        params = sum(p.numel() for p in model.module.parameters()) / 1e6
        flops, cells = [], []
        for h, w in sizes:
            x = torch.rand(1, 3, h, w)
            flops.append(gflops(model, x))
            ours, nchw = latency(model, baseline, x, args.budget)
            cells.append(f"{1000 * ours:.0f} ({nchw / ours:.2f}x)")
        print(f"| {name} | {model.stride} | {params:.2f} | " + " | ".join(f"{f:.1f}" for f in flops) + " | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
