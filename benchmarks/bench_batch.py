"""Many videos: videos per hour of `taplab segment FOLDER` with 1, 2 and 4 worker processes, on Ray, and a re-run.

    python benchmarks/bench_batch.py [--clips 8] [--frames 40] [--sizes 720,360] [--rounds 3] [--arms ...]

Clips: ``--clips`` pieces of ``--frames`` frames of the real 1280x720 H.264 clip in ../shared/data/real (337
frames: the pieces start evenly spread over it, and overlap where they do not fit side by side), re-encoded as
H.264, GOP 12, at each of ``--sizes`` (720 is the clip's own size, 360 a 640x360 downscale); without ../shared,
synthetic street clips of the same sizes (said in the output). Each arm is the whole command, as a user
runs it (a fresh process: its start, its workers' start and their models' loading count), on the folder of clips:

- ``workers=N``: ``--workers N --overwrite`` (N=1 runs in the command's own process, with both threads);
- ``ray-local=N``: ``--ray --workers N``: the command starts a local Ray of this machine's CPUs and ends it;
- ``ray-joined=N``: ``--ray ADDRESS --workers N`` on a Ray head node started once beforehand (``ray start --head``),
  as on a cluster that is up;
- ``rerun``: the ``workers=2`` command again on a folder it completed: every video is skipped.

Every round runs every arm once, in an order that alternates between rounds (the machine is shared); quoted are the
median time of each arm, its videos per hour, its CPU use (the CPU time of the command and its worker processes
over wall time times CPUs) and peak resident memory (of the largest of those processes; neither measured for Ray,
whose actors are the Ray node's processes), and the median over
rounds of its ratio to ``workers=1`` in the same round (throughput: above 1 is faster), with the range.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "vid_h264.mp4"
SIZES = {"720": (720, 1280), "360": (360, 640)}
DEFAULT_ARMS = ("workers=1", "workers=2", "workers=4", "ray-local=2", "ray-joined=2", "rerun")


def make_clips(folder: Path, count: int, frames: int, size: tuple[int, int]) -> str:
    """``count`` clips of ``frames`` frames at ``size`` (H, W) in ``folder``; returns where they come from."""
    import cv2

    from taplab.codec import encode, open_video

    folder.mkdir(parents=True)
    if REAL.is_file():
        with open_video(REAL) as video:
            images = [f.image if f.image.shape[:2] == size else
                      cv2.resize(f.image, size[::-1], interpolation=cv2.INTER_AREA) for f in video]
        if len(images) < frames:
            raise SystemExit(f"{REAL} has {len(images)} frames; ask for fewer --frames")
        # the clips' first frames spread evenly over the real clip: apart where it is long enough, else overlapping
        starts = [round(k * (len(images) - frames) / max(count - 1, 1)) for k in range(count)]
        for k, start in enumerate(starts):
            encode(images[start:start + frames], folder / f"clip{k}.mp4", codec="h264", gop=12, fps=25)
        overlap = "" if count * frames <= len(images) else ", overlapping"
        return f"{count} pieces of the real H.264 clip{overlap} (re-encoded H.264, GOP 12)"
    from taplab.data.synth import SynthConfig, write_clip

    for k in range(count):
        video = write_clip(folder / f".src{k}", SynthConfig(height=size[0], width=size[1], frames=frames, seed=k),
                           gop=12, codec="h264")
        shutil.move(video, folder / f"clip{k}.mp4")
        shutil.rmtree(folder / f".src{k}")
    return "synthetic street clips (../shared/data/real not found)"


def command(arm: str, clips: Path, out: Path, address: str | None) -> list[str]:
    base = [sys.executable, "-m", "taplab.cli", "segment", str(clips), "--out", str(out)]
    kind, _, n = arm.partition("=")
    if kind == "workers":
        return base + ["--workers", n, "--overwrite"]
    if kind == "ray-local":
        return base + ["--ray", "--workers", n, "--overwrite"]
    if kind == "ray-joined":
        return base + ["--ray", address, "--workers", n, "--overwrite"]
    if kind == "rerun":
        return base + ["--workers", "2"]
    raise SystemExit(f"unknown arm {arm}")


def timed(args: list[str], env: dict) -> tuple[float, float, float]:
    """The command's wall time, the CPU time it and the processes it waited for used, and the peak resident memory
    of the largest of them, in MB (``wait4``'s accounting: not Ray's actors, which are the Ray node's children)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(args)} failed ({process.returncode}): {err.read().decode()[-500:].strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def stage_means(summary: Path) -> dict[str, float]:
    """Milliseconds per frame by stage over a batch's videos, from its summary.json (each video's mean, weighted by
    its frames)."""
    videos = [v["summary"] for v in json.loads(summary.read_text())["videos"] if v["status"] == "done"]
    frames = sum(v["frames"] for v in videos)
    names = dict.fromkeys(k for v in videos for k in v["ms_per_frame"])
    return {k: sum(v["ms_per_frame"].get(k, 0.0) * v["frames"] for v in videos) / frames for k in names}


def start_head(workdir: Path, cpus: int, env: dict) -> str:
    """A Ray head node of ``cpus`` CPUs, for the ``ray-joined`` arms; returns its address. (``env`` turns Ray's token
    authentication off, for this node of this machine only: a real cluster's clients hold its token.)"""
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    run = subprocess.run([ray, "start", "--head", f"--num-cpus={cpus}", "--include-dashboard=false",
                          "--disable-usage-stats", f"--temp-dir={workdir / 'ray'}", "--port=0"],
                         capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"ray start failed: {run.stderr.strip()[-500:]}")
    for line in (run.stdout + run.stderr).splitlines():
        if "ray.init(address=" in line or "--address=" in line:
            return line.split("address=")[1].strip().strip("'\")")
    raise SystemExit(f"cannot read the head node's address from: {run.stdout[-500:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--sizes", default="720,360", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default=",".join(DEFAULT_ARMS))
    args = parser.parse_args()
    arms = args.arms.split(",")
    from taplab.threads import available_cpus

    cpus = available_cpus()
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        workdir = Path(tmp)
        env = {**os.environ, "TAPLAB_CACHE": str(workdir / "cache"), "RAY_AUTH_MODE": "disabled"}
        address = start_head(workdir, cpus, env) if any(a.startswith("ray-joined") for a in arms) else None
        try:
            for size in args.sizes.split(","):
                clips = workdir / f"clips{size}"
                origin = make_clips(clips, args.clips, args.frames, SIZES[size])
                timed(command("workers=1", clips, workdir / "warm", address), env)  # ONNX export into the cache
                print(f"\n{args.clips} clips of {args.frames} frames at {SIZES[size][0]}x{SIZES[size][1]}: {origin}; "
                      f"{cpus} CPUs, {args.rounds} rounds", flush=True)
                times: dict[str, list[float]] = {a: [] for a in arms}
                busy: dict[str, list[float]] = {a: [] for a in arms}
                peak: dict[str, list[float]] = {a: [] for a in arms}
                stages: dict[str, list[float]] = {}
                for r in range(args.rounds):
                    for arm in (arms if r % 2 == 0 else arms[::-1]):
                        out = workdir / "out" / ("rerun" if arm == "rerun" else "fresh")
                        if arm == "rerun" and not (out / "summary.json").is_file():
                            timed(command("workers=2", clips, out, address), env)  # the run a re-run follows
                        wall, cpu, rss = timed(command(arm, clips, out, address), env)
                        times[arm].append(wall)
                        busy[arm].append(cpu / (wall * cpus))
                        peak[arm].append(rss)
                        if arm == "workers=1":
                            for name, ms in stage_means(out / "summary.json").items():
                                stages.setdefault(name, []).append(ms)
                print(f"{'arm':<14} {'median s':>9} {'videos/h':>9} {'CPU use':>8} {'peak MB':>8} {'x workers=1':>12}  "
                      "range")
                base = times.get("workers=1")
                for arm in arms:
                    median = statistics.median(times[arm])
                    ratio = [b / t for b, t in zip(base, times[arm])] if base else []
                    shown = f"{statistics.median(ratio):12.2f}  {min(ratio):.2f}-{max(ratio):.2f}" if ratio else ""
                    ray = arm.startswith("ray")
                    use = "" if ray else f"{100 * statistics.median(busy[arm]):.0f}%"
                    rss = "" if ray else f"{statistics.median(peak[arm]):.0f}"
                    print(f"{arm:<14} {median:9.1f} {3600 * args.clips / median:9.0f} {use:>8} {rss:>8} {shown}",
                          flush=True)
                if stages:
                    print("ms per frame by stage, workers=1 (mean over the videos, median over the rounds): "
                          + ", ".join(f"{k} {statistics.median(v):.1f}" for k, v in stages.items()))
                fresh = workdir / "out" / "fresh"
                if fresh.is_dir():
                    pngs = list(fresh.glob("*/frame_*.png"))
                    video_bytes = sum(p.stat().st_size for p in clips.glob("*.mp4"))
                    print(f"bytes per frame: {video_bytes / 1024 / (args.clips * args.frames):.1f} KB of video in, "
                          f"{sum(p.stat().st_size for p in pngs) / 1024 / max(len(pngs), 1):.1f} KB of label PNG out")
        finally:
            if address is not None:
                subprocess.run([shutil.which("ray") or str(Path(sys.executable).with_name("ray")), "stop", "--force"],
                               capture_output=True, env=env)


if __name__ == "__main__":
    main()
