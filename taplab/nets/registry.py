"""Name -> builder registry of taplab's networks (the way timm registers its models).

Each network file ends in small ``@register_model`` entry points over one private builder;
:func:`create_model` resolves a name to an untrained network. Trained weights are a separate
matter: see :mod:`taplab.nets.loader`.

This module imports none of the networks: they import it to register themselves, and the package
(``taplab/nets/__init__.py``) imports them, so that every built-in network is registered as soon as
anything of :mod:`taplab.nets` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from taplab.errors import ModelError
from taplab.nets.base import SegmentationNet


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: Callable[..., SegmentationNet]
    summary: str


_ARCHITECTURES: dict[str, Architecture] = {}


def register_model(fn: Callable[..., SegmentationNet]) -> Callable[..., SegmentationNet]:
    """Register ``fn(num_classes=19, **kwargs)`` under its function name; its docstring's first line is the summary."""
    summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
    _ARCHITECTURES[fn.__name__] = Architecture(fn.__name__, fn, summary)
    return fn


def list_architectures() -> list[Architecture]:
    """Every registered network, by name."""
    return [_ARCHITECTURES[k] for k in sorted(_ARCHITECTURES)]


def create_model(name: str, num_classes: int = 19, **kwargs) -> SegmentationNet:
    """An untrained network by registered name (``bl1``, ``bl2``, ``bl3``, ...)."""
    try:
        arch = _ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown network {name!r}; built-in: {', '.join(sorted(_ARCHITECTURES))}") from None
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    try:
        return arch.builder(num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, IndexError, RuntimeError) as exc:  # what torch's layers raise for bad sizes
        raise ModelError(f"bad arguments for network {name!r}: {exc}") from None
