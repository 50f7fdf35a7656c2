"""Bundles built once per session: this machine's (installed by the tests) and the two Pi platforms'."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.bundles import PI_PLATFORMS, ServiceStandIn, build_bundles, extract, run_install, this_platform


@pytest.fixture(scope="session")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make dist``'s output for this machine's platform."""
    out = tmp_path_factory.mktemp("dist")
    build_bundles(out, (this_platform(),))
    return out


@pytest.fixture(scope="session")
def bundle(dist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's bundle, extracted: the directory holding install.sh."""
    (tarball,) = dist_dir.glob(f"kassabro-*-{this_platform()}.tar.gz")
    return extract(tarball, tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="session")
def pi_dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The Raspberry Pi OS bundles (64- and 32-bit) and dist.py's report."""
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
