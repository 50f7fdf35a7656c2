"""docs/architecture.md's module table names every module of agent/ and fleet/, and only those.

The table is where a newcomer looks for "which module does X"; a module added
without a row (or a row left for a module that is gone) makes it lie quietly.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def table_modules(text: str) -> set[str]:
    """The module paths the first column of the "## Modules" table names.

    A cell lists paths in backticks; a bare name (``spool.py``) is in the
    folder of the path before it, and ``{a,b}.py`` stands for ``a.py`` and ``b.py``.
    """
    section = text.split("## Modules\n", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for row in re.findall(r"^\| (.+?) \| .+\|$", section, re.MULTILINE):
        folder = ""
        for token in re.findall(r"`([^`]+)`", row):
            if "/" in token:
                folder = token.rsplit("/", 1)[0] + "/"
            path = token if "/" in token else folder + token
            if braces := re.fullmatch(r"(.*)\{([^}]+)\}(.*)", path):
                named.update(braces[1] + part + braces[3] for part in braces[2].split(","))
            else:
                named.add(path)
    return {path for path in named if path.endswith(".py")}


def tree_modules() -> set[str]:
    return {
        path.relative_to(REPO).as_posix()
        for package in ("agent", "fleet")
        for path in (REPO / package).rglob("*.py")
        if path.name != "__init__.py"
    }


def test_the_module_table_matches_the_tree() -> None:
    listed = table_modules((REPO / "docs" / "architecture.md").read_text())
    tree = tree_modules()
    assert not tree - listed, f"modules without a row in docs/architecture.md's table: {sorted(tree - listed)}"
    assert not listed - tree, f"rows for modules that are gone: {sorted(listed - tree)}"


def test_the_table_reader_expands_folders_and_braces() -> None:
    text = "## Modules\n\n| module | one job |\n|---|---|\n| `a/b.py`, `c.py`, `a/{d,e}.py` | x |\n\n## Next\n"
    assert table_modules(text) == {"a/b.py", "a/c.py", "a/d.py", "a/e.py"}
