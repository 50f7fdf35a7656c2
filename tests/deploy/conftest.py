"""Bundles built once per session: this machine's for both Pythons (installed by the tests), and the Pi platforms'."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.bundles import (
    PI_PLATFORMS,
    PYTHONS,
    ServiceStandIn,
    build_bundles,
    bundle_glob,
    extract,
    require_python,
    run_install,
    this_platform,
)


@pytest.fixture(scope="session")
def python313() -> Path:
    """CPython 3.13, Raspberry Pi OS trixie's Python; none here FAILS the test, with how to get one."""
    return require_python("3.13")


@pytest.fixture(scope="session")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist``'s output for this machine's platform: the py311 and the py313 bundle."""
    out = tmp_path_factory.mktemp("dist")
    build_bundles(out, (this_platform(),))
    return out


@pytest.fixture(scope="session")
def bundles(dist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """This machine's bundles, extracted, by Python (``3.11``, ``3.13``): the directories holding install.sh."""
    found = {}
    for python in PYTHONS:
        (tarball,) = dist_dir.glob(bundle_glob(python, this_platform()))
        found[python] = extract(tarball, tmp_path_factory.mktemp(f"bundle-{python}"))
    return found


@pytest.fixture(scope="session")
def bundle(bundles: dict[str, Path]) -> Path:
    """This machine's bundle for the Python running the tests (install.sh runs with it): most tests install it."""
    return bundles[f"{sys.version_info.major}.{sys.version_info.minor}"]


@pytest.fixture(scope="session")
def pi_dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The Raspberry Pi OS bundles (64- and 32-bit, py311 and py313) and dist.py's report."""
    out = tmp_path_factory.mktemp("pi-dist")
    result = build_bundles(out, PI_PLATFORMS)
    return out, result.stdout


@pytest.fixture(scope="session")
def installed(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A first install with the example config (its placeholder store id), byte-compiled as on a Pi.

    Shared: tests that change anything work on ``copy_root`` of it.
    """
    root = tmp_path_factory.mktemp("pi") / "root"
    service = ServiceStandIn(root, tmp_path_factory.mktemp("svc"))
    result = run_install(bundle, "install", "--root", str(root), "--service-ctl", str(service.script))
    assert service.calls() == [], "nothing may be enabled or started with the example config"
    return root, result
