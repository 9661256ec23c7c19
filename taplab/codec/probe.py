"""A summary of a video's compressed-domain structure: GOP pattern, vectors, residuals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from taplab.codec.reader import open_video


@dataclass
class ProbeResult:
    source: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int
    block: int
    pict_types: str  # one letter per frame in display order, e.g. "IPPPPPPPPPPPIPP..."
    exports_vectors: bool = True  # whether the codec exports motion vectors (taplab.codec.motion.VECTOR_CODECS)
    vectors: list[int] = field(default_factory=list)  # blocks with a past vector, per frame
    mean_residual: list[float] = field(default_factory=list)  # mean |Y - MC(Y_ref)| per frame, in grey levels

    @property
    def gops(self) -> list[int]:
        """Length of each GOP (frames from one I-frame to the next)."""
        starts = [i for i, t in enumerate(self.pict_types) if t == "I"] or [0]
        ends = starts[1:] + [len(self.pict_types)]
        return [e - s for s, e in zip(starts, ends)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gops"] = self.gops
        return d

    def _motion_text(self) -> str:
        if self.exports_vectors:
            return "vectors exported by the codec"
        return (f"{self.codec} exports no motion vectors (taplab estimates them by optical flow, docs/codec.md); "
                "the residual below is the zero-motion difference")

    def format(self, width: int = 72) -> str:
        counts = {t: self.pict_types.count(t) for t in "IPB"}
        gops = self.gops
        gop_text = f"{min(gops)}" if min(gops) == max(gops) else f"{min(gops)}..{max(gops)}"
        pattern = self.pict_types if len(self.pict_types) <= width else self.pict_types[:width] + "..."
        lines = [
            f"source    {self.source}",
            f"codec     {self.codec}, {self.width}x{self.height}, {self.fps:g} fps, {self.frames} frames",
            f"types     I {counts['I']}, P {counts['P']}, B {counts['B']}; GOP {gop_text}",
            f"pattern   {pattern}",
            f"block     {self.block} px grid",
            f"motion    {self._motion_text()}",
            "",
            "frame  type  vectors  mean residual",
        ]
        for i, (t, n, r) in enumerate(zip(self.pict_types, self.vectors, self.mean_residual)):
            lines.append(f"{i:5d}  {t:>4}  {n:7d}  {r:13.2f}")
        return "\n".join(lines)


def probe(source, backend: str = "pyav", progress=None) -> ProbeResult:
    """Read a whole video once (no RGB conversion) and summarise it. ``progress(n)`` is called per frame."""
    with open_video(source, backend=backend) as video:
        result = ProbeResult(video.name, video.codec, video.width, video.height, video.fps, 0, video.block, "",
                             video.exports_vectors)
        types = []
        for frame in video:
            types.append(frame.pict_type)
            result.vectors.append(0 if frame.motion is None else int(frame.motion.valid.sum()))
            result.mean_residual.append(round(float(frame.residual.mean()), 3))
            if progress is not None:
                progress(1)
        result.pict_types = "".join(types)
        result.frames = len(types)
    return result
