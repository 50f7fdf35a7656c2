"""``install.sh upgrade`` from release A to a release B with a new migration: never an acknowledged sale lost.

Release B is this tree copied, its version bumped and a migration added (a
column and a table A does not know), bundled offline from A's wheels. A B
whose ``/healthz`` answers 503 (while it still takes sales) must be rolled
back: A's program and the outbox copy come back, and every sale B
acknowledged in its minute is carried back with the id B gave it. A healthy B
keeps everything. The agents are real ``kassabro run`` processes started
from the installed trees by the systemctl stand-in.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.outbox import schema
from tests.deploy.bundles import (
    REPO,
    ServiceStandIn,
    build_bundles,
    bundle_info,
    copy_root,
    copy_tree,
    extract,
    install_env,
    run_install,
    this_platform,
    write_shop_config,
)
from tests.helpers import free_port, make_sale, wait_for_port

pytestmark = pytest.mark.slow

HEALTH_TIMEOUT_S = 20
"""The upgraded release's health-check window here (60 s on a Pi): long enough to post sales to a failing B."""

MIGRATION_B = '''

def _m_release_b(db: sqlite_utils.Database) -> None:
    """Release B's migration (tests/deploy/test_upgrade.py): a column and a table release A does not know."""
    db.execute("ALTER TABLE records ADD COLUMN release_b_note TEXT")
    db.execute("CREATE TABLE release_b_things (id INTEGER PRIMARY KEY, note TEXT)")


MIGRATIONS.append(_m_release_b)
SCHEMA_VERSION = len(MIGRATIONS)
'''

HEALTHZ = "    async def healthz(self, request: Request) -> Response:\n"
BROKEN_HEALTHZ = HEALTHZ + (
    '        return Response(b\'{"ok": false, "reason": "release B regression"}\', status_code=503,'
    " media_type='application/json')\n"
)


def version_of(tree: Path) -> str:
    match = re.search(r'^__version__ = "([^"]+)"', (tree / "agent/__init__.py").read_text(), re.MULTILINE)
    assert match
    return match.group(1)


def make_release_b(tmp: Path, a_bundle: Path, *, healthy: bool) -> Path:
    """Release B's bundle, extracted; built with no network from A's wheels."""
    tree = copy_tree(REPO, tmp / "tree")
    init = tree / "agent/__init__.py"
    version_a = version_of(tree)
    major, minor = version_a.split(".")[:2]
    init.write_text(init.read_text().replace(f'"{version_a}"', f'"{major}.{int(minor) + 1}.0"'))
    (tree / "agent/outbox/schema.py").write_text((tree / "agent/outbox/schema.py").read_text() + MIGRATION_B)
    if not healthy:
        app = tree / "agent/web/app.py"
        text = app.read_text()
        assert text.count(HEALTHZ) == 1, "the healthz handler moved: update this test's patch"
        app.write_text(text.replace(HEALTHZ, BROKEN_HEALTHZ))
    python = bundle_info(a_bundle)["python"]
    build_bundles(tmp / "dist", (this_platform(),), pythons=(python,), repo=tree, find_links=a_bundle / "wheels")
    (tarball,) = (tmp / "dist").glob("kassabro-*.tar.gz")
    return extract(tarball, tmp / "bundle")


@dataclass
class Shop:
    """An installed Pi (under ``root``) with its agent running, and the sales it acknowledged."""

    root: Path
    service: ServiceStandIn
    ingest_port: int
    status_port: int
    acknowledged: dict[str, str]

    def client(self) -> httpx.Client:
        token = (self.root / "etc/kassabro/ingest.token").read_text().strip()
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.ingest_port}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def sell(self, numbers: range) -> None:
        """Post these receipts; each must be acknowledged (201), and its id is remembered."""
        with self.client() as client:
            for n in numbers:
                answer = client.post("/v1/sales", json=make_sale(n))
                assert answer.status_code == 201, answer.text
                self.acknowledged[f"sale:kassa-1:{n}"] = answer.json()["id"]

    def running_version(self) -> str | None:
        try:
            answer = httpx.get(f"http://127.0.0.1:{self.status_port}/api/status", timeout=2)
        except httpx.HTTPError:
            return None
        return str(answer.json()["version"]) if answer.status_code == 200 else None

    def stored(self) -> dict[str, str]:
        """Every acknowledged key as the running agent answers it: key -> id (404s are left out)."""
        found = {}
        with self.client() as client:
            for key in self.acknowledged:
                answer = client.get(f"/v1/records/{key}")
                if answer.status_code == 200:
                    found[key] = answer.json()["record"]["id"]
        return found

    @property
    def outbox(self) -> Path:
        return self.root / "var/lib/kassabro/outbox.db"


@pytest.fixture
def shop(installed: tuple[Path, subprocess.CompletedProcess[str]], bundle: Path, tmp_path: Path) -> Iterator[Shop]:
    """Release A installed from its bundle, given a real config, running, with five sales acknowledged."""
    root = copy_root(installed[0], tmp_path)
    ingest_port, status_port = free_port(), free_port()
    write_shop_config(root, ingest_port, status_port)
    service = ServiceStandIn(root, tmp_path / "svc")
    try:
        run_install(bundle, "install", "--root", str(root), "--service-ctl", str(service.script), fast=True)
        assert wait_for_port(ingest_port, timeout=30), service.log()
        shop = Shop(root, service, ingest_port, status_port, {})
        shop.sell(range(1, 6))
        yield shop
    finally:
        service.kill()


def start_upgrade(shop: Shop, b_bundle: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "bash",
            str(b_bundle / "install.sh"),
            "upgrade",
            "--root",
            str(shop.root),
            "--service-ctl",
            str(shop.service.script),
            "--health-timeout",
            str(HEALTH_TIMEOUT_S),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=install_env(fast=True),
    )


def wait_for_version(shop: Shop, version: str, upgrade: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while shop.running_version() != version:
        assert upgrade.poll() is None, f"the upgrade ended before {version} answered:\n{upgrade.communicate()[0]}"
        assert time.monotonic() < deadline, f"{version} never answered:\n{shop.service.log()}"
        time.sleep(0.1)


def user_version(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def test_a_failing_upgrade_rolls_back_with_every_acknowledged_sale(shop: Shop, bundle: Path, tmp_path: Path) -> None:
    b_bundle = make_release_b(tmp_path / "b", bundle, healthy=False)
    version_a, version_b = version_of(REPO), version_of(tmp_path / "b/tree")
    release_a = (shop.root / "opt/kassabro/venv").resolve()

    upgrade = start_upgrade(shop, b_bundle)
    wait_for_version(shop, version_b, upgrade)
    shop.sell(range(6, 11))  # B acknowledges these while its health check fails
    transcript, _ = upgrade.communicate(timeout=240)
    print(f"---- install.sh upgrade ({version_a} -> {version_b}, B failing its health check)\n{transcript}")

    assert upgrade.returncode == 1, transcript
    assert "failed its health check" in transcript
    assert "every record it accepted was carried back" in transcript
    # B's five sales and the five stock movements derived from them; A's own ten are in the copy.
    assert "10 carried over, 10 already here" in transcript
    assert shop.running_version() == version_a, "release A runs again"
    assert (shop.root / "opt/kassabro/venv").resolve() == release_a
    assert shop.stored() == shop.acknowledged, "every acknowledged sale, with the id it was given"
    assert user_version(shop.outbox) == schema.SCHEMA_VERSION, "the outbox is A's schema again"
    (aside,) = shop.outbox.parent.glob(f"outbox.db.rolled-back-{version_b}-*[0-9Z]")
    assert user_version(aside) == schema.SCHEMA_VERSION + 1, "B's outbox (migrated) is kept aside"
    assert not list((shop.root / "opt/kassabro/releases").glob(f"{version_b}-*")), "the failed release is removed"


def test_a_healthy_upgrade_keeps_everything(shop: Shop, bundle: Path, tmp_path: Path) -> None:
    b_bundle = make_release_b(tmp_path / "b", bundle, healthy=True)
    version_a, version_b = version_of(REPO), version_of(tmp_path / "b/tree")
    release_a = (shop.root / "opt/kassabro/venv").resolve()

    upgrade = start_upgrade(shop, b_bundle)
    transcript, _ = upgrade.communicate(timeout=240)
    print(f"---- install.sh upgrade ({version_a} -> {version_b}, B healthy)\n{transcript}")

    assert upgrade.returncode == 0, transcript
    assert f"upgrade to {version_b} done" in transcript
    assert shop.running_version() == version_b
    shop.sell(range(6, 9))
    assert shop.stored() == shop.acknowledged
    assert user_version(shop.outbox) == schema.SCHEMA_VERSION + 1, "B migrated the outbox"
    (backup,) = shop.outbox.parent.glob(f"outbox.db.before-{version_b}-*")
    assert user_version(backup) == schema.SCHEMA_VERSION, "the copy is A's, taken before B opened the outbox"
    assert release_a.is_dir(), "A's release stays for a manual rollback"
