"""Imports go one way (docs/architecture.md): the vocabulary depends on nothing of the repository,
the shared plumbing (runtime, store) on the vocabulary only, and the services never import each other, except the
API's HTTP ingest using ingest's admission (the one judgement of what is stored)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = (
    "devices", "runtime", "store", "stack", "sim", "ingest", "rules", "api", "grafana", "bench", "load", "estatewatch",
)  # fmt: skip
# package -> what of the repository it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "devices": set(),
    "runtime": {"devices"},
    "store": {"devices"},
    "stack": {"devices", "runtime", "store"},
    "sim": {"devices", "runtime", "store"},
    "ingest": {"devices", "runtime", "store"},
    "rules": {"devices", "runtime", "store"},
    "api": {"devices", "runtime", "store", "ingest.admission"},
    "grafana": {"devices", "runtime", "store"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return {m for m in found if m.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_one_way(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in _imports(path):
            if not any(module == a or module.startswith(a + ".") for a in allowed):
                wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)


def _strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a module that are not docstrings (f-strings' literal parts included)."""
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]  # fmt: skip


def test_topics_are_built_only_by_the_vocabulary() -> None:
    """Every topic comes from devices/topics.py, so a change of layout is made in one place."""
    wrong = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for package in PACKAGES
        if package != "devices"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, text in _strings(path)
        if "estate/v1" in text
    ]
    assert not wrong, "\n".join(wrong)
