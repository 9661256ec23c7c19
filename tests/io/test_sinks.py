"""The sinks alone, fed FrameResults made by the test: files, the log, the summary, the overlay video's legend."""

import json

import cv2
import numpy as np
import pytest

from taplab.codec import open_video
from taplab.errors import ConfigError
from taplab.io import FORMATS, FrameLog, OverlayVideo, RunSummary
from taplab.io.overlay import Legend
from taplab.runtime import FrameResult

COLORS = [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
NAMES = ["road", "sidewalk", "building"]


def result(index, kind="warp", labels=True, **values):
    lab = np.zeros((8, 16), np.uint8)
    lab[:, 8:] = 2
    return FrameResult(index, "P", kind, lab if labels else None, **values)


def test_per_frame_files_write_only_frames_with_output(tmp_path):
    sinks = [FORMATS[name](tmp_path, COLORS) for name in ("labels", "color", "npz")]
    for r in (result(0, "key-I"), result(1, "skip", labels=False), result(2)):
        for sink in sinks:
            sink.write(r)
    assert sorted(p.name for p in tmp_path.glob("frame_*.png")) == ["frame_000000.png", "frame_000002.png"]
    color = cv2.cvtColor(cv2.imread(str(tmp_path / "color" / "frame_000002.png")), cv2.COLOR_BGR2RGB)
    assert tuple(color[0, 0]) == COLORS[0] and tuple(color[0, 15]) == COLORS[2]
    assert np.load(tmp_path / "npz" / "frame_000000.npz")["labels"][0, 15] == 2
    assert not list(tmp_path.rglob(".taplab-*"))


def test_the_log_holds_every_frame_skipped_ones_too(tmp_path):
    log = FrameLog(tmp_path)
    log.write(result(0, "key-I", timings={"cnn_full": 0.2}, latency=0.25))
    log.write(result(1, "skip", labels=False, latency=0.01))
    log.close(complete=False)
    records = json.loads((tmp_path / "frames.json").read_text())
    assert [r["kind"] for r in records] == ["key-I", "skip"] and records[0]["ms"]["cnn_full"] == 200.0
    rows = (tmp_path / "frames.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].startswith("1,P,skip")


def test_the_summary_shows_latency_only_for_live_runs():
    summary = RunSummary(live=False, outputs={"overlay video": "o.mp4"})
    for r in (result(0, "key-I", latency=0.3), result(1, latency=0.01)):
        summary.add(r)
    text = summary.format()
    assert "latency" not in text and "overlay video: o.mp4" in text and summary.key_share == 0.5
    summary.live = True
    assert "latency (arrival to result, frames with output): p50" in summary.format()


def test_the_legend_lists_the_classes_seen_so_far_in_class_order():
    legend = Legend(NAMES, COLORS)
    image = np.full((200, 300, 3), 255, np.uint8)
    legend.draw(image)
    assert (image == 255).all()  # nothing seen yet: no legend
    labels = np.full((10, 10), 2, np.uint8)
    legend.update(labels)
    legend.update(np.zeros((10, 10), np.uint8))
    legend.draw(image)
    row = max(10, round(200 / 36))
    pad = max(2, row // 4)
    swatches = [tuple(image[pad + i * row + row // 2, pad + 2]) for i in range(2)]
    assert swatches == [COLORS[0], COLORS[2]]  # road then building: class order, not the order seen
    assert (image[pad + 2 * row + pad:, :] == 255).all()  # two rows only
    small = np.full((64, 128, 3), 255, np.uint8)
    legend.draw(small)
    assert (small == 255).all()  # too low to read: none


def test_an_overlay_video_keeps_the_frame_size_and_shows_skipped_frames_bare(tmp_path):
    path = tmp_path / "o.mp4"
    video = OverlayVideo(path, COLORS, 25.0, names=NAMES)
    image = np.full((128, 256, 3), 200, np.uint8)
    labels = np.zeros((128, 256), np.uint8)
    for k in range(4):
        video.add(image, None if k == 1 else labels)
    video.close()
    with open_video(path) as v:
        frames = [f.image for f in v]
    assert len(frames) == 4 and frames[0].shape == (128, 256, 3)
    assert np.abs(frames[1].astype(int) - 200).mean() < 4  # the skipped frame: the image alone


def test_an_interrupted_overlay_keeps_its_frames_and_one_without_frames_leaves_no_file(tmp_path):
    path = tmp_path / "o.mp4"
    video = OverlayVideo(path, COLORS, 25.0)
    for _ in range(3):
        video.add(np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8))
    video.close(complete=False)
    with open_video(path) as v:
        assert sum(1 for _ in v) == 3
    empty = tmp_path / "empty.mp4"
    OverlayVideo(empty, COLORS, 25.0).close(complete=False)
    assert not empty.exists() and not list(tmp_path.glob(".taplab-*"))
    with pytest.raises(ConfigError, match="does not exist"):
        OverlayVideo(tmp_path / "nowhere" / "o.mp4", COLORS, 25.0)


def test_overwrite_removes_an_earlier_runs_files_and_a_killed_runs_temporaries_only(tmp_path):
    from taplab.io.sinks import prepare_output

    out = tmp_path / "masks"
    (out / "color").mkdir(parents=True)
    kept = out / "notes.txt"
    for name in ("frame_000000.png", "frames.json", ".taplab-abc123.png", "color/.taplab-x.png", "notes.txt"):
        (out / name).write_bytes(b"x")
    with pytest.raises(ConfigError, match="not empty"):
        prepare_output(out, overwrite=False)
    prepare_output(out, overwrite=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == ["notes.txt"] and kept.exists()


def test_a_killed_runs_temporaries_alone_are_cleaned_on_start(translation_clip, tmp_path):
    """Issue 17: the half-written hidden files of a killed run are nobody's output: a run into a folder that holds
    only those removes them and goes on without --overwrite (other files still need it)."""
    from taplab.cli import main

    out = tmp_path / "masks"
    (out / "color").mkdir(parents=True)
    for name in (".taplab-abc123.png", "color/.taplab-x.png", ".taplab-y.jsonl"):
        (out / name).write_bytes(b"half")
    main(["segment", str(translation_clip), "--out", str(out), "--format", "color"])
    assert not list(out.rglob(".taplab-*")) and len(list((out / "color").glob("frame_*.png"))) == 24
    (out / "color" / ".taplab-z.png").write_bytes(b"half")  # beside a finished run's files: --overwrite as before
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(translation_clip), "--out", str(out)])
    assert exit_.value.code == 2 and not list(out.rglob(".taplab-*"))


@pytest.mark.parametrize("args, message", [
    (["--out", "{tmp}/plain/masks"], "error: cannot create output folder {tmp}/plain/masks: Not a directory"),
    (["--out", "{tmp}/taken", "--overwrite", "--format", "color"],
     "error: cannot write the outputs in {tmp}/taken: File exists: {tmp}/taken/color"),
    (["{clip}", "--out", "{tmp}/plain/batch"], "error: cannot create output folder {tmp}/plain/batch: Not a directory"),
])
def test_outputs_that_cannot_be_written_are_one_line_errors(translation_clip, tmp_path, args, message, capsys):
    """A folder under a file, a sink's folder that is a file: once tracebacks (OSError), now exit status 2."""
    from taplab.cli import main

    (tmp_path / "plain").write_text("a file, not a folder")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "color").write_text("a file where the colour PNGs' folder goes")
    names = {"tmp": tmp_path, "clip": translation_clip}
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(translation_clip), *(a.format(**names) for a in args)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip() == message.format(**names) and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["color"]  # nothing left behind


def _deny(monkeypatch, where, tmp_path):
    """Permission denied at one place, as a user without the right meets it: the tests run as root, whom chmod does
    not stop, so the refusal is made by the test (said so here; the rest of the run is real): ``"mkdir"``, the
    output folder's creation under a parent the user cannot write; ``"access"``, the check of an existing folder
    the user cannot write; ``"write"``, the first file the run creates in it (the log's), refused though the check
    passed (an ACL or a mount that access() does not see)."""
    import os
    import pathlib
    import tempfile

    locked = tmp_path / "locked"

    def refused(path):
        return PermissionError(13, "Permission denied", str(path))

    if where == "mkdir":
        real_mkdir = pathlib.Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self.is_relative_to(locked) and self != locked:
                raise refused(self)
            return real_mkdir(self, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    elif where == "access":
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK and pathlib.Path(
            path).is_relative_to(locked) else real_access(path, mode, **kw))  # readable, not writable
    else:
        real_temporary = tempfile.TemporaryFile

        def temporary(*args, dir=None, **kwargs):
            if dir is not None and pathlib.Path(dir).is_relative_to(locked):
                raise refused(pathlib.Path(dir) / ".taplab-log.jsonl")
            return real_temporary(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "TemporaryFile", temporary)


@pytest.mark.parametrize("where, out, message", [
    ("mkdir", "locked/masks", "error: cannot create output folder {tmp}/locked/masks: Permission denied"),
    ("access", "locked", "error: output folder {tmp}/locked is not writable"),
    ("write", "locked/masks", "error: cannot write the outputs in {tmp}/locked/masks: Permission denied: "
                              "{tmp}/locked/masks/.taplab-log.jsonl"),
])
def test_an_output_folder_without_the_right_to_write_is_a_one_line_error(translation_clip, tmp_path, monkeypatch,
                                                                         capsys, where, out, message):
    """Issue 17, item 4: an unwritable --out once gave a PermissionError traceback; now one line, exit 2, and
    nothing of the run left behind."""
    from taplab.cli import main

    (tmp_path / "locked").mkdir()
    _deny(monkeypatch, where, tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["segment", str(translation_clip), "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.strip() == message.format(tmp=tmp_path) and "Traceback" not in err, err
    assert list((tmp_path / "locked").iterdir()) == []  # no output folder, no log, no temporary file
