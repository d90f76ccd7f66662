"""docs/architecture.md's module table names every module of the package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

import nlbpipe

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
ROOT = Path(nlbpipe.__file__).parent


def test_module_table_matches_the_tree():
    section = DOC.read_text().split("## Modules", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| \**`([\w/]+(?:\.py|/))`", section, re.M))
    modules = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if p.name != "__init__.py"}
    packages = {p.parent.relative_to(ROOT).as_posix() + "/" for p in ROOT.rglob("__init__.py") if p.parent != ROOT}
    assert documented - modules - packages == set(), "documented but not in the tree"
    assert (modules | packages) - documented == set(), "in the tree but not in docs/architecture.md"
