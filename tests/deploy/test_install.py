"""install.sh run for real into a temporary root: files, modes, venv, idempotence, upgrade, uninstall.

One install (a real venv built from this source tree with pip) is shared by
the module; tests that change it work on their own copy or restore it.
Under ``--root`` the script skips apt, useradd/chown and systemctl (documented
in the script), so ownership is the test user's; modes are checked exactly.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "raspberrypi" / "install.sh"

Manifest = dict[str, tuple[str, ...]]


def run_install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KASSABRO_PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    result = subprocess.run(
        ["bash", str(SCRIPT), *args, "--source", str(REPO)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def manifest(root: Path) -> Manifest:
    """Every path under root with its type, mode, and content hash or link target."""
    out: Manifest = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", oct(stat.S_IMODE(st.st_mode)))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[rel] = ("file", oct(stat.S_IMODE(st.st_mode)), digest)
    return out


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def check_config(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(root / "opt/kassabro/venv/bin/kassabro"),
            "check-config",
            "--config",
            str(root / "etc/kassabro/kassabro.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def releases(root: Path) -> list[Path]:
    return sorted(p for p in (root / "opt/kassabro/releases").iterdir() if p.is_dir())


def copy_root(installed_root: Path, tmp_path: Path) -> Path:
    """A private copy of the shared install, its config pointing at the copy."""
    root = tmp_path / "root"
    shutil.copytree(installed_root, root, symlinks=True)
    config = root / "etc/kassabro/kassabro.toml"
    config.write_text(config.read_text().replace(str(installed_root), str(root)))
    return root


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp("pi") / "root"
    result = run_install("install", "--root", str(root))
    return root, result


def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_unknown_argument_is_a_usage_error() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "--frobnicate" in result.stderr


def test_files_and_modes(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = installed
    etc = root / "etc/kassabro"
    assert mode(etc) == 0o750
    assert mode(etc / "kassabro.toml") == 0o640
    for token in ("ingest.token", "admin.token"):
        assert mode(etc / token) == 0o600
        secret = (etc / token).read_text().strip()
        assert len(secret) >= 32 and re.fullmatch(r"[A-Za-z0-9_-]+", secret)
    assert (etc / "ingest.token").read_text() != (etc / "admin.token").read_text()
    assert mode(root / "var/lib/kassabro") == 0o750
    assert mode(root / "var/spool/kassabro") == 0o2770
    assert mode(root / "var/spool/kassabro/incoming") == 0o2770
    assert mode(root / "etc/systemd/system/kassabro.service") == 0o644
    venv = root / "opt/kassabro/venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("releases/")
    assert (venv / "bin/kassabro").exists()
    assert len(releases(root)) == 1
    wrapper = root / "usr/local/bin/kassabro"
    assert mode(wrapper) == 0o755
    assert f"runuser -u kassabro -- {root}/opt/kassabro/venv/bin/kassabro" in wrapper.read_text()


def test_config_and_unit_point_inside_the_root(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = installed
    config = (root / "etc/kassabro/kassabro.toml").read_text()
    assert f'data_dir = "{root}/var/lib/kassabro"' in config
    assert f'token_file = "{root}/etc/kassabro/ingest.token"' in config
    unit = (root / "etc/systemd/system/kassabro.service").read_text()
    assert f"ExecStart={root}/opt/kassabro/venv/bin/kassabro run --config {root}/etc/kassabro/kassabro.toml" in unit


def test_prints_status_page_address(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    _, result = installed
    assert re.search(r"status page: http://\S+:8781/", result.stdout), result.stdout


def test_installed_venv_runs_check_config(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = installed
    result = check_config(root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_second_run_changes_nothing(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = installed
    before = manifest(root)
    result = run_install("install", "--root", str(root))
    assert manifest(root) == before
    assert "keeping the existing" in result.stdout


def test_upgrade_keeps_data_and_config_and_swaps_venv(
    installed: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    root = copy_root(installed[0], tmp_path)
    config = root / "etc/kassabro/kassabro.toml"
    config.write_text(config.read_text().replace('store_id = "store-001"', 'store_id = "butik-7"'))
    config_before = config.read_bytes()
    data = root / "var/lib/kassabro/outbox.db"
    data.write_bytes(b"not really sqlite, but the installer must not care")
    tokens_before = {p.name: p.read_bytes() for p in (root / "etc/kassabro").glob("*.token")}
    old_release = (root / "opt/kassabro/venv").resolve()

    result = run_install("upgrade", "--root", str(root))

    new_release = (root / "opt/kassabro/venv").resolve()
    assert new_release != old_release
    assert set(releases(root)) == {old_release, new_release}, "the previous release is kept for a manual rollback"
    assert config.read_bytes() == config_before
    assert mode(config) == 0o640
    assert data.read_bytes() == b"not really sqlite, but the installer must not care"
    assert {p.name: p.read_bytes() for p in (root / "etc/kassabro").glob("*.token")} == tokens_before
    assert "switched to" in result.stdout
    assert check_config(root).returncode == 0


def test_upgrade_rolls_back_when_new_version_refuses_config(
    installed: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    root = copy_root(installed[0], tmp_path)
    config = root / "etc/kassabro/kassabro.toml"
    config.write_text(config.read_text().replace('store_id = "store-001"', 'store_id = "no spaces allowed"'))
    link_before = os.readlink(root / "opt/kassabro/venv")
    releases_before = releases(root)

    result = run_install("upgrade", "--root", str(root), check=False)

    assert result.returncode != 0
    assert "kept the running version" in result.stderr
    assert "store_id" in result.stdout + result.stderr, "check-config names the bad key"
    assert os.readlink(root / "opt/kassabro/venv") == link_before
    assert releases(root) == releases_before, "the failed release is removed"


def test_uninstall_keeps_data_and_purge_removes_it(
    installed: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    root = copy_root(installed[0], tmp_path)
    (root / "var/lib/kassabro/outbox.db").write_bytes(b"records")

    run_install("uninstall", "--root", str(root))
    assert not (root / "opt/kassabro").exists()
    assert not (root / "etc/systemd/system/kassabro.service").exists()
    assert not (root / "usr/local/bin/kassabro").exists()
    assert (root / "var/lib/kassabro/outbox.db").read_bytes() == b"records"
    assert (root / "etc/kassabro/kassabro.toml").exists()
    assert (root / "etc/kassabro/ingest.token").exists()

    run_install("uninstall", "--purge", "--root", str(root))
    assert not (root / "var/lib/kassabro").exists()
    assert not (root / "etc/kassabro").exists()
    assert not (root / "var/spool/kassabro").exists()
