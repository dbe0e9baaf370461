"""The package's layers, read from the source with ``ast``: data flows one way.

A module may import its own package, any lower layer and the base modules, never a higher
layer; no recipe imports another recipe, except the two pipelines of other commands
(``demo``, and ``pretrain_next``: k-means fit, label, pretrain), which nothing imports; no
recipe defines a Dataset, a model or a loss. The rank list is the layering of ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "speechssl"

BASE = {"errors", "config", "runs", "progress", "__init__"}  # importable from anywhere
RANK = {
    "audio": 1,
    "data": 2,
    "pseudolabels": 3,
    "models": 3,
    "kmeans": 1,
    "objectives": 4,
    "selection": 4,
    "training": 5,
    "evaluation": 6,
    "indicators": 7,
    "report": 8,
    "recipes": 9,
    # s3prl-style entry point (speechssl.hub): wires models for other toolkits, as a recipe
    # wires them for a job; nothing in the library may import it
    "hub": 9,
    "cli": 10,
}
# what the base modules themselves may import (nothing above them)
BASE_MAY_IMPORT: dict[str, set[str]] = {"config": {"errors"}, "runs": {"config", "errors"}}


def _package(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, int]]:
    """Top-level ``speechssl`` subpackages/modules imported by ``path`` (with line numbers),
    including imports inside functions (a lazy import is still a dependency)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "speechssl" and len(parts) > 1:
                    found.append((parts[1], node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "speechssl":
                continue
            if len(parts) > 1:
                found.append((parts[1], node.lineno))
            else:  # from speechssl import config, pseudolabels
                found.extend((a.name, node.lineno) for a in node.names)
    return found


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_package_has_a_layer():
    """A new top-level package must be placed in the layering before it can be used."""
    unknown = {_package(p) for p in _modules()} - set(RANK) - BASE
    assert not unknown, f"add these to RANK or BASE in {__file__}: {sorted(unknown)}"


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in _modules():
        pkg = _package(path)
        for target, line in _imports(path):
            if target == pkg or target == "__version__":
                continue
            if pkg in BASE:
                ok = target in BASE_MAY_IMPORT.get(pkg, set()) or pkg == "__init__"
            elif target in BASE:
                ok = True
            else:
                ok = RANK.get(target, 99) < RANK[pkg]
            if not ok:
                violations.append(f"{path.relative_to(SRC)}:{line} ({pkg}) imports {target}")
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


PIPELINES = {"demo", "pretrain_next"}  # recipes made of other recipes


def test_no_recipe_imports_another_recipe():
    violations = []
    for path in sorted((SRC / "recipes").glob("*.py")):
        if path.stem in PIPELINES or path.stem == "__init__":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("speechssl.recipes"):
                    violations.append(f"{path.name}:{node.lineno} imports {node.module}")
                elif node.module == "speechssl" and any(a.name == "recipes" for a in node.names):
                    violations.append(f"{path.name}:{node.lineno} imports speechssl.recipes")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("speechssl.recipes"):
                        violations.append(f"{path.name}:{node.lineno} imports {a.name}")
    assert not violations, "\n".join(violations)


def test_nothing_imports_a_pipeline():
    """A pipeline may compose recipes only because it is a leaf: the CLI alone calls it."""
    users = []
    for path in _modules():
        if path.stem in PIPELINES or path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            hits = {p for p in PIPELINES for n in names if n == f"speechssl.recipes.{p}"}
            users += [f"{path.relative_to(SRC)}:{node.lineno} imports {p}" for p in sorted(hits)]
    assert not users, "\n".join(users)


LIBRARY_BASES = {"Dataset", "Module", "IterableDataset", "_Loss"}


def test_recipes_define_no_dataset_model_or_loss():
    violations = []
    for path in sorted((SRC / "recipes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {
                b.attr if isinstance(b, ast.Attribute) else getattr(b, "id", "") for b in node.bases
            }
            if bases & LIBRARY_BASES or node.name.endswith(("Loss", "Objective")):
                violations.append(f"{path.name}:{node.lineno} class {node.name}")
    assert not violations, "library classes in recipes/:\n" + "\n".join(violations)


@pytest.mark.parametrize(
    "source, pkg, expected",
    [
        ("from speechssl.models.registry import x\n", "data", ["models"]),
        ("def f():\n    import speechssl.training.trainer\n", "audio", ["training"]),
        ("from speechssl import pseudolabels, config\n", "recipes", ["pseudolabels", "config"]),
        ("from .sibling import x\nimport numpy\n", "data", []),
    ],
)
def test_import_reader_sees_every_form(tmp_path, source, pkg, expected):
    """The checks above are only as good as the import reader: it must see lazy and
    ``from speechssl import`` forms and ignore relative and third-party imports."""
    path = tmp_path / "m.py"
    path.write_text(source)
    assert [t for t, _ in _imports(path)] == expected
