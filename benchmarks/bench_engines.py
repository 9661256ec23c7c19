"""Inference engines and threads: torch against ONNX Runtime, per network and end to end, on a quiet and a shared CPU.

    python benchmarks/bench_engines.py [--part networks|end-to-end|stages|shared|all] [--rounds 5] [--frames 337]
                                       [--per-frame-frames 48]

Every comparison runs in this one process, side by side, in alternating rounds; the tables give medians
and ratios (the machines are shared and noisy: absolute times move, ratios much less).

- ``networks``: each network of the frame path at the real clip's 1280x720, torch against ONNX
  Runtime: the default model on a whole frame (a key frame) and on RGC's region (half the frame's
  height), and the shipped correction network (fusion, on the 180x320 grid). Label agreement of the
  two engines on the real clip's frames (every 8th).
- ``end-to-end``: frames/s of ``Segmenter()`` with its defaults on the real 720p MPEG-4 clip (``--frames``),
  with ``engine=onnxruntime`` (what ``auto`` picks here) and ``engine=torch`` (and with fusion off), and of the per-frame baseline
  (``ffw=False``) under torch and ONNX Runtime on its first ``--per-frame-frames`` frames; ratios to torch
  per-frame. Label agreement of the two engines' default runs.
- ``stages``: where a frame's time goes, per stage (ms per key frame and per warped frame, medians over the
  rounds), in the default configuration and with FFW alone (the P-frame path: decoding and vectors,
  warp, labels); the stages are ``FrameResult.timings`` (decoding runs in its own thread, beside the rest).
- ``shared``: the default configuration's frames/s on a quiet machine and with another process
  busy on one core (a Python loop in a subprocess), under ONNX Runtime with the thread policy's
  default, with ``threads=2`` (the same counts, no governor: a given count is kept) and ``threads=1``, and
  under torch.

The real clip is ../shared/data/real/vid_mpeg4_part2.mp4 (1280x720, 337 frames, GOP 12).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from taplab.codec import open_video
from taplab.data.transforms import to_tensor
from taplab.nets.conet import correction_image, load_correction
from taplab.nets.loader import load_model
from taplab.nets.zoo import find_correction
from taplab.runtime import Segmenter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "vid_mpeg4_part2.mp4"
ENGINES = ("torch", "onnxruntime")


def frames(count: int, step: int = 1) -> list[np.ndarray]:
    with open_video(REAL) as video:
        return [f.image for f in video if f.index < count and f.index % step == 0]


def alternate(rounds: int, runs: dict) -> dict[str, list[float]]:
    """``runs``: name -> callable returning seconds; called in turn, ``rounds`` times; name -> the seconds."""
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    return times


def timed(fn, repeat: int = 1):
    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat
    return run


def networks(rounds: int) -> None:
    images = frames(337, step=8)
    models = {e: load_model("default", device="cpu", engine=e) for e in ENGINES}
    corrections = {e: load_correction(find_correction("default"), "cpu", e) for e in ENGINES}
    x = to_tensor(images[0])
    region = x[..., :360, :640].contiguous(memory_format=torch.channels_last)
    grid = models["torch"].geometry(720, 1280).size
    warped = models["torch"].logits(x)[0].float()
    image = to_tensor(correction_image(images[0], grid, corrections["torch"].scale))[0]
    coarse = (warped.softmax(0).amax(0) < 0.9).float()
    runs = {}
    for e in ENGINES:
        runs[f"model, frame 1280x720 ({e})"] = timed(lambda e=e: models[e].logits(x), 2)
        runs[f"model, RGC region 640x360 ({e})"] = timed(lambda e=e: models[e].logits(region), 4)
        runs[f"correction network, grid {grid[1]}x{grid[0]} ({e})"] = timed(lambda e=e: corrections[e](image, warped, coarse), 8)
    for run in runs.values():  # warm-up: first calls plan memory
        run()
    times = alternate(rounds, runs)
    print(f"\n## Networks at 1280x720 ({rounds} alternating rounds, median ms; 2 threads)\n")
    print("| network | torch | onnxruntime | speed-up |\n|---|---:|---:|---:|")
    for name in [n.rsplit(" (", 1)[0] for n in runs if n.endswith("(torch)")]:
        t, o = (statistics.median(times[f"{name} ({e})"]) for e in ENGINES)
        print(f"| {name} | {1000 * t:.1f} | {1000 * o:.1f} | {t / o:.2f}x |")
    agree = [float((models["torch"].predict(im) == models["onnxruntime"].predict(im)).mean()) for im in images]
    print(f"\nlabels equal, onnxruntime vs torch, {len(images)} real frames at full size: "
          f"min {100 * min(agree):.3f}%, mean {100 * np.mean(agree):.3f}%")


def run_fps(frames_: int, **options) -> tuple[float, list[np.ndarray]]:
    segmenter = Segmenter(**options)
    labels = []
    with open_video(REAL) as video:
        video.stop_after(frames_)
        start = time.perf_counter()
        for r in segmenter.run(video):
            labels.append(r.labels)
        seconds = time.perf_counter() - start
    return len(labels) / seconds, labels


def end_to_end(rounds: int, count: int, per_frame: int) -> None:
    fps: dict[str, list[float]] = {}
    outputs = {}
    rows = {"default configuration (onnxruntime)": (count, dict(engine="onnxruntime")),
            "default configuration (torch)": (count, dict(engine="torch")),
            "default configuration, no self-check (onnxruntime)": (count, dict(engine="onnxruntime", self_check=False)),
            "default configuration, fusion off (onnxruntime)": (count, dict(engine="onnxruntime", fusion=False)),
            "per-frame (onnxruntime)": (per_frame, dict(engine="onnxruntime", ffw=False)),
            "per-frame (torch)": (per_frame, dict(engine="torch", ffw=False))}
    for _ in range(rounds):
        for name, (n, options) in rows.items():
            rate, outputs[name] = run_fps(n, **options)
            fps.setdefault(name, []).append(rate)
    base = statistics.median(fps["per-frame (torch)"])
    print(f"\n## End to end, real 1280x720 MPEG-4 clip ({rounds} alternating rounds, median frames/s)\n")
    print("| run | frames | frames/s | vs torch per-frame |\n|---|---:|---:|---:|")
    for name, (n, _) in rows.items():
        m = statistics.median(fps[name])
        print(f"| {name} | {n} | {m:.1f} | {m / base:.1f}x |")
    a, b = outputs["default configuration (onnxruntime)"], outputs["default configuration (torch)"]
    agree = np.mean([float((x == y).mean()) for x, y in zip(a, b)])
    print(f"\nlabels equal, default configuration onnxruntime vs torch, {len(a)} frames: {100 * agree:.2f}%")


def stages(rounds: int, count: int) -> None:
    rows = {"default configuration": {}, "FFW only": dict(rgc=False, rgfs=False, fusion=False, interpolation=False)}
    per: dict[tuple[str, str, str], list[float]] = {}
    walls: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, options in rows.items():
            totals: dict[tuple[str, str], float] = {}
            counts = {"key": 0, "warped": 0}
            with open_video(REAL) as video:
                video.stop_after(count)
                start = time.perf_counter()
                for r in Segmenter(**options).run(video):
                    kind = "key" if r.kind.is_key else "warped"
                    counts[kind] += 1
                    for stage, seconds in r.timings.items():
                        totals[(kind, stage)] = totals.get((kind, stage), 0.0) + seconds
                walls.setdefault(name, []).append((time.perf_counter() - start) / sum(counts.values()))
            for (kind, stage), seconds in totals.items():
                per.setdefault((name, kind, stage), []).append(1000 * seconds / max(1, counts[kind]))
    print(f"\n## Where the time goes: real 1280x720 clip, {count} frames ({rounds} rounds, median ms per frame)\n")
    print("| configuration | frames | stage | ms |\n|---|---|---|---:|")
    for (name, kind, stage), values in sorted(per.items()):
        print(f"| {name} | {kind} | {stage} | {statistics.median(values):.2f} |")
    for name, values in walls.items():
        print(f"| {name} | all | wall time per frame | {1000 * statistics.median(values):.2f} |")


def shared(rounds: int, count: int) -> None:
    rows = {"onnxruntime, threads policy": dict(engine="onnxruntime"),
            "onnxruntime, threads=2 (the policy without its governor)": dict(engine="onnxruntime", threads=2),
            "onnxruntime, threads=1": dict(engine="onnxruntime", threads=1),
            "torch, threads policy": dict(engine="torch")}
    fps: dict[tuple[str, bool], list[float]] = {}
    for _ in range(rounds):
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                for name, options in rows.items():
                    fps.setdefault((name, busy), []).append(run_fps(count, **options)[0])
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
    print(f"\n## Shared CPU: the default configuration, {count} frames of the real clip ({rounds} rounds, median frames/s)\n")
    print("| engine, threads | quiet | one core busy | busy / quiet |\n|---|---:|---:|---:|")
    for name in rows:
        q, b = statistics.median(fps[(name, False)]), statistics.median(fps[(name, True)])
        print(f"| {name} | {q:.1f} | {b:.1f} | {b / q:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["networks", "end-to-end", "stages", "shared", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--frames", type=int, default=337)
    parser.add_argument("--per-frame-frames", type=int, default=48)
    args = parser.parse_args()
    if not REAL.exists():
        sys.exit(f"the real clip is missing: {REAL}")
    if args.part in ("networks", "all"):
        networks(args.rounds)
    if args.part in ("end-to-end", "all"):
        end_to_end(args.rounds, args.frames, args.per_frame_frames)
    if args.part in ("stages", "all"):
        stages(args.rounds, args.frames)
    if args.part in ("shared", "all"):
        shared(args.rounds, min(args.frames, 120))


if __name__ == "__main__":
    main()
