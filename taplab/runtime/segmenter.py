"""``Segmenter``: TapLab's Algorithm 1 over any video and any model.

Per frame, in display order (the scheduler decides; the maths is in :mod:`taplab.ops`):

- I-frames are key frames: the CNN runs on the whole frame (``kind = "key-I"``).
- Frames without usable past vectors (the first frame, codecs that export none, B-frames under
  the default policy) are key frames too (``"key"``).
- P-frames whose residual score exceeds the RGFS threshold are key frames (``"key-RGFS"``).
- Other P-frames: the previous frame's features are warped with the frame's vectors (FFW,
  ``"warp"``); with fusion, a correction network's output replaces the warped logits where the
  distortion map says warping failed (``"fused"``); with RGC, the CNN re-runs on the candidate
  region with the most residual and is blended in (``"warp+RGC"``, ``"fused+RGC"``).

By default the motion is composed back to the last key frame and the key frame's features are
warped once per frame (:func:`taplab.ops.warp.compose`), with bilinear sampling; chaining warps
from frame to frame (``propagation="chain"``) loses accuracy with every step, most with nearest
sampling, which drops each step's sub-cell motion. docs/runtime.md has the measurements.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from taplab.codec import open_video
from taplab.codec.reader import Frame, Video
from taplab.data.transforms import to_tensor
from taplab.errors import ConfigError, LatencyWarning
from taplab.nets.conet import Correction, load_correction
from taplab.nets.loader import Model, load_model, logits_to_labels
from taplab.nets.zoo import find_correction
from taplab.ops.flow import OpticalFlow
from taplab.ops.fusion import coarse_distortion, distortion_map, fuse, residual_map
from taplab.ops.labels import upsample_labels
from taplab.ops.regions import RateSelector, Region, candidate_regions, residual_score, select_region
from taplab.ops.warp import GridFlow, compose, motion_to_grid, warp, warp_blocks, zero_flow
from taplab.runtime.config import RuntimeConfig
from taplab.runtime.prefetch import prefetch

KINDS = ("key-I", "key", "key-RGFS", "hold", "warp", "warp+RGC", "fused", "fused+RGC", "skip")


@dataclass
class FrameResult:
    """What the runtime made of one frame.

    Attributes:
        index, pict_type: the frame's display index and picture type (I/P/B).
        kind: one of :data:`KINDS`: what was done to it. ``"skip"`` (only under a latency budget): no
            output for this frame, its motion kept for the frames after it.
        labels: (H, W) uint8 class ids at the source resolution; None for ``"skip"`` frames.
        logits: (C, h, w) float tensor at the model's stride, when ``run(..., logits=True)``.
        residual_score: mean absolute luma residual per pixel (8-bit levels), where it was computed.
        region: the RGC region (pixels), for ``"warp+RGC"`` and ``"fused+RGC"`` frames.
        distorted: share of feature cells the warp could not fill (no vector, or source out of frame).
        timings: seconds per stage (decode, residual, cnn_full, cnn_region, flow (the optical-flow
            baseline), warp, fusion (or details: what ``run(details=True)`` costs without fusion),
            labels; write, added by :func:`segment_to_folder`).
        image: the decoded (H, W, 3) uint8 RGB frame, when ``run(..., images=True)``.
        warped: for warped frames, when ``run(..., details=True)``: the logits (C, h, w) as FFW
            left them, before fusion and RGC (CL, the share of corrected labels, compares with them).
        distortion: likewise: the distortion map (h, w) in [0, 1] that fusion used, or without
            fusion ``M_coarse`` (:func:`taplab.ops.fusion.coarse_distortion`).
        latency: seconds from the frame's arrival (decoded) to this result.
        shed: the modules left out of this frame to keep within its latency budget (``"fusion"``,
            ``"rgc"``; ``"rgfs"``: selected as a key frame while another key frame's CNN was running).
        gap: on a :func:`taplab.stream` result, seconds without frames before it (the source had
            disconnected and was reopened).
        key_index: the key frame whose CNN output this result carries forward: the frame itself for
            key frames; under a latency budget, the previous key frame while a newer one's CNN runs.
    """

    index: int
    pict_type: str
    kind: str
    labels: np.ndarray | None
    logits: torch.Tensor | None = None
    residual_score: float | None = None
    region: Region | None = None
    distorted: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = None
    warped: torch.Tensor | None = None
    distortion: torch.Tensor | None = None
    latency: float | None = None
    shed: tuple[str, ...] = ()
    gap: float | None = None
    key_index: int | None = None

    @property
    def is_key(self) -> bool:
        return self.kind.startswith("key")


class Segmenter:
    """Segments videos with a model, accelerated by the codec's motion vectors and residuals.

    ``Segmenter(model="default", device="cpu", config=None, **options)``: ``model`` is anything
    :func:`taplab.load_model` accepts; ``config`` a :class:`RuntimeConfig` (or a dict of its
    fields), and ``options`` override single fields (``Segmenter(rgc=False)``). With ``ffw=False``
    it is the per-frame baseline: the CNN on every frame.
    """

    def __init__(self, model="default", device: str = "cpu", config: RuntimeConfig | dict | None = None,
                 prefetch_depth: int = 8, **options):
        if config is None:
            config = RuntimeConfig()
        elif isinstance(config, dict):
            config = RuntimeConfig.from_dict(config)
        self.config = RuntimeConfig.from_dict({**config.to_dict(), **options}) if options else config
        self.model: Model = load_model(model, device=device)
        if self.config.warp_layer == "features" and not self.model.has_split:
            raise ConfigError(f"warp_layer='features' needs a model with features()/head(); {self.model.source} has none")
        self.correction = self._correction(device)
        self.prefetch_depth = prefetch_depth

    def _correction(self, device) -> Correction | None:
        """The correction network fusion uses; None when fusion is off (or, in auto mode, unavailable)."""
        cfg = self.config
        if cfg.fusion is False or not cfg.ffw or (cfg.fusion is None and cfg.warp_layer != "logits"):
            return None
        path = cfg.correction or find_correction(self.model.source)
        if path is None:
            if cfg.fusion is None:
                return None
            raise ConfigError(f"fusion needs a correction network; the model {self.model.source} has none: "
                              "pass correction=FILE (train one with `taplab train --model conet`) or fusion=False")
        correction = load_correction(path, device)
        correction.check(self.model)
        return correction

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
        kept by the policy :class:`RuntimeConfig` describes: key frames over budget in the background,
        then modules shed, then late frames skipped (``FrameResult.shed``, ``kind="skip"``)."""
        owned = not isinstance(source, Video)
        video = open_video(source) if owned else source
        if self.config.latency_budget is not None and not (live or video.live):
            warnings.warn(f"a latency budget on {video.name}, read without live pacing: its frames arrive as fast as "
                          "they decode, so the warped frames that fall behind are skipped (pace it with live=True, "
                          "--live)", LatencyWarning, stacklevel=2)
        try:
            run = _Run(self.model, self.config, video.height, video.width, want_images=images,
                       correction=self.correction, details=details, truth_flow=truth_flow)
        except BaseException:
            if owned:
                video.close()
            raise
        frames = prefetch(_timed(video, live), self.prefetch_depth, run.prepare)
        try:
            for frame, prep in frames:
                arrival = prep.pop("arrival")
                result = run.step(frame, prep, arrival, newer=frames.waiting > 0)
                result.latency = time.perf_counter() - arrival
                if logits:
                    result.logits = run.last_logits
                if images:
                    result.image = frame.image
                yield result
        finally:
            video.interrupt()  # a read waiting on the source (a followed file) returns now
            if not frames.close():  # the decoding thread, stopped and joined before the video closes under it
                video.abandon()  # still blocked in a network read: closing the decoder now would pull it away
            run.close()
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


@dataclass
class _KeyJob:
    """A key frame's CNN in the background thread: ``future`` gives (features, seconds); ``carry`` is the
    motion from the current key frame back to this job's frame, None while this job's frame is the current
    key frame (a later key frame took its place while it ran)."""

    future: Future
    index: int
    carry: GridFlow | None = None


class _Run:
    """The state of one run: the anchor's features and motion, and the RGFS selector."""

    def __init__(self, model: Model, cfg: RuntimeConfig, height: int, width: int, want_images: bool = False,
                 correction: Correction | None = None, details: bool = False, truth_flow=None):
        self.model, self.cfg, self.want_images = model, cfg, want_images
        self.correction, self.details = correction, details
        self.height, self.width = height, width
        geometry = model.geometry(height, width)
        self.grid = geometry.size
        # cell i covers pixels [i s, (i + 1) s) whether the model rounds its output size up or down
        self.stride = (geometry.stride, geometry.stride)
        self.regions = candidate_regions(height, width, cfg.rgc_size, cfg.rgc_stride, multiple=geometry.stride)
        self.selector = RateSelector(cfg.rgfs_rate) if cfg.rgfs_mode == "rate" else None
        # The current frame's features, and the state of the last anchor (I- or P-frame), which past
        # vectors point into: its features (the source of a chained warp), the features of the key
        # frame its motion accumulates to, and that motion. B-frames read the anchor state, never write it.
        self.features: torch.Tensor | None = None
        self.anchor_features: torch.Tensor | None = None
        self.key_features: torch.Tensor | None = None
        self.motion_to_key: GridFlow = zero_flow(self.grid)
        self.key_labels: torch.Tensor | None = None  # arg-max of the key frame's logits (M_coarse's reference)
        # a latency budget: the key frame whose CNN runs in the background, what the stages cost
        self.jobs: list[_KeyJob] = []  # key frames' CNNs in the background thread, oldest first
        self.key_index = -1  # the key frame whose CNN output the current features carry
        self.cnn_seconds: float | None = None
        self.costs: dict[str, float] = {}  # stage -> running mean of its seconds (fusion, cnn_region, labels)
        self._executor: ThreadPoolExecutor | None = None
        # the dense-flow baselines: frame -> backward flow in pixels to the last anchor (None: the codec's
        # vectors); optical flow needs the anchor's image, ground truth the clip's flows
        self.anchor_image: np.ndarray | None = None
        self.anchor_index = -1
        self.optical = cfg.motion_source not in ("codec", "truth")
        if cfg.motion_source == "truth":
            if truth_flow is None:
                raise ConfigError("motion_source='truth' needs the clip's flows: run(..., truth_flow=flows)")
            self.dense = lambda frame: self._truth(truth_flow, frame)
        elif self.optical:
            estimator = OpticalFlow(cfg.motion_source)
            self.dense = lambda frame: estimator(frame.image, self.anchor_image)
        else:
            self.dense = None
        self.last_logits: torch.Tensor | None = None

    # -- in the decoding thread: compute what this frame will need, overlapped with inference
    def prepare(self, item: tuple[Frame, dict]) -> None:
        frame, prep = item
        warpable = self._warpable(frame)
        fusing = self.correction is not None or self.details
        if warpable and (self.cfg.rgc or self.cfg.rgfs or fusing):
            start = time.perf_counter()
            frame.residual  # noqa: B018 - cached on the frame
            prep["residual"] = time.perf_counter() - start
        if not warpable or self.cfg.rgc or self.correction is not None or self.optical or self.want_images:
            start = time.perf_counter()
            frame.image  # noqa: B018
            prep["decode"] += time.perf_counter() - start

    def _warpable(self, frame: Frame) -> bool:
        """Whether the frame can be warped: it has past motion, and is a P-frame, or a B-frame where
        B-frames are warped (``b_frames="past"``, or under a latency budget: see ``step``)."""
        if not self.cfg.ffw or frame.pict_type == "I" or (frame.motion is None and self.dense is None):
            return False
        return frame.pict_type == "P" or self.cfg.b_frames == "past" or self.cfg.latency_budget is not None

    def close(self) -> None:
        """Stop the background CNN: a queued one is dropped, a running one is waited for (at most one key
        frame's CNN time) so that no thread outlives the run."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.jobs.clear()

    # -- a latency budget (see RuntimeConfig.latency_budget for the policy)
    def _cost(self, stage: str) -> float:
        """Expected seconds of ``stage`` on this frame: the running mean of its measured times; before
        the first RGC pass, the whole-frame CNN's time scaled by the region's share of the frame."""
        if stage in self.costs:
            return self.costs[stage]
        if stage == "cnn_region" and self.cnn_seconds is not None and self.regions:
            region = self.regions[0]
            return self.cnn_seconds * region.height * region.width / (self.height * self.width)
        return 0.0  # unknown: run it once and measure

    def _measure(self, stage: str, seconds: float) -> None:
        old = self.costs.get(stage)
        self.costs[stage] = seconds if old is None else 0.7 * old + 0.3 * seconds

    def _fits(self, stage: str, deadline: float | None) -> bool:
        """Whether ``stage`` and the labels can still finish by ``deadline``. While a key frame's CNN
        runs in the background nothing optional does: it takes the cores the CNN needs."""
        if deadline is None:
            return True
        return not self.jobs and time.perf_counter() + self._cost(stage) + self._cost("labels") <= deadline

    def _adopt(self) -> bool:
        """Take the background key frames' features that are ready, oldest first, in place of the current
        key frame's stand-in. An older key frame's are first carried to the current key frame (through
        the motion between them); the motion accumulated since the current key frame then carries them
        to the current frame at the next warp. Returns whether any were taken."""
        adopted = False
        while self.jobs and self.jobs[0].future.done():
            job = self.jobs.pop(0)
            if job.future.cancelled():
                continue
            features, self.cnn_seconds = job.future.result()
            if job.carry is not None:
                features, _ = warp(features, job.carry, self.cfg.warp_sampling)
            self.key_features, self.key_labels, self.key_index = features, None, job.index
            adopted = True
        return adopted

    def _submit(self, frame: Frame, to_key: GridFlow) -> _KeyJob:
        """Start a key frame's CNN in the background thread; ``to_key`` is the frame's motion to the current
        key frame, which it replaces. A CNN already running is never dropped (a slow CNN would otherwise
        never finish one): its result will be carried here. One queued and not started is dropped."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="taplab-key")
        for job in self.jobs:
            job.carry = to_key if job.carry is None else compose(to_key, job.carry)
        self.jobs = [job for job in self.jobs if not job.future.cancel()]
        job = _KeyJob(self._executor.submit(self._timed_features, frame.image), frame.index)
        self.jobs.append(job)
        return job

    @torch.inference_mode()
    def _timed_features(self, image: np.ndarray) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        features = self._features(image)
        return features, time.perf_counter() - start

    # -- in the consumer: decide and do
    @torch.inference_mode()
    def step(self, frame: Frame, prep: dict, arrival: float | None = None, newer: bool = False) -> FrameResult:
        """Segment one frame. ``arrival``: when it arrived (``perf_counter``), from which a latency
        budget counts; ``newer``: whether a later frame has already arrived (a late frame is then skipped)."""
        timings = dict(prep)
        budget = self.cfg.latency_budget
        deadline = None if budget is None or arrival is None else arrival + budget
        self._adopt()
        kind, score = self._decide(frame)
        shed: list[str] = []
        anchor = frame.pict_type != "B"
        if kind == "key-RGFS" and deadline is not None and (self.jobs or not anchor):
            kind = "warp"  # one background CNN at a time, and none for a B-frame: it has vectors to warp with
            shed.append("rgfs")
        result = FrameResult(frame.index, frame.pict_type, kind, None, residual_score=score, timings=timings)
        if kind.startswith("key") and deadline is not None and not anchor:
            # a B-frame without past vectors: its CNN in line could hold the output up without bound, and
            # in the background nothing could carry it forward (B-frames are no anchors)
            result.kind = "skip"
        elif kind.startswith("key"):
            result.kind = self._key(frame, kind, deadline, timings)
        elif self.key_features is None or (newer and deadline is not None and time.perf_counter() > deadline):
            # nothing to warp yet (the first key frame's CNN is running), or too late to be worth showing
            # with a newer frame waiting: keep the motion chain intact, produce no output
            result.kind = "skip"
            flow = self._motion(frame, timings)
            if anchor:
                self.motion_to_key = compose(flow, self.motion_to_key)
        else:
            self._warp_step(frame, result, deadline, shed)
        if anchor:
            self.anchor_index = frame.index
            if self.optical:
                self.anchor_image = frame.image
            if self.features is not None:
                self.anchor_features = self.features
        self.last_logits = None
        if result.kind != "skip":
            start = time.perf_counter()
            self.last_logits = self._logits(self.features)
            result.labels = self._labels(self.last_logits)
            timings["labels"] = time.perf_counter() - start
            result.key_index = frame.index if result.kind.startswith("key") else self.key_index
            self._measure("labels", timings["labels"])
        result.shed = tuple(shed)
        return result

    def _decide(self, frame: Frame) -> tuple[str, float | None]:
        """The frame's kind before any budget applies (key-I, key, key-RGFS or warp), and its RGFS score."""
        if frame.pict_type == "I":
            return "key-I", None
        has_source = self.anchor_features is not None or self.key_features is not None or bool(self.jobs)
        if not self._warpable(frame) or not has_source:
            return "key", None
        if not self.cfg.rgfs:
            return "warp", None
        score = residual_score(frame.residual)
        selected = self.selector(score) if self.selector else score > self.cfg.rgfs_threshold
        return ("key-RGFS" if selected else "warp"), score

    def _key(self, frame: Frame, kind: str, deadline: float | None, timings: dict) -> str:
        """The CNN on a key frame: in line; or, with a latency budget, in the background thread, waited for
        while it can still finish within the budget. A key frame over budget shows a stand-in meanwhile:
        the current key frame's features carried to it (through its own vectors where it has them, else
        to the last anchor: the last output without its corrections) (``"hold"``; ``"skip"`` before the
        first key frame's features exist); the stand-in becomes the key frame that the following
        frames' motion accumulates to, until the CNN's features replace it (``_adopt``)."""
        if deadline is None:
            start = time.perf_counter()
            features = self._features(frame.image)
            timings["cnn_full"] = self.cnn_seconds = time.perf_counter() - start
            self._set_key(features, frame.pict_type != "B", frame.index)
            return kind
        to_key = compose(self._motion(frame, timings), self.motion_to_key) if self._warpable(frame) \
            else self.motion_to_key  # no vectors (an I-frame): as the last anchor saw the key frame
        job = self._submit(frame, to_key)
        labels = self._cost("labels")
        if self.cnn_seconds is None or time.perf_counter() + self.cnn_seconds + labels <= deadline:
            try:
                features, seconds = job.future.result(timeout=max(0.0, deadline - labels - time.perf_counter()))
            except FutureTimeout:
                pass
            else:
                self.jobs.clear()  # older ones finished first (one worker), and this one supersedes them
                timings["cnn_full"] = self.cnn_seconds = seconds
                self._set_key(features, True, frame.index)
                return kind
        stand_in = None  # before the first key frame's features: nothing to show
        if self._adopt():  # an older key frame's CNN finished meanwhile: already carried to this frame
            stand_in = self.key_features
        elif self.key_features is not None:
            start = time.perf_counter()
            stand_in, _ = warp(self.key_features, to_key, self.cfg.warp_sampling)
            timings["warp"] = timings.get("warp", 0.0) + time.perf_counter() - start
        self.features = stand_in
        self.key_features, self.motion_to_key, self.key_labels = stand_in, zero_flow(self.grid), None
        return "hold" if stand_in is not None else "skip"

    def _set_key(self, features: torch.Tensor, anchor: bool, index: int) -> None:
        self.features = features
        if anchor:
            self.key_features, self.motion_to_key, self.key_labels = features, zero_flow(self.grid), None
            self.key_index = index

    def _warp_step(self, frame: Frame, result: FrameResult, deadline: float | None, shed: list[str]) -> None:
        """FFW, then fusion and RGC where they fit in the budget (else named in ``shed``)."""
        timings = result.timings
        self.features, mask = self._warp(frame, timings)
        result.distorted = float(mask.float().mean())
        fusing = self.correction is not None and self._fits("fusion", deadline)
        if self.correction is not None and not fusing:
            shed.append("fusion")
        if fusing or self.details:
            start = time.perf_counter()
            warped, distortion = self._fuse(frame, mask, apply=fusing)
            if fusing:
                result.kind = "fused"
            # without fusion this is the cost of run(details=True) alone, which benchmarks leave out
            timings["fusion" if fusing else "details"] = time.perf_counter() - start
            if fusing:
                self._measure("fusion", timings["fusion"])
            if self.details:
                result.warped, result.distortion = warped, distortion
        if self.cfg.rgc and not self._fits("cnn_region", deadline):
            shed.append("rgc")
        elif self.cfg.rgc:
            start = time.perf_counter()
            region, count = select_region(frame.residual, self.regions, self.cfg.rgc_threshold)
            if count > 0:
                self._correct(frame.image, region)
                result.kind += "+RGC"
                result.region = region
                timings["cnn_region"] = time.perf_counter() - start
                self._measure("cnn_region", timings["cnn_region"])
            else:
                timings["cnn_region"] = time.perf_counter() - start

    def _warp(self, frame: Frame, timings: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """FFW: the frame's features warped from the anchor's (chain) or the key frame's (accumulate), and
        the mask of cells the warp could not fill. Accumulated motion advances on anchors."""
        motion = frame.motion
        if self.dense is None and self.cfg.propagation == "chain" and self.cfg.motion_resampling == "nearest":
            start = time.perf_counter()  # straight from the block field, in one pass of the native kernel
            features, mask = warp_blocks(self.anchor_features, motion.vectors, motion.valid, motion.block,
                                         self.stride, self.cfg.warp_sampling)
        else:
            flow = self._motion(frame, timings)
            start = time.perf_counter()
            if self.cfg.propagation == "accumulate":
                to_key = compose(flow, self.motion_to_key)
                features, mask = warp(self.key_features, to_key, self.cfg.warp_sampling)
                if frame.pict_type != "B":
                    self.motion_to_key = to_key
            else:
                features, mask = warp(self.anchor_features, flow, self.cfg.warp_sampling)
        timings["warp"] = timings.get("warp", 0.0) + time.perf_counter() - start
        return features, mask

    def _motion(self, frame: Frame, timings: dict) -> GridFlow:
        """The frame's motion to the last anchor on the feature grid: the codec's vectors (timed as part of
        the warp), or a dense flow (its own ``flow`` stage)."""
        if self.dense is not None:
            return self._dense_flow(frame, timings)
        start = time.perf_counter()
        motion = frame.motion
        flow = motion_to_grid(motion.vectors, motion.valid, motion.block, self.grid, self.stride,
                              self.cfg.motion_resampling)
        timings["warp"] = timings.get("warp", 0.0) + time.perf_counter() - start
        return flow

    def _truth(self, flows, frame: Frame) -> np.ndarray:
        """The ground-truth flow of ``frame``: to the previous frame, so only where that is the anchor."""
        if frame.index >= len(flows) or frame.index - 1 != self.anchor_index:
            raise ConfigError(f"ground-truth flow for frame {frame.index}: the clip's flows ({len(flows)}) go to the "
                              "previous frame, which must be the last anchor (I/P streams without B-frames)")
        flow = np.asarray(flows[frame.index], np.float32)  # taplab synth stores float16
        if flow.shape != (self.height, self.width, 2):
            raise ConfigError(f"ground-truth flow of frame {frame.index} is {flow.shape}, "
                              f"expected {(self.height, self.width, 2)}")
        return flow

    def _dense_flow(self, frame: Frame, timings: dict) -> GridFlow:
        """The dense-flow baselines: optical or ground-truth flow from this frame to the last anchor,
        area-averaged onto the feature grid (cells; every cell valid)."""
        start = time.perf_counter()
        pixels = self.dense(frame)
        h, w = self.grid
        sy, sx = self.stride
        cells = cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA) / np.array([sx, sy], np.float32)
        timings["flow"] = time.perf_counter() - start
        return GridFlow(torch.from_numpy(np.ascontiguousarray(cells, np.float32)), torch.ones(h, w, dtype=torch.bool))

    def _logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.head(features[None])[0] if self.cfg.warp_layer == "features" else features

    def _fuse(self, frame: Frame, mask: torch.Tensor, apply: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Distortion-map fusion (DMNet) of the warped logits in ``self.features`` with the correction
        network's. Returns the warped logits (untouched by what follows) and the distortion map;
        without a correction network or ``apply`` (``details`` only, or fusion shed) ``M_coarse``, and
        the features stay as they are."""
        warped = self._logits(self.features)
        if self.cfg.propagation == "accumulate":
            if self.key_labels is None:
                self.key_labels = self._logits(self.key_features).argmax(0)
            reference = self.key_labels
        else:
            reference = self._logits(self.anchor_features).argmax(0)
        coarse = coarse_distortion(warped, reference, mask,
                                   residual_map(frame.residual, self.grid, self.cfg.fusion_threshold))
        if self.correction is None or not apply:
            return warped.clone(), coarse  # RGC blends into the features in place
        h, w = self.grid
        small = cv2.resize(frame.image, (2 * w, 2 * h), interpolation=cv2.INTER_AREA)
        updated, edge = self.correction(to_tensor(small)[0], warped, coarse)
        distortion = distortion_map(coarse, edge, self.cfg.fusion_weight)
        self.features = fuse(warped, updated, distortion)
        return warped, distortion

    def _features(self, image: np.ndarray) -> torch.Tensor:
        x = to_tensor(image)
        out = self.model.features(x) if self.cfg.warp_layer == "features" else self.model.logits(x)
        return out[0].float().contiguous()

    def _correct(self, image: np.ndarray, region: Region) -> None:
        """RGC (TapLab Eq. 3): ``F = (1 - alpha) F_warped + alpha F_cnn`` inside the region."""
        ys, xs = region.slices()
        crop = self._features(np.ascontiguousarray(image[ys, xs]))
        sy, sx = self.stride
        y0, x0 = round(region.y / sy), round(region.x / sx)
        h = min(crop.shape[1], self.grid[0] - y0)
        w = min(crop.shape[2], self.grid[1] - x0)
        a = self.cfg.rgc_alpha
        target = self.features[:, y0:y0 + h, x0:x0 + w]
        target.mul_(1 - a).add_(crop[:, :h, :w], alpha=a)

    def _labels(self, logits: torch.Tensor) -> np.ndarray:
        size = (self.height, self.width)
        if self.cfg.labels == "bilinear":
            return upsample_labels(logits, size)
        if self.cfg.labels == "exact":
            return logits_to_labels(logits[None], size)[0].cpu().numpy()
        coarse = logits.argmax(0).to(torch.uint8).cpu().numpy()
        return cv2.resize(coarse, (self.width, self.height), interpolation=cv2.INTER_NEAREST)




@dataclass
class RunSummary:
    """Totals of a run: frames by kind, wall time, seconds per stage (summed over frames), latencies."""

    frames: int = 0
    total: int | None = None  # frames expected, where the container says (and the limit allows)
    kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # of the frames with output
    shed: int = 0  # frames that left modules out to keep a latency budget

    def add(self, result: FrameResult) -> None:
        self.frames += 1
        self.kinds[result.kind] = self.kinds.get(result.kind, 0) + 1
        self.shed += bool(result.shed)
        if result.latency is not None and result.labels is not None:
            self.latencies.append(result.latency)
        for stage, t in result.timings.items():
            self.stages[stage] = self.stages.get(stage, 0.0) + t

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    @property
    def key_share(self) -> float:
        """The share of frames whose CNN ran on the whole frame (held key frames included)."""
        return sum(n for k, n in self.kinds.items() if k.startswith("key") or k == "hold") / max(self.frames, 1)

    def format(self) -> str:
        kinds = ", ".join(f"{k} {self.kinds[k]}" for k in KINDS if k in self.kinds)
        stages = ", ".join(f"{k} {1000 * v / max(self.frames, 1):.1f}" for k, v in self.stages.items())
        text = (f"{self.frames} frames in {self.seconds:.1f} s ({self.fps:.1f} frames/s), "
                f"key frames {100 * self.key_share:.0f}%\nby kind: {kinds}\nms per frame: {stages}")
        if self.latencies:
            p50, p95 = np.percentile(self.latencies, [50, 95])
            text += (f"\nlatency (arrival to result, frames with output): p50 {1000 * p50:.0f} ms, "
                     f"p95 {1000 * p95:.0f} ms, max {1000 * max(self.latencies):.0f} ms; frames that shed modules: "
                     f"{self.shed}, skipped: {self.kinds.get('skip', 0)}")
        return text


def segment_to_folder(segmenter: Segmenter, source, out, formats: tuple[str, ...] = ("labels",),
                      overwrite: bool = False, limit: int | None = None,
                      progress: Callable[[FrameResult, RunSummary], None] | None = None,
                      overlay: str | None = None, side_by_side: bool = False, live: bool = False,
                      reconnect: bool = False) -> RunSummary:
    """Segment ``source`` (as :meth:`Segmenter.run` takes it) and write every frame's result into the folder
    ``out`` (see :mod:`taplab.io.writers`); a skipped frame (``kind="skip"``) gets a line in the log only.

    Also writes ``frames.json`` and ``frames.csv`` (also when interrupted: the frames done so far), and
    with ``overlay`` a video of the frames blended with their masks (``side_by_side``: next to them),
    which appears only when the run completes. ``limit`` stops after so many frames; ``progress`` is
    called after each frame; ``live`` paces a file at its frame rate (see :meth:`Segmenter.run`);
    ``reconnect`` reopens a URL that ends, disconnects or fails, as :func:`taplab.stream` does, until
    ``limit`` or an interrupt (frame indices continue across reconnections).
    """
    from pathlib import Path

    from taplab.io.writers import WRITERS, OverlayVideo, prepare_output, write_log

    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise ConfigError(f"unknown output format {unknown[0]!r}; choose from {', '.join(WRITERS)}")
    out = Path(out)
    owned = not isinstance(source, Video)
    source_video = open_video(source) if owned else source  # a bad source fails before the folder is touched
    try:
        if reconnect and not source_video.reopenable:
            raise ConfigError(f"reconnect is for a stream URL; {source_video.name} is not one")
        prepare_output(out, overwrite)
    except BaseException:
        if owned:
            source_video.close()
        raise
    writers = [WRITERS[f](out, segmenter.model.colors) for f in dict.fromkeys(formats)]
    video = OverlayVideo(overlay, segmenter.model.colors, source_video.fps or 25.0, side_by_side) if overlay else None
    total = source_video.frame_count
    summary, records = RunSummary(total=min(total, limit) if total and limit else total or limit), []
    start = time.perf_counter()
    complete = False
    if reconnect:
        from taplab.runtime.stream import Stream

        results = iter(Stream(segmenter, source_video, live=live, reconnect=True, images=video is not None))
    else:
        results = segmenter.run(source_video, images=video is not None, live=live)
    try:
        for result in results:
            start_write = time.perf_counter()
            if result.labels is not None:  # a skipped frame has no output: no files, a line in the log
                for writer in writers:
                    writer.write(result.index, result.labels)
            if video is not None:
                video.write(result.image, result.labels)
            result.timings["write"] = time.perf_counter() - start_write
            summary.add(result)
            summary.seconds = time.perf_counter() - start
            records.append({"index": result.index, "pict_type": result.pict_type, "kind": result.kind,
                            "residual_score": result.residual_score,
                            "region": list(result.region) if result.region else None,
                            "distorted": round(result.distorted, 4),
                            "latency_ms": round(1000 * result.latency, 2), "shed": list(result.shed),
                            "ms": {k: round(1000 * v, 3) for k, v in result.timings.items()}})
            if progress is not None:
                progress(result, summary)
            if limit is not None and summary.frames >= limit:
                break
        complete = True
    finally:
        results.close()  # its threads end here, not whenever the generator is collected
        if owned:
            source_video.close()
        write_log(out, records)
        if video is not None:
            video.close(complete)
    return summary


__all__ = ["FrameResult", "KINDS", "RunSummary", "Segmenter", "segment_to_folder"]
