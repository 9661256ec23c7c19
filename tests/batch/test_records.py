"""A batch's records (taplab.batch.records): the resume decision, the closing table, summary.json."""

import json

from taplab.batch.records import Action, BatchSummary, VideoRecord, decide

SETTINGS = {"model": "abc", "config": {"rgc": True}, "formats": ["labels"], "limit": None}


def test_only_a_complete_run_with_the_same_settings_is_skipped():
    done = {"complete": True, "settings": SETTINGS}
    assert decide(done, SETTINGS, overwrite=False) is Action.SKIP
    assert decide(done, {**SETTINGS, "limit": 5}, overwrite=False) is Action.REFUSE
    assert decide(done, SETTINGS, overwrite=True) is Action.RUN
    assert decide(None, SETTINGS, overwrite=False) is Action.RUN  # nothing there, or interrupted: from scratch
    assert decide({"complete": False, "settings": SETTINGS}, SETTINGS, overwrite=False) is Action.RUN


def test_the_table_and_the_json_say_how_each_video_went(tmp_path):
    batch = BatchSummary(str(tmp_path), [
        VideoRecord("front", "front.mp4", "o/front", "done", summary={"frames": 40, "fps": 20.0, "key_share": 0.125}),
        VideoRecord("rear", "rear.mp4", "o/rear", "skipped", summary={"frames": 30, "fps": 10.0, "key_share": 0.5}),
        VideoRecord("broken", "broken.mp4", "o/broken", "failed", error="not a video file, or truncated: broken.mp4"),
        VideoRecord("late", "late.mp4", "o/late", "interrupted"),
    ], seconds=4.0, executor="processes", workers=2, threads=1)
    lines = batch.format().splitlines()
    assert lines[0].split() == ["video", "frames", "frames/s", "key", "status"]
    assert lines[1].split() == ["front", "40", "20.0", "12%", "done"]
    assert lines[2].split() == ["rear", "30", "10.0", "50%", "skipped"]
    assert lines[3].split()[0] == "broken" and lines[3].endswith("failed: not a video file, or truncated: broken.mp4")
    assert lines[-1] == "4 videos: 1 done, 1 skipped, 1 failed, 1 interrupted; 40 frames in 4.0 s, 10.0 frames/s (2 workers)"
    written = json.loads(batch.write(tmp_path / "summary.json").read_text())
    assert written["counts"] == {"done": 1, "skipped": 1, "failed": 1, "interrupted": 1}
    assert written["frames"] == 40 and [v["status"] for v in written["videos"]] == ["done", "skipped", "failed", "interrupted"]
    assert written["videos"][2]["error"].startswith("not a video") and "error" not in written["videos"][0]
