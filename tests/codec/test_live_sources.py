"""Live sources at the reader: a file still being written (``follow``), a pipe from another process, and
the options a stream is opened with. Real MPEG-TS from taplab's encoder; the writers are real processes
or threads, each in lock-step with the reader where the test is about the reader keeping up."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from taplab.codec import open_video
from taplab.codec.loopback import mpegts_clip
from taplab.errors import VideoOpenError
from tests.conftest import DX, DY, translation_frames


@pytest.fixture(scope="module")
def clip():
    return mpegts_clip(translation_frames(24, 128, 256, DX, DY))


def vectors(source, **kw):
    with open_video(source, **kw) as video:
        return [(f.pict_type, None if f.motion is None else f.motion.vectors.copy()) for f in video]


def assert_same_frames(got, expected):
    assert [t for t, _ in got] == [t for t, _ in expected]
    for (_, a), (_, b) in zip(got, expected):
        assert (a is None) == (b is None) and (a is None or np.array_equal(a, b))


def test_a_growing_file_is_read_as_it_grows_and_ends_when_it_stops(clip, tmp_path):
    path = tmp_path / "recording.ts"
    path.write_bytes(b"")  # the recorder has created it, nothing written yet
    # The recorder writes frame j only once frame j - 1 - AHEAD has come out of the reader, so the reader reads
    # frames that did not exist when it began, however fast or slow each side runs (a frame comes out when the one
    # after next begins: AHEAD 4 leaves room; 60 s: a guard against a hang). Having written the last, it ends the
    # reading at what the file holds (``interrupt``, as stop() does), so that no pause of a loaded machine between
    # two writes can pass for the end of the recording.
    ahead = 4
    got, stalled, progress, opened = [], [], threading.Condition(), []

    def record() -> None:
        with open(path, "ab") as out:
            for j, data in enumerate(clip.frames()):
                with progress:
                    if not progress.wait_for(lambda j=j: len(got) >= j - ahead, timeout=60):
                        stalled.append(j)
                out.write(data)
                out.flush()
        with progress:
            progress.wait_for(lambda: opened, timeout=60)
        opened[0].interrupt()

    writer = threading.Thread(target=record, daemon=True)  # (daemon: a failing test does not hold up the exit)
    writer.start()
    with open_video(path, follow=True, timeout=None) as video:  # None: only the recorder's interrupt ends it
        with progress:
            opened.append(video)
            progress.notify_all()
        for f in video:
            with progress:
                got.append((f.pict_type, None if f.motion is None else f.motion.vectors.copy()))
                progress.notify_all()
    writer.join()
    assert not stalled  # each frame came out as the recorder wrote on, at most AHEAD + 2 frames behind it
    assert_same_frames(got, vectors(path))  # every frame, as read from the finished file
    assert len(got) == 24
    # a file that has stopped growing ends once it has not grown for ``timeout`` seconds, with every frame
    assert_same_frames(vectors(path, follow=True, timeout=0.2), got)


def test_without_follow_a_growing_file_ends_at_its_current_end(clip, tmp_path):
    path = tmp_path / "part.ts"
    path.write_bytes(b"".join(clip.frames()[:10]))
    assert len(vectors(path)) <= 10


def test_a_pipe_from_another_process_gives_the_files_frames(clip, tmp_path):
    path = tmp_path / "clip.ts"
    path.write_bytes(clip.data)
    with subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE) as proc:
        got = vectors(proc.stdout)
    assert len(got) == 24
    assert_same_frames(got, vectors(path))


def test_follow_is_refused_where_it_makes_no_sense(clip, tmp_path):
    with pytest.raises(VideoOpenError, match="not a URL"):
        open_video("tcp://127.0.0.1:9", follow=True)
    with pytest.raises(VideoOpenError, match="already waits for its writer"):
        open_video(sys.stdin.buffer, follow=True)
    (tmp_path / "rec.mp4").write_bytes(b"")
    with pytest.raises(VideoOpenError, match="record MPEG-TS"):
        open_video(tmp_path / "rec.mp4", follow=True)
    (tmp_path / "rec.ts").write_bytes(clip.data)
    with pytest.raises(VideoOpenError, match="follow needs backend='pyav'"):
        open_video(tmp_path / "rec.ts", follow=True, backend="mvextractor")


def test_ffmpeg_options_reach_the_demuxer(clip, tmp_path):
    path = tmp_path / "clip.ts"
    path.write_bytes(clip.data)
    second_gop = clip.frame_ends[11]  # where frame 12, the second I-frame, begins
    got = vectors(path, options={"skip_initial_bytes": str(second_gop)})
    assert_same_frames(got, vectors(path)[12:])


@pytest.mark.parametrize("options, lag", [(None, 2), ({"fflags": "+noparse"}, 1)])
def test_a_live_source_holds_back_no_more_frames_than_the_container_needs(clip, options, lag):
    """The writer sends frame i only once frame i - lag - 1 has come out of the reader. MPEG-TS completes a
    frame when the next one starts, and FFmpeg's MPEG-4 parser when the one after that (lag 2); without
    the parser (``fflags=+noparse``) lag 1 is the least possible. Frame threading, which holds back a
    frame per decoding thread, or a pipe read that waits for a full buffer, stall this exchange."""
    import os

    read_fd, write_fd = os.pipe()
    came_out = [threading.Event() for _ in clip.frames()]
    stalled = []

    def write() -> None:
        with os.fdopen(write_fd, "wb") as out:
            for i, data in enumerate(clip.frames()):
                if i > lag and not came_out[i - lag - 1].wait(5):
                    stalled.append(i)
                    return
                out.write(data)
                out.flush()

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_fd, "rb") as pipe, open_video(pipe, options=options) as video:
        assert video.live
        for frame in video:
            came_out[frame.index].set()
    writer.join()
    assert not stalled and all(event.is_set() for event in came_out)


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_noparse_reads_the_same_frames_and_vectors(codec, tmp_path):
    path = tmp_path / "clip.ts"
    path.write_bytes(mpegts_clip(translation_frames(24, 128, 256, DX, DY), codec=codec).data)
    assert_same_frames(vectors(path, options={"fflags": "+noparse"}), vectors(path))
