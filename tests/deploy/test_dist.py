"""make dist's bundles for the Raspberry Pi platforms and both Pythons: every locked dependency as a wheel (or named).

One bundle per platform and Python: py311 for Raspberry Pi OS 12 bookworm,
py313 for 13 trixie; each checksummed, each with a BUNDLE that says which.

Built for real from requirements.lock (from the package index or pip's cache);
read here as a technician's machine would: the tar, sha256sum, the hashes.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.deploy.bundles import (
    PI_PLATFORMS,
    PYTHONS,
    REPO,
    build_bundles,
    bundle_glob,
    bundle_info,
    extract,
    python_tag,
    this_platform,
)

pytestmark = pytest.mark.slow

OPTIONAL = {"httptools"}
"""deploy/dist.py's OPTIONAL: the only locked dependencies a bundle may lack (docs/deployment.md)."""

SYSTEMS = {"3.11": ("Raspberry Pi OS 12 bookworm", 36), "3.13": ("Raspberry Pi OS 13 trixie", 41)}
"""Each Python's Raspberry Pi OS release and its glibc 2.x: the newest manylinux a bundle's wheels may need."""

EVERY_PI_BUNDLE = [(platform_name, python) for python in PYTHONS for platform_name in PI_PLATFORMS]


def locked() -> dict[str, str]:
    text = (REPO / "requirements.lock").read_text()
    return {
        name.lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)(?: ;[^\\\n]*)? \\$", text, re.M)
    }


def wheel_project(filename: str) -> tuple[str, str]:
    name, version = filename.split("-")[:2]
    return name.lower().replace("_", "-"), version


@pytest.mark.parametrize(("platform_name", "python"), EVERY_PI_BUNDLE)
def test_a_wheel_for_every_locked_dependency_or_the_named_exception(
    pi_dist: tuple[Path, str], platform_name: str, python: str, tmp_path: Path
) -> None:
    out, report = pi_dist
    (tarball,) = out.glob(bundle_glob(python, platform_name))
    bundle = extract(tarball, tmp_path)
    wheels = sorted(p.name for p in (bundle / "wheels").glob("*.whl"))
    carried = dict(wheel_project(name) for name in wheels)
    missing = {name for name in locked() if name not in carried}

    info = bundle_info(bundle)
    system, glibc = SYSTEMS[python]
    assert info["platform"] == platform_name and info["python"] == python
    assert info["system"] == system and info["glibc"] == f"2.17..2.{glibc}"
    assert missing == set(filter(None, info["missing"].split(","))), "BUNDLE names exactly what is missing"
    assert missing <= OPTIONAL, f"{platform_name} lacks required wheels: {missing - OPTIONAL}"
    for name in missing:
        assert f"# without {name}: " in (bundle / "BUNDLE").read_text(), "and says what the agent does instead"
    assert {name: version for name, version in carried.items() if name != "kassabro"} == {
        name: version for name, version in locked().items() if name not in missing
    }, "exactly the locked versions"
    arch = platform_name.removeprefix("linux_")
    abi = "cp" + python.replace(".", "")
    for name in wheels:
        if name.endswith("-none-any.whl"):
            continue
        assert f"_{arch}" in name, f"{name} is not for {platform_name}"
        assert f"-{abi}-{abi}-" in name or "-abi3-" in name, f"{name} is not for CPython {python}"
        needs = [int(m) for m in re.findall(rf"manylinux_2_(\d+)_{arch}", name)]
        needs += [17] * name.count(f"manylinux2014_{arch}")
        assert needs and min(needs) <= glibc, f"{name} needs a newer glibc than {system}'s 2.{glibc}"
    assert f"{tarball}:" in report and f"{len(wheels)} wheels" in report
    print(f"{tarball.name}: {tarball.stat().st_size / 1e6:.1f} MB, {len(wheels)} wheels, missing: {sorted(missing)}")


@pytest.mark.parametrize(("platform_name", "python"), EVERY_PI_BUNDLE)
def test_checksums_and_hashes_verify(
    pi_dist: tuple[Path, str], platform_name: str, python: str, tmp_path: Path
) -> None:
    (tarball,) = pi_dist[0].glob(bundle_glob(python, platform_name))
    assert re.fullmatch(rf"kassabro-\d+\.\d+\.\d+\S*-{python_tag(python)}-{platform_name}\.tar\.gz", tarball.name)
    with tarfile.open(tarball) as tar:
        top = {member.name.split("/")[0] for member in tar.getmembers()}
        assert top == {tarball.name.removesuffix(".tar.gz")}, "one top directory named like the file"
    bundle = extract(tarball, tmp_path)
    check = subprocess.run(
        ["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {line.split("  ", 1)[1] for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert listed == present
    for name in (
        "install.sh",
        "README.md",
        "kassabro.service",
        "journald-kassabro.conf",
        "samba-kassabro.conf",
        "examples/kassabro.toml",
    ):
        assert name in present
    # Each wheel's own hash is one install.sh's pip --require-hashes accepts.
    requirements = (bundle / "requirements.txt").read_text()
    for wheel in (bundle / "wheels").glob("*.whl"):
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        assert f"--hash=sha256:{digest}" in requirements, wheel.name


@pytest.mark.parametrize("python", PYTHONS)
def test_a_required_dependency_without_a_wheel_fails_that_platform_by_name(
    bundles: dict[str, Path], python: str, tmp_path: Path
) -> None:
    """No bundle rather than a broken one: dist.py names the dependency and builds nothing for the platform."""
    wheels = tmp_path / "wheels"
    shutil.copytree(bundles[python] / "wheels", wheels)
    (markupsafe,) = wheels.glob("markupsafe-*.whl")
    markupsafe.unlink()
    out = tmp_path / "dist"
    result = subprocess.run(
        [
            *(sys.executable, str(REPO / "deploy/dist.py"), "--out", str(out)),
            *("--platform", this_platform(), "--python", python, "--find-links", str(wheels)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 1
    assert (
        f"{this_platform()}: no wheel for CPython {python} of the required dependencies markupsafe==" in result.stderr
    )
    assert f"no {python_tag(python)} bundle is built for {this_platform()}" in result.stderr
    assert not list(out.glob("*.tar.gz"))


def test_the_same_tree_gives_the_same_bundle_byte_for_byte(bundles: dict[str, Path], tmp_path: Path) -> None:
    """Reproducible: a shop's bundle can be rebuilt and compared (built twice here, offline from the wheels)."""
    digests = []
    for run in ("one", "two"):
        out = tmp_path / run
        build_bundles(out, (this_platform(),), pythons=("3.13",), find_links=bundles["3.13"] / "wheels")
        (tarball,) = out.glob("*.tar.gz")
        digests.append(hashlib.sha256(tarball.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
