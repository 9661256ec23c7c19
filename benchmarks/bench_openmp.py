"""Sleeping against spinning OpenMP threads (``OMP_WAIT_POLICY=PASSIVE``): the default run and the per-frame CNN.

    python benchmarks/bench_openmp.py [--streams h264-b,mpeg4] [--rounds 5] [--per-frame-frames 32]

After each parallel operation (torch's, and the native kernels': a warp, a splat, the labels) libgomp's idle
threads spin for a while before they sleep, on the core the decoding thread could use. libgomp reads its wait
policy once, when torch loads it, so each run is its own process: ``passive`` with ``OMP_WAIT_POLICY=PASSIVE``,
``spinning`` with neither it nor ``GOMP_SPINCOUNT`` set (libgomp's default, what taplab runs with). The two
alternate within each round, in turn first; medians of ``--rounds`` rounds, and the ratio of the medians. Each run segments the whole real stream with the default configuration (labels in
memory, no files), and the per-frame CNN of each engine (``ffw=False``) on the first ``--per-frame-frames``
frames of the MPEG-4 clip, which says whether the CNN itself minds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_streams import STREAMS, stream_path

POLICIES = {"passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "spinning": {}}

RUN = """
import json, sys, time
from taplab import Segmenter, open_video
path, frames, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
segmenter = Segmenter("default", device="cpu", **options)
with open_video(path) as video:
    if frames:
        video.stop_after(frames)
    start = time.perf_counter()
    n = sum(1 for _ in segmenter.run(video))
print(n / (time.perf_counter() - start))
"""


def fps(policy: str, path: Path, frames: int, options: dict) -> float:
    """Frames/s of one run in a fresh process under ``policy``."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(POLICIES[policy])
    out = subprocess.run([sys.executable, "-c", RUN, str(path), str(frames), json.dumps(options)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="h264-b,mpeg4")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-frame-frames", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {f"{name}, default configuration": (stream_path(name, Path(tmp)), 0, {})
                for name in args.streams.split(",")}
        for engine in ("onnxruntime", "torch"):
            rows[f"mpeg4, per-frame CNN ({engine})"] = (stream_path("mpeg4", Path(tmp)), args.per_frame_frames,
                                                       dict(ffw=False, engine=engine))
        rates: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for row, (path, frames, options) in rows.items():
                for policy in list(POLICIES)[::1 if round_ % 2 == 0 else -1]:
                    rates.setdefault((row, policy), []).append(fps(policy, path, frames, options))
    print("| run | passive frames/s | spinning frames/s | passive / spinning |\n|---|---:|---:|---:|")
    for row in rows:
        passive, spinning = (statistics.median(rates[(row, p)]) for p in POLICIES)
        print(f"| {row} | {passive:.1f} | {spinning:.1f} | {passive / spinning:.2f} |")


if __name__ == "__main__":
    if not all((Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / f).exists()
               for f in STREAMS.values() if f):
        raise SystemExit("the shared real streams are not here (../shared/data/real)")
    main()
