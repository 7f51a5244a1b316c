"""The architecture as an import graph (docs/architecture.md): a lower layer never imports a
higher one. Read from the source's AST, lazy imports inside functions included."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What each package may import from the project (besides itself).
PACKAGES = {
    "itemsage_core": set(),
    "index_builder": {"itemsage_core"},
    "jobs": {"itemsage_core", "index_builder"},
    "itemsage_report": {"itemsage_core", "index_builder"},
    "itemsage_runs": {"itemsage_core", "index_builder", "jobs", "itemsage_report"},
    "itemsage_cli": {"itemsage_core", "index_builder", "jobs", "itemsage_report", "itemsage_runs"},
}
# What each layer of itemsage_core may import (besides itself).
CORE_LAYERS = {
    "errors": set(),
    "storage": {"errors"},
    "contracts": {"errors", "storage"},
    "features": {"errors", "storage", "contracts"},
    "model": {"errors", "storage", "contracts", "features"},
    "training": {"errors", "storage", "contracts", "features", "model"},
    "embedding": {"errors", "storage", "contracts", "features", "model"},
    "synthetic": {"errors", "storage", "contracts"},
}


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, by its dotted name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def violations(
    owner: str, modules: set[str], allowed: dict[str, set[str]], depth: int
) -> list[str]:
    """The modules of the project's `allowed` units (package or layer names, at `depth` in the
    dotted name) that `owner` imports but may not."""
    bad = []
    for name in sorted(modules):
        parts = name.split(".")
        if len(parts) <= depth or (depth and parts[0] != "itemsage_core"):
            continue
        unit = parts[depth]
        if unit in allowed and unit != owner and unit not in allowed[owner]:
            bad.append(name)
    return bad


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_packages_import_only_lower_packages():
    problems = []
    for package in PACKAGES:
        for path in python_files(package):
            for name in violations(package, imported_modules(path), PACKAGES, 0):
                problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not problems, "\n".join(problems)


def test_core_layers_import_only_lower_layers():
    problems = []
    for path in python_files("itemsage_core"):
        parts = path.relative_to(ROOT / "itemsage_core").with_suffix("").parts
        owner = parts[0]
        if owner == "__init__":
            continue
        assert owner in CORE_LAYERS, f"{path.relative_to(ROOT)}: not in a known layer"
        for name in violations(owner, imported_modules(path), CORE_LAYERS, 1):
            problems.append(f"{path.relative_to(ROOT)} ({owner}) imports {name}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from itemsage_core.training.trainer import train\n")
    assert violations("model", imported_modules(bad), CORE_LAYERS, 1) == [
        "itemsage_core.training.trainer.train"
    ]
    bad.write_text("from itemsage_cli.main import cli\n")
    assert violations("jobs", imported_modules(bad), PACKAGES, 0) == ["itemsage_cli.main.cli"]


def test_the_module_map_names_every_module_of_the_outer_packages():
    """docs/architecture.md's module map has one table per outer package; its first column
    names every module there, a subpackage's as `sub/module` (and only modules that exist)."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for package in ("jobs", "index_builder", "itemsage_report", "itemsage_runs", "itemsage_cli"):
        table = re.search(rf"\| `{package}/` \| \|\n\|---\|---\|\n((?:\|.*\n)+)", doc)
        assert table, f"docs/architecture.md has no module table for {package}/"
        first = "".join(r.split("|")[1] for r in table[1].splitlines())
        named = set(re.findall(r"`(\w+(?:/\w+)?)`", first))
        modules = {
            p.relative_to(ROOT / package).with_suffix("").as_posix()
            for p in (ROOT / package).rglob("*.py")
            if p.stem != "__init__"
        }
        assert (sorted(modules - named), sorted(named - modules)) == ([], []), package
