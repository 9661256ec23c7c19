"""The PyAV backend: FFmpeg through PyAV, vectors from ``flags2=+export_mvs`` side data."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator

import av
import numpy as np

from taplab.codec.backends import PICT_TYPES, DecodedFrame, describe_source
from taplab.codec.motion import AV_MOTION_VECTOR_DTYPE
from taplab.errors import CorruptDataWarning, DecodeError, VideoOpenError
from taplab.threads import current_plan

#: FFmpeg's frame-threaded H.264 decoder races when exporting vectors of reordered (B-frame)
#: streams: the last P-frame's side data picked up future vectors in 5 of 12 runs, measured.
#: Slice threading is deterministic, and for these streams no slower.
_THREADING = {"h264": "SLICE", "hevc": "SLICE"}

#: pixel formats whose first plane is the luma plane, usable without conversion
_LUMA_FIRST = ("yuv", "yuvj", "nv12", "nv21", "gray")


def open_container(source, timeout: float | None, options: dict[str, str] | None = None) -> "av.container.InputContainer":
    """``av.open`` with FFmpeg's errors turned into :class:`VideoOpenError`."""
    name = describe_source(source)
    try:
        return av.open(source, mode="r", timeout=timeout, options=options or {})
    except av.error.FileNotFoundError as exc:
        raise VideoOpenError(f"no such file: {name}") from exc
    except av.error.IsADirectoryError as exc:
        raise VideoOpenError(f"is a folder, not a video: {name}") from exc
    except av.error.InvalidDataError as exc:
        raise VideoOpenError(f"not a video file, or truncated: {name}") from exc
    except av.error.EOFError as exc:
        raise VideoOpenError(f"no data: empty or truncated video: {name}") from exc
    except av.error.ExitError as exc:
        raise VideoOpenError(f"timed out after {timeout} s opening {name}") from exc
    except (av.FFmpegError, OSError) as exc:
        raise VideoOpenError(f"cannot open {name}: {exc}") from exc
    except DAMAGED as exc:
        raise VideoOpenError(f"cannot open {name}: its container is damaged ({type(exc).__name__}: {exc})") from exc


#: what PyAV raises on damaged data besides FFmpeg's own errors (seen when fuzzing the real clips: an
#: IndexError demuxing a corrupt MPEG-TS, a UnicodeDecodeError on corrupt metadata, an AttributeError on a
#: stream without a codec context): at this one place where frames come out of FFmpeg they become taplab's
#: errors (tests/fuzz/harness.py keeps looking)
DAMAGED = (IndexError, KeyError, UnicodeDecodeError, AttributeError, ValueError, TypeError)


#: raw elementary-stream formats FFmpeg falls back on when it guesses a file's format from its content: the bytes of
#: a damaged MP4 (its header gone) read as H.261 or H.263 pictures, garbage at 176x144, at times slowly (seen when
#: fuzzing the real MPEG-4 clip: every copy whose first bytes were damaged opened as raw H.261)
RAW_GUESSES = frozenset({"h261", "h263"})
#: file suffixes of containers, which such a raw format cannot be
CONTAINER_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".3gp", ".ts",
                                ".mts", ".m2ts", ".mpg", ".mpeg", ".ogv"})


def misread_container(format_name: str, source) -> bool:
    """Whether FFmpeg read a file named as a container (``clip.mp4``) as a raw H.261/H.263 stream: a damaged file,
    which it could only guess at. Pure."""
    suffix = os.path.splitext(source)[1].lower() if isinstance(source, (str, os.PathLike)) else ""
    return suffix in CONTAINER_SUFFIXES and bool(RAW_GUESSES & set(format_name.split(",")))


class PyAVBackend:
    """Decodes with PyAV; frame threading where the exported vectors do not depend on it."""

    def __init__(self, source, timeout: float | None, options: dict[str, str] | None = None, live: bool = False):
        self._container = open_container(source, timeout, options)
        try:
            self._setup(source, live)
        except DAMAGED as exc:  # a header PyAV cannot read (metadata, a stream without a codec context)
            self.close()
            raise VideoOpenError(f"cannot open {describe_source(source)}: its header is damaged "
                                 f"({type(exc).__name__}: {exc})") from exc

    def _setup(self, source, live: bool) -> None:
        videos = self._container.streams.video
        if not videos:
            kinds = sorted({s.type for s in self._container.streams})
            self.close()
            if not kinds:
                raise VideoOpenError(f"no streams at all (an empty video?): {describe_source(source)}")
            raise VideoOpenError(f"no video stream in {describe_source(source)} (it has: {', '.join(kinds)})")
        if misread_container(self._container.format.name, source):
            self.close()
            raise VideoOpenError(f"{describe_source(source)} is damaged: it is not readable as the container its name "
                                 f"says, and FFmpeg could only guess it to be raw {self._container.format.name.upper()}")
        self._stream = videos[0]
        ctx = self._stream.codec_context
        ctx.options = {"flags2": "+export_mvs"}
        # Frame threading holds back a frame per thread (3 on 2 cores, up to 16): latency a live source
        # cannot afford, and which arrival times taken after decoding would hide. Decoding costs under
        # 1.2 ms per 720p frame either way (the real clips: benchmarks/bench_reader.py --threading).
        ctx.thread_type = "SLICE" if live else _THREADING.get(ctx.name, "AUTO")
        # the process's thread policy: the decoder runs beside inference, so it gets its share, not every core
        ctx.thread_count = current_plan().decode
        self.codec = ctx.name
        self.width, self.height = ctx.width, ctx.height
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self.frame_count = self._stream.frames or None
        self.extradata = bytes(ctx.extradata) if ctx.extradata else None
        self.b_frames = bool(ctx.has_b_frames)
        self._source = describe_source(source)
        self._rgb = RGBConverter(ctx.thread_count)

    def frames(self) -> Iterator[DecodedFrame]:
        try:
            for packet in self._container.demux(self._stream):
                try:
                    decoded = packet.decode()
                except av.InvalidDataError as exc:
                    # A broken packet costs its own frame; the GOP goes on (FFmpeg conceals the rest).
                    warnings.warn(f"skipped a corrupt packet at pts {packet.pts} in {self._source}: {exc}", CorruptDataWarning, stacklevel=2)
                    continue
                for frame in decoded:
                    yield self._convert(frame)
        except av.error.ExitError as exc:
            raise DecodeError(f"timed out reading {self._source}") from exc
        except (av.FFmpegError, OSError) as exc:
            raise DecodeError(f"reading {self._source} failed: {exc}") from exc
        except DAMAGED as exc:
            raise DecodeError(f"reading {self._source} failed: damaged data ({type(exc).__name__}: {exc})") from exc

    def _convert(self, frame: "av.VideoFrame") -> DecodedFrame:
        side = frame.side_data.get("MOTION_VECTORS")
        # bytes() is one memcpy; copying the structured array field by field costs 10x more.
        raw = np.frombuffer(bytes(side), AV_MOTION_VECTOR_DTYPE) if side is not None else None
        return DecodedFrame(
            pict_type=PICT_TYPES.get(av.video.frame.PictureType(frame.pict_type).name, "P"),
            pts=frame.pts,
            time=frame.time,
            luma=_luma(frame),
            raw_motion=raw,
            rgb=lambda: self._rgb(frame),
            corrupt=bool(frame.is_corrupt),
        )

    def close(self) -> None:
        self._container.close()


class RGBConverter:
    """A video's frames as RGB arrays, through one SwsContext for all of them. ``frame.to_ndarray(format="rgb24")``
    makes a context (and its threads) per frame, which live as long as the frame; and a frame whose side data was
    read (the motion vectors) is in a reference cycle with it in PyAV, freed only when the garbage collector runs:
    on a long run, hundreds of threads. The lock: frames are converted in the decoding thread and the runtime's."""

    def __init__(self, threads: int = 1):
        from av.video.reformatter import VideoReformatter

        self._reformatter, self._threads, self._lock = VideoReformatter(), threads, threading.Lock()

    def __call__(self, frame: "av.VideoFrame") -> np.ndarray:
        with self._lock:
            return self._reformatter.reformat(frame, format="rgb24", threads=self._threads).to_ndarray()


def _luma(frame: "av.VideoFrame") -> np.ndarray:
    """The Y plane as a C-contiguous (H, W) uint8 array of its own; no colour conversion for YUV/NV/gray formats.

    A copy, not a view of the decoder's buffer, though a view would cost nothing: a view keeps the frame alive as
    long as the plane (an anchor's, until the next anchor and beyond), and PyAV holds a frame whose side data was
    read in a reference cycle, so it is freed by the garbage collector's slowest generation only, which on a long
    run lets hundreds of frames wait (measured: benchmarks/bench_longrun.py). Copied, a frame is garbage as soon as
    its RGB image is taken, while young, and goes at the collector's next quick pass.
    """
    if frame.format.name.startswith(_LUMA_FIRST) and not frame.format.name.endswith(("le", "be")):
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return rows[:, : frame.width].copy()
    return frame.to_ndarray(format="gray")
