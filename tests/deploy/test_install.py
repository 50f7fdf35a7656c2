"""install.sh from a real bundle, into a temporary root, offline: files, modes, the config gate, upgrade, uninstall.

The bundle is built as ``make dist`` builds it; every install here runs with
``PIP_NO_INDEX=1``. One install is shared by the module; tests that change it
work on their own copy. Under ``--root`` the script skips useradd/chown and
systemctl (documented in the script), so ownership is the test user's; modes
are checked exactly. ``--service-ctl`` hands start/stop/enable to a stand-in
that runs the installed agent for real.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.deploy.bundles import (
    SCRIPT,
    ServiceStandIn,
    bundle_info,
    copy_root,
    python_tag,
    require_python,
    run_install,
    this_platform,
    write_shop_config,
)
from tests.helpers import free_port, make_sale, wait_for_port

Manifest = dict[str, tuple[str, ...]]


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


# ------------------------------------------------------------------ the script itself (no bundle needed)


def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_help_exits_0_and_names_every_action() -> None:
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    for word in ("install", "upgrade", "uninstall", "--journal-limits", "--root", "--health-timeout"):
        assert word in result.stdout


def test_unknown_argument_is_a_usage_error() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "--frobnicate" in result.stderr


def test_outside_a_bundle_it_says_how_to_get_one(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "install", "--root", str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "make dist" in result.stderr
    assert not (tmp_path / "root/opt").exists()


# ------------------------------------------------------------------ from the bundle


@pytest.mark.slow
def test_placeholder_store_id_is_refused_with_the_next_step(
    installed: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    root, result = installed
    assert 'store_id "store-001"' in result.stderr
    assert "NOT enabled" in result.stdout
    assert f"run kassabro init or copy a config to {root}/etc/kassabro/kassabro.toml" in result.stdout
    assert "status page" not in result.stdout


@pytest.mark.slow
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
    # The listeners' certificate, made by kassabro tls renew: the key for the service alone.
    assert mode(etc / "tls") == 0o750
    assert mode(etc / "tls/key.pem") == 0o600
    assert mode(etc / "tls/cert.pem") == 0o644
    assert "BEGIN CERTIFICATE" in (etc / "tls/cert.pem").read_text()
    assert mode(root / "var/lib/kassabro") == 0o750
    assert mode(root / "var/spool/kassabro") == 0o2770
    assert mode(root / "var/spool/kassabro/incoming") == 0o2770
    assert mode(root / "etc/systemd/system/kassabro.service") == 0o644
    venv = root / "opt/kassabro/venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("releases/0.")
    assert (venv / "bin/kassabro").exists()
    assert len(releases(root)) == 1
    wrapper = root / "usr/local/bin/kassabro"
    assert mode(wrapper) == 0o755
    assert f"runuser -u kassabro -- {root}/opt/kassabro/venv/bin/kassabro" in wrapper.read_text()
    guide = (root / "opt/kassabro/README.md").read_text()
    assert guide.startswith("# Kassabro på en Raspberry Pi: teknikerns guide\n")  # Swedish first
    assert "\n# Kassabro on a Raspberry Pi: the technician's guide\n" in guide  # then English


@pytest.mark.slow
def test_the_release_holds_exactly_the_bundles_pinned_versions(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path
) -> None:
    root, _ = installed
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (bundle / "requirements.txt").read_text(), re.MULTILINE))
    site = next((root / "opt/kassabro/venv/lib").glob("python3.*/site-packages"))
    found = {}
    for info in site.glob("*.dist-info"):
        meta = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", meta, re.MULTILINE)
        version = re.search(r"^Version: (.+)$", meta, re.MULTILINE)
        assert name and version
        found[name.group(1).strip().lower().replace("_", "-")] = version.group(1).strip()
    assert found == {name.lower().replace("_", "-"): version for name, version in pinned.items()}
    assert any(site.rglob("agent/__pycache__/*.pyc")), "byte-compiled at install: the service cannot write .pyc"


@pytest.mark.slow
def test_config_and_unit_point_inside_the_root(installed: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    root, _ = installed
    config = (root / "etc/kassabro/kassabro.toml").read_text()
    assert f'data_dir = "{root}/var/lib/kassabro"' in config
    assert f'token_file = "{root}/etc/kassabro/ingest.token"' in config
    unit = (root / "etc/systemd/system/kassabro.service").read_text()
    assert f"ExecStart={root}/opt/kassabro/venv/bin/kassabro run --config {root}/etc/kassabro/kassabro.toml" in unit


@pytest.mark.slow
def test_second_run_changes_nothing(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    root, _ = installed
    service = ServiceStandIn(root, tmp_path / "svc")
    before = manifest(root)
    result = run_install(bundle, "install", "--root", str(root), "--service-ctl", str(service.script))
    assert manifest(root) == before
    assert "keeping the existing" in result.stdout
    assert "already installed" in result.stdout
    assert service.calls() == []


@pytest.mark.slow
def test_a_real_config_enables_and_starts_an_agent_that_answers_a_sale(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    """The issue's first test: the bundle, installed offline, runs a real agent from the installed tree."""
    root = copy_root(installed[0], tmp_path)
    ingest_port, status_port = free_port(), free_port()
    write_shop_config(root, ingest_port, status_port)
    assert check_config(root).returncode == 0, check_config(root).stderr
    service = ServiceStandIn(root, tmp_path / "svc")
    try:
        result = run_install(bundle, "install", "--root", str(root), "--service-ctl", str(service.script))
        assert service.calls() == ["enable", "start"], result.stdout + result.stderr
        assert "enabled and started" in result.stdout
        assert f"status page: http://127.0.0.1:{status_port}/" in result.stdout
        assert wait_for_port(ingest_port, timeout=30), service.log()
        token = (root / "etc/kassabro/ingest.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"http://127.0.0.1:{ingest_port}/v1/sales", json=make_sale(1), headers=headers, timeout=10)
        assert answer.status_code == 201, answer.text
        stored = httpx.get(f"http://127.0.0.1:{ingest_port}/v1/records/sale:kassa-1:1", headers=headers, timeout=10)
        assert stored.status_code == 200 and stored.json()["record"]["id"] == answer.json()["id"]
    finally:
        service.kill()


@pytest.mark.slow
def test_upgrade_without_a_service_manager_keeps_data_config_and_a_copy(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    from agent.outbox.store import OutboxStore
    from agent.records import parse_record

    root = copy_root(installed[0], tmp_path)
    config = write_shop_config(root, free_port(), free_port())
    config_before = config.read_bytes()
    outbox = root / "var/lib/kassabro/outbox.db"
    store = OutboxStore.open(outbox, store_id="butik-7")
    (stored,) = store.enqueue([parse_record("sale", make_sale(1))])
    store.close()
    data_before = outbox.read_bytes()
    tokens_before = {p.name: p.read_bytes() for p in (root / "etc/kassabro").glob("*.token")}
    old_release = (root / "opt/kassabro/venv").resolve()

    result = run_install(bundle, "upgrade", "--root", str(root), fast=True)

    new_release = (root / "opt/kassabro/venv").resolve()
    assert new_release != old_release
    assert set(releases(root)) == {old_release, new_release}, "the previous release is kept for a manual rollback"
    assert config.read_bytes() == config_before
    assert mode(config) == 0o640
    assert outbox.read_bytes() == data_before
    assert {p.name: p.read_bytes() for p in (root / "etc/kassabro").glob("*.token")} == tokens_before
    (backup,) = (root / "var/lib/kassabro").glob("outbox.db.before-*")
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT id FROM records WHERE key = 'sale:kassa-1:1'").fetchone() == (stored.id,)
    assert "switched to" in result.stdout
    assert check_config(root).returncode == 0


@pytest.mark.slow
def test_upgrade_refused_by_the_new_config_check_changes_nothing(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    root = copy_root(installed[0], tmp_path)
    config = root / "etc/kassabro/kassabro.toml"
    config.write_text(config.read_text().replace('store_id = "store-001"', 'store_id = "no spaces allowed"'))
    link_before = os.readlink(root / "opt/kassabro/venv")
    releases_before = releases(root)

    result = run_install(bundle, "upgrade", "--root", str(root), check=False, fast=True)

    assert result.returncode != 0
    assert "kept the running version" in result.stderr
    assert "store_id" in result.stdout + result.stderr, "check-config names the bad key"
    assert os.readlink(root / "opt/kassabro/venv") == link_before
    assert releases(root) == releases_before, "the failed release is removed"


@pytest.mark.slow
def test_journal_limits_drop_in(bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = run_install(bundle, "--journal-limits", "--root", str(root))
    dropin = root / "etc/systemd/journald.conf.d/kassabro.conf"
    settings = [line for line in dropin.read_text().splitlines() if line and not line.startswith("#")]
    assert settings == ["[Journal]", "SystemMaxUse=64M", "MaxRetentionSec=1month"]
    assert mode(dropin) == 0o644
    assert "64 MB" in result.stdout
    assert not (root / "opt").exists(), "--journal-limits alone installs nothing else"


@pytest.mark.slow
def test_a_changed_file_in_the_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    wheel = next((copy / "wheels").glob("kassabro-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    result = run_install(copy, "install", "--root", str(tmp_path / "root"), check=False)
    assert result.returncode == 1
    assert "SHA256SUMS" in result.stderr
    assert not (tmp_path / "root/opt/kassabro/venv").exists()


@pytest.mark.slow
def test_a_bundle_for_another_platform_is_refused(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    info = copy / "BUNDLE"
    info.write_text(re.sub(r"^platform=.*$", "platform=linux_armv7l", info.read_text(), flags=re.MULTILINE))
    sums = copy / "SHA256SUMS"
    digest = hashlib.sha256(info.read_bytes()).hexdigest()
    sums.write_text(re.sub(r"^\S+  BUNDLE$", f"{digest}  BUNDLE", sums.read_text(), flags=re.MULTILINE))
    result = run_install(copy, "install", "--root", str(tmp_path / "root"), check=False)
    assert result.returncode == 1
    assert "this bundle is for linux_armv7l" in result.stderr
    info = bundle_info(bundle)
    right = f"kassabro-{info['version']}-{python_tag(info['python'])}-{this_platform()}.tar.gz"
    swedish, english = result.stderr.strip().splitlines()[-2:]
    assert swedish.startswith("kassabro-install: FEL: fel paket") and f"Ta {right} i stället" in swedish
    assert english.startswith("kassabro-install: ERROR: wrong bundle") and f"use {right} instead" in english
    assert not (tmp_path / "root/opt").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("bundle_python", "machine_python"), [("3.13", "3.11"), ("3.11", "3.13")])
def test_a_bundle_for_another_python_is_refused_naming_the_one_to_take(
    bundles: dict[str, Path], bundle_python: str, machine_python: str, tmp_path: Path
) -> None:
    """A trixie Pi given the bookworm bundle (and back): nothing installed, the right file named, Swedish first."""
    python = require_python(machine_python)
    root = tmp_path / "root"
    result = run_install(bundles[bundle_python], "install", "--root", str(root), python=python, check=False)
    assert result.returncode == 1
    right = f"kassabro-{bundle_info(bundles[bundle_python])['version']}-{python_tag(machine_python)}-{this_platform()}.tar.gz"
    system = {"3.11": "Raspberry Pi OS 12 bookworm", "3.13": "Raspberry Pi OS 13 trixie"}[machine_python]
    swedish, english = result.stderr.strip().splitlines()[-2:]
    assert swedish == (
        f"kassabro-install: FEL: fel paket: det här är för Python {bundle_python} "
        f"({'Raspberry Pi OS 12 bookworm' if bundle_python == '3.11' else 'Raspberry Pi OS 13 trixie'}), "
        f"men den här datorns {python} är {machine_python} (som på {system}). Ta {right} i stället."
    )
    assert english == (
        f"kassabro-install: ERROR: wrong bundle: this bundle is for Python {bundle_python}; "
        f"this machine's {python} is {machine_python} (as on {system}): use {right} instead"
    )
    assert not (root / "opt").exists(), "refused before anything is written"


@pytest.mark.slow
def test_the_py313_bundle_installs_offline_and_runs_a_sale_under_python_3_13(
    bundles: dict[str, Path], python313: Path, tmp_path: Path
) -> None:
    """Raspberry Pi OS 13 trixie: the py313 bundle alone installs, and the installed kassabro runs on CPython 3.13."""
    root = tmp_path / "root"
    service = ServiceStandIn(root, tmp_path / "svc")
    run_install(bundles["3.13"], "install", "--root", str(root), "--service-ctl", str(service.script), python=python313)
    assert service.calls() == [], "the example config's placeholder store id: not enabled"
    venv = root / "opt/kassabro/venv"
    probe = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import sys, pydantic_core._pydantic_core as c; print(sys.version_info[:2], c.__file__)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith("(3, 13) ") and ".cpython-313-" in probe.stdout, probe.stdout
    checked = check_config(root)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    ingest_port, status_port = free_port(), free_port()
    config = write_shop_config(root, ingest_port, status_port)
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [str(venv / "bin/kassabro"), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        assert wait_for_port(ingest_port, timeout=30), log.read_text(errors="replace")[-3000:]
        token = (root / "etc/kassabro/ingest.token").read_text().strip()
        answer = httpx.post(
            f"http://127.0.0.1:{ingest_port}/v1/sales",
            json=make_sale(1),
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
    with sqlite3.connect(root / "var/lib/kassabro/outbox.db") as db:
        assert db.execute("SELECT count(*) FROM records WHERE key = 'sale:kassa-1:1'").fetchone() == (1,)


@pytest.mark.slow
def test_uninstall_keeps_data_and_purge_removes_it(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    root = copy_root(installed[0], tmp_path)
    (root / "var/lib/kassabro/outbox.db").write_bytes(b"records")

    run_install(bundle, "uninstall", "--root", str(root))
    assert not (root / "opt/kassabro").exists()
    assert not (root / "etc/systemd/system/kassabro.service").exists()
    assert not (root / "usr/local/bin/kassabro").exists()
    assert (root / "var/lib/kassabro/outbox.db").read_bytes() == b"records"
    assert (root / "etc/kassabro/kassabro.toml").exists()
    assert (root / "etc/kassabro/ingest.token").exists()

    run_install(bundle, "uninstall", "--purge", "--root", str(root))
    assert not (root / "var/lib/kassabro").exists()
    assert not (root / "etc/kassabro").exists()
    assert not (root / "var/spool/kassabro").exists()


@pytest.mark.slow
def test_share_lays_out_the_samba_snippet_and_the_tills_password(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    root = copy_root(installed[0], tmp_path)
    result = run_install(bundle, "--share", "--root", str(root))
    assert "kassabro-till" in result.stdout
    snippet = root / "etc/samba/kassabro.conf"
    assert mode(snippet) == 0o644
    text = snippet.read_text()
    assert f"path = {root}/var/spool/kassabro/incoming" in text
    assert f"path = {root}/var/spool/kassabro/rejected" in text
    for line in ("valid users = kassabro-till", "server min protocol = SMB3", "server signing = mandatory"):
        assert line in text
    assert "guest ok = yes" not in text and "map to guest = Never" in text
    password = root / "etc/kassabro/smb-till.password"
    assert mode(password) == 0o600 and len(password.read_text().strip()) >= 20
    smb_conf = root / "etc/samba/smb.conf"
    run_install(bundle, "--share", "--root", str(root))  # again: nothing doubled, the password kept
    assert smb_conf.read_text().count(f"include = {snippet}") == 1
    checked = subprocess.run(["testparm", "-s", str(smb_conf)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "[kassabro]" in checked.stdout and "[kassabro-rejected]" in checked.stdout


@pytest.mark.slow
def test_avahi_announces_the_ingest_port_and_the_certificate_fingerprint(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    from xml.etree import ElementTree

    from agent import tlscert

    root = copy_root(installed[0], tmp_path)
    (root / "etc/avahi").mkdir(parents=True)  # Avahi is present, as on Raspberry Pi OS
    result = run_install(bundle, "install", "--root", str(root))
    assert "_kassabro._tcp" in result.stdout
    service_file = root / "etc/avahi/services/kassabro.service"
    assert mode(service_file) == 0o644
    service = ElementTree.parse(service_file).getroot().find("service")
    assert service is not None
    assert service.findtext("type") == "_kassabro._tcp"
    assert service.findtext("port") == "8780"
    txt = [t.text for t in service.findall("txt-record")]
    assert f"sha256={tlscert.fingerprint(root / 'etc/kassabro/tls/cert.pem')}" in txt
    assert "tls=1" in txt


@pytest.mark.slow
def test_till_tokens_one_per_till_named_and_kept_on_a_rerun(
    installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path
) -> None:
    """``--till``: a token per till (0600 in a 0750 tills/), the installer's config gets the tables; kept on a re-run."""
    import tomllib

    root = copy_root(installed[0], tmp_path)
    etc = root / "etc/kassabro"
    result = run_install(bundle, "install", "--root", str(root), "--till", "kassa-1", "--till", "kassa-2")
    assert mode(etc / "tills") == 0o750
    tokens = {}
    for till in ("kassa-1", "kassa-2"):
        path = etc / "tills" / f"{till}.token"
        # Under --root the script does no chown (the real system: kassabro:kassabro): the test user's.
        assert path.stat().st_uid == os.getuid()
        assert mode(path) == 0o600
        tokens[till] = path.read_bytes()
        assert re.fullmatch(rb"[A-Za-z0-9_-]{43}\n", tokens[till])
    assert len({*tokens.values(), (etc / "ingest.token").read_bytes()}) == 3
    assert mode(etc / "kassabro.toml") == 0o640
    with (etc / "kassabro.toml").open("rb") as f:
        tills = tomllib.load(f)["ingest"]["tills"]
    assert tills == [{"id": t, "token_file": str(etc / "tills" / f"{t}.token")} for t in ("kassa-1", "kassa-2")]
    assert "added [[ingest.tills]] for kassa-1 kassa-2" in result.stdout
    assert check_config(root).returncode == 0, check_config(root).stdout + check_config(root).stderr

    # Again, with one more till: the existing tokens and tables are kept, only kassa-3 is added.
    config_before = (etc / "kassabro.toml").read_text()
    result = run_install(bundle, "install", "--root", str(root), "--till", "kassa-1", "--till", "kassa-3")
    assert (etc / "tills/kassa-1.token").read_bytes() == tokens["kassa-1"]
    assert (etc / "tills/kassa-2.token").read_bytes() == tokens["kassa-2"]
    assert mode(etc / "tills/kassa-3.token") == 0o600
    assert (etc / "kassabro.toml").read_text().startswith(config_before)
    with (etc / "kassabro.toml").open("rb") as f:
        assert [t["id"] for t in tomllib.load(f)["ingest"]["tills"]] == ["kassa-1", "kassa-2", "kassa-3"]
    assert f"created {etc}/tills/kassa-3.token" in result.stdout
    assert f"created {etc}/tills/kassa-1.token" not in result.stdout

    # A shop's own config is never edited: the tables to add are printed instead.
    config = write_shop_config(root, free_port(), free_port())
    shop_config = config.read_bytes()
    result = run_install(bundle, "install", "--root", str(root), "--till", "kassa-4")
    assert config.read_bytes() == shop_config
    assert mode(etc / "tills/kassa-4.token") == 0o600
    assert f'[[ingest.tills]]\nid = "kassa-4"\ntoken_file = "{etc}/tills/kassa-4.token"\n' in result.stdout


def test_a_bad_till_id_is_a_usage_error() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--till", "kassa 1"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "--till needs a till id" in result.stderr
