"""Atomic writes and image reads: no half-written file under a final name, errors that name the file."""

import os

import cv2
import numpy as np
import pytest

from taplab.errors import ConfigError
from taplab.files import LABEL_PNG, atomic_path, read_image, read_label_image, write_image


def test_atomic_path_renames_on_success_and_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        # nothing exists before the writer creates it: a signal raised at any moment before that leaves nothing
        assert tmp.endswith(".txt") and not target.exists() and not list(tmp_path.iterdir())
        with open(tmp, "w") as f:
            f.write("done")
    assert target.read_text() == "done"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "broken.txt") as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_images_round_trip_in_rgb_and_as_stored(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (6, 10, 3), np.uint8)
    write_image(tmp_path / "colour.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "colour.png"), rgb)
    labels = np.arange(60, dtype=np.uint8).reshape(6, 10)
    write_image(tmp_path / "labels.png", labels)
    np.testing.assert_array_equal(read_label_image(tmp_path / "labels.png"), labels)
    assert read_image(tmp_path / "labels.png").shape == (6, 10, 3)  # grey expanded to RGB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colour.png", "labels.png"]


def test_label_pngs_filter_rows_against_the_row_above_and_stay_exact(tmp_path):
    """A synthetic street's label map: written with :data:`LABEL_PNG`, it reads back exactly and is smaller than
    OpenCV's default encoding of it (``benchmarks/bench_png.py`` measures both on the real clip)."""
    from taplab.data.synth import SynthConfig, generate

    labels = next(iter(generate(SynthConfig(height=256, width=512, frames=1, seed=3)))).labels
    assert labels.ndim == 2 and np.unique(labels).size > 5
    write_image(tmp_path / "labels.png", labels)
    np.testing.assert_array_equal(read_label_image(tmp_path / "labels.png"), labels)
    default = cv2.imencode(".png", labels)[1]
    assert LABEL_PNG and (tmp_path / "labels.png").stat().st_size < 0.75 * len(default)


def test_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="cannot write .*x.unknownformat: could not find a writer"):
        write_image(tmp_path / "x.unknownformat", np.zeros((4, 4), np.uint8))
    with monkeypatch.context() as m:  # what OpenCV reports for a failed write (a full disk, say)
        m.setattr("cv2.imwrite", lambda *args: False)
        with pytest.raises(OSError, match="cannot write .*full.png$"):
            write_image(tmp_path / "full.png", np.zeros((4, 4), np.uint8))
    assert not list(tmp_path.iterdir())  # and no temporary file is left behind
    with pytest.raises(ConfigError, match="cannot read image .*none.png: no such file"):
        read_image(tmp_path / "none.png")
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(ConfigError, match="cannot read image .*text.png$"):
        read_label_image(tmp_path / "text.png")


def test_a_deferred_stop_waits_for_the_end_of_a_whole_write():
    """A stop signal's handler defers its stop while a frame's outputs are written (taplab segment's handler does:
    a SIGTERM between a frame's label file and its log record once left a file the log did not list)."""
    from taplab.files import defer_stop, whole

    assert not defer_stop(KeyboardInterrupt())  # nothing under way: the handler raises it itself
    written = []
    with pytest.raises(KeyboardInterrupt):
        with whole():
            written.append("labels")
            assert defer_stop(KeyboardInterrupt())  # the signal comes here
            written.append("log")  # the rest of the frame is still written
    assert written == ["labels", "log"]
    assert not defer_stop(KeyboardInterrupt())  # and nothing is pending after it
    with whole():  # a stretch without a signal ends quietly
        written.append("next")


def test_only_the_main_threads_writes_defer_a_stop():
    """Signal handlers run in the main thread: a stop deferred to another thread's write would end that thread, not
    the run (a batch's in-process worker writes in a thread)."""
    import threading

    from taplab.files import defer_stop, whole

    inside, release, seen = threading.Event(), threading.Event(), []

    def worker():
        with whole():
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(30)
    seen.append(defer_stop(KeyboardInterrupt()))  # the main thread, writing nothing, raises it itself
    release.set()
    thread.join(30)
    assert seen == [False] and not thread.is_alive()
