"""The text forms of options: KEY=VALUE, lists, sizes, ranges, and errors that name the option."""

import pytest

from taplab.errors import ConfigError
from taplab.options import parse_assignment, parse_assignments, parse_list, parse_range, parse_size, parse_value


def test_assignments():
    assert parse_assignment("width=0.75", "--model-arg") == ("width", "0.75")
    assert parse_assignment(" rtsp_transport =tcp ", "--source-option") == ("rtsp_transport", "tcp ")  # value as written
    assert parse_assignment("filter=a=b", "--source-option") == ("filter", "a=b")  # split at the first '='
    assert parse_assignment("empty=", "--source-option") == ("empty", "")
    assert parse_assignments(["a=1", "b=2", "a=3"], "--model-arg") == {"a": "3", "b": "2"}  # the last one wins
    assert parse_assignments([], "--model-arg") == {}


@pytest.mark.parametrize("text", ["width", "=3", " =3", ""])
def test_assignment_errors_name_the_option(text):
    with pytest.raises(ConfigError) as error:
        parse_assignment(text, "--model-arg")
    assert str(error.value) == f"--model-arg: expected KEY=VALUE, got {text!r}"
    with pytest.raises(ConfigError, match="--set: expected FIELD=V1,V2, got 'rgc_alpha'"):
        parse_assignments(["rgc_alpha"], "--set", form="FIELD=V1,V2")


def test_values_lists_sizes_ranges():
    assert [parse_value(t) for t in ("0.75", "3", "true", "null", "[32, 64]", "rate", "h264")] == \
        [0.75, 3, True, None, [32, 64], "rate", "h264"]
    assert parse_list("6, 12,,24", int, "--gop") == [6, 12, 24]
    assert parse_list("", int, "--gop") == []
    assert parse_size("512x1024", "--size") == (512, 1024) and parse_size("64X128", "--size") == (64, 128)
    assert parse_range("0.5,2", float, "--scale") == (0.5, 2.0)
    with pytest.raises(ConfigError, match="--gop: cannot read '6,x'"):
        parse_list("6,x", int, "--gop")
    for bad in ("512", "512x", "axb", "1x2x3"):
        with pytest.raises(ConfigError, match=f"--size: expected HxW, e.g. 512x1024, got '{bad}'"):
            parse_size(bad, "--size")
    with pytest.raises(ConfigError, match="--scale: expected LOW,HIGH, e.g. 0.5,2.0, got '2'"):
        parse_range("2", float, "--scale")
