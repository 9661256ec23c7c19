"""The trained models shipped in ``models/`` and installed with the package.

A shipped model is a taplab checkpoint ``models/<name>.pt`` with its model card ``models/<name>.md``,
and optionally its correction networks: DMNet's (CoNet, :mod:`taplab.nets.conet`) ``models/<name>.conet.pt`` and
TWNet's (:mod:`taplab.nets.twnet`) ``models/<name>.twnet.pt``.
Installed copies live in the package ``taplab._models`` (setup.py maps ``models/`` there); in a
source checkout (or an editable install) ``models/`` beside the package is used directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taplab.nets.adapted import is_adapted, read_adapted

#: what ``"default"`` means: the model ``taplab segment`` uses when none is given
DEFAULT_MODEL = "bl2-synth"
#: a model's correction network: ``<model>.conet.pt`` beside ``<model>.pt`` (``<model>.twnet.pt``: TWNet's)
CORRECTION_SUFFIX = ".conet.pt"
CORRECTION_SUFFIXES = {"dmnet": CORRECTION_SUFFIX, "twnet": ".twnet.pt"}


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    card: Path | None


def model_dirs() -> list[Path]:
    """Where shipped models are looked for, in order: the installed package data, then the source tree."""
    package = Path(__file__).resolve().parents[1]
    dirs = [package / "_models"]
    if (package.parent / "setup.py").exists():  # a source checkout, not site-packages (whose models/ is not ours)
        dirs.append(package.parent / "models")
    return [d for d in dirs if d.is_dir()]


def shipped_models() -> dict[str, ShippedModel]:
    found: dict[str, ShippedModel] = {}
    for d in model_dirs():
        for path in sorted(d.glob("*.pt")):
            if path.name.endswith(tuple(CORRECTION_SUFFIXES.values())):
                continue
            card = path.with_suffix(".md")
            found.setdefault(path.stem, ShippedModel(path.stem, path, card if card.exists() else None))
    return found


def find_shipped(name: str) -> ShippedModel | None:
    return shipped_models().get(DEFAULT_MODEL if name == "default" else name)


def find_correction(spec, kind: str = "dmnet") -> Path | None:
    """The correction network of ``kind`` (``correction_kind``) that comes with a model spec: a shipped model's,
    ``X.conet.pt`` (``X.twnet.pt``) beside a checkpoint ``X.pt``, or an adapted model's (``taplab adapt``, of
    the kind it was adapted with) where it switched fusion on; None where there is none (and for models given
    as modules)."""
    if is_adapted(spec):
        return read_adapted(spec).correction
    shipped = find_shipped(spec) if isinstance(spec, str) else None
    path = shipped.path if shipped is not None else Path(spec) if isinstance(spec, (str, Path)) else None
    if path is None or path.suffix != ".pt":
        return None
    candidate = path.with_name(path.stem + CORRECTION_SUFFIXES[kind])
    return candidate if candidate.is_file() else None


def describe_models() -> str:
    """A listing of the built-in networks and the shipped models (``taplab models``)."""
    from taplab.nets.checkpoint import read_checkpoint
    from taplab.nets.registry import create_model, list_architectures

    lines = ["built-in networks (untrained; `taplab train --model NAME`):"]
    for arch in list_architectures():
        net = create_model(arch.name)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        lines.append(f"  {arch.name:<6} stride {net.stride}  {params:5.1f} M parameters  {arch.summary}")
    lines.append("")
    lines.append(f"shipped models (`--model NAME`; default = {DEFAULT_MODEL}):")
    shipped = shipped_models()
    if not shipped:
        lines.append("  none installed")
    for m in shipped.values():
        ckpt = read_checkpoint(m.path)
        miou = (ckpt.get("metrics") or {}).get("val_miou")
        score = f"val mIoU {100 * miou:.1f}%" if miou is not None else "no validation score"
        lines.append(f"  {m.name:<12} {ckpt['arch']}, {len(ckpt['classes'])} classes, {score}  {m.path}")
        for kind, what in (("dmnet", "correction network (fusion)"), ("twnet", "TWNet's (--correction-kind twnet)")):
            found = find_correction(m.name, kind)
            if found is not None:
                lines.append(f"  {'':<12} {what}: {found}")
        if m.card is not None:
            lines.append(f"  {'':<12} card: {m.card}")
    return "\n".join(lines)
