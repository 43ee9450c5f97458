"""Modules are named for their lifecycle stage, and a lower stage never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
PACKAGE = Path(__file__).resolve().parents[1] / "mlops_lab"
LAYERS = {
    "base": ["config", "processes", "plots"],
    "data": ["datasets", "quality", "features", "featurestore"],
    "model": ["training", "tuning", "evaluation", "explain", "validation", "governance"],
    "release": ["packaging", "registry", "environments", "auth", "access", "promotion", "projects"],
    "serve": ["serving", "gateway", "loadtest", "deployment"],
    "operate": ["monitoring", "delivery", "pipeline"],
    "frontier": ["spark", "custom_models", "scaling"],
    "course": ["prerequisites", "runner", "labs", "grading", "cli"],
}
RANK = {module: rank for rank, modules in enumerate(LAYERS.values()) for module in modules}


def _top(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlops_lab"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mlops_lab."))
    return found


def test_every_module_has_a_layer():
    modules = {_top(p) for p in PACKAGE.rglob("*.py") if _top(p) != "__init__"}
    assert modules <= set(RANK), f"give these modules a layer in this test: {sorted(modules - set(RANK))}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_stage(path):
    here = _top(path)
    if here == "__init__":
        return
    higher = {m for m in _imports(path) if m in RANK and RANK[m] > RANK[here]}
    assert not higher, f"{path.relative_to(PACKAGE)} ({here}) imports higher stage(s) {sorted(higher)}"
