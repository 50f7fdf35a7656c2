"""Helpers for the release tests: build bundles with deploy/dist.py, run their install.sh, stand in for systemctl.

A bundle is built the way ``make dist`` builds it (dependency wheels from the
package index or pip's cache, hashes checked against requirements.lock); the
install step always runs with ``PIP_NO_INDEX=1``, so a test passes only if the
bundle alone is enough.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "raspberrypi" / "install.sh"
PI_PLATFORMS = ("linux_aarch64", "linux_armv7l")
PYTHONS = ("3.11", "3.13")
"""deploy/dist.py's TARGETS: Raspberry Pi OS 12 bookworm's Python and 13 trixie's; a bundle for each."""

PYTHON_MISSING = (
    "no CPython {version} here (wanted: python{version} on PATH, or a pyenv build in "
    "$PYENV_ROOT/versions/{version}.*). The tests install and run the py{tag} bundle under it, as on "
    "Raspberry Pi OS 13 trixie. Debian 12 has no python{version} package: install it with "
    "`pyenv install {version}` (README.md, Development)."
)
"""The loud failure of a test that needs a Python this machine lacks (never a skip)."""


def find_python(version: str) -> Path | None:
    """CPython ``version`` (``3.13``) here: ``python3.13`` on PATH, else the newest pyenv build; None if none runs.

    Each candidate is run once: a pyenv shim on PATH exists even when it
    refuses to run, and a free-threaded build (``3.13t``) takes other wheels.
    """
    candidates: list[Path] = []
    on_path = shutil.which(f"python{version}")
    if on_path:
        candidates.append(Path(on_path))
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    builds = [p for p in versions.glob(f"{version}.*") if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)]
    builds.sort(key=lambda p: int(p.name.rsplit(".", 1)[1]), reverse=True)
    candidates += [p / "bin" / f"python{version}" for p in builds]
    for candidate in candidates:
        try:
            probe = subprocess.run(
                [str(candidate), "-c", "import sys; print('%d.%d%s' % (*sys.version_info[:2], sys.abiflags))"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def require_python(version: str) -> Path:
    """``find_python``, or the test FAILS (never skips) saying how to get that Python."""
    import pytest  # here, not above: make test-py313 imports find_python with a Python that has no pytest

    found = find_python(version)
    if found is None:
        pytest.fail(PYTHON_MISSING.format(version=version, tag=version.replace(".", "")), pytrace=False)
    return found


def bundle_glob(python: str, platform_name: str) -> str:
    """The file name dist.py gives the bundle for one Python and platform: ``kassabro-*-py313-linux_aarch64.tar.gz``."""
    return f"kassabro-*-{python_tag(python)}-{platform_name}.tar.gz"


def python_tag(python: str) -> str:
    return "py" + python.replace(".", "")


def bundle_info(bundle: Path) -> dict[str, str]:
    """An extracted bundle's BUNDLE file: version, platform, python, system, glibc, missing."""
    return dict(line.split("=", 1) for line in (bundle / "BUNDLE").read_text().splitlines() if "=" in line[:20])


def this_platform() -> str:
    machine = platform.machine().lower()
    return "linux_" + {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def build_bundles(
    out: Path,
    platforms: tuple[str, ...],
    *,
    pythons: tuple[str, ...] = PYTHONS,
    repo: Path = REPO,
    find_links: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``deploy/dist.py`` of ``repo`` for ``platforms`` x ``pythons`` into ``out`` (the test fails on a failed build).

    ``find_links`` holds one Python's wheels: pass that Python alone.
    """
    args = [sys.executable, str(repo / "deploy" / "dist.py"), "--repo", str(repo), "--out", str(out)]
    for name in platforms:
        args += ["--platform", name]
    for python in pythons:
        args += ["--python", python]
    if find_links is not None:
        args += ["--find-links", str(find_links)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def extract(tarball: Path, dest: Path) -> Path:
    """Unpack a bundle as a technician would; returns its top directory."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    (top,) = [p for p in dest.iterdir() if p.is_dir()]
    return top


def install_env(*, fast: bool = False, python: Path | None = None) -> dict[str, str]:
    """The environment install.sh runs in here: this Python (or ``python``), and pip kept off every package index."""
    env = {
        **os.environ,
        "KASSABRO_PYTHON": str(python or sys.executable),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    if fast:
        env["KASSABRO_PIP_ARGS"] = "--no-compile"
    return env


def run_install(
    bundle: Path,
    *args: str,
    check: bool = True,
    fast: bool = False,
    python: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The bundle's own install.sh, offline (``PIP_NO_INDEX=1``), with this Python or ``python``.

    ``fast`` skips pip's byte-compiling (``KASSABRO_PIP_ARGS=--no-compile``), for
    tests about what happens around an install rather than the install itself.
    """
    result = subprocess.run(
        ["bash", str(bundle / "install.sh"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=install_env(fast=fast, python=python),
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def write_shop_config(root: Path, ingest_port: int, status_port: int, store_id: str = "butik-7") -> Path:
    """What ``kassabro init`` or a technician's copy leaves in /etc/kassabro: a real store, loopback ports."""
    config = root / "etc/kassabro/kassabro.toml"
    config.write_text(
        f'store_id = "{store_id}"\n'
        f'data_dir = "{root}/var/lib/kassabro"\n'
        f'[ingest]\nlisten = "127.0.0.1:{ingest_port}"\ntoken_file = "{root}/etc/kassabro/ingest.token"\n'
        f'[status]\nlisten = "127.0.0.1:{status_port}"\nadmin_token_file = "{root}/etc/kassabro/admin.token"\n',
        encoding="utf-8",
    )
    return config


class ServiceStandIn:
    """systemctl for a ``--root`` install: ``--service-ctl`` runs this script with start, stop or enable.

    ``start`` runs the installed ``kassabro run`` (whichever release the venv
    link points at) in the background; ``stop`` sends SIGTERM and waits, as
    systemd does. Every call is recorded, so a test can tell whether the
    installer enabled the service.
    """

    def __init__(self, root: Path, state: Path):
        self.root = root
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.script = state / "service-ctl"
        self.script.write_text(
            f"""#!/usr/bin/env bash
set -u
state={state}
echo "$1" >>"$state/calls"
case "$1" in
    enable) ;;
    start)
        {root}/opt/kassabro/venv/bin/kassabro run --config {root}/etc/kassabro/kassabro.toml \\
            </dev/null >>"$state/agent.log" 2>&1 &
        echo $! >"$state/pid"
        sleep 0.2
        kill -0 "$(cat "$state/pid")"
        ;;
    stop)
        [ -f "$state/pid" ] || exit 0
        pid="$(cat "$state/pid")"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        rm -f "$state/pid"
        ;;
    *) exit 2 ;;
esac
""",
            encoding="utf-8",
        )
        self.script.chmod(0o755)

    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().split() if path.exists() else []

    def log(self) -> str:
        path = self.state / "agent.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def running(self) -> bool:
        pid = self.state / "pid"
        if not pid.exists():
            return False
        try:
            os.kill(int(pid.read_text()), 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """Teardown: SIGKILL whatever agent the stand-in left running."""
        pid = self.state / "pid"
        if pid.exists():
            try:
                os.kill(int(pid.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)


def copy_root(installed_root: Path, tmp_path: Path) -> Path:
    """A private copy of a shared install, its config pointing at the copy.

    The copy's venv link leads to the copy's release, whose scripts still run
    the original release's Python: the same program, which is what a test of
    the steps around the program needs.
    """
    root = tmp_path / "root"
    shutil.copytree(installed_root, root, symlinks=True)
    config = root / "etc/kassabro/kassabro.toml"
    config.write_text(config.read_text().replace(str(installed_root), str(root)))
    return root


def copy_tree(src: Path, dest: Path) -> Path:
    """The source files of a Kassabro tree (no venv, caches, builds), as a release B is made from."""
    shutil.copytree(
        src,
        dest,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", "demo-data"
        ),
    )
    return dest
