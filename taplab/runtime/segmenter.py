"""``Segmenter``: TapLab's Algorithm 1 over any video and any model.

Per frame, in display order, :mod:`taplab.runtime.decide` decides what to do (a key frame: the CNN on
the whole frame; or FFW: the key frame's features warped along the frame's motion, then corrected by
fusion and RGC) and :mod:`taplab.runtime.scheduler` does it, with the maths of :mod:`taplab.ops`.
docs/runtime.md lists the kinds of frames and the measurements behind the defaults.

The segmenter yields results; writing them (files, logs, an overlay video) is for the sinks of
:mod:`taplab.io` and :func:`taplab.segment`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator

from taplab.codec import open_video
from taplab.codec.reader import Frame, Video
from taplab.errors import ConfigError, LatencyWarning, TapLabError, TapLabWarning
from taplab.nets.conet import Correction, load_correction
from taplab.nets.loader import Model, load_model
from taplab.nets.twnet import Tamed, is_tamed, load_tamed
from taplab.nets.zoo import find_correction
from taplab.runtime.config import RuntimeConfig
from taplab.runtime.prefetch import prefetch
from taplab.runtime.result import FrameResult
from taplab.runtime.scheduler import Scheduler
from taplab.threads import ThreadGovernor, apply_threads


class Segmenter:
    """Segments videos with a model, accelerated by the codec's motion vectors and residuals.

    ``Segmenter(model="default", device="auto", config=None, **options)``: ``model`` is anything
    :func:`taplab.load_model` accepts, on ``device`` (``"auto"``: the GPU where torch sees one);
    ``config`` a :class:`RuntimeConfig` (or a dict of its fields; default: :meth:`RuntimeConfig.for_model`, an
    adapted model's options, else the defaults), and ``options`` override single fields
    (``Segmenter(rgc=False)``, ``Segmenter(rgfs_rate=0.1)``: the same rules as :meth:`RuntimeConfig.replace`).
    With ``ffw=False`` it is the per-frame baseline: the CNN on every frame.
    """

    def __init__(self, model="default", device: str = "auto", config: RuntimeConfig | dict | None = None,
                 prefetch_depth: int = 8, **options):
        if config is None:
            config = RuntimeConfig.for_model(model)
        elif isinstance(config, dict):
            config = RuntimeConfig.from_dict(config)
        self.config = config.replace(**options) if options else config
        apply_threads(self.config.threads)  # before any engine session or decoder is made: they read the plan
        self.model: Model = load_model(model, device=device, engine=self.config.engine)
        if self.config.warp_layer == "features" and not self.model.has_split:
            raise ConfigError(f"warp_layer='features' needs a model with features()/head(); {self.model.source} has none")
        self.correction = self._correction()
        self.prefetch_depth = prefetch_depth

    def _correction(self) -> Correction | Tamed | None:
        """The correction network fusion uses, of ``correction_kind``; None when fusion is off (or, in auto mode,
        unavailable)."""
        cfg = self.config
        if cfg.fusion is False or not cfg.ffw or (cfg.fusion is None and cfg.warp_layer != "logits"):
            return None
        twnet = cfg.correction_kind == "twnet"
        path = cfg.correction or find_correction(self.model.source, cfg.correction_kind)
        if path is None:
            if cfg.fusion is None:
                return None
            train = "`taplab adapt MODEL VIDEO... --kind twnet`" if twnet else "`taplab train --model conet`"
            raise ConfigError(f"fusion needs a correction network{' (twnet)' if twnet else ''}; the model "
                              f"{self.model.source} has none: pass correction=FILE (train one with {train}) or "
                              "fusion=False")
        found = "twnet" if is_tamed(path) else "dmnet"
        if found != cfg.correction_kind:
            raise ConfigError(f"{path} is a {found} correction network, but correction_kind is {cfg.correction_kind!r}")
        correction = load_tamed(path, self.model.device) if twnet else \
            load_correction(path, self.model.device, self.config.engine)
        correction.check(self.model)
        return correction

    def check(self, video: Video, truth_flow=None) -> None:
        """Raise what a run over the open ``video`` would raise before its first frame (the model's geometry at
        this size, the motion source's needs), without reading a frame: so that writers fail before they
        create anything."""
        Scheduler(self.model, self.config, video.height, video.width, correction=self.correction,
                  truth_flow=truth_flow).close()

    @property
    def fusion(self) -> bool:
        """Whether this segmenter fuses warped frames with a correction network."""
        return self.correction is not None

    def run(self, source, logits: bool = False, images: bool = False, details: bool = False,
            truth_flow=None, live: bool = False) -> Iterator[FrameResult]:
        """Segment every frame of ``source`` in display order: anything :func:`taplab.open_video`
        accepts, or a :class:`~taplab.codec.reader.Video` it opened (read from, then left to its owner
        to close; a live stream is then connected once).

        ``logits`` and ``images`` attach the logits and the decoded frame to every result, ``details``
        the warped logits and the distortion map to the warped frames' results. ``truth_flow`` (per
        frame, backward flow in pixels to the previous frame, as ``taplab synth`` writes it) is the
        motion of ``motion_source="truth"``: the ground-truth-flow upper bound on synthetic clips.

        ``live`` paces a file at its frame rate, as a camera would deliver it. Every result records
        its ``latency``, from the frame's arrival (decoded) to the result. A ``latency_budget`` is
        kept by the policy of :mod:`taplab.runtime.latency`: key frames over budget in the background,
        then modules shed, then late frames skipped (``FrameResult.shed``, ``kind="skip"``)."""
        owned = not isinstance(source, Video)
        video = open_video(source) if owned else source
        if self.config.latency_budget is not None and not (live or video.live):
            warnings.warn(f"a latency budget on {video.name}, read without live pacing: its frames arrive as fast as "
                          "they decode, so the warped frames that fall behind are skipped (pace it with live=True, "
                          "--live)", LatencyWarning, stacklevel=2)
        if self.config.ffw and self.config.motion_source == "codec" and not video.exports_vectors:
            warnings.warn(f"{video.name}: {video.codec} exports no motion vectors, so with motion_source='codec' every "
                          "frame runs the CNN (motion_source='auto' warps with optical flow instead)",
                          TapLabWarning, stacklevel=2)

        def start(height: int, width: int) -> Scheduler:
            return Scheduler(self.model, self.config, height, width, want_images=images, correction=self.correction,
                             details=details, truth_flow=truth_flow, want_logits=logits, live=live or video.live)

        try:
            if self.config.ffw and self.config.motion_source == "auto":
                video.estimate_motion(self.config.motion_fallback)  # nothing for a codec that exports vectors
            run = start(video.height, video.width)
        except BaseException:
            if owned:
                video.close()
            raise
        # prepare() computes what one frame needs from that frame alone (its residual, its image), so the first run's
        # serves the frames of a stream that changes size too
        frames = prefetch(_timed(video, live), self.prefetch_depth, run.prepare)
        governor = ThreadGovernor.for_run(self.config.threads)
        try:
            try:
                for frame, prep in frames:
                    if governor is not None:
                        governor.tick()
                    if (frame.height, frame.width) != run.size:  # the stream changed size (the reader warned):
                        yield from run.flush()  # a new run, sized anew, whose first frame is a key frame
                        run.close()
                        run = start(frame.height, frame.width)
                    arrival = prep.pop("arrival")
                    yield from run.step(frame, prep, arrival, newer=frames.waiting > 0)
            except TapLabError:  # the source failed (a decode error, a lost connection): the held frames first
                yield from run.flush()
                raise
            yield from run.flush()
        finally:
            video.interrupt()  # a read waiting on the source (a followed file) returns now
            if not frames.close():  # the decoding thread, stopped and joined before the video closes under it
                video.abandon()  # still blocked in a network read: closing the decoder now would pull it away
            run.close()
            if governor is not None:
                governor.close()
            if owned:
                video.close()


def _timed(video, live: bool = False) -> Iterator[tuple[Frame, dict]]:
    """Frames with the seconds their decoding took (measured in the decoding thread) and the time they
    arrived (``perf_counter``); with ``live``, no frame arrives before its time at the video's frame rate."""
    it = iter(video)
    interval = 1 / (video.fps or 25.0)
    origin = None
    while True:
        start = time.perf_counter()
        try:
            frame = next(it)
        except StopIteration:
            return
        decode = time.perf_counter() - start
        if live:
            origin = start if origin is None else origin
            wait = origin + frame.index * interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        yield frame, {"decode": decode, "arrival": time.perf_counter()}


__all__ = ["FrameResult", "Segmenter"]
