"""The summary of a run: frames by kind, frames/s, time per stage; latency where it means something."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from taplab.runtime.result import KINDS, FrameResult, Kind


@dataclass
class RunSummary:
    """Totals of a run: frames by kind, wall time, seconds per stage (summed over frames), latencies.

    ``live``: whether latency, from a frame's arrival to its result, means something and is reported:
    :func:`taplab.segment` sets it for live sources, files paced at their frame rate and runs under a
    latency budget (on a file read as fast as it decodes, latency is mostly queueing); a summary made
    by hand reports what it is given. ``outputs`` names what was written (``{"masks": folder,
    "overlay video": path}``); ``notes``, lines such as why a stream is warped with optical flow.
    """

    frames: int = 0
    total: int | None = None  # frames expected, where the container says (and the limit allows)
    kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # of the frames with output
    shed: int = 0  # frames that left modules out to keep a latency budget
    live: bool = True
    outputs: dict[str, str] = field(default_factory=dict)
    motions: dict[str, int] = field(default_factory=dict)  # motion source -> frames it warped
    notes: list[str] = field(default_factory=list)  # what the user should know of the run (a codec without vectors)
    check: dict | None = None  # the self-check's last record (FrameResult.check): what the warped frames got, and why

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.kinds[result.kind] = self.kinds.get(result.kind, 0) + 1
        self.shed += bool(result.shed)
        if result.check is not None:
            self.check = result.check
        if result.motion is not None:
            self.motions[result.motion] = self.motions.get(result.motion, 0) + 1
        if result.latency is not None and result.labels is not None:
            self.latencies.append(result.latency)
        for stage, t in result.timings.items():
            self.stages[stage] = self.stages.get(stage, 0.0) + t

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def skipped(self) -> int:
        return self.kinds.get(Kind.SKIP.value, 0)

    @property
    def key_share(self) -> float:
        """The share of frames whose CNN ran on the whole frame (held key frames included)."""
        keyed = [k for k in Kind if k.is_key or k is Kind.HOLD]
        return sum(self.kinds.get(k.value, 0) for k in keyed) / max(self.frames, 1)

    def to_dict(self) -> dict:
        """The summary as JSON-ready values (``summary.json``): counts, seconds, frames/s, the key-frame share, ms per
        frame per stage, and latency percentiles where :attr:`live`."""
        record = {"frames": self.frames, "total": self.total, "seconds": round(self.seconds, 3),
                  "fps": round(self.fps, 2), "key_share": round(self.key_share, 4), "kinds": dict(self.kinds),
                  "ms_per_frame": {k: round(1000 * v / max(self.frames, 1), 2) for k, v in self.stages.items()},
                  "motion": dict(self.motions), "self_check": self.check, "notes": list(self.notes),
                  "outputs": dict(self.outputs)}
        if self.live and self.latencies:
            p50, p95 = np.percentile(self.latencies, [50, 95])
            record["latency_ms"] = {"p50": round(1000 * p50, 1), "p95": round(1000 * p95, 1),
                                    "max": round(1000 * max(self.latencies), 1), "shed": self.shed,
                                    "skipped": self.skipped}
        return record

    def format(self) -> str:
        kinds = ", ".join(f"{k} {self.kinds[k]}" for k in KINDS if k in self.kinds)
        stages = ", ".join(f"{k} {1000 * v / max(self.frames, 1):.1f}" for k, v in self.stages.items())
        text = (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s), "
                f"key frames {100 * self.key_share:.0f}%\nby kind: {kinds}\nms per frame: {stages}")
        if self.motions:
            text += "\nmotion: " + ", ".join(f"{_motion_name(k)} on {n} frames" for k, n in self.motions.items())
        if self.check is not None:
            text += (f"\nself-check ({self.check['probes']} key frames): fidelity to the CNN "
                     f"{_scores(self.check['fidelity'])}; warped frames get: {self.check['kept']}")
            if self.check.get("behind"):  # stages far behind, which fewer probes apply
                text += f"; far behind, probed less often: {_scores(self.check['behind'])}"
        if self.live and self.latencies:
            p50, p95 = np.percentile(self.latencies, [50, 95])
            text += (f"\nlatency (arrival to result, frames with output): p50 {1000 * p50:.0f} ms, "
                     f"p95 {1000 * p95:.0f} ms, max {1000 * max(self.latencies):.0f} ms; frames that shed modules: "
                     f"{self.shed}, skipped: {self.skipped}")
        for note in self.notes:
            text += f"\nnote: {note}"
        for what, where in self.outputs.items():
            text += f"\n{what}: {where}"
        return text


def _motion_name(source: str) -> str:
    return {"codec": "the codec's vectors", "truth": "ground-truth flow"}.get(source, f"optical flow ({source})")


def _scores(fidelity: dict[str, float | None]) -> str:
    """A self-check record's fidelity per combination, as the summary line writes it."""
    return ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} -" for k, v in fidelity.items())
