"""The house: imports run downwards only, and no module outgrows ~400 lines (STYLE.md)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fashionnet"

# a module may import modules of a lower rank, and its own package's modules
RANKS = {
    "_version": 0, "_fsutil": 0, "_text": 0, "threads": 0,
    "data": 1, "layers": 1,
    "losses": 2, "metrics": 2, "schedules": 2, "augment": 2, "config": 2,
    "optim": 3, "predict": 3,
    "model": 4,
    "train": 5, "facts": 5, "calibrate": 5,
    "checkpoint": 6, "export": 6, "plots": 6, "sklearn": 6,
    "resume": 7, "classify": 7, "card": 7, "transfer": 7,
    "runs": 8,
    "report": 9, "serve": 9, "sweep": 9,
    "cli": 10,
    "__init__": 11, "__main__": 11,
}  # fmt: skip
MAX_LINES = 400


def unit(path: Path) -> str:
    """The name RANKS knows a module by: its package inside fashionnet, or its own name."""
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def fashionnet_imports(path: Path) -> set[str]:
    """The fashionnet units a module imports (relative or absolute)."""
    found = set()
    package = path.relative_to(SRC).parent.parts
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            parts = [*base, *(node.module.split(".") if node.module else [])]
            names = [parts[0]] if parts else [alias.name for alias in node.names]
            found.update(names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fashionnet."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("fashionnet.")
            )
    return found


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_rank():
    assert {unit(p) for p in MODULES} <= set(RANKS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_run_downwards_only(path):
    me = unit(path)
    upward = [
        other for other in fashionnet_imports(path) if other != me and RANKS[other] >= RANKS[me]
    ]
    assert not upward, f"{me} (rank {RANKS[me]}) imports {upward}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_outgrows_its_budget(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES
