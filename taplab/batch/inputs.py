"""What a batch is made of: the videos named on a command line, and the folder each one's outputs go to.

An argument of ``taplab segment`` (or an item of :func:`taplab.segment_many`'s list) is one of:

- a **video**: a path (taken as it is: a file that is not a video fails on its own, in the batch's table) or a
  URL (``scheme://...``);
- a **folder**: its videos, recursively, in sorted order. A file is a video by its suffix
  (:data:`VIDEO_SUFFIXES`); a file with a suffix that is known not to be one (:data:`OTHER_SUFFIXES`: images,
  text, models, taplab's own outputs) is passed over; any other file is opened with FFmpeg and taken where it has
  a video stream. Hidden files and folders (``.name``) and the batch's own output folder are passed over;
- a **glob** (``'clips/*.mp4'``, ``'footage/**/*.mkv'``, quoted so that taplab, not the shell, expands it; ``**``
  crosses folders): what it matches, files as videos and folders as above;
- a **list file** (suffix ``.txt``, ``.list`` or ``.lst``): one path, URL, folder or glob per line; blank lines
  and lines starting with ``#`` are passed over; relative paths are relative to the list file's folder.

A video named twice (the same resolved path or URL) runs once. A folder or glob that yields no video, and a list
that names none, is an error of the command line (nothing runs), while a path that does not exist is a video that
fails (the rest go on: a list of thousands with one stale line still runs).

Each video's outputs go to ``OUT/<name>/``: :func:`job_names` makes ``<name>`` from the file name without its
suffix (a URL: its last path segment, else its host), and makes names unique in input order (``clip``,
``clip-2``, ...; compared without case, for file systems that ignore it).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from taplab.errors import ConfigError

#: suffixes taken as videos without opening the file
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".m2v", ".mpv",
    ".flv", ".wmv", ".3gp", ".ogv", ".ivf", ".y4m", ".h264", ".264", ".h265", ".265", ".hevc", ".m4e", ".dv",
})
#: suffixes passed over in folders without opening the file (images, text, data, models, taplab's outputs)
OTHER_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".txt", ".md", ".json",
    ".jsonl", ".csv", ".tsv", ".yaml", ".yml", ".xml", ".html", ".pdf", ".npz", ".npy", ".pt", ".pth", ".onnx",
    ".py", ".sh", ".log", ".zip", ".tar", ".gz", ".srt", ".vtt", ".wav", ".mp3", ".aac", ".flac", ".lst", ".list",
})
LIST_SUFFIXES = frozenset({".txt", ".list", ".lst"})
_GLOB_CHARS = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Job:
    """One video of a batch: its ``source`` (a path or URL, as :func:`taplab.open_video` takes it) and the ``name``
    of its folder under the batch's output folder."""

    source: str
    name: str


def is_url(text: str) -> bool:
    return "://" in text


def is_batch(arguments: Sequence[str]) -> bool:
    """Whether a command line is a batch (outputs in ``OUT/<name>/``, a table, ``OUT/summary.json``) rather than one
    video (outputs in ``OUT/`` itself, as before batches existed): more than one argument, or one folder, glob or
    list file, however many videos it turns out to hold. Decided by the form of the command line, not by what a
    folder holds today, so that a folder of one video lays its outputs out as the same folder of two does."""
    if len(arguments) != 1:
        return True
    (argument,) = arguments
    if argument == "-" or is_url(argument):
        return False
    path = Path(argument)
    return path.is_dir() or _is_list(path) or (not path.exists() and bool(_GLOB_CHARS.search(argument)))


def expand_inputs(arguments: Iterable[str], exclude: str | os.PathLike[str] | None = None,
                  looks_like_video: Callable[[Path], bool] | None = None) -> list[str]:
    """The videos the ``arguments`` name, in order, each once (module docstring). ``exclude``: a folder whose
    contents are never inputs (the batch's output folder). ``looks_like_video(path)`` decides files of unknown
    suffix (default: :func:`has_video_stream`). :class:`ConfigError` for a folder or glob without videos, a list
    without entries, ``-`` (standard input is one stream, not a batch) and no arguments at all."""
    arguments = list(arguments)
    if not arguments:
        raise ConfigError("no videos given")
    excluded = Path(exclude).resolve() if exclude is not None else None
    sources, seen = [], set()
    for source in _expand(arguments, excluded, looks_like_video or has_video_stream, lists=True):
        key = source if is_url(source) else str(Path(source).resolve())
        if key not in seen:
            seen.add(key)
            sources.append(source)
    return sources


def _expand(arguments: list[str], excluded: Path | None, looks_like_video, lists: bool) -> Iterator[str]:
    for argument in arguments:
        if argument == "-":
            raise ConfigError("- (standard input) is one stream: segment it on its own, not in a batch")
        if is_url(argument):
            yield argument
            continue
        path = Path(argument)
        if path.is_dir():
            found = list(_folder_videos(path, excluded, looks_like_video))
            if not found:
                raise ConfigError(f"folder {argument} holds no videos")
            yield from found
        elif lists and _is_list(path):
            entries = list(_list_entries(path))
            if not entries:
                raise ConfigError(f"list {argument} names no videos")
            yield from _expand(entries, excluded, looks_like_video, lists=False)
        elif not path.exists() and _GLOB_CHARS.search(argument):
            matched = sorted(glob.glob(argument, recursive=True))
            found = [v for m in matched for v in (_folder_videos(Path(m), excluded, looks_like_video)
                                                   if Path(m).is_dir() else _file_video(Path(m), excluded, looks_like_video))]
            if not found:
                raise ConfigError(f"{argument} matches no video")
            yield from found
        else:
            yield argument  # a video, or a path that fails as one in the batch's table


def _folder_videos(folder: Path, excluded: Path | None, looks_like_video) -> Iterator[str]:
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _inside(here / d, excluded))
        for name in sorted(files):
            if not name.startswith("."):
                yield from _file_video(here / name, excluded, looks_like_video)


def _file_video(path: Path, excluded: Path | None, looks_like_video) -> Iterator[str]:
    if path.is_file() and not _inside(path, excluded) and file_kind(path) != "other":
        if file_kind(path) == "video" or looks_like_video(path):
            yield str(path)


def file_kind(path: Path) -> str:
    """``"video"``, ``"other"`` or ``"unknown"`` (to be opened) by a file's suffix. Pure."""
    suffix = path.suffix.lower()
    return "video" if suffix in VIDEO_SUFFIXES else "other" if suffix in OTHER_SUFFIXES else "unknown"


def has_video_stream(path: Path) -> bool:
    """Whether FFmpeg opens ``path`` and finds a video stream in it (for files whose suffix says nothing)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return bool(container.streams.video)
    except Exception:  # noqa: BLE001 - any failure to open means "not a video", which is all that is asked here
        return False


def _list_entries(path: Path) -> Iterator[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read list {path}: {exc}") from None
    for line in text.splitlines():
        entry = line.strip()
        if entry and not entry.startswith("#"):
            yield entry if is_url(entry) or Path(entry).is_absolute() else str(path.parent / entry)


def _is_list(path: Path) -> bool:
    return path.suffix.lower() in LIST_SUFFIXES and path.is_file()


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    resolved = path.resolve()
    return resolved == folder or folder in resolved.parents


def job_names(sources: Sequence[str]) -> list[Job]:
    """One :class:`Job` per source, its folder name unique in input order (module docstring). Pure."""
    jobs, taken = [], set()
    for source in sources:
        base = _base_name(source)
        name, n = base, 1
        while name.lower() in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name.lower())
        jobs.append(Job(source, name))
    return jobs


def _base_name(source: str) -> str:
    if is_url(source):
        parts = urlsplit(source)
        segment = parts.path.rstrip("/").rsplit("/", 1)[-1]
        text = Path(segment).stem if segment else parts.hostname or parts.netloc
    else:
        text = Path(source).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return name or "video"
