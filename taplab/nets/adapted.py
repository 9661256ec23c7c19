"""An adapted model: the folder ``taplab adapt`` writes, usable wherever a model is (``--model DIR``).

The folder holds ``adapted.json`` (:data:`ADAPTED_FILE`): the reference of the segmentation model
(a shipped name or an absolute path: the folder does not copy the model), the correction network's
file name when adaptation switched it on (:mod:`taplab.adapt`), the runtime options it chose (a
subset of :class:`~taplab.runtime.RuntimeConfig`'s fields) and the report of the held-out
validation. ``load_model(DIR)`` loads the referenced model, :func:`taplab.nets.zoo.find_correction`
finds the correction, ``RuntimeConfig.for_model(DIR)`` gives the options.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taplab.errors import ModelError

#: the file that makes a folder an adapted model
ADAPTED_FILE = "adapted.json"
FORMAT = "taplab-adapted"
VERSION = 1


@dataclass(frozen=True)
class Adapted:
    """An adapted model's folder as read: ``model`` the segmentation model's reference, ``correction`` the
    correction network to fuse with (None: adaptation left fusion off), ``config`` runtime options,
    ``report`` the held-out validation (:func:`taplab.adapt.adapt`)."""

    folder: Path
    model: str
    correction: Path | None
    config: dict[str, Any]
    report: dict[str, Any]


def is_adapted(spec: Any) -> bool:
    """Whether ``spec`` (a model spec) names a folder written by ``taplab adapt``."""
    return isinstance(spec, (str, os.PathLike)) and (Path(spec) / ADAPTED_FILE).is_file()


def read_adapted(folder: str | os.PathLike[str]) -> Adapted:
    """The :class:`Adapted` of a folder; :class:`ModelError` for a file that is not one."""
    folder = Path(folder)
    path = folder / ADAPTED_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable adapted model: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("model"), str):
        raise ModelError(f"{path} is not a taplab adapted model (format={FORMAT!r} and a model reference)")
    if data.get("version", 0) > VERSION:
        raise ModelError(f"{path} is adapted-model version {data['version']}; this taplab reads up to {VERSION}")
    if is_adapted(data["model"]):
        raise ModelError(f"{path}: its model {data['model']} is an adapted model itself; adapt the model it refers to")
    correction = folder / data["correction"] if data.get("correction") else None
    if correction is not None and not correction.is_file():
        raise ModelError(f"{path}: its correction network {correction} is missing")
    return Adapted(folder, data["model"], correction, dict(data.get("config") or {}), dict(data.get("report") or {}))


def write_adapted(folder: str | os.PathLike[str], model: str, correction: str | None, config: dict[str, Any],
                  report: dict[str, Any]) -> Path:
    """Write ``adapted.json`` into ``folder`` (which the caller fills and renames into place); returns its path."""
    path = Path(folder) / ADAPTED_FILE
    data = {"format": FORMAT, "version": VERSION, "model": model, "correction": correction, "config": config,
            "report": report}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
