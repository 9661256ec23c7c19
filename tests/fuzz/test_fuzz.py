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
