"""The house's rules, checked on the code itself (docs/architecture.md): imports go down the floors only, so there
is no import circle between packages, and the runtime's modules stay small enough to read in a sitting."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "taplab"

#: taplab's packages and top-level modules, bottom floor first (docs/architecture.md)
FLOORS = [
    {"errors"},
    {"files", "options", "threads"},
    {"native"},
    {"ops"},
    {"codec"},
    {"data"},
    {"nets", "metrics", "training"},
    {"runtime", "evaluate", "pfi"},
    {"io", "bench", "train_correction", "adapt"},
    {"pipeline", "train"},
    {"demo", "batch"},
    {"cli"},
]
FLOOR = {unit: level for level, units in enumerate(FLOORS) for unit in units}


def unit_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def taplab_imports(path: Path) -> list[tuple[int, str]]:
    """(line, unit) of every import of another taplab unit in ``path``, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "taplab" else [f"taplab.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "taplab" and len(parts) > 1 and parts[1] in FLOOR:
                found.append((node.lineno, parts[1]))
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_unit_has_a_floor():
    units = {unit_of(p) for p in SOURCES}
    assert units <= set(FLOOR), f"put {sorted(units - set(FLOOR))} on a floor (here and in docs/architecture.md)"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down(path):
    unit = unit_of(path)
    for line, other in taplab_imports(path):
        if other != unit:
            assert FLOOR[other] < FLOOR[unit], (f"{path.relative_to(PACKAGE)}:{line} imports taplab.{other} "
                                                f"(floor {FLOOR[other]}) from floor {FLOOR[unit]}")


def test_runtime_modules_stay_under_400_lines():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "runtime").glob("*.py")}
    assert max(sizes.values()) <= 400, sizes


def test_the_rule_catches_an_import_that_goes_up(tmp_path):
    """The check can fail: an ops module importing the runtime is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from taplab.runtime.config import RuntimeConfig\n")
    assert taplab_imports(bad) == [(2, "runtime")] and FLOOR["runtime"] > FLOOR["ops"]
