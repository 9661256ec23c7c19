"""The text forms of options, parsed in one place: ``KEY=VALUE``, ``V1,V2,...``, ``HxW``, ``LOW,HIGH``.

Pure functions over strings (no torch, nothing of taplab above :mod:`taplab.errors`), shared by the
CLI (``--model-arg``, ``--source-option``, ``--set``, ``--crop``, ...) and by the specs the library
reads itself (``synth:clips=N,...``). Every error is a :class:`~taplab.errors.ConfigError` with a
one-line message ``<option>: expected <form>, got '<text>'``, ``option`` being what the user typed
the text into (``"--model-arg"``, ``"synthetic data spec 'synth:clips'"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from taplab.errors import ConfigError

T = TypeVar("T")


def parse_assignment(text: str, option: str, form: str = "KEY=VALUE") -> tuple[str, str]:
    """``"KEY=VALUE"`` -> ``(key, value)``: split at the first ``=``, the key stripped of surrounding
    blanks and not empty, the value as written (it may hold ``=`` and blanks). ``form`` is how the
    error message spells what was expected (``"FIELD=V1,V2"`` for ``--set``)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not key:
        raise ConfigError(f"{option}: expected {form}, got {text!r}")
    return key, value


def parse_assignments(items: Iterable[str], option: str, form: str = "KEY=VALUE") -> dict[str, str]:
    """Several :func:`parse_assignment` texts -> ``{key: value}`` in the order given; a repeated key
    keeps its last value (a later option overrides an earlier one, as on a command line)."""
    return dict(parse_assignment(text, option, form) for text in items)


def parse_value(text: str) -> Any:
    """A value typed as text: a JSON number, boolean, null, list or object where it is one
    (``0.75``, ``true``, ``null``, ``[32, 64]``), else the text itself (``rate``, ``h264``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_list(text: str, convert: Callable[[str], T], option: str) -> list[T]:
    """``"V1,V2,..."`` -> ``[convert(V1), convert(V2), ...]``, blanks around items and empty items
    dropped; ``convert`` raises :class:`ValueError` for an item it cannot read."""
    try:
        return [convert(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{option}: cannot read {text!r}") from None


def parse_size(text: str, option: str) -> tuple[int, int]:
    """``"HxW"`` (height first, as numpy shapes; ``X`` too) -> ``(height, width)`` in pixels."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"{option}: expected HxW, e.g. 512x1024, got {text!r}") from None
    return height, width


def parse_range(text: str, convert: Callable[[str], T], option: str) -> tuple[T, T]:
    """``"LOW,HIGH"`` -> ``(convert(LOW), convert(HIGH))``; the order is not checked here."""
    try:
        low, high = (convert(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{option}: expected LOW,HIGH, e.g. 0.5,2.0, got {text!r}") from None
    return low, high
