"""A live stream with bounded latency: the real 1280x720 clip served on loopback at 25 frames/s.

    python benchmarks/bench_stream.py [--frames 150] [--budget 0.1] [--protocol tcp|rtsp|rtsp-udp|http]
                                      [--codec mpeg4|h264] [--source-option KEY=VALUE]

The first ``--frames`` frames of the real MPEG-4 clip in ../shared/data/real, re-encoded as MPEG-4
Part 2 (or H.264) GOP 12 in MPEG-TS (taplab's encoder settings), served on 127.0.0.1 at real-time pace, each
frame at its time (taplab.codec.loopback), and read by ``taplab.stream`` with the default model,
with and without fusion. Per configuration: frames read per second over the whole stream
(connection included; 25 is keeping up), frames with output, latency (arrival to result)
p50/p95/max of those, frames held (key frames over budget), frames that shed modules, frames
skipped (no output) before the first output (the first key frame's CNN had not finished) and after it
(late, with a newer frame waiting), and fidelity (mIoU of the output frames against the per-frame labels of the same
stream read from a file).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import taplab
from taplab.codec import open_video
from taplab.codec.loopback import mpegts_clip, serve_http, serve_rtsp, serve_tcp
from taplab.metrics import fidelity
from taplab.runtime import Segmenter

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "vid_mpeg4_part2.mp4"
PROTOCOLS = {  # clip -> (URL, FFmpeg options)
    "tcp": lambda clip: (f"tcp://127.0.0.1:{serve_tcp(clip)}", None),
    "rtsp": lambda clip: (f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live", None),
    "rtsp-udp": lambda clip: (f"rtsp://127.0.0.1:{serve_rtsp(clip)}/live", {"rtsp_transport": "udp"}),
    "http": lambda clip: (f"http://127.0.0.1:{serve_http(clip)}/live.ts", None),
}
CONFIGS = {"all modules, no fusion": dict(fusion=False), "all modules with fusion": dict(fusion=True),
           "FFW only": dict(rgc=False, rgfs=False, fusion=False)}


def connect(clip, protocol: str, extra: list[str]) -> tuple[str, dict]:
    """A fresh server for ``clip``: its URL and the FFmpeg options to read it with."""
    url, options = PROTOCOLS[protocol](clip)
    return url, {**(options or {}), **dict(item.split("=", 1) for item in extra)}


def opening(clip, protocol: str, extra: list[str]) -> float:
    """Seconds from connecting to the first decoded frame (FFmpeg probes the stream first)."""
    url, source_options = connect(clip, protocol, extra)
    start = time.perf_counter()
    with open_video(url, options=source_options) as video:
        next(iter(video))
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--device", default="cpu", help="cpu (the figures docs/live.md quotes), cuda or auto")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="tcp")
    parser.add_argument("--codec", choices=["mpeg4", "h264"], default="mpeg4")
    parser.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an FFmpeg option for the stream, e.g. fpsprobesize=0 (repeatable)")
    args = parser.parse_args()
    with open_video(REAL) as video:
        frames = [f.image for _, f in zip(range(args.frames), video)]
    clip = mpegts_clip(frames, fps=25, gop=12, codec=args.codec)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.ts"
        path.write_bytes(clip.data)
        start = time.perf_counter()
        per_frame = [r.labels for r in Segmenter("default", device=args.device, ffw=False).run(path)]
        cnn_ms = 1000 * (time.perf_counter() - start) / len(per_frame)
    print(f"## {len(frames)} frames of {REAL.name} at 1280x720, {args.codec} GOP 12, 25 frames/s over loopback {args.protocol}, "
          f"latency budget {args.budget * 1000:.0f} ms; the per-frame CNN alone: {cnn_ms:.0f} ms a frame; "
          f"opening (connection to first frame): {opening(clip, args.protocol, args.source_option):.2f} s\n")
    print("| configuration | frames/s read | frames out | latency p50 ms | p95 ms | max ms | held | shed "
          "| skipped (at the start + later) | fidelity % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, options in CONFIGS.items():
        url, source_options = connect(clip, args.protocol, args.source_option)
        results, start = [], time.perf_counter()
        with taplab.stream(url, latency_budget=args.budget, reconnect=False, source_options=source_options,
                           device=args.device, **options) as s:
            results = list(s)
        elapsed = time.perf_counter() - start
        shown = [r for r in results if r.labels is not None]  # skipped frames have no output
        later = sum(r.labels is None and r.index > shown[0].index for r in results)
        lat = np.array([r.latency for r in shown]) * 1000
        fid = fidelity([r.labels for r in shown], [per_frame[r.index] for r in shown], 19)
        print(f"| {name} | {len(results) / elapsed:.1f} | {len(shown)}/{len(results)} | {np.percentile(lat, 50):.0f} | "
              f"{np.percentile(lat, 95):.0f} | "
              f"{lat.max():.0f} | {sum(r.kind == 'hold' for r in results)} | {sum(bool(r.shed) for r in results)} | "
              f"{len(results) - len(shown) - later} + {later} | {100 * fid:.1f} |", flush=True)


if __name__ == "__main__":
    main()
