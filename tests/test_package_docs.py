"""The package explains itself: what is where, which papers, under which license; and every
document the code points to is in the repository."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import speechssl

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "speechssl"
# the five methods and the arXiv id of each one's paper (E is cited though not implemented)
PAPERS = {
    "HSIC": "2104.07388",
    "RankMe": "2501.05966",
    "MT4SSL": "2211.07321",
    "DINO": "2208.05445",
    "UnFuSeD": "2303.05668",
}


def test_the_package_docstring_names_the_methods_their_papers_and_entry_points():
    doc = speechssl.__doc__
    for method, arxiv in PAPERS.items():
        assert method in doc and f"arXiv:{arxiv}" in doc, method
    for entry in ("speechssl demo", "load_upstream", "Trainer", "speechssl.recipes"):
        assert entry in doc, entry


def test_every_package_has_a_docstring():
    packages = {p.parent for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}
    missing = [
        str(pkg.relative_to(SRC.parent))
        for pkg in sorted(packages)
        if not (pkg / "__init__.py").is_file()
        or not ast.get_docstring(ast.parse((pkg / "__init__.py").read_text()))
    ]
    assert not missing, missing


def _texts():
    for folder in ("src", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".yaml", ".md"} and "__pycache__" not in path.parts:
                yield path, path.read_text()


def test_no_citation_of_a_document_the_repository_lacks():
    """Was: a dozen citations of METHODS.md, which is not in the repository."""
    this = Path(__file__).resolve()
    cites = [str(p.relative_to(ROOT)) for p, t in _texts() if "METHODS.md" in t and p != this]
    assert not cites, cites
    for path, text in _texts():
        for page in re.findall(r"\bdocs/[\w./-]+\.md\b", text):
            assert (ROOT / page).is_file(), f"{path.relative_to(ROOT)} cites {page}"


def test_docs_methods_cites_each_paper():
    text = (ROOT / "docs" / "methods.md").read_text()
    for arxiv in PAPERS.values():
        assert f"arXiv:{arxiv}" in text


def test_the_license_file_matches_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()  # tomllib is 3.11+; the package is 3.10+
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.M)
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
