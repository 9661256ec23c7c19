"""Fuzzing the reader: seeded mutations of real encoded streams, each read by the CLI in a subprocess with a timeout.

    python -m tests.fuzz.harness [--cases 1000] [--seed 0] [--timeout 60] [--command probe|segment] [--keep DIR]

Sources: a 24-frame 128x256 clip encoded here (taplab's encoder settings) in every codec taplab encodes, MPEG-4
Part 2, H.264, HEVC, VP9 and MPEG-2, each in MP4, in MPEG-TS (VP9 excepted: MPEG-TS does not carry it) and as a raw
elementary stream (``.m4v``, ``.h264``, ``.hevc``, ``.m2v``; VP9's raw form, IVF); and where ../shared/data/real is
present, the first 36 packets of the real 720p clips copied into MP4 (both) and MPEG-TS (H.264). Each case takes
one source and one seeded mutation:

- ``flip``: 1-64 random bytes replaced;
- ``truncate``: the file cut at a random point;
- ``splice``: a random chunk of the file copied over another place;
- ``zero``: a random run of up to 4 KB set to zero;
- ``head``: random bytes in the first 512 (the container's header).

The command (``taplab probe FILE``, which decodes every frame with its vectors and residual, or ``taplab
segment FILE --out DIR``) runs in its own process. The outcome is one of: ``ok`` (exit 0), ``error`` (exit 2
with one ``error:`` line and no traceback: taplab's promise for bad input), ``traceback`` (anything else
that exited), ``signal`` (killed by a signal: a crash) and ``hang`` (over the timeout). The table counts
them; every case that breaks the promise is listed with its seed, so that it can be replayed.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MUTATIONS = ("flip", "truncate", "splice", "zero", "head")
PROMISE = ("ok", "error")


@dataclass(frozen=True)
class Case:
    index: int
    source: str
    mutation: str
    outcome: str
    detail: str


#: codec -> (FFmpeg's raw muxer, the raw file's suffix, the container its stream is copied from): from MPEG-TS, whose
#: MPEG-4 Part 2 stream carries its headers in-band (copied from MP4 it would lack them, and not decode); VP9,
#: which MPEG-TS does not carry, from MP4 into IVF
RAW = {"mpeg4": ("m4v", "m4v", "ts"), "h264": ("h264", "h264", "ts"), "hevc": ("hevc", "hevc", "ts"),
       "mpeg2": ("mpeg2video", "m2v", "ts"), "vp9": ("ivf", "ivf", "mp4")}


def sources(folder: Path) -> dict[str, bytes]:
    """The streams mutated: the clip encoded here in each codec of :data:`RAW` (every one taplab encodes), in MP4,
    in MPEG-TS (not VP9) and raw; and, where the real clips are beside the checkout (tests/conftest.py's REAL),
    their first 36 packets copied into MP4 and MPEG-TS (the real encoders' streams and metadata, no re-encoding)."""
    from taplab.codec import encode
    from taplab.codec.loopback import mpegts_clip
    from tests.conftest import DX, DY, REAL, translation_frames

    frames = translation_frames(24, 128, 256, DX, DY)
    out = {}
    for codec, (muxer, suffix, origin) in RAW.items():
        out[f"{codec}.mp4"] = encode(frames, folder / f"{codec}.mp4", gop=12, codec=codec).read_bytes()
        if codec != "vp9":
            out[f"{codec}.ts"] = mpegts_clip(frames, codec=codec).data
            (folder / f"{codec}.ts").write_bytes(out[f"{codec}.ts"])  # the raw stream's origin
        out[f"{codec}.{suffix}"] = _remuxed(folder / f"{codec}.{origin}", folder / f"{codec}.{suffix}", muxer, 24)
    # MPEG-4 Part 2 copied into MPEG-TS lacks its in-band headers (it would need FFmpeg's dump_extra filter)
    for clip, containers in (("vid_mpeg4_part2.mp4", ("mp4",)), ("vid_h264.mp4", ("mp4", "mpegts"))):
        if (REAL / clip).exists():
            for container in containers:
                name = f"real-{Path(clip).stem}.{'ts' if container == 'mpegts' else 'mp4'}"
                out[name] = _remuxed(REAL / clip, folder / name, container, 36)
    return out


def _remuxed(src: Path, dst: Path, container: str, packets: int) -> bytes:
    """The first ``packets`` video packets of ``src`` copied into ``container`` (stream copy)."""
    import av

    with av.open(str(src)) as reader, av.open(str(dst), "w", format=container) as writer:
        stream = reader.streams.video[0]
        copy = writer.add_stream_from_template(stream)
        for k, packet in enumerate(reader.demux(stream)):
            if k >= packets or packet.dts is None:
                break
            packet.stream = copy
            writer.mux(packet)
    return dst.read_bytes()


def mutate(data: bytes, mutation: str, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    n = len(b)
    if mutation == "flip":
        for p in rng.integers(0, n, rng.integers(1, 65)):
            b[p] = int(rng.integers(0, 256))
    elif mutation == "truncate":
        b = b[: int(rng.integers(1, n))]
    elif mutation == "splice":
        size = int(rng.integers(16, max(17, n // 8)))
        src, dst = (int(v) for v in rng.integers(0, n - size, 2))
        b[dst:dst + size] = data[src:src + size]
    elif mutation == "zero":
        start, size = int(rng.integers(0, n)), int(rng.integers(1, 4096))
        b[start:start + size] = bytes(len(b[start:start + size]))
    elif mutation == "head":
        for p in rng.integers(0, min(512, n), rng.integers(1, 9)):
            b[p] = int(rng.integers(0, 256))
    return bytes(b)


def outcome(result: subprocess.CompletedProcess | None) -> tuple[str, str]:
    """The case's outcome and the line that says why."""
    if result is None:
        return "hang", ""
    err = result.stderr.decode(errors="replace").strip()
    last = err.splitlines()[-1] if err else ""
    if result.returncode < 0:
        return "signal", f"signal {-result.returncode}"
    if result.returncode == 0:
        return "ok", ""
    if result.returncode == 2 and "Traceback" not in err and last.startswith("error: "):
        return "error", last
    return "traceback", last


def run(cases: int, seed: int, timeout: float, command: str, keep: Path | None = None) -> list[Case]:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        streams = sources(folder)
        names = sorted(streams)
        results = []
        for index in range(cases):
            name, mutation = names[index % len(names)], MUTATIONS[(index // len(names)) % len(MUTATIONS)]
            path = folder / f"case{index}{Path(name).suffix}"
            path.write_bytes(mutate(streams[name], mutation, rng))
            args = [sys.executable, "-m", "taplab.cli", command, str(path)]
            if command == "segment":
                args += ["--out", str(folder / f"out{index}")]
            try:
                result = subprocess.run(args, capture_output=True, timeout=timeout, cwd=folder)
            except subprocess.TimeoutExpired:
                result = None
            kind, detail = outcome(result)
            results.append(Case(index, name, mutation, kind, detail))
            if kind not in PROMISE and keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / path.name).write_bytes(path.read_bytes())
            path.unlink()
        return results


def table(results: list[Case]) -> str:
    counts = collections.Counter(r.outcome for r in results)
    lines = ["| outcome | cases |", "|---|---:|"] + [f"| {k} | {counts.get(k, 0)} |"
                                                     for k in ("ok", "error", "traceback", "signal", "hang")]
    broken = [r for r in results if r.outcome not in PROMISE]
    lines += [f"- case {r.index} ({r.source}, {r.mutation}): {r.outcome}: {r.detail}" for r in broken]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--command", choices=["probe", "segment"], default="probe")
    parser.add_argument("--keep", type=Path, default=None, help="copy the cases that break the promise here")
    args = parser.parse_args()
    results = run(args.cases, args.seed, args.timeout, args.command, args.keep)
    print(f"## {args.cases} mutated streams, seed {args.seed}, `taplab {args.command}`, timeout {args.timeout:g} s\n")
    print(table(results))


if __name__ == "__main__":
    main()
