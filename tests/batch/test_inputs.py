"""What a batch is made of (taplab.batch.inputs): folders, globs, list files, names. Real files, real probing."""

import shutil
from pathlib import Path

import pytest

from taplab.batch.inputs import expand_inputs, file_kind, is_batch, job_names
from taplab.errors import ConfigError


@pytest.fixture
def tree(tmp_path, translation_clip):
    """videos/a.mp4, videos/day2/b.mkv, videos/day2/c.bin (a video without a known suffix), a text file named .bin,
    images, a hidden video and the batch's own output folder holding an overlay video."""
    root = tmp_path / "videos"
    (root / "day2").mkdir(parents=True)
    shutil.copy(translation_clip, root / "a.mp4")
    shutil.copy(translation_clip, root / "day2" / "b.mkv")
    shutil.copy(translation_clip, root / "day2" / "c.bin")
    (root / "day2" / "notes.bin").write_text("not a video")
    (root / "frame.png").write_bytes(b"\x89PNG")
    shutil.copy(translation_clip, root / ".hidden.mp4")
    (root / "masks" / "a").mkdir(parents=True)
    shutil.copy(translation_clip, root / "masks" / "a" / "overlay.mp4")
    return root


def test_a_folder_gives_its_videos_recursively_by_suffix_or_by_probing(tree):
    found = expand_inputs([str(tree)], exclude=tree / "masks")
    assert found == [str(tree / "a.mp4"), str(tree / "day2" / "b.mkv"), str(tree / "day2" / "c.bin")]


def test_the_output_folder_is_not_an_input(tree):
    assert str(tree / "masks" / "a" / "overlay.mp4") in expand_inputs([str(tree)])
    assert str(tree / "masks" / "a" / "overlay.mp4") not in expand_inputs([str(tree)], exclude=tree / "masks")


def test_a_glob_crosses_folders_with_two_stars(tree):
    assert expand_inputs([str(tree / "**" / "*.mkv")]) == [str(tree / "day2" / "b.mkv")]
    assert expand_inputs([str(tree / "*.mp4")]) == [str(tree / "a.mp4")]


def test_a_list_file_names_paths_relative_to_itself_urls_and_folders(tree, tmp_path):
    listing = tree / "list.txt"
    listing.write_text("# clips for the report\na.mp4\n\n  day2  \nrtsp://camera.local/stream1\n/nowhere/gone.mp4\n")
    assert expand_inputs([str(listing)]) == [str(tree / "a.mp4"), str(tree / "day2" / "b.mkv"),
                                             str(tree / "day2" / "c.bin"), "rtsp://camera.local/stream1",
                                             "/nowhere/gone.mp4"]  # a missing path fails later, as a video


def test_a_video_named_twice_runs_once(tree):
    assert expand_inputs([str(tree / "a.mp4"), str(tree), str(tree / "." / "a.mp4")], exclude=tree / "masks") == [
        str(tree / "a.mp4"), str(tree / "day2" / "b.mkv"), str(tree / "day2" / "c.bin")]


@pytest.mark.parametrize("argument, message", [("empty", "holds no videos"), ("*.avi", "matches no video"),
                                               ("empty.txt", "names no videos"), ("-", "standard input")])
def test_inputs_that_name_nothing_are_errors_of_the_command_line(tmp_path, argument, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=message):
        expand_inputs([argument if argument == "-" else str(tmp_path / argument)])
    with pytest.raises(ConfigError, match="no videos given"):
        expand_inputs([])


def test_names_are_unique_in_input_order_without_case():
    jobs = job_names(["a/clip.mp4", "b/clip.mp4", "c/CLIP.mkv", "rtsp://cam.local/live/front.sdp", "udp://10.0.0.2:5000",
                      "d/my clip (2).mp4", "e/.mp4"])
    assert [j.name for j in jobs] == ["clip", "clip-2", "CLIP-3", "front", "10.0.0.2", "my_clip_2", "mp4"]
    assert jobs[1].source == "b/clip.mp4"


def test_a_batch_is_decided_by_the_form_of_the_command_line(tree):
    assert not is_batch([str(tree / "a.mp4")]) and not is_batch(["-"]) and not is_batch(["rtsp://cam/1"])
    assert not is_batch([str(tree / "missing.mp4")])  # fails as one video does
    (tree / "list.txt").write_text("a.mp4\n")
    for arguments in ([str(tree)], [str(tree / "*.mp4")], [str(tree / "list.txt")], [str(tree / "a.mp4")] * 2):
        assert is_batch(arguments)


def test_file_kinds_by_suffix():
    assert [file_kind(Path(n)) for n in ("x.MP4", "x.ts", "x.png", "x.json", "x.bin", "x")] == [
        "video", "video", "other", "other", "unknown", "unknown"]
