"""Real-world streams: the runtime on long GOPs, B-frames and codecs without vectors, against the per-frame model.

    python benchmarks/bench_streams.py [--frames 337] [--streams mpeg4,h264,h264-b,hevc,vp9] [--configs ...]

Streams: the real 1280x720 clips in ../shared/data/real (MPEG-4 Part 2 GOP 12; H.264 with I-frames
up to 210 apart; H.264 with B-frames and GOP 250; HEVC with B-frames, which exports no vectors) and
the H.264 clip re-encoded here, in a temporary folder (:data:`ENCODED`): as VP9 with GOP 250 (no vectors,
no B-frames), as MPEG-4 Part 2 with 2 B-frames and GOP 12, and as H.264 with 2 B-frames, GOP 250 and 4
reference frames.

Per stream, the model runs on every frame first: its labels are the reference of *fidelity* (mIoU
of the accelerated output against them; real footage has no labels). Then every configuration over
the whole stream: the share of key frames and fidelity, overall and by distance from the key frame
whose CNN output a frame carries (deterministic), and the share of P-frames RGFS selected. The speed-up is measured apart, on the first
``--speed-frames`` frames: ``--rounds`` rounds, each running the per-frame model and every
configuration in turn; the median of the rounds' ratios is quoted with their range (the machine is
shared). ``flow ms`` is the estimation of block vectors per frame (codecs without vectors; a B-frame's
future vectors included), in the decoding thread.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from taplab.codec import encode, open_video
from taplab.metrics import ConfusionMatrix, percent
from taplab.runtime import Segmenter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
STREAMS = {"mpeg4": "vid_mpeg4_part2.mp4", "h264": "vid_h264.mp4", "h264-b": "vid_h264_bframes_gop250.mp4",
           "hevc": "vid_hevc.mp4", "vp9": None, "mpeg4-b": None, "h264-refs": None}
#: the streams this script encodes from the H.264 clip: name -> taplab.encode's arguments
ENCODED = {"vp9": dict(codec="vp9", gop=250), "mpeg4-b": dict(codec="mpeg4", gop=12, bframes=2),
           "h264-refs": dict(codec="h264", gop=250, bframes=2, refs=4)}
#: name (no commas: --configs lists them) -> RuntimeConfig fields over the defaults; the "no-fusion" ones run the stages
#: they name (no self-check leaving RGC out; with neither stage it has nothing to check), the others the default's
#: self-checked corrections
CONFIGS = {
    "default": {},
    "no-self-check": dict(self_check=False),
    "key-interval-16": dict(key_interval=16),
    "key-interval-24": dict(key_interval=24),
    **{name: dict(fusion=False, self_check=False, **options) for name, options in {
        "no-fusion": {},
        "no-fusion no-rgc": dict(rgc=False),
        "no-fusion no-interpolation": dict(interpolation=False),
        "no-fusion no-interpolation b-frames-past": dict(interpolation=False, b_frames="past"),
        "no-fusion no-interpolation b-frames-key": dict(interpolation=False, b_frames="key"),
        "no-fusion rgfs-absolute": dict(rgfs_mode="absolute"),
        "no-fusion no-key-interval": dict(key_interval=None),
    }.items()},
}
DEFAULT_CONFIGS = ("default", "no-self-check", "no-fusion", "no-fusion no-rgc", "no-fusion no-interpolation",
                   "no-fusion no-interpolation b-frames-past", "no-fusion rgfs-absolute")
BINS = ((1, 12), (13, 25), (26, 50), (51, 100), (101, 250))


def stream_path(name: str, workdir: Path) -> Path:
    if STREAMS[name] is not None:
        return REAL / STREAMS[name]
    return encode(REAL / STREAMS["h264"], workdir / f"{name}.mp4", **ENCODED[name])


def speedups(path: Path, configs: dict[str, dict], frames: int, rounds: int, device: str) -> dict[str, list[float]]:
    """Each configuration's frames/s over the per-frame model's, in each of ``rounds`` rounds run in turn."""
    segmenters = {name: Segmenter("default", device=device, **options) for name, options in configs.items()}
    per_frame = Segmenter(segmenters[next(iter(segmenters))].model, ffw=False)
    ratios: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        base = measure(per_frame, path, frames)[3]
        for name, seg in segmenters.items():
            ratios[name].append(measure(seg, path, frames)[3] / base)
    return ratios


def measure(segmenter: Segmenter, path: Path, frames: int) -> tuple[list, list[int], int, float, float, float]:
    """Labels, each frame's distance from the key frame whose CNN output it carries, key frames, frames/s, the
    seconds of the ``flow`` stage (vectors estimated for a codec without them) per frame, and the share of
    P-frames RGFS selected."""
    labels, distances, keys, flow, start = [], [], 0, 0.0, time.perf_counter()
    p_frames = selected = 0
    with open_video(path) as video:
        video.stop_after(frames)  # the first frames, the ones a run holds back included
        for r in segmenter.run(video):
            labels.append(r.labels)
            distances.append(r.index - r.key_index)
            keys += r.is_key
            flow += r.timings.get("flow", 0.0) + r.timings.get("future", 0.0)
            p_frames += r.pict_type == "P"
            selected += r.kind == "key-RGFS"
    return (labels, distances, keys, len(labels) / (time.perf_counter() - start), flow / len(labels),
            selected / max(1, p_frames))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=337, help="frames of each stream scored for fidelity")
    parser.add_argument("--speed-frames", type=int, default=120, help="frames of each timed run")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (median quoted)")
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated names of CONFIGS")
    parser.add_argument("--device", default="cpu", help="cpu (the figures docs/streams.md quotes), cuda or auto")
    parser.add_argument("--key-blend", type=float, default=None,
                        help="key_blend of every configuration (default: the runtime's; 0: as before the blend)")
    parser.add_argument("--fusion-memory", type=float, default=None,
                        help="fusion_memory of every configuration (default: the runtime's; 0: as before the memory)")
    args = parser.parse_args()
    configs = {name: CONFIGS[name] for name in args.configs.split(",")}
    # the figures taken before the key-frame blend and fusion's memory: --key-blend 0 --fusion-memory 0
    fixed = {k: v for k, v in (("key_blend", args.key_blend), ("fusion_memory", args.fusion_memory)) if v is not None}
    configs = {name: options if options.get("ffw") is False else {**options, **fixed} for name, options in configs.items()}
    heads = " | ".join(f"{a}-{b}" for a, b in BINS)
    print(f"| stream | configuration | key frames | RGFS | speed-up (min-max) | flow ms | fidelity % | by distance: {heads} |")
    print("|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(BINS))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.streams.split(","):
            path = stream_path(name, Path(tmp))
            reference = measure(Segmenter("default", device=args.device, ffw=False), path, args.frames)[0]
            n = len(reference)
            speed = speedups(path, configs, args.speed_frames, args.rounds, args.device)
            for label, options in configs.items():
                seg = Segmenter("default", device=args.device, **options)
                labels, distances, keys, _, flow, rgfs = measure(seg, path, n)
                total, bins = ConfusionMatrix(seg.model.num_classes), {b: ConfusionMatrix(seg.model.num_classes) for b in BINS}
                for ours, ref, distance in zip(labels, reference, distances):
                    total.update(ours, ref)
                    for lo, hi in BINS:
                        if lo <= distance <= hi:
                            bins[(lo, hi)].update(ours, ref)
                by_distance = " | ".join("-" if not cm.counts.any() else f"{percent(cm.miou()):.1f}" for cm in bins.values())
                ratios = speed[label]
                spread = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                print(f"| {name} | {label} | {100 * keys / n:.0f}% | {100 * rgfs:.0f}% | {spread} | {1000 * flow:.1f} "
                      f"| {percent(total.miou()):.1f} "
                      f"| {by_distance} |", flush=True)


if __name__ == "__main__":
    main()
