"""The native warp kernels against the torch reference, and the runtime's P-frame path with and without them.

    python benchmarks/bench_warp.py [--repeats 30] [--frames 96]

1. FFW alone (``taplab.ops.warp.warp``), side by side in one process, median of ``--repeats`` alternating
   calls: the C++ kernel (native/cpu/warp.cpp) against ``warp_reference`` (torch: ``grid_sample`` for
   bilinear, indexing for nearest) for 19x180x320 and 19x256x512 logits (BL2's stride 4 at 720p and at
   1024x2048) and 128-channel stride-8 features at 1024x2048; and from the codec's block field in one
   pass (``warp_blocks``) against resampling the vectors then warping; and interpolation's splatting
   (``taplab.ops.interpolation.splat``: the C++ kernel against ``splat_reference``) at the same sizes, and the
   composition of motion (``compose``: its one-pass kernel against ``compose_reference``) on the same grids.
2. The runtime with FFW only on the first ``--frames`` frames of the real 1280x720 MPEG-4 clip, with
   the native warp and with the reference: ms per warped frame (T_P) and per stage.
3. On a CUDA device, if any: the CUDA kernel against ``grid_sample`` and against a torch gather at
   1024x2048 (float32 and float16).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from taplab.native import status
from taplab.ops.interpolation import splat, splat_reference
from taplab.ops.warp import GridFlow, compose, compose_reference, motion_to_grid, warp, warp_blocks, warp_reference

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
SIZES = {"19x180x320 (stride 4, 720p)": (19, 180, 320), "19x256x512 (stride 4, 1024x2048)": (19, 256, 512),
         "128x128x256 (stride 8, 1024x2048)": (128, 128, 256)}


def median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms per call of each function, calls alternating so that load hits all alike."""
    times = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(repeats):
        for k, f in fns.items():
            start = time.perf_counter()
            f()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(1000 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in times.items()}


def fields(c: int, h: int, w: int, device: str = "cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    features = torch.randn(c, h, w, generator=g).to(device, dtype)
    stride = 4 if c == 19 else 8
    rng = np.random.default_rng(0)
    gh, gw = -(-h * stride // 16), -(-w * stride // 16)
    vectors = (rng.uniform(-12, 12, (gh, gw, 2)) * 4).round().astype(np.float32) / 4
    valid = rng.random((gh, gw)) > 0.05
    motion = motion_to_grid(vectors, valid, 16, (h, w), stride)
    return features, GridFlow(motion.flow.to(device), motion.valid.to(device)), vectors, valid, stride


def splats(repeats: int) -> None:
    """Interpolation's splatting (the backward carry): the C++ kernel against ``splat_reference``."""
    print("\n## Splatting (interpolation): C++ kernel vs the torch reference\n")
    print("| features | reference ms | native ms | speed-up |\n|---|---:|---:|---:|")
    for name, (c, h, w) in SIZES.items():
        x, motion, _, _, _ = fields(c, h, w)
        cover = torch.rand(h, w, generator=torch.Generator().manual_seed(1))
        t = median_ms({"ref": lambda: splat_reference(x, cover, motion), "native": lambda: splat(x, cover, motion)},
                      repeats)
        print(f"| {name} | {t['ref']:.2f} | {t['native']:.2f} | {t['ref'] / t['native']:.1f}x |", flush=True)
    print()


def compositions(repeats: int) -> None:
    """Chaining motion (``taplab.ops.warp.compose``): the C++ kernel's one pass against ``compose_reference``, the
    accumulated flow stacked with its validity and warped by the C++ warp kernel (what compose did before)."""
    print("\n## Composition of motion: one pass vs stacking and warping\n")
    print("| grid | stacked + warp kernel ms | one pass ms | speed-up |\n|---|---:|---:|---:|")
    for name, (c, h, w) in SIZES.items():
        _, step, _, _, _ = fields(c, h, w)
        so_far = compose(step, step)
        t = median_ms({"ref": lambda: compose_reference(step, so_far), "native": lambda: compose(step, so_far)},
                      repeats)
        print(f"| {h}x{w} | {t['ref']:.2f} | {t['native']:.2f} | {t['ref'] / t['native']:.1f}x |", flush=True)
    print()


def kernels(repeats: int) -> None:
    print(f"## FFW alone: C++ kernel ({status('warp').reason}) vs the torch reference, {torch.get_num_threads()} threads\n")
    print("| features | sampling | reference ms | native ms | speed-up | block field: resample + reference ms | one pass ms | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, (c, h, w) in SIZES.items():
        x, motion, vectors, valid, stride = fields(c, h, w)
        for sampling in ("bilinear", "nearest"):
            t = median_ms({
                "ref": lambda: warp_reference(x, motion, sampling),
                "native": lambda: warp(x, motion, sampling),
                "ref_blocks": lambda: warp_reference(x, motion_to_grid(vectors, valid, 16, (h, w), stride), sampling),
                "native_blocks": lambda: warp_blocks(x, vectors, valid, 16, stride, sampling),
            }, repeats)
            print(f"| {name} | {sampling} | {t['ref']:.2f} | {t['native']:.2f} | {t['ref'] / t['native']:.1f}x | "
                  f"{t['ref_blocks']:.2f} | {t['native_blocks']:.2f} | {t['ref_blocks'] / t['native_blocks']:.1f}x |",
                  flush=True)
    _, _, vectors, valid, _ = fields(19, 180, 320)
    t = median_ms({"grid": lambda: motion_to_grid(vectors, valid, 16, (180, 320), 4)}, repeats)["grid"]
    print(f"\nVectors onto the grid (motion_to_grid, nearest, 45x80 blocks -> 180x320 cells): {t:.2f} ms\n")


def runtime(frames: int) -> None:
    from taplab.runtime import Segmenter

    clip = REAL / "vid_mpeg4_part2.mp4"
    print(f"## The runtime, FFW only: {clip.name}, first {frames} frames, warp native vs reference\n")
    print("| warp | T_P ms (warped frames) | warp stage ms | frames/s |")
    print("|---|---:|---:|---:|")
    seg = Segmenter("default", device="cpu", rgc=False, rgfs=False, fusion=False)  # the C++ kernel's path
    for round_ in range(2):  # alternate twice: the machine is shared
        for name in ("native", "reference"):
            patch = mock.patch("taplab.ops.warp.bind", lambda _: None) if name == "reference" else contextlib.nullcontext()
            with patch:
                t_p, warp_t, n, start = [], [], 0, time.perf_counter()
                for r in seg.run(clip):
                    if not r.is_key:
                        t_p.append(sum(r.timings.values()))
                        warp_t.append(r.timings["warp"])
                    n += 1
                    if n >= frames:
                        break
                fps = n / (time.perf_counter() - start)
            print(f"| {name} (round {round_ + 1}) | {1000 * statistics.mean(t_p):.1f} | "
                  f"{1000 * statistics.mean(warp_t):.2f} | {fps:.1f} |", flush=True)
    print()


def gpu(repeats: int) -> None:
    if not torch.cuda.is_available():
        print(f"## CUDA: not measured: {status('warp_cuda').reason}\n")
        return
    print(f"## CUDA kernel ({status('warp_cuda').reason}) at 1024x2048, {torch.cuda.get_device_name()}\n")
    print("| features | dtype | grid_sample ms | gather ms | CUDA kernel ms | vs grid_sample | vs gather |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, (c, h, w) in list(SIZES.items())[1:]:
        for dtype in (torch.float32, torch.float16):
            x, motion, _, _, _ = fields(c, h, w, "cuda", dtype)
            ys = torch.arange(h, device="cuda")[:, None]
            xs = torch.arange(w, device="cuda")[None, :]
            iy = (ys + motion.flow[..., 1]).round().clamp(0, h - 1).long()
            ix = (xs + motion.flow[..., 0]).round().clamp(0, w - 1).long()
            t = median_ms({
                "grid_sample": lambda: warp_reference(x, motion, "bilinear"),
                "gather": lambda: x[:, iy, ix],
                "kernel": lambda: warp(x, motion, "bilinear"),
            }, repeats)
            print(f"| {name} | {str(dtype)[6:]} | {t['grid_sample']:.3f} | {t['gather']:.3f} | {t['kernel']:.3f} | "
                  f"{t['grid_sample'] / t['kernel']:.1f}x | {t['gather'] / t['kernel']:.1f}x |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--frames", type=int, default=96)
    args = parser.parse_args()
    kernels(args.repeats)
    splats(args.repeats)
    compositions(args.repeats)
    runtime(args.frames)
    gpu(args.repeats)


if __name__ == "__main__":
    main()
