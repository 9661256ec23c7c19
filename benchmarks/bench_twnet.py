"""What TWNet's correction stage costs per warped frame, part by part, against the warp and the CNN.

    python benchmarks/bench_twnet.py [--size 720x1280] [--rounds 9] [--width 32]

The default model, an untrained TamedNet of ``--width`` (the cost does not depend on the weights), on
a random frame of ``--size``; 2 threads (this machine's CPUs). In one process, the parts alternate
within each round, and the figures are the medians over the rounds (the first round warms up and is
dropped), with each part's ratio to the warp of the logits in the same round:

- the warp of the logits (what FFW warps without TWNet) and of TWNet's state ``[logits, deep]``;
- the shallow layers on the frame (what each warped frame re-runs), in torch and on the model's engine
  (ONNX Runtime, as the runtime runs them);
- CFR and RGA (the TamedNet), and the decoder's last part (``decode``);
- the whole model: its interior and logits (a key frame with TWNet), its logits alone (without), in
  torch and in ONNX Runtime.

The figures in docs/adapt.md come from this script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from taplab.nets.loader import load_model
from taplab.nets.twnet import Split, Tamed, TamedNet, residual_cells
from taplab.ops.warp import GridFlow, warp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="720x1280", help="HxW of the frame")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--width", type=int, default=32, help="the TamedNet's width (taplab adapt --width)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    height, width = (int(v) for v in args.size.split("x"))
    model = load_model("default", device="cpu", engine="torch")
    split = Split(model)
    tamed = Tamed(TamedNet(split.deep_channels, split.shallow_channels, args.width), model.class_names, model.stride,
                  "<untrained>")
    tamed.check(model)
    engine = load_model("default", device="cpu")  # ONNX Runtime where it agrees with torch (the runtime's default)
    on_engine = Split(engine)
    runtime = Tamed(TamedNet(split.deep_channels, split.shallow_channels, args.width), model.class_names, model.stride,
                    "<untrained>")
    runtime.check(engine)  # as the runtime has it: the shallow layers on the model's engine
    x = torch.rand(1, 3, height, width)
    grid = model.geometry(height, width).size
    state = split.state(x)[0]
    logits = split.logits(state).contiguous()
    residual = residual_cells(np.zeros((height, width), np.uint8), grid, 30.0)
    motion = GridFlow(torch.randn(*grid, 2), torch.ones(grid, dtype=torch.bool))
    shallow = split.shallow(x, grid)
    deep = split.deep(state)[None]
    parts = {
        "warp, logits (19 channels)": lambda: warp(logits, motion, "bilinear"),
        f"warp, TWNet's state ({state.shape[0]} channels)": lambda: warp(state, motion, "bilinear"),
        "shallow layers, torch": lambda: split.shallow(x, grid),
        f"shallow layers, {engine.engine}": lambda: on_engine.shallow(x, grid),
        "CFR + RGA": lambda: tamed.net(deep, shallow, residual[None]),
        "decode (the decoder's last part)": lambda: split.decode(shallow, deep),
        "TWNet's whole stage, shallow layers in torch": lambda: tamed(x, state, residual),
        f"TWNet's whole stage, shallow layers on {engine.engine} (the runtime's)": lambda: runtime(x, state, residual),
        "the whole model, torch (interior and logits)": lambda: split.state(x),
        f"the whole model, {engine.engine} (interior and logits: a TWNet key frame)": lambda: on_engine.state(x),
        f"the whole model, {engine.engine} (logits: a key frame)": lambda: engine.logits(x),
    }
    times: dict[str, list[float]] = {name: [] for name in parts}
    with torch.inference_mode():
        for _ in range(args.rounds + 1):
            for name, run in parts.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    reference = times["warp, logits (19 channels)"][1:]
    print(f"## TWNet's stage at {height}x{width} (grid {grid[0]}x{grid[1]}), {args.rounds} rounds, 2 threads\n")
    print("| part | ms (median) | x the warp of the logits (median, min-max) |")
    print("|---|---:|---:|")
    for name, values in times.items():
        ratios = [v / r for v, r in zip(values[1:], reference)]
        print(f"| {name} | {1000 * statistics.median(values[1:]):.1f} | {statistics.median(ratios):.1f} "
              f"({min(ratios):.1f}-{max(ratios):.1f}) |")


if __name__ == "__main__":
    main()
