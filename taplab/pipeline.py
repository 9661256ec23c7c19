"""``taplab.segment``: what ``taplab segment`` does, from Python. Reader -> runtime -> sinks, in one call.

    import taplab
    summary = taplab.segment("clip.mp4", "masks/", formats=("labels", "color"), overlay="overlay.mp4")
    print(summary.format())

The runtime (:class:`~taplab.runtime.Segmenter`, or :class:`~taplab.runtime.Stream` for a URL that
is reopened when it drops) yields results; the sinks of :mod:`taplab.io` write them: per-frame files
(:data:`~taplab.io.sinks.FORMATS`), ``frames.json``/``frames.csv`` (also when interrupted), the
overlay video (only when the run completes) and the :class:`~taplab.io.summary.RunSummary`.

Bad input fails before anything is written: the source is opened, the segmenter checked against it,
the formats and the overlay's folder checked, and only then is the output folder made. A run that
fails before its first frame removes what it made (with ``overwrite``, an earlier run's files are gone
by then). A run that completes writes ``summary.json`` last (:func:`run_settings` says what it records of
the settings): the mark of a complete folder that :func:`taplab.segment_many` skips on a re-run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from taplab import __version__
from taplab.codec import open_video
from taplab.codec.reader import DEFAULT_TIMEOUT, Video
from taplab.errors import ConfigError, OutputError
from taplab.files import os_reason, whole
from taplab.io.overlay import OverlayVideo
from taplab.io.sinks import FORMATS, FrameLog, Sink, prepare_output, undo_output, write_run_record
from taplab.io.summary import RunSummary
from taplab.runtime import FrameResult, RuntimeConfig, Segmenter, Stream
from taplab.runtime.stream import connect


def segment(video, out: str | Path, model="default", *, formats: Sequence[str] = ("labels",),
            overlay: str | Path | None = None, side_by_side: bool = False, overwrite: bool = False,
            limit: int | None = None, live: bool = False, reconnect: bool = False, follow: bool = False,
            timeout: float | None = DEFAULT_TIMEOUT, source_options: dict[str, str] | None = None,
            device: str = "auto", config: RuntimeConfig | dict | None = None,
            progress: Callable[[FrameResult, RunSummary], None] | None = None, **options) -> RunSummary:
    """Segment ``video`` with ``model`` into the folder ``out``; returns the run's :class:`RunSummary`.

    ``video`` is anything :func:`taplab.open_video` opens (a path, a URL, a binary file object such as
    a pipe), opened with ``follow``, ``timeout`` and ``source_options`` (FFmpeg's options), or a
    :class:`~taplab.codec.reader.Video` already open. ``formats``: per-frame files, any of
    ``"labels"`` (``frame_000000.png``: label ids), ``"color"`` (``color/``) and ``"npz"`` (``npz/``);
    ``overlay``: also an H.264 video of the frames blended with their masks and a class legend
    (``side_by_side``: the mask next to the frame). Any other keyword is a :class:`RuntimeConfig`
    field (``rgc=False``, ``latency_budget=0.1``), over ``config``. See :func:`segment_to_folder` for the rest.
    """
    segmenter = Segmenter(model, device=device, config=config, **options)
    if isinstance(video, Video):
        return segment_to_folder(segmenter, video, out, formats=formats, overwrite=overwrite, limit=limit,
                                 progress=progress, overlay=overlay, side_by_side=side_by_side, live=live,
                                 reconnect=reconnect)
    with connect(video, retry=reconnect, timeout=timeout, follow=follow, options=source_options) as opened:
        return segment_to_folder(segmenter, opened, out, formats=formats, overwrite=overwrite, limit=limit,
                                 progress=progress, overlay=overlay, side_by_side=side_by_side, live=live,
                                 reconnect=reconnect)


def segment_to_folder(segmenter: Segmenter, source, out: str | Path, formats: Sequence[str] = ("labels",), *,
                      overwrite: bool = False, limit: int | None = None,
                      progress: Callable[[FrameResult, RunSummary], None] | None = None,
                      overlay: str | Path | None = None, side_by_side: bool = False, live: bool = False,
                      reconnect: bool = False) -> RunSummary:
    """Segment ``source`` (as :meth:`Segmenter.run` takes it) with ``segmenter`` and write every result into
    the folder ``out`` through the sinks (module docstring).

    A non-empty ``out`` is refused unless ``overwrite``. ``limit`` stops after so many frames;
    ``progress(result, summary)`` is called after each frame; ``live`` paces a file at its frame rate
    (see :meth:`Segmenter.run`); ``reconnect`` reopens a URL that ends, disconnects or fails, as
    :func:`taplab.stream` does, until ``limit`` or an interrupt (frame indices continue across reconnections).
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown output format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    owned = not isinstance(source, Video)
    video = open_video(source) if owned else source
    with ExitStack() as stack:
        if owned:
            stack.callback(video.close)
        if reconnect and not video.reopenable:
            raise ConfigError(f"reconnect is for a stream URL; {video.name} is not one")
        segmenter.check(video)
        if overlay is not None:
            OverlayVideo.check_path(overlay)
        made = not out.exists()
        prepare_output(out, overwrite)
        summary = RunSummary(total=min(video.frame_count, limit) if video.frame_count and limit else video.frame_count or limit,
                             live=live or video.live or segmenter.config.latency_budget is not None,
                             outputs={"masks": str(out)} | ({"overlay video": str(overlay)} if overlay else {}),
                             notes=motion_notes(segmenter.config, video))
        try:
            _run(segmenter, video, out, formats, summary, limit, progress, overlay, side_by_side, live, reconnect)
        except BaseException as exc:
            if summary.frames == 0:  # nothing was segmented: remove what this run made
                undo_output(out, made)
            if isinstance(exc, OSError):  # the reader maps its own: what is left is writing (no space, no right)
                raise OutputError(f"cannot write the outputs in {out}: {os_reason(exc)}") from exc
            raise
    lost = lost_frames(video.frame_count, summary.frames, limit, reconnect)
    if lost:
        summary.notes.append(f"{lost} of the {video.frame_count} frames the file's index lists could not be decoded "
                             "(a truncated or damaged file): their outputs are missing")
    try:
        write_run_record(out, {"taplab": __version__, "source": video.name, "complete": True,
                               "settings": run_settings(segmenter, formats, limit, overlay, side_by_side),
                               "summary": summary.to_dict()})
    except OSError as exc:
        raise OutputError(f"cannot write {out / 'summary.json'}: {os_reason(exc)}") from exc
    return summary


def run_settings(segmenter: Segmenter, formats: Sequence[str], limit: int | None = None,
                 overlay: str | Path | None = None, side_by_side: bool = False) -> dict:
    """What decides a run's outputs, as JSON values: the model's digest (its weights, not its path), the runtime
    options but ``threads`` (which does not change labels, and which batch workers set for themselves), the formats,
    the limit and the overlay's file name. Two runs with equal settings on one video write the same files."""
    return settings_record(segmenter.model.digest, segmenter.config, formats, limit, overlay, side_by_side)


def settings_record(model_digest: str, config: RuntimeConfig, formats: Sequence[str], limit: int | None = None,
                    overlay: str | Path | None = None, side_by_side: bool = False) -> dict:
    """:func:`run_settings` from its parts, as JSON would give them back (so that a record read from a file compares
    equal). Pure."""
    values = {k: v for k, v in config.to_dict().items() if k != "threads"}
    record = {"model": model_digest, "config": values, "formats": sorted(set(formats)), "limit": limit,
              "overlay": None if overlay is None else Path(overlay).name, "side_by_side": bool(overlay and side_by_side)}
    return json.loads(json.dumps(record, default=str))


def lost_frames(indexed: int | None, done: int, limit: int | None, reconnect: bool) -> int:
    """Frames a file's index lists that a run that read it to its end did not give (0 where the index says nothing,
    the run stopped at ``limit`` or reconnected). A truncated MP4 still lists every frame it was meant to hold:
    the run's outputs then miss the rest, and the summary says so, while the frames decoded stand (exit 0)."""
    if not indexed or reconnect or (limit is not None and done >= min(limit, indexed)):
        return 0
    return max(0, indexed - done)


def motion_notes(config: RuntimeConfig, video: Video) -> list[str]:
    """What a user should know of where the run's motion comes from: nothing for a codec that exports vectors."""
    if video.exports_vectors or not config.ffw:
        return []
    if config.motion_source == "codec":
        return [f"{video.codec} exports no motion vectors, and motion_source is codec: every frame ran the CNN"]
    if config.motion_source == "auto":
        text = f"{video.codec} exports no motion vectors: taplab estimated block vectors with {config.motion_fallback}"
        return [text + " optical flow"]
    return []  # an optical flow or the ground truth, as asked


def _run(segmenter: Segmenter, video: Video, out: Path, formats: Sequence[str], summary: RunSummary,
         limit: int | None, progress, overlay, side_by_side: bool, live: bool, reconnect: bool) -> None:
    """The run itself: results into the sinks, every sink closed however it ends (complete or not)."""
    model, complete = segmenter.model, False
    with ExitStack() as sinks:
        def opened(sink):
            sinks.callback(lambda: sink.close(complete))  # closed in reverse order, the log last
            return sink

        log = opened(FrameLog(out))
        files: list[Sink] = [opened(FORMATS[f](out, model.colors)) for f in dict.fromkeys(formats)]
        video_sink = None if overlay is None else opened(
            OverlayVideo(overlay, model.colors, video.fps or 25.0, side_by_side, names=model.class_names))
        images = video_sink is not None
        results = iter(Stream(segmenter, video, live=live, reconnect=True, images=images)) if reconnect \
            else segmenter.run(video, images=images, live=live)
        sinks.callback(results.close)  # its threads end here, not whenever the generator is collected
        start = time.perf_counter()
        for result in results:
            with whole():  # a stop signal waits for the frame's outputs to be whole: its files, overlay and record
                start_write = time.perf_counter()
                for sink in files:
                    sink.write(result)
                if video_sink is not None:
                    video_sink.write(result)
                result.timings["write"] = time.perf_counter() - start_write
                log.write(result)
            summary.add(result)
            summary.seconds = time.perf_counter() - start
            if progress is not None:
                progress(result, summary)
            if limit is not None and summary.frames >= limit:
                break
        complete = True
