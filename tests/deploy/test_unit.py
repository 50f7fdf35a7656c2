"""The systemd unit as systemd itself reads it: no warnings, and hardened.

There is no systemd as PID 1 here, so ``systemd-analyze`` runs against a
temporary root holding the unit, an executable where ExecStart points, and
this machine's own unit tree (for multi-user.target, network-online.target...).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "kassabro.service"
SYSTEM_UNITS = next(
    (p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if (p / "sysinit.target").exists()),
    Path("/usr/lib/systemd/system"),
)


def exec_start(unit_text: str) -> Path:
    match = re.search(r"^ExecStart=(\S+)", unit_text, re.MULTILINE)
    assert match, "the unit has no ExecStart="
    return Path(match.group(1))


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root with the unit installed and an executable at its ExecStart path."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    # A copy, not a symlink: systemd resolves the tree's own links inside the root.
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    shutil.copy(UNIT, root / "etc/systemd/system/kassabro.service")
    binary = root / str(exec_start(UNIT.read_text())).lstrip("/")
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return root


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "cat", "LC_ALL": "C.UTF-8"}
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_verify_prints_nothing(unit_root: Path) -> None:
    result = analyze("verify", f"--root={unit_root}", "kassabro.service")
    assert result.stderr == ""
    assert result.returncode == 0


def test_verify_does_catch_mistakes(unit_root: Path) -> None:
    """The check above is meaningful: an unknown key in the same setup is reported."""
    unit = unit_root / "etc/systemd/system/kassabro.service"
    unit.write_text(unit.read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=30\n"))
    result = analyze("verify", f"--root={unit_root}", "kassabro.service")
    assert "WatchdogSecs" in result.stderr


def test_security_score_at_most_2(unit_root: Path) -> None:
    result = analyze("security", "--offline=true", "--threshold=20", f"--root={unit_root}", "kassabro.service")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    score = re.search(r"Overall exposure level for kassabro\.service: (\d+\.\d)", result.stdout)
    assert score and float(score.group(1)) <= 2.0, result.stdout[-500:]


def test_security_of_the_file_itself(tmp_path: Path) -> None:
    """The form the issue names: the unit file path, offline."""
    result = analyze("security", "--offline=true", "--threshold=20", str(UNIT))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


@pytest.mark.parametrize(
    "line",
    [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "StateDirectory=kassabro",
        "ConfigurationDirectory=kassabro",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "UMask=0077",
        "ExecStart=/opt/kassabro/venv/bin/kassabro run --config /etc/kassabro/kassabro.toml",
    ],
)
def test_unit_has(line: str) -> None:
    assert line in UNIT.read_text().splitlines()
