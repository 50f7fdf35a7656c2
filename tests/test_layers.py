"""The import rules that keep each concern behind its own boundary (docs/architecture.md).

Every module of a layer is parsed (``ast``, so an import inside a function or
under ``TYPE_CHECKING`` counts too) and each import it makes is checked
against the modules the layer must not reach: a source never takes a
destination's classes, nor the reverse; the shared MQTT package and the
retry policy stand below both; the SIE package raises its own errors and
knows nothing of delivery (only its command face, ``agent.sie.cli``, runs the
destination once).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "agent"

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "agent.sources": ("agent.destinations", "agent.delivery"),
    "agent.destinations": ("agent.sources", "agent.config", "agent.app"),
    "agent.configbase": ("agent.config", "agent.destinations", "agent.sources", "agent.mqtt", "agent.sie"),
    "agent.mqtt": ("agent.sources", "agent.destinations", "agent.delivery", "agent.config"),
    "agent.backoff": ("agent.sources", "agent.destinations", "agent.delivery", "agent.mqtt"),
    "agent.sie": ("agent.sources", "agent.destinations", "agent.delivery", "agent.outcome", "agent.config"),
    "agent.outcome": ("agent.sources", "agent.delivery", "agent.sie"),
}
"""layer -> packages or modules no module of that layer may import."""

EXEMPT = frozenset({"agent.sie.cli"})
"""Modules outside their package's rule: ``kassabro sie``'s command face runs the sie destination."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(AGENT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_of(layer: str) -> list[Path]:
    """The files of ``layer``: a package's modules, or a single module."""
    base = AGENT.parent.joinpath(*layer.split("."))
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    return [base.with_suffix(".py")]


def imported(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path``, the module ``name``; ``from a import b``
    yields ``a.b`` too, so importing a module through its package is seen."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def reaches(name: str, target: str) -> bool:
    return name == target or name.startswith(target + ".")


def violations(layer: str, files: dict[str, Path] | None = None) -> list[str]:
    """Every forbidden import of ``layer``'s modules (or of ``files``: module name -> path)."""
    if files is None:
        files = {module_name(path): path for path in modules_of(layer) if module_name(path) not in EXEMPT}
    return [
        f"{module}:{line}: imports {name}"
        for module, path in files.items()
        for line, name in imported(path, module)
        for target in FORBIDDEN[layer]
        if reaches(name, target)
    ]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_nothing_it_must_not(layer: str) -> None:
    assert modules_of(layer), f"{layer}: no modules found; the rule checks nothing"
    assert violations(layer) == []


def test_the_check_sees_every_way_of_importing(tmp_path: Path) -> None:
    """The parser catches plain, from-, relative and function-local imports (else the rule is blind)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import agent.destinations.base\n"
        "from agent.destinations import mqtt\n"
        "from ..destinations.base import SendResult\n"
        "import agent.ingest\n"
        "def later():\n"
        "    from agent.delivery import DeliveryLoop\n",
        encoding="utf-8",
    )
    found = violations("agent.sources", {"agent.sources.probe": probe})
    assert found == [
        "agent.sources.probe:1: imports agent.destinations.base",
        "agent.sources.probe:2: imports agent.destinations",
        "agent.sources.probe:2: imports agent.destinations.mqtt",
        "agent.sources.probe:3: imports agent.destinations.base",
        "agent.sources.probe:3: imports agent.destinations.base.SendResult",
        "agent.sources.probe:6: imports agent.delivery",
        "agent.sources.probe:6: imports agent.delivery.DeliveryLoop",
    ]
