"""Label-free adaptation on real footage: what the adapted correction does to held-out frames, and what it costs.

    python benchmarks/bench_adapt.py [--kind dmnet] [--steps 3000] [--scale 2] [--width 16] [--frames 337] [--rounds 3]
                                     [--out runs/adapt-real]

``--kind twnet`` adapts the Tamed Warping Network's correction instead of DMNet's (``taplab adapt --kind``).

1. **Adapt.** ``taplab.adapt.adapt`` (the default model as teacher, no labels) on the real 1280x720
   MPEG-4 clip, its last 30% held out: the report's sample-level fidelity, with and without the
   correction, and the decision.
2. **Held-out fidelity in the runtime.** The whole clip runs through the runtime; the frames of its
   last 30% are scored against the per-frame output of the same model, all frames and the warped
   ones alone. Then a different real clip: the Cityscapes lindau sequence (30 frames, 2048x1024,
   encoded MPEG-4 GOP 12 here), all of it. Configurations: FFW+RGC+RGFS (no fusion), the default
   with the shipped correction (trained on synthetic labels), and the default with the adapted
   correction, forced on even where adaptation left it off, to show why.
3. **Cost.** The three configurations' speed-up over per-frame on the first ``--frames`` frames of
   the 720p clip, in ``--rounds`` alternating rounds (median, min-max).

``--distances`` instead prints the warped frames' fidelity by distance from their key frame on the 720p clip, with FFW
alone (the runtime's defaults, no corrections): where the disagreement with the per-frame output comes from.

The numbers in docs/adapt.md come from this script.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench_streams import speedups

from taplab import Segmenter, encode
from taplab.adapt import AdaptConfig, adapt
from taplab.metrics import ConfusionMatrix

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def fidelity(video: Path, configs: dict[str, dict], start: int, frames: int) -> dict[str, tuple[float, float, float]]:
    """Per configuration: fidelity (mIoU % against the per-frame output) of the frames from ``start`` on, of the
    warped ones among them, and the share of key frames."""
    per_frame = Segmenter("default", device="cpu", ffw=False)
    reference = [r.labels for r, _ in zip(per_frame.run(video), range(frames))]
    found = {}
    for name, options in configs.items():
        seg = Segmenter(per_frame.model, **options)
        every, warped, keys, n = ConfusionMatrix(19), ConfusionMatrix(19), 0, 0
        for r, _ in zip(seg.run(video), range(frames)):
            if r.index < start:
                continue
            every.update(r.labels, reference[r.index])
            if not r.is_key:
                warped.update(r.labels, reference[r.index])
            keys += r.is_key
            n += 1
        found[name] = (100 * every.miou(), 100 * warped.miou(), 100 * keys / max(1, n))
    return found


def by_distance(video: Path, frames: int) -> dict[int, float]:
    """Fidelity (mIoU %) of the warped frames by distance from their key frame, FFW alone (no corrections)."""
    per_frame = Segmenter("default", device="cpu", ffw=False)
    reference = [r.labels for r, _ in zip(per_frame.run(video), range(frames))]
    scores: dict[int, ConfusionMatrix] = {}
    for r, _ in zip(Segmenter(per_frame.model, fusion=False, rgc=False).run(video), range(frames)):
        if not r.is_key:
            scores.setdefault(r.index - r.key_index, ConfusionMatrix(19)).update(r.labels, reference[r.index])
    return {d: 100 * cm.miou() for d, cm in sorted(scores.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=AdaptConfig().steps)
    parser.add_argument("--scale", type=int, default=AdaptConfig().scale, help="the correction network's (1 or 2)")
    parser.add_argument("--kind", default="dmnet", choices=("dmnet", "twnet"), help="the correction adapted")
    parser.add_argument("--width", type=int, default=AdaptConfig().width, help="the correction network's width")
    parser.add_argument("--frames", type=int, default=337, help="frames of the 720p clip (adapted on, and timed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="keep the adapted model here (default: a temporary folder)")
    parser.add_argument("--distances", action="store_true", help="only the fidelity by distance from the key frame")
    args = parser.parse_args()
    if not REAL.is_dir():
        sys.exit(f"the real clips are not at {REAL}")
    clip = REAL / "vid_mpeg4_part2.mp4"
    if args.distances:
        print("| distance from the key frame | " + " | ".join(map(str, range(1, 12))) + " |")
        print("|---|" + "---:|" * 11)
        found = by_distance(clip, args.frames)
        print("| fidelity % (FFW, warped frames) | " + " | ".join(f"{found.get(d, float('nan')):.1f}"
                                                                for d in range(1, 12)) + " |")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "adapted"
        cfg = AdaptConfig(kind=args.kind, steps=args.steps, scale=args.scale, width=args.width, frames=args.frames,
                          holdout=0.3, seed=0)
        result = adapt("default", [str(clip)], out, cfg, device="cpu", overwrite=True)
        print(f"## 1. Adaptation on {clip.name} (first 70% of {args.frames} frames, no labels)\n")
        print(result.format(), "\n")
        correction = str(out / "correction.pt")
        configs = {  # each with the stages it names: no self-check leaving some out (a correction forced on)
            "FFW+RGC+RGFS (no fusion)": dict(fusion=False, self_check=False),
            "default, shipped correction": dict(fusion=True, self_check=False),
            f"default, adapted correction ({args.kind})": dict(fusion=True, correction=correction,
                                                               correction_kind=args.kind, self_check=False),
        }
        start = round((1 - cfg.holdout) * args.frames + 0.5)  # the first held-out frame, as adapt splits
        city = encode(REAL / "cityscapes_lindau_000000", Path(tmp) / "lindau.mp4", gop=12, codec="mpeg4")
        print("## 2. Fidelity against the per-frame output (mIoU %)\n")
        print("| clip | configuration | fidelity, all frames | fidelity, warped frames | key frames |")
        print("|---|---|---:|---:|---:|")
        for label, video, first, frames in ((f"{clip.name}, frames {start}-{args.frames - 1} (held out)", clip, start,
                                             args.frames), ("lindau (another clip, all 30 frames)", city, 0, 30)):
            for name, (every, warped, keys) in fidelity(video, configs, first, frames).items():
                print(f"| {label} | {name} | {every:.1f} | {warped:.1f} | {keys:.0f}% |", flush=True)
        print("\n## 3. Speed-up over per-frame on the 720p clip\n")
        print("| configuration | speed-up (median, min-max) |")
        print("|---|---:|")
        for name, ratios in speedups(clip, configs, args.frames, args.rounds, "cpu").items():
            print(f"| {name} | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
