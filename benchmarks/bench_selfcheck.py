"""The self-check's rule (taplab/runtime/selfcheck.py) at other settings: fidelity on the real streams, and what it chose.

    python benchmarks/bench_selfcheck.py [--streams h264-b,hevc,vp9,mpeg4] [--margins 1,2] [--min-probes 1,2]
                                         [--behind 4,inf]

Per stream (those of benchmarks/bench_streams.py; ``vp9`` is encoded here from the H.264 clip), the default
model runs on every frame first: its labels are the reference of fidelity (mIoU % of each run's labels
against them, over the whole stream). Then the default configuration with the self-check's ``MARGIN``,
``MIN_PROBES`` and ``BEHIND`` set to each combination given (module constants, set here for the
measurement only; ``BEHIND`` inf: every probe applies every stage, as before the rule), and the default
configuration without the check and without either correction, for scale. ``warped frames`` counts the
warped frames by the stages they got; ``probes`` the probes and, of them, those that applied the correction
network (``fused``). Fidelity and counts only: speed is bench_streams.py's.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections import Counter
from pathlib import Path

from bench_streams import STREAMS, stream_path

import taplab.runtime.selfcheck as selfcheck
from taplab.metrics import fidelity
from taplab.runtime import Segmenter
from taplab.runtime.corrections import Corrections
from taplab.runtime.result import Module


def run(options: dict, path: Path, reference: list) -> tuple[float, Counter, str]:
    """Fidelity (%) of a run of the default configuration with ``options`` against ``reference``, its warped
    frames by kind, and its probes (and how many applied fusion)."""
    segmenter = Segmenter("default", device="cpu", **options)
    fused = []
    variants = Corrections.variants

    def counted(self, *args):
        out = variants(self, *args)
        fused.append(any(Module.FUSION in mods for mods in out))
        return out

    Corrections.variants = counted
    try:
        results = list(segmenter.run(path))
    finally:
        Corrections.variants = variants
    score = fidelity([r.labels for r in results], reference, segmenter.model.num_classes)
    return 100 * score, Counter(str(r.kind) for r in results if not r.is_key), f"{len(fused)}, fused {sum(fused)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="h264-b,hevc,vp9,mpeg4")
    parser.add_argument("--margins", default="1,2", help="MARGIN values (fidelity points)")
    parser.add_argument("--min-probes", default="1,2", help="MIN_PROBES values")
    parser.add_argument("--behind", default="4,inf", help="BEHIND values (fidelity points; inf: the rule off)")
    args = parser.parse_args()
    settings = list(itertools.product([float(m) for m in args.margins.split(",")],
                                      [int(n) for n in args.min_probes.split(",")],
                                      [float(b) for b in args.behind.split(",")]))
    print("| stream | configuration | fidelity % | warped frames | probes |\n|---|---|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.streams.split(","):
            if name not in STREAMS:
                raise SystemExit(f"unknown stream {name!r}; one of {', '.join(STREAMS)}")
            path = stream_path(name, Path(tmp))
            reference = [r.labels for r in Segmenter("default", device="cpu", ffw=False).run(path)]
            runs = {f"self-check, margin {m:g}, min probes {n}, behind {b:g}": ((m, n, b), {}) for m, n, b in settings}
            runs["no self-check"] = (None, dict(self_check=False))
            runs["no fusion, no RGC"] = (None, dict(fusion=False, rgc=False))
            for label, (rule, options) in runs.items():
                saved = selfcheck.MARGIN, selfcheck.MIN_PROBES, selfcheck.BEHIND
                if rule is not None:
                    selfcheck.MARGIN, selfcheck.MIN_PROBES, selfcheck.BEHIND = rule
                try:
                    score, kinds, probes = run(options, path, reference)
                finally:
                    selfcheck.MARGIN, selfcheck.MIN_PROBES, selfcheck.BEHIND = saved
                warped = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
                print(f"| {name} | {label} | {score:.1f} | {warped} | {probes} |", flush=True)


if __name__ == "__main__":
    main()
