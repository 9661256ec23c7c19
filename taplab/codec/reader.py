"""The compressed-domain reader: frames with picture types, motion fields and residuals.

    from taplab.codec import open_video
    with open_video("clip.mp4") as video:
        for frame in video:
            frame.pict_type, frame.motion, frame.residual, frame.image

Frames come in display order. Each frame's motion is a :class:`MotionField`
towards its reference, taken to be the previous anchor (I- or P-frame) in
display order: for the papers' I/P streams that is simply the previous frame.
B-frames carry their past-reference vectors in ``motion`` and their
future-reference vectors in ``motion_future``; they are never mixed. A B-frame
comes out before its future anchor (the next I- or P-frame in display order);
once the reader has read that anchor, and before it yields it, the B-frames
since the previous anchor learn it: ``future_index``, ``future_luma`` and
``residual_future`` (see :meth:`Frame.attach_future`).

Codecs that export no vectors (HEVC, VP9, AV1: :data:`~taplab.codec.motion.VECTOR_CODECS`)
give ``motion`` None, unless :meth:`Video.estimate_motion` asks for vectors
estimated by optical flow on the luma planes: then every P- and B-frame gets a
past :class:`MotionField` on the same block grid, computed when first asked for
(in the runtime's decoding thread, so it overlaps inference).
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np

from taplab.codec.backends import BACKENDS, Backend, DecodedFrame, describe_source
from taplab.codec.motion import CODEC_BLOCK, DEFAULT_BLOCK, VECTOR_CODECS, MotionField
from taplab.codec.references import MAX_OLDER, foreign_blocks, reference_frames
from taplab.errors import CorruptDataWarning, DecodeError, TapLabWarning, VideoOpenError
from taplab.ops.flow import OpticalFlow
from taplab.ops.residual import residual as compute_residual

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")

#: the most B-frames in a row that learn their future anchor: H.264's and HEVC's limit on reordering (16
#: frames); of a longer run, the last ones (the runtime lets the oldest held frames go first)
MAX_REORDER = 16

#: seconds to wait for a network source to open or to deliver data before giving up
DEFAULT_TIMEOUT = 10.0


class Frame:
    """One decoded frame. ``image``, ``residual`` and an estimated ``motion`` are computed on first access."""

    def __init__(
        self,
        index: int,
        decoded: DecodedFrame,
        motion: MotionField | None,
        motion_future: MotionField | None,
        reference_luma: np.ndarray | None,
        estimate: Callable[[], MotionField] | None = None,
    ):
        self.index = index
        self.pts = decoded.pts
        self.time = decoded.time
        self.pict_type = decoded.pict_type
        self._motion, self._estimate = motion, estimate
        self._motion_future = motion_future
        self.corrupt = decoded.corrupt
        self.luma = decoded.luma
        self._rgb = decoded.rgb
        self._reference_luma = reference_luma
        #: a B-frame's future anchor (display index, luma plane), once the reader has read it
        self.future_index: int | None = None
        self.future_luma: np.ndarray | None = None
        self._estimate_future: Callable[[], MotionField] | None = None

    def attach_future(self, index: int, luma: np.ndarray,
                      estimate: Callable[[np.ndarray, np.ndarray, int], MotionField] | None = None) -> None:
        """A B-frame learns its future anchor: the frame ``index`` with ``luma``. The codec's future vectors are
        taken to point into it; where the reader estimates vectors, ``estimate(luma, anchor_luma, index)`` gives
        the future field (computed on first access of ``motion_future``)."""
        self.future_index, self.future_luma = index, luma
        if self.motion_future is not None:
            self.motion_future = replace(self.motion_future, reference=index)
        elif estimate is not None:
            mine = self.luma
            self._estimate_future = lambda: estimate(mine, luma, index)

    @property
    def motion_future(self) -> MotionField | None:
        """A B-frame's future-reference :class:`MotionField`: the codec's, or one estimated by optical flow towards
        its future anchor (once known, where the video estimates motion; computed once, on first access)."""
        if self._motion_future is None and self._estimate_future is not None:
            self._motion_future, self._estimate_future = self._estimate_future(), None
        return self._motion_future

    @property
    def has_future(self) -> bool:
        """Whether ``motion_future`` is set now (the codec's, or an estimate already made), without estimating."""
        return self._motion_future is not None

    @motion_future.setter
    def motion_future(self, field: MotionField | None) -> None:
        self._motion_future = field

    @cached_property
    def residual_future(self) -> np.ndarray | None:
        """A B-frame's ``|Y - MC(Y_future)|`` along its future vectors, like :attr:`residual` (None before its
        future anchor is known, or without future vectors)."""
        m = self.motion_future if self.future_luma is not None else None
        if m is None:
            return None
        return compute_residual(self.luma, self.future_luma, m.vectors, m.valid, m.block)

    def replace_residual(self, residual: np.ndarray) -> None:
        """Replace :attr:`residual` by what predicts the frame better: the runtime gives a B-frame warped from both
        its anchors the residual of the two predictions as it blends them (:mod:`taplab.ops.bidirectional`)."""
        self.__dict__["residual"] = residual

    @property
    def reference_luma(self) -> np.ndarray | None:
        """The previous anchor's luma plane (None for the first frame): what past vectors point into."""
        return self._reference_luma

    @property
    def height(self) -> int:
        return self.luma.shape[0]

    @property
    def width(self) -> int:
        return self.luma.shape[1]

    @property
    def motion(self) -> MotionField | None:
        """The past-reference :class:`MotionField`: the codec's, or one estimated by optical flow where the
        video asked for it (:meth:`Video.estimate_motion`; computed once, on first access); None on I-frames
        and frames without either."""
        if self._motion is None and self._estimate is not None:
            # kept by hand rather than with cached_property, whose lock (Python < 3.12) is shared by every frame
            self._motion, self._estimate = self._estimate(), None
        return self._motion

    @property
    def estimated(self) -> bool:
        """Whether ``motion`` is (or will be) estimated rather than the codec's, without computing it."""
        return self._estimate is not None or (self._motion is not None and self._motion.source != "codec")

    @cached_property
    def image(self) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        image = self._rgb()
        self._rgb = None  # the decoder's frame buffer can go now
        return image

    @cached_property
    def residual(self) -> np.ndarray:
        """(H, W) uint8 ``|Y - MC(Y_ref)|`` (see :mod:`taplab.ops.residual`).

        Frames without past vectors (I-frames, P-frames whose codec exported none)
        get the zero-motion difference to their reference; the first frame, which
        has no reference, gets zeros.
        """
        ref = self._reference_luma
        if ref is None:
            return np.zeros_like(self.luma)
        m = self.motion
        if m is None:
            return compute_residual(self.luma, ref)
        return compute_residual(self.luma, ref, m.vectors, m.valid, m.block)

    def __repr__(self) -> str:
        nvec = 0 if self._motion is None else int(self._motion.valid.sum())  # never estimates: printing is cheap
        return f"Frame(index={self.index}, pict_type={self.pict_type!r}, time={self.time}, vector_blocks={nvec})"


class Video:
    """An open video: stream properties and an iterator of :class:`Frame` in display order.

    Iterate once; a second iteration raises (a stream cannot be rewound). Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(self, backend: Backend, name: str, file=None, live: bool = False,
                 reopen: Callable[[], Video] | None = None):
        self._backend = backend
        self._reopen = reopen
        self.live = live  # frames arrive in real time: a URL, a pipe or a followed file
        self._file = file  # a file object the reader opened (a followed file), closed with it
        self._abandoned = self._closed = False
        self.name = name
        self.codec: str = backend.codec
        self.width: int = backend.width  # the first frame's: a stream may change size (Frame.width and height)
        self.height: int = backend.height
        self.fps: float = backend.fps
        self.frame_count: int | None = backend.frame_count
        self.block: int = CODEC_BLOCK.get(self.codec, DEFAULT_BLOCK)
        #: whether the codec exports motion vectors (:data:`~taplab.codec.motion.VECTOR_CODECS`); where it does
        #: not, every frame's ``motion`` is None unless :meth:`estimate_motion` is asked
        self.exports_vectors: bool = self.codec in VECTOR_CODECS
        #: the most reference frames the stream's blocks may use (None: unknown); where more than one, past vectors
        #: into older anchors are found and marked invalid (:mod:`taplab.codec.references`)
        self.references: int | None = reference_frames(self.codec, getattr(backend, "extradata", None),
                                                       getattr(backend, "b_frames", False))
        self._older = 0 if not self.exports_vectors or self.references == 1 else \
            MAX_OLDER if self.references is None else min(MAX_OLDER, self.references - 1)
        self._estimator: OpticalFlow | None = None
        self._estimator_lock = threading.Lock()
        self._started = False
        self._limit: int | None = None

    def estimate_motion(self, method: str | None) -> None:
        """Where the codec exports no vectors, give every P- and B-frame past vectors estimated by the optical
        flow ``method`` (:data:`taplab.ops.flow.METHODS`) from its luma to the previous anchor's, averaged per
        block (``None``: none, the default). Nothing changes for a codec that exports vectors. Call it
        before reading."""
        if self.exports_vectors:
            return
        if self._started:
            raise DecodeError(f"{self.name} is already being read: estimate_motion() must come before")
        self._estimator = OpticalFlow(method) if method is not None else None

    def stop_after(self, frames: int | None) -> None:
        """Read at most the first ``frames`` frames (None: all, the default): the video ends there, so that a run
        gives the frames it held back too. Call it before reading."""
        if self._started:
            raise DecodeError(f"{self.name} is already being read: stop_after() must come before")
        self._limit = frames

    def __iter__(self) -> Iterator[Frame]:
        if self._started:
            raise DecodeError(f"{self.name} was already read; open it again to read it twice")
        self._started = True
        return self._frames() if self._limit is None else itertools.islice(self._frames(), self._limit)

    def _frames(self) -> Iterator[Frame]:
        anchor_luma: np.ndarray | None = None
        anchor_index: int | None = None
        history: list[np.ndarray] = []  # the anchors' luma planes, the last first, where older ones may be referenced
        waiting: list[Frame] = []  # the B-frames since the last anchor, which the next one is the future of
        index = 0
        size = None  # the (height, width) of the frames since the start or the last size change
        for decoded in self._backend.frames():
            restart = size is not None and decoded.luma.shape != size
            if restart:  # legal in a stream (MPEG-TS, adaptive live sources): no frame before is a reference after
                warnings.warn(f"the frame size of {self.name} changes at frame {index}, from {size[1]}x{size[0]} to "
                              f"{decoded.luma.shape[1]}x{decoded.luma.shape[0]}: the frames from there on are read "
                              "as a new stream, from a key frame", TapLabWarning, stacklevel=2)
                anchor_luma, anchor_index, history, waiting = None, None, [], []
            size = decoded.luma.shape
            if decoded.corrupt:
                warnings.warn(f"frame {index} of {self.name} is damaged (concealed by the decoder)", CorruptDataWarning, stacklevel=2)
            past, future = (None, None) if restart else self._motion_fields(decoded, anchor_index)
            if past is not None and len(history) > 1:
                past = _without_foreign(decoded.luma, history, past)
            estimate = None
            if self._estimator is not None and decoded.pict_type != "I" and anchor_luma is not None:
                estimate = self._estimated(decoded.luma, anchor_luma, anchor_index)
            frame = Frame(index, decoded, past, future, anchor_luma, estimate)
            if frame.pict_type != "B":
                anchor_luma, anchor_index = decoded.luma, index
                if self._older:  # back to the last I-frame at most
                    history = [decoded.luma] + (history[:self._older] if frame.pict_type != "I" else [])
                for b in waiting:
                    b.attach_future(index, decoded.luma, self._estimate_future if self._estimator else None)
                waiting = []
            else:  # the last MAX_REORDER of a run: the runtime's hold lets the oldest go first
                waiting = waiting[-(MAX_REORDER - 1):] + [frame]
            yield frame
            index += 1
        if index == 0:
            raise DecodeError(f"no frame could be decoded from {self.name}")

    def _estimated(self, luma: np.ndarray, reference: np.ndarray, index: int) -> Callable[[], MotionField]:
        return lambda: self._estimate_between(luma, reference, index)

    def _estimate_future(self, luma: np.ndarray, reference: np.ndarray, index: int) -> MotionField:
        return self._estimate_between(luma, reference, index, "future")

    def _estimate_between(self, luma: np.ndarray, reference: np.ndarray, index: int, direction: str = "past") -> MotionField:
        """Block vectors from ``luma`` into ``reference`` (the frame ``index``) by the video's optical flow."""
        with self._estimator_lock:  # one estimator for all frames: its OpenCV DIS objects are not thread-safe
            vectors = self._estimator.blocks(luma, reference, self.block)
        return MotionField.from_blocks(vectors, self.block, self._estimator.method, index, direction)

    def _motion_fields(self, decoded: DecodedFrame, reference: int | None) -> tuple[MotionField | None, MotionField | None]:
        raw = decoded.raw_motion
        if raw is None or len(raw) == 0 or decoded.pict_type == "I":
            return None, None
        fields = []
        for direction in ("past", "future"):
            has = (raw["source"] < 0) if direction == "past" else (raw["source"] > 0)
            if not has.any():
                fields.append(None)
                continue
            ref = reference if direction == "past" else None
            height, width = decoded.luma.shape  # the frame's own: a stream may change size
            fields.append(MotionField.from_raw(raw, width, height, self.block, direction, ref))
        return fields[0], fields[1]

    def interrupt(self) -> None:
        """Make a read that waits on the source return soon where the source allows it: a followed file
        stops waiting (a network read returns at its timeout)."""
        if self._file is not None:
            self._file.interrupt()

    def abandon(self) -> None:
        """Another thread may still be inside the decoder: :meth:`close` leaves the decoder to the garbage
        collector rather than close it under that thread."""
        self._abandoned = True

    @property
    def reopenable(self) -> bool:
        """Whether :meth:`reopen` can connect again: a URL."""
        return self._reopen is not None

    def reopen(self) -> Video:
        """A new :class:`Video` of the same source, opened the same way (a reconnection to a URL), estimating
        motion as this one does."""
        if self._reopen is None:
            raise VideoOpenError(f"{self.name} cannot be opened again (only a URL can)")
        video = self._reopen()
        video.estimate_motion(None if self._estimator is None else self._estimator.method)
        return video

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._abandoned:
            self._backend.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> "Video":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Video({self.name!r}, codec={self.codec!r}, {self.width}x{self.height} @ {self.fps:g} fps)"


def _without_foreign(luma: np.ndarray, anchors: list[np.ndarray], field: MotionField) -> MotionField:
    """``field`` with its vectors into anchors older than the last marked invalid (:mod:`taplab.codec.references`)."""
    foreign = foreign_blocks(luma, anchors, field.vectors, field.valid, field.block)
    if not foreign.any():
        return field
    return replace(field, valid=field.valid & ~foreign, foreign=int(foreign.sum()))


def is_url(source) -> bool:
    """Whether ``source`` is a URL (``scheme://...``) rather than a path or a file object."""
    return isinstance(source, str) and bool(_URL.match(source))


def open_video(source, backend: str = "pyav", timeout: float | None = DEFAULT_TIMEOUT, follow: bool = False,
               options: dict[str, str] | None = None) -> Video:
    """Open a video for compressed-domain reading.

    Args:
        source: a path, a URL (``rtsp://``, ``udp://``, ``tcp://``, ``http://`` ...) or a
            binary file-like object (``read``; for MP4 also ``seek``), such as a pipe from
            another process (``sys.stdin.buffer``; a stream format such as MPEG-TS).
        backend: a key of :data:`taplab.codec.backends.BACKENDS`: ``"pyav"`` (default) or
            ``"mvextractor"``.
        timeout: seconds a network source may take to open or to send data, and that a followed
            file may go without growing before it counts as ended (``None`` waits forever).
        follow: the path is a file another process is still writing (a recorder's output, in a
            stream format: MPEG-TS, raw MPEG-4 or H.264; not MP4, whose index comes last): reading at
            its end waits for more, and it ends once it has not grown for ``timeout`` seconds.
        options: FFmpeg's options for the demuxer and protocol (pyav backend), e.g.
            ``{"rtsp_transport": "udp"}``. RTSP defaults to ``rtsp_transport=tcp``: the RTP packets
            interleaved in the RTSP connection, so none is lost (FFmpeg's own default tries UDP first).

    Raises:
        VideoOpenError: missing path, folder, not a video, no video stream, unreachable URL.
    """
    factory = BACKENDS.get(backend)
    if factory is None:
        raise VideoOpenError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    given = options
    options = dict(options or {})
    live = follow or is_url(source) or (hasattr(source, "read") and not _seekable(source))
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if not _URL.match(text):
            path = Path(text)
            if not path.exists():
                raise VideoOpenError(f"no such file: {text}")
            if path.is_dir():
                raise VideoOpenError(f"is a folder, not a video: {text}")
            if path.stat().st_size == 0 and not follow:
                raise VideoOpenError(f"empty file: {text}")
            if follow:
                if path.suffix.lower() in (".mp4", ".mov", ".m4v", ".3gp"):
                    raise VideoOpenError(f"cannot follow {text}: an MP4 being written is unreadable until it is "
                                         "finished (its index comes last); record MPEG-TS (.ts) instead")
                if backend != "pyav":
                    raise VideoOpenError("follow needs backend='pyav' (mv-extractor reads paths and URLs only)")
                source = GrowingFile(path, timeout)
        elif follow:
            raise VideoOpenError(f"follow is for a file that is still being written, not a URL: {text}")
        elif text.lower().startswith("rtsp://"):
            options.setdefault("rtsp_transport", "tcp")
        name = text
    elif hasattr(source, "read"):
        if follow:
            raise VideoOpenError("follow is for a path to a file that is still being written; a file object "
                                 "(a pipe) already waits for its writer")
        name = describe_source(source)
        if live and hasattr(source, "read1"):
            source = _Arrived(source)
    else:
        raise VideoOpenError(f"cannot read a video from a {type(source).__name__}; pass a path, URL or binary file object")
    try:
        decoder = factory(source, timeout, options, live)
    except BaseException:
        if follow:
            source.close()
        raise
    reopen = (lambda url=source: open_video(url, backend, timeout, follow, given)) if is_url(source) else None
    return Video(decoder, str(name), source if follow else None, live, reopen)


def _seekable(source) -> bool:
    try:
        return bool(source.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class _Arrived:
    """A buffered pipe whose ``read(n)`` returns the bytes that have arrived (``read1``) rather than waiting
    for all ``n``: FFmpeg asks for 32 KB at a time, a dozen small frames, which would otherwise wait for
    the frames after them (measured: a pipe opened 13 frames late)."""

    def __init__(self, stream):
        self._stream = stream
        self.name = getattr(stream, "name", None)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read1(size)


class GrowingFile:
    """A file another process is still writing, read as a stream: a read at its end waits (polling every
    ``poll`` seconds) until the file grows, and returns nothing (the end) once it has not grown for
    ``idle`` seconds. It has no ``seek``, so FFmpeg reads it front to back and never probes its end."""

    def __init__(self, path: str | os.PathLike, idle: float | None, poll: float = 0.02):
        self.name = os.fspath(path)
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close(), when the demuxer is done
        self._idle, self._poll = idle, poll
        self._ended = threading.Event()  # FFmpeg reads again after an end: it is final, not another wait
        self._lock = threading.Lock()  # the decoding thread reads, the consumer closes

    def read(self, size: int = -1) -> bytes:
        waited_since = None
        while True:
            with self._lock:
                data = b"" if self._file.closed else self._file.read(size)
            if data or self._ended.is_set():
                return data
            now = time.monotonic()
            waited_since = waited_since or now
            if self._idle is not None and now - waited_since >= self._idle:
                self._ended.set()
                return b""
            self._ended.wait(self._poll)

    def interrupt(self) -> None:
        """Stop waiting: the file ends at what it holds now."""
        self._ended.set()

    def close(self) -> None:
        self.interrupt()
        with self._lock:
            self._file.close()
