"""requirements.lock: every runtime dependency pinned with hashes, and the versions this test run uses.

``make test`` installs the lock with ``--require-hashes`` before anything
else, so the suite tests the very versions the bundles ship.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def pinned() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every pinned entry."""
    text = (REPO / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)((?:\s*\\\n\s+--hash=\S+)+)", text, re.MULTILINE)
    return {canonicalize_name(n): (v, re.findall(r"--hash=(\S+)", h)) for n, v, h in entries}


def test_every_runtime_dependency_is_pinned_within_its_range_with_hashes() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = pinned()
    assert lock, "requirements.lock has no pinned entry"
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is in pyproject.toml but not in requirements.lock: run make lock"
        assert req.specifier.contains(lock[name][0]), f"{req.name}=={lock[name][0]} is outside {req.specifier}"
    for name, (_, hashes) in lock.items():
        assert hashes and all(h.startswith("sha256:") for h in hashes), name


def test_this_run_uses_the_locked_versions() -> None:
    # A venv made by hand (python3 -m venv, then pip install -e .) keeps the pip that
    # ensurepip brought; make deps-test installs the lock first, as CI does on a fresh clone.
    off = {
        name: f"installed {metadata.version(name)}, locked {version}"
        for name, (version, _) in pinned().items()
        if metadata.version(name) != version
    }
    assert not off, f"{off}: install the lock (make deps-test, or pip install --require-hashes -r requirements.lock)"
