"""taplab checkpoint files: a network's architecture, weights and class metadata in one ``torch.save`` dict.

Keys: ``format`` (:data:`FORMAT`), ``version``, ``arch`` (registered name), ``arch_args`` (its
keyword arguments, ``num_classes`` included), ``state_dict``, ``classes``, ``colors`` (RGB per
class); optional: ``config`` (the training config), ``epoch``, ``metrics``, ``optimizer``,
``trainer`` (what ``--resume`` needs). Files are written atomically and read with
``weights_only=True`` (no code runs when a checkpoint is loaded).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from taplab.errors import ModelError
from taplab.files import atomic_path
from taplab.nets.base import SegmentationNet
from taplab.nets.engines import failure
from taplab.nets.registry import create_model

FORMAT = "taplab-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike[str], net: SegmentationNet, arch: str, arch_args: dict[str, Any],
                    half: bool = False, **extra: Any) -> Path:
    """Write ``net`` (built by ``create_model(arch, **arch_args)``) and ``extra`` keys to ``path`` atomically.

    ``half`` stores floating-point weights as float16 (half the size; loading converts back to float32).
    """
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in net.state_dict().items()}
    data = {
        "format": FORMAT, "version": VERSION, "arch": arch,
        "arch_args": {**arch_args, "num_classes": net.num_classes},
        "state_dict": state, "classes": list(net.class_names), "colors": [list(c) for c in net.palette],
        **extra,
    }
    return write_dict(path, data)


def write_dict(path: str | os.PathLike[str], data: dict[str, Any]) -> Path:
    """``torch.save`` a dict to ``path`` atomically (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return path


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load`` refused a file, in words for a user. torch's own message for a file that holds more than
    tensors and plain data advises loading it with ``weights_only=False``, which would run its code: never
    repeat that."""
    text = str(exc).strip()
    if "weights_only" in text or "Weights only" in text:
        return ("not a torch file, or one that holds objects other than tensors and plain data, which taplab never "
                "loads (no code runs from a model file)")
    return failure(exc)


def read_dict(path: str | os.PathLike[str], fmt: str, version: int, what: str) -> dict[str, Any]:
    """A taplab file's dict, read with ``weights_only=True``; :class:`ModelError` unless it is a readable
    torch file whose ``format`` is ``fmt`` and whose ``version`` this taplab reads (``what`` names the kind)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise ModelError(f"{path} is not a readable {what}: {_load_failure(exc)}") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise ModelError(f"{path} is not a taplab {what} (a torch file without format={fmt!r})")
    if data.get("version", 0) > version:
        raise ModelError(f"{path} is {what} version {data['version']}; this taplab reads up to {version}")
    return data


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a checkpoint's dict; :class:`ModelError` if it is not a taplab checkpoint."""
    data = read_dict(path, FORMAT, VERSION, "checkpoint")
    missing = [k for k in ("arch", "arch_args", "state_dict", "classes") if k not in data]
    if missing:
        raise ModelError(f"{path} lacks {', '.join(missing)}")
    n = data["arch_args"].get("num_classes")
    if n != len(data["classes"]):
        raise ModelError(f"{path}: class count does not match: {n} outputs but {len(data['classes'])} class names")
    return data


def build_from_checkpoint(data: dict[str, Any], source: str = "checkpoint") -> SegmentationNet:
    """The network a checkpoint dict describes, with its weights (float32) and class metadata."""
    args = dict(data["arch_args"])
    colors = [tuple(c) for c in data.get("colors") or []] or None
    net = create_model(data["arch"], class_names=tuple(data["classes"]), colors=colors, **args)
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in data["state_dict"].items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
        raise ModelError(f"{source}: weights do not fit network {data['arch']!r} "
                         f"with {args.get('num_classes')} classes: {detail}") from None
    return net.eval()


#: checkpoint keys that only ``--resume`` needs; a shipped model leaves them out
TRAINING_STATE = ("optimizer", "trainer")


def export_checkpoint(src: str | os.PathLike[str], dst: str | os.PathLike[str], half: bool = True) -> Path:
    """Copy a checkpoint without its training state (optimizer, trainer), weights in float16 when ``half``:
    what ships in ``models/``. The training config, epoch and metrics are kept for the model card."""
    data = read_checkpoint(src)
    net = build_from_checkpoint(data, str(src))
    args = {k: v for k, v in data["arch_args"].items() if k != "num_classes"}
    extra = {k: v for k, v in data.items()
             if k not in (*TRAINING_STATE, "format", "version", "arch", "arch_args", "state_dict", "classes", "colors")}
    return save_checkpoint(dst, net, data["arch"], args, half=half, **extra)
