"""Encoding frames into the compressed format the papers use (MPEG-4 Part 2, fixed GOP).

TapLab's pre-processing re-encodes every clip with a fixed GOP so that each GOP
is exactly one I-frame and ``gop - 1`` P-frames. Two decisions make the GOP
really fixed: scene-cut detection is disabled (it would insert extra I-frames),
and the quality is a constant quantiser rather than a bit rate (so the residual
statistics that RGFS thresholds do not drift with the rate controller).

For H.264 the encoder is told to use one reference frame (``ref=1``) and no
B-pyramid: FFmpeg's exported vectors carry no reference index, and with one
reference every P-frame vector points into the frame just before it, which is
what the reader assumes (see :mod:`taplab.codec.motion`).

HEVC (libx265), VP9 (libvpx-vp9) and MPEG-2 encode the streams people have beside
the papers' format, for tests and benchmarks; the same two decisions hold (no scene
cuts, constant quality). HEVC and VP9 export no motion vectors through FFmpeg
(:data:`taplab.codec.motion.VECTOR_CODECS`). VP9 has no B-frames; its hidden
alternate-reference frames are turned off, so every packet is a shown frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from taplab.errors import EncodeError, TapLabError
from taplab.files import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff")

#: a huge scene-change threshold turns scene-cut I-frames off in FFmpeg's MPEG-4 encoder
_NO_SCENECUT = "1000000000"


@dataclass(frozen=True)
class CodecSpec:
    """How one codec name of ours maps onto an FFmpeg encoder and its options."""

    encoder: str
    quality_range: tuple[int, int]  # inclusive; lower is better for both codecs here
    default_quality: int
    quality_meaning: str
    options: Callable[[int, int, int, int], dict[str, str]]  # (gop, bframes, quality, refs) -> AVOptions
    container: str = "mp4"
    max_bframes: int | None = None  # None: any number below the GOP
    max_refs: int = 1  # past reference frames a P-frame may use


def _mpeg4_options(gop: int, bframes: int, quality: int, refs: int) -> dict[str, str]:
    # qmin == qmax pins the quantiser: a constant-quality encode like `ffmpeg -q:v`.
    return {"qmin": str(quality), "qmax": str(quality), "sc_threshold": _NO_SCENECUT}


def _h264_options(gop: int, bframes: int, quality: int, refs: int) -> dict[str, str]:
    params = f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:ref={refs}:bframes={bframes}:b-pyramid=none"
    return {"crf": str(quality), "x264-params": params, "preset": "veryfast"}


def _hevc_options(gop: int, bframes: int, quality: int, refs: int) -> dict[str, str]:
    params = (f"keyint={gop}:min-keyint={gop}:scenecut=0:open-gop=0:ref={refs}:bframes={bframes}:b-pyramid=0:"
              "log-level=error")  # x265 reports to stderr at info level otherwise
    return {"crf": str(quality), "x265-params": params, "preset": "veryfast"}


def _vp9_options(gop: int, bframes: int, quality: int, refs: int) -> dict[str, str]:
    # b=0 with crf: constant quality; no alternate-reference frames (shown frames only, none reordered)
    return {"crf": str(quality), "b": "0", "keyint_min": str(gop), "auto-alt-ref": "0", "lag-in-frames": "0",
            "deadline": "good", "cpu-used": "8", "row-mt": "1"}


def _mpeg2_options(gop: int, bframes: int, quality: int, refs: int) -> dict[str, str]:
    return {"qmin": str(quality), "qmax": str(quality), "sc_threshold": _NO_SCENECUT}


#: codec name -> spec; add an entry to support another codec.
CODECS: dict[str, CodecSpec] = {
    "mpeg4": CodecSpec("mpeg4", (1, 31), 4, "quantiser 1 (best) .. 31", _mpeg4_options),
    "h264": CodecSpec("libx264", (0, 51), 23, "CRF 0 (lossless) .. 51", _h264_options, max_refs=16),
    "hevc": CodecSpec("libx265", (0, 51), 28, "CRF 0 (lossless) .. 51", _hevc_options, max_refs=16),
    "vp9": CodecSpec("libvpx-vp9", (0, 63), 32, "CRF 0 (best) .. 63", _vp9_options, max_bframes=0),
    "mpeg2": CodecSpec("mpeg2video", (1, 31), 4, "quantiser 1 (best) .. 31", _mpeg2_options),
}


def check_encoding(codec: str, gop: int, bframes: int = 0, quality: int | None = None,
                   refs: int = 1) -> tuple[CodecSpec, int]:
    """The codec's spec and the quality to use (its default for None); :class:`EncodeError` for options
    :func:`encode` refuses. Callers that create folders before encoding check with it first."""
    spec = CODECS.get(codec)
    if spec is None:
        raise EncodeError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if gop < 1:
        raise EncodeError(f"gop must be >= 1, got {gop}")
    if bframes < 0 or (bframes > 0 and bframes >= gop):
        raise EncodeError(f"bframes must be in 0..{gop - 1} for gop {gop}, got {bframes}")
    if spec.max_bframes is not None and bframes > spec.max_bframes:
        raise EncodeError(f"{codec} takes at most {spec.max_bframes} B-frames"
                          f"{' (it has none)' if spec.max_bframes == 0 else ''}; got {bframes}")
    if not 1 <= refs <= spec.max_refs:
        raise EncodeError(f"refs for {codec} must be in 1..{spec.max_refs}, got {refs}")
    if quality is None:
        quality = spec.default_quality
    lo, hi = spec.quality_range
    if not lo <= quality <= hi:
        raise EncodeError(f"quality for {codec} is {spec.quality_meaning}; got {quality}")
    return spec, quality


def encode(
    source: Iterable[np.ndarray] | str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    gop: int = 12,
    codec: str = "mpeg4",
    bframes: int = 0,
    quality: int | None = None,
    fps: float | None = None,
    refs: int = 1,
) -> Path:
    """Encode frames into a video with a fixed GOP, the papers' pre-processing.

    Args:
        source: an iterable of ``(H, W, 3)`` uint8 RGB arrays, a folder of images
            (encoded in file-name order, e.g. a Cityscapes ``leftImg8bit_sequence`` city
            folder), or a video file to re-encode.
        out_path: the video to write (``.mp4``). It appears only once it is complete.
        gop: frames per GOP: one I-frame every ``gop`` frames.
        codec: a key of :data:`CODECS`: ``"mpeg4"`` (the papers' format), ``"h264"``, ``"hevc"``,
            ``"vp9"`` or ``"mpeg2"``.
        bframes: consecutive B-frames allowed between anchors (0: an I/P-only stream).
        quality: the codec's constant quality (see :data:`CODECS`); ``None`` for its default.
        fps: frame rate; ``None`` takes a source video's rate, else 25.
        refs: past reference frames a P-frame's blocks may choose from (H.264 and HEVC; 1 for the others):
            1 (the default) makes every past vector point into the previous anchor.

    Returns:
        the path written. Raises :class:`EncodeError` for bad parameters or input.
    """
    spec, quality = check_encoding(codec, gop, bframes, quality, refs)
    if fps is not None and not fps > 0:
        raise EncodeError(f"fps must be positive, got {fps}")
    frames, source_fps = _frames_from(source)
    fps = fps or source_fps or 25.0

    out_path = Path(out_path)
    if not out_path.parent.exists():
        raise EncodeError(f"output folder does not exist: {out_path.parent}")
    # Write next to the target and rename at the end: a failed encode leaves no half file.
    try:
        with atomic_path(out_path) as tmp_name:  # the container format is explicit: any suffix works
            if _write(frames, tmp_name, spec, gop, bframes, quality, fps, refs) == 0:
                raise EncodeError("no frames to encode")
    except TapLabError:
        raise
    except (av.FFmpegError, ValueError) as exc:
        raise EncodeError(f"encoding {out_path.name} failed: {exc}") from exc
    return out_path


def _write(
    frames: Iterator[np.ndarray], path: str, spec: CodecSpec, gop: int, bframes: int, quality: int, fps: float,
    refs: int = 1,
) -> int:
    from fractions import Fraction

    with av.open(path, "w", format=spec.container) as container:
        stream = None
        count = 0
        for image in frames:
            image = _check_image(image, count)
            if stream is None:
                h, w = image.shape[:2]
                if h % 2 or w % 2:
                    raise EncodeError(f"frame size {w}x{h} must be even in both dimensions (4:2:0 chroma)")
                stream = container.add_stream(
                    spec.encoder,
                    rate=Fraction(fps).limit_denominator(1001),
                    options=spec.options(gop, bframes, quality, refs),
                )
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.codec_context.gop_size = gop
                stream.codec_context.max_b_frames = bframes
                size = (h, w)
            elif image.shape[:2] != size:
                raise EncodeError(f"frame {count} is {image.shape[1]}x{image.shape[0]}, the first was {size[1]}x{size[0]}")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise EncodeError(f"frame {index}: expected an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _frames_from(source) -> tuple[Iterator[np.ndarray], float | None]:
    """Normalise every accepted source to an iterator of RGB arrays (and its frame rate, if known)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _folder_frames(path), None
        if path.is_file():
            from taplab.codec.reader import open_video

            video = open_video(path)
            return _video_frames(video), video.fps
        raise EncodeError(f"no such file or folder: {path}")
    if isinstance(source, np.ndarray) and source.ndim == 3:
        raise EncodeError("a single image is not a video: pass a sequence of frames")
    return iter(source), None


def _folder_frames(folder: Path) -> Iterator[np.ndarray]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EncodeError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if bgr is None:
            raise EncodeError(f"cannot read image {f}")
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _video_frames(video) -> Iterator[np.ndarray]:
    with video:
        for frame in video:
            yield frame.image
