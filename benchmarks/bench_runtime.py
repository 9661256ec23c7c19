"""The runtime against the per-frame baseline: speed on a real clip, accuracy on held-out synthetic clips.

    python benchmarks/bench_runtime.py [--frames 96] [--clips 2] [--labels bilinear|exact|nearest] [--skip-accuracy] [--skip-speed]
    python benchmarks/bench_runtime.py --skip-speed --warping     # chained vs accumulated warping, nearest vs bilinear
    python benchmarks/bench_runtime.py --skip-speed --fusion-weights   # fusion's w_f
    python benchmarks/bench_runtime.py --motion          # codec vectors vs dense optical flow (DIS, Farneback)
    python benchmarks/bench_runtime.py --skip-speed --interpolation   # offline interpolation vs forward only
    python benchmarks/bench_runtime.py --skip-speed --rgfs            # RGFS by rate vs the absolute threshold

Speed: the default model on the real 1280x720 MPEG-4 GOP-12 clip in ../shared/data/real (its first
``--frames`` frames), per-frame (the CNN on every frame) and the module combinations side by side
in one process: frames/s, speed-up, share of key frames, ms per frame by stage, and the TapLab
paper's speed model T_avg = T_I / g + (1 - 1/g) T_P with T_I and T_P measured from the key and
warped frames of the run.

Accuracy: ``--clips`` synthetic clips (512x1024, 30 frames, MPEG-4 GOP 12, seeds 700001...,
exact labels on every frame), the mIoU of every combination against the ground truth, and its
fidelity (mIoU against the per-frame output).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from taplab.bench.sweep import MODULES
from taplab.codec import open_video
from taplab.data import layout
from taplab.metrics import ConfusionMatrix
from taplab.runtime import Segmenter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def unchecked(variants: dict[str, dict]) -> dict[str, dict]:
    """Each warping variant with the modules it names: no self-check leaving some out (``self_check``)."""
    return {name: options if options.get("ffw") is False else {"self_check": False, **options}
            for name, options in variants.items()}


#: the TapLab paper's Table 5 rows, and fusion (DMNet) on top, each with the modules it names; then the default
#: configuration, which checks its corrections (self_check), and the same without
COMBINATIONS = {**unchecked(MODULES), "default (self-check)": {}, "default, no self-check": dict(self_check=False)}


def speed(frames: int, labels: str, combinations: dict[str, dict], device: str) -> None:
    clip = REAL / "vid_mpeg4_part2.mp4"
    print(f"## Speed: {clip.name}, first {frames} frames, labels={labels}\n")
    print("| modules | frames/s | speed-up | key frames | ms/frame by stage | T_I ms | T_P ms | speed model frames/s |")
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    base = None
    for name, options in combinations.items():
        seg = Segmenter("default", device=device, labels=labels, **options)
        stage: dict[str, float] = {}
        key_t, warp_t, n, keys = [], [], 0, 0
        start = time.perf_counter()
        with open_video(clip) as video:
            video.stop_after(frames)  # the first frames, the ones a run holds back included
            for r in seg.run(video):
                total = sum(r.timings.values())
                (key_t if r.is_key else warp_t).append(total)
                keys += r.is_key
                for k, v in r.timings.items():
                    stage[k] = stage.get(k, 0.0) + v
                n += 1
        fps = n / (time.perf_counter() - start)
        base = base or fps
        t_i = 1000 * sum(key_t) / max(len(key_t), 1)
        t_p = 1000 * sum(warp_t) / len(warp_t) if warp_t else float("nan")
        g = n / max(keys, 1)  # the effective GOP: frames per key frame
        model = 1000 / (t_i / g + (1 - 1 / g) * t_p) if warp_t else 1000 / t_i
        stages = ", ".join(f"{k} {1000 * v / n:.1f}" for k, v in stage.items())
        print(f"| {name} | {fps:.1f} | {fps / base:.2f}x | {100 * keys / n:.0f}% | {stages} | {t_i:.0f} | {t_p:.1f} | {model:.1f} |",
              flush=True)
    print()


def accuracy(clips: int, labels: str, combinations: dict[str, dict], device: str) -> None:
    from taplab.data.synth import SynthConfig, write_clip

    print(f"## Accuracy: {clips} held-out synthetic clips, 512x1024, 30 frames, MPEG-4 GOP 12, labels={labels}\n")
    with tempfile.TemporaryDirectory() as tmp:
        videos = []
        for k in range(clips):
            name = f"held{k}"
            video = write_clip(tmp, SynthConfig(frames=30, seed=700001 + k), gop=12, name=name)
            truth = [layout.read_labels(layout.clip_label_path(tmp, name, t)) for t in range(30)]
            videos.append((video, truth))
        per_frame: list[list] = []
        print("| modules | mIoU % | fidelity mIoU % | key frames | RGFS (of P-frames) |")
        print("|---|---:|---:|---:|---:|")
        for name, options in {"per-frame": dict(ffw=False), **combinations}.items():
            seg = Segmenter("default", device=device, labels=labels, **options)
            cm, fid, keys, n, p_frames, selected = ConfusionMatrix(19), ConfusionMatrix(19), 0, 0, 0, 0
            for k, (video, truth) in enumerate(videos):
                outputs = [r for r in seg.run(video)]
                if name == "per-frame":
                    per_frame.append([r.labels for r in outputs])
                for r in outputs:
                    cm.update(r.labels, truth[r.index])
                    fid.update(r.labels, per_frame[k][r.index])
                    keys += r.is_key
                    n += 1
                    p_frames += r.pict_type == "P"
                    selected += r.kind == "key-RGFS"
            print(f"| {name} | {100 * cm.miou():.1f} | {100 * fid.miou():.1f} | {100 * keys / n:.0f}% "
                  f"| {100 * selected / max(1, p_frames):.0f}% |", flush=True)
    print()


#: the ways of carrying features through a GOP, and the RGC blend weight
WARPING = {  # without fusion, to compare the warping itself
    "chain, nearest": dict(rgc=False, rgfs=False, propagation="chain", warp_sampling="nearest"),
    "chain, bilinear": dict(rgc=False, rgfs=False, propagation="chain", warp_sampling="bilinear"),
    "accumulate, nearest": dict(rgc=False, rgfs=False, propagation="accumulate", warp_sampling="nearest"),
    "accumulate, bilinear": dict(rgc=False, rgfs=False, propagation="accumulate", warp_sampling="bilinear"),
    "FFW+RGC+RGFS, chain": dict(propagation="chain"),
    "FFW+RGC+RGFS, accumulate": dict(propagation="accumulate"),
    "FFW+RGC+RGFS, RGFS rate 0.1": dict(rgfs_mode="rate", rgfs_rate=0.1),
    "FFW, bilinear vectors": dict(rgc=False, rgfs=False, motion_resampling="bilinear"),
    "FFW+RGC, alpha 0.3": dict(rgfs=False, rgc_alpha=0.3),
    "FFW+RGC, alpha 0.5": dict(rgfs=False, rgc_alpha=0.5),
    "FFW+RGC, alpha 0.8": dict(rgfs=False, rgc_alpha=0.8),
    "FFW+RGC, alpha 1.0": dict(rgfs=False, rgc_alpha=1.0),
}
WARPING = unchecked({name: dict(fusion=False, **options) for name, options in WARPING.items()})


#: the codec's vectors against dense optical flow (the TapLab paper's Table 3), FFW alone
MOTION = unchecked({f"FFW, {m}": dict(rgc=False, rgfs=False, fusion=False, motion_source=m)
                    for m in ("codec", "dis-ultrafast", "dis-fast", "dis-medium", "farneback")})

#: RGFS by rate (the default) against the paper's absolute threshold
RGFS = unchecked({"FFW+RGFS, rate 10% (default)": dict(rgc=False, fusion=False),
                  "FFW+RGFS, absolute 5.7 (the paper's)": dict(rgc=False, fusion=False, rgfs_mode="absolute")})

#: offline interpolation between the enclosing key frames against forward warping alone, at the same key frames
INTERPOLATION = unchecked({f"{name}, {label}": dict(options, interpolation=on)
                           for name, options in {"FFW": dict(rgc=False, rgfs=False, fusion=False),
                                                 "FFW+RGC+RGFS": dict(fusion=False), "FFW+RGC+RGFS+fusion": {}}.items()
                           for label, on in (("forward only", False), ("interpolated", True))})

#: DMNet's w_f in M = w_f M_coarse + (1 - w_f) M_edge
FUSION_WEIGHTS = unchecked({f"FFW+fusion, w_f {w}": dict(rgc=False, rgfs=False, fusion=True, fusion_weight=w)
                            for w in (0.0, 0.25, 0.5, 0.75, 1.0)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu (the figures docs/runtime.md quotes), cuda or auto")
    parser.add_argument("--labels", choices=["bilinear", "exact", "nearest"], default="bilinear")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--warping", action="store_true", help="accuracy of the warping variants (WARPING) instead")
    parser.add_argument("--fusion-weights", action="store_true", help="accuracy of fusion at several w_f instead")
    parser.add_argument("--motion", action="store_true", help="codec vectors vs optical flow (speed and accuracy) instead")
    parser.add_argument("--rgfs", action="store_true", help="RGFS by rate against the absolute threshold instead")
    parser.add_argument("--interpolation", action="store_true",
                        help="accuracy with and without offline interpolation (INTERPOLATION) instead")
    parser.add_argument("--key-blend", type=float, default=None,
                        help="key_blend of every combination (default: the runtime's; 0: as before the blend)")
    parser.add_argument("--fusion-memory", type=float, default=None,
                        help="fusion_memory of every combination (default: the runtime's; 0: as before the memory)")
    parser.add_argument("--correction", default=None,
                        help="a correction network file (taplab train --model conet, taplab adapt) for the rows with "
                             "fusion, instead of the shipped one")
    parser.add_argument("--correction-kind", default="dmnet", choices=("dmnet", "twnet"),
                        help="the kind of --correction (twnet: taplab adapt --kind twnet's)")
    args = parser.parse_args()
    combinations, fusion_weights = COMBINATIONS, FUSION_WEIGHTS
    if args.correction:
        given = {"correction": args.correction, "correction_kind": args.correction_kind}
        combinations = {k: {**v, **given} for k, v in combinations.items()}
        fusion_weights = {k: {**v, **given} for k, v in fusion_weights.items()}
    fixed = {k: v for k, v in (("key_blend", args.key_blend), ("fusion_memory", args.fusion_memory)) if v is not None}

    def blended(variants: dict[str, dict]) -> dict[str, dict]:
        """``--key-blend``, ``--fusion-memory`` on every warping variant (0: the figures taken before them)."""
        return {k: v if v.get("ffw") is False else {**v, **fixed} for k, v in variants.items()}

    if not args.skip_speed:
        speed(args.frames, args.labels,
              blended({"per-frame": dict(ffw=False), **MOTION} if args.motion else combinations), args.device)
    if not args.skip_accuracy:
        variants = WARPING if args.warping else fusion_weights if args.fusion_weights else MOTION if args.motion \
            else INTERPOLATION if args.interpolation else RGFS if args.rgfs else combinations
        accuracy(args.clips, args.labels, blended(variants), args.device)


if __name__ == "__main__":
    main()
