"""A bounded fuzzing run (tests/fuzz/harness.py): mutated real streams give a clean run or one `error:` line,
never a traceback, a crash or a hang. The full run (1,000 cases and more) is `python -m tests.fuzz.harness`."""

import pytest

from tests.fuzz.harness import PROMISE, mutate, run, table


@pytest.mark.slow
def test_a_hundred_mutated_streams_keep_the_promise():
    results = run(cases=100, seed=0, timeout=60, command="probe")
    assert len(results) == 100
    broken = [r for r in results if r.outcome not in PROMISE]
    assert not broken, table(results)
    assert {r.outcome for r in results} == {"ok", "error"}  # the mutations do break some files


def test_mutations_are_seeded_and_change_the_stream():
    import numpy as np

    data = bytes(range(256)) * 64
    for mutation in ("flip", "truncate", "splice", "zero", "head"):
        a = mutate(data, mutation, np.random.default_rng(3))
        assert a == mutate(data, mutation, np.random.default_rng(3)) and a != data, mutation


def test_the_sources_are_every_codec_in_mp4_mpegts_and_raw_and_each_decodes_whole(tmp_path):
    """The mutations are only worth as much as the streams they start from: each source made here reads to its end
    before it is damaged (the real clips' copies are tested by the bounded run above)."""
    from taplab.codec import open_video
    from tests.fuzz.harness import RAW, sources

    made = {name: data for name, data in sources(tmp_path).items() if not name.startswith("real-")}
    expected = {f"{codec}.{suffix}" for codec, (_, suffix, _) in RAW.items()} | {f"{codec}.mp4" for codec in RAW} \
        | {f"{codec}.ts" for codec in RAW if codec != "vp9"}
    assert set(made) == expected and len(made) == 14
    names = {"mpeg2": "mpeg2video"}
    for name, data in made.items():
        path = tmp_path / f"check-{name}"
        path.write_bytes(data)
        with open_video(path) as video:
            kinds = [f.pict_type for f in video]
        codec = name.split(".")[0]
        assert video.codec == names.get(codec, codec) and kinds == (["I"] + ["P"] * 11) * 2, name
