"""``taplab.segment``: what ``taplab segment`` does, from Python. Reader -> runtime -> sinks, in one call.

    import taplab
    summary = taplab.segment("clip.mp4", "masks/", formats=("labels", "color"), overlay="overlay.mp4")
    print(summary.format())

The runtime (:class:`~taplab.runtime.Segmenter`, or :class:`~taplab.runtime.Stream` for a URL that
is reopened when it drops) yields results; the sinks of :mod:`taplab.io` write them: per-frame files
(:data:`~taplab.io.sinks.FORMATS`), ``frames.json``/``frames.csv`` (also when interrupted), the
overlay video (only when the run completes) and the :class:`~taplab.io.summary.RunSummary`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from taplab.codec import open_video
from taplab.codec.reader import Video
from taplab.errors import ConfigError
from taplab.io.overlay import OverlayVideo
from taplab.io.sinks import FORMATS, FrameLog, Sink, prepare_output
from taplab.io.summary import RunSummary
from taplab.runtime import FrameResult, RuntimeConfig, Segmenter, Stream


def segment(video, out: str | Path, model="default", formats: Sequence[str] = ("labels",), overlay: str | Path | None = None,
            side_by_side: bool = False, overwrite: bool = False, limit: int | None = None, live: bool = False,
            reconnect: bool = False, device: str = "auto", config: RuntimeConfig | dict | None = None,
            progress: Callable[[FrameResult, RunSummary], None] | None = None, **options) -> RunSummary:
    """Segment ``video`` (a path, URL, binary file object or open :class:`~taplab.codec.reader.Video`) with
    ``model`` into the folder ``out``; returns the run's :class:`RunSummary`.

    ``formats``: per-frame files, any of ``"labels"`` (``frame_000000.png``: label ids), ``"color"``
    (``color/``) and ``"npz"`` (``npz/``); ``overlay``: also an H.264 video of the frames blended with
    their masks and a class legend (``side_by_side``: the mask next to the frame). Any other keyword is a
    :class:`RuntimeConfig` field (``rgc=False``, ``latency_budget=0.1``), over ``config``. See
    :func:`segment_to_folder` for the rest.
    """
    segmenter = Segmenter(model, device=device, config=config, **options)
    return segment_to_folder(segmenter, video, out, formats, overwrite, limit, progress, overlay, side_by_side, live,
                             reconnect)


def segment_to_folder(segmenter: Segmenter, source, out: str | Path, formats: Sequence[str] = ("labels",),
                      overwrite: bool = False, limit: int | None = None,
                      progress: Callable[[FrameResult, RunSummary], None] | None = None,
                      overlay: str | Path | None = None, side_by_side: bool = False, live: bool = False,
                      reconnect: bool = False) -> RunSummary:
    """Segment ``source`` (as :meth:`Segmenter.run` takes it) with ``segmenter`` and write every result into
    the folder ``out`` through the sinks (module docstring).

    A non-empty ``out`` is refused unless ``overwrite``; a bad source fails before the folder is
    touched. ``limit`` stops after so many frames; ``progress(result, summary)`` is called after each
    frame; ``live`` paces a file at its frame rate (see :meth:`Segmenter.run`); ``reconnect`` reopens a
    URL that ends, disconnects or fails, as :func:`taplab.stream` does, until ``limit`` or an interrupt
    (frame indices continue across reconnections).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    owned = not isinstance(source, Video)
    video = open_video(source) if owned else source  # a bad source fails before the folder is touched
    try:
        if reconnect and not video.reopenable:
            raise ConfigError(f"reconnect is for a stream URL; {video.name} is not one")
        prepare_output(out, overwrite)
        model = segmenter.model
        sinks: list[Sink] = [FORMATS[f](out, model.colors) for f in dict.fromkeys(formats)]
        overlay_video = None if overlay is None else \
            OverlayVideo(overlay, model.colors, video.fps or 25.0, side_by_side, names=model.class_names)
    except BaseException:
        if owned:
            video.close()
        raise
    log = FrameLog(out)
    summary = RunSummary(total=min(video.frame_count, limit) if video.frame_count and limit else video.frame_count or limit,
                         live=live or video.live or segmenter.config.latency_budget is not None,
                         outputs={"masks": str(out)} | ({"overlay video": str(overlay)} if overlay else {}))
    images = overlay_video is not None
    results = iter(Stream(segmenter, video, live=live, reconnect=True, images=images)) if reconnect \
        else segmenter.run(video, images=images, live=live)
    start, complete = time.perf_counter(), False
    try:
        for result in results:
            start_write = time.perf_counter()
            for sink in sinks:
                sink.write(result)
            if overlay_video is not None:
                overlay_video.write(result)
            result.timings["write"] = time.perf_counter() - start_write
            log.write(result)
            summary.add(result)
            summary.seconds = time.perf_counter() - start
            if progress is not None:
                progress(result, summary)
            if limit is not None and summary.frames >= limit:
                break
        complete = True
    finally:
        results.close()  # its threads end here, not whenever the generator is collected
        if owned:
            video.close()
        log.close(complete)
        for sink in sinks:
            sink.close(complete)
        if overlay_video is not None:
            overlay_video.close(complete)
    return summary
