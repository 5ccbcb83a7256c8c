"""The import rules of docs/ARCHITECTURE.md, checked on the source: each package imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("core", "insight", "knowledge_hub", "routing", "assist", "flows", "api")
MAY_IMPORT = {
    "core": {"core"},
    "insight": {"core", "insight"},
    "knowledge_hub": {"core", "knowledge_hub", "insight"},
    "routing": {"core", "routing", "insight"},
    "assist": {"core", "assist", "insight", "knowledge_hub"},
    "flows": {"core", "flows", "insight", "routing", "assist", "knowledge_hub"},
    "api": set(OURS),
}


def imported_packages(path: Path) -> set[str]:
    """Our top-level packages a module imports anywhere in it (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(OURS)


@pytest.mark.parametrize("package", OURS)
def test_package_imports_only_what_it_may(package: str) -> None:
    wrong = {str(p.relative_to(REPO)): sorted(imported_packages(p) - MAY_IMPORT[package])
             for p in sorted((REPO / package).rglob("*.py"))}
    assert not {k: v for k, v in wrong.items() if v}, f"{package} may import only {sorted(MAY_IMPORT[package])}"


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    (bad := tmp_path / "m.py").write_text("def f():\n    from flows.training import train_all\n    import api.app\n")
    assert imported_packages(bad) == {"flows", "api"}
