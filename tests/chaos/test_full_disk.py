"""A full disk and a full outbox: 507, nothing stored is lost, and ingest recovers by itself.

The disk test mounts a small tmpfs as the agent's data_dir, so the ENOSPC is
the kernel's own, not a simulation. Mounting needs root (or passwordless
sudo); ``make test`` runs as a user who can install packages, so it has it.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.chaos.conftest import AgentProcess
from tests.helpers import make_sale, stored_keys, wait_until

pytestmark = pytest.mark.slow

MIB = 1024 * 1024


def _privileged(*command: str) -> None:
    prefix: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    result = subprocess.run([*prefix, *command], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, (
        f"{' '.join(command)} failed (this test needs root or passwordless sudo): {result.stderr}"
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, owned by the test's user, unmounted at teardown."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    _privileged(
        "mount",
        "-t",
        "tmpfs",
        "-o",
        f"size=8m,mode=0700,uid={os.getuid()},gid={os.getgid()}",
        "tmpfs",
        str(mount_point),
    )
    try:
        yield mount_point
    finally:
        _privileged("umount", "-l", str(mount_point))


def _ingest_until_refused(
    client: httpx.Client, first_receipt: int, limit_rounds: int, *, size: int = 20
) -> tuple[list[str], httpx.Response]:
    """Post batches of ``size`` sales until one is refused; returns the acknowledged keys and the refusal."""
    acked: list[str] = []
    receipt = first_receipt
    for _ in range(limit_rounds):
        batch = {"sales": [make_sale(receipt + i, till_id="kassa-2") for i in range(size)]}
        receipt += size
        response = client.post("/v1/batch", json=batch)
        if response.status_code != 201:
            return acked, response
        acked += [r["key"] for r in response.json()["records"]]
    raise AssertionError(f"never refused after {limit_rounds} batches")


def _delivered_keys(receiver_url: str) -> set[str]:
    return {r["key"] for r in httpx.get(f"{receiver_url}/_ledger", timeout=10).json()["records"]}


def test_full_disk_answers_507_loses_nothing_and_recovers_without_restart(
    agent_process, small_disk: Path, receiver: str
):
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (3 * MIB))
    agent: AgentProcess = agent_process(
        data_dir=small_disk / "data", max_bytes=1024**3, destination_url=f"{receiver}/in"
    )
    agent.start()
    agent.wait_ready()
    with httpx.Client(base_url=agent.base_url, timeout=30, verify=False) as client:
        acked, refused = _ingest_until_refused(client, 1, limit_rounds=400)
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"] == "storage_full"
        assert len(acked) > 50
        # Fill the last pages one sale at a time: full means even one sale is refused.
        singles, refused = _ingest_until_refused(client, 500_000, limit_rounds=400, size=1)
        acked += singles
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"] == "storage_full"
        assert agent.proc is not None and agent.proc.poll() is None
        assert "disk full" in agent.log_path.read_text(encoding="utf-8")  # the kernel's ENOSPC, not max_bytes

        # Nothing acknowledged was lost: on a fresh connection and through the API.
        assert set(acked) <= set(stored_keys(agent.db))
        for key in (acked[0], acked[len(acked) // 2], acked[-1]):
            assert client.get(f"/v1/records/{key}").status_code == 200
        resend = client.post("/v1/sales", json=make_sale(1, till_id="kassa-2"))
        assert resend.status_code == 200  # a till resending is still told its record is safe

        # Space returns; the same agent takes records again.
        filler.unlink()
        after = client.post("/v1/sales", json=make_sale(900_001))
        assert after.status_code == 201, after.text
        batch = client.post("/v1/batch", json={"sales": [make_sale(1_000_000 + i) for i in range(20)]})
        assert batch.status_code == 201, batch.text

        # Delivery, which met the full disk too (a batch sent whose outcome could not be
        # written down), carries on by itself: everything reaches the backend.
        expected = set(acked) | {"sale:kassa-1:900001", "sale:kassa-1:1000000"}
        wait_until(lambda: expected <= _delivered_keys(receiver), timeout=60, what=lambda: agent.log_tail())
        health = httpx.get(f"http://127.0.0.1:{agent.status_port}/healthz", timeout=10)
        assert health.status_code == 200, health.text

    assert agent.terminate() == 0, agent.log_tail()
    conn = sqlite3.connect(agent.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        keys = {k for (k,) in conn.execute("SELECT key FROM records")}
    finally:
        conn.close()
    assert set(acked) | {"sale:kassa-1:900001", "sale:kassa-1:1000000"} <= keys


def test_outbox_size_limit_answers_507_and_stores_nothing_more(agent_process):
    agent: AgentProcess = agent_process(max_bytes=MIB)
    agent.start()
    agent.wait_ready()
    with httpx.Client(base_url=agent.base_url, timeout=30, verify=False) as client:
        acked, refused = _ingest_until_refused(client, 1, limit_rounds=200)
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"] == "storage_full"
        assert "max_bytes" in refused.json()["message"]
        before = stored_keys(agent.db)
        assert set(acked) <= set(before)
        assert client.post("/v1/sales", json=make_sale(777_777)).status_code == 507
        assert stored_keys(agent.db) == before
    assert agent.terminate() == 0, agent.log_tail()


def test_restart_on_a_full_disk_starts_answers_507_and_recovers(agent_process, small_disk: Path):
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (3 * MIB))
    agent: AgentProcess = agent_process(data_dir=small_disk / "data", max_bytes=1024**3)
    agent.start()
    agent.wait_ready()
    with httpx.Client(base_url=agent.base_url, timeout=30, verify=False) as client:
        acked, _ = _ingest_until_refused(client, 1, limit_rounds=400)
        singles, refused = _ingest_until_refused(client, 500_000, limit_rounds=400, size=1)
        acked += singles
        assert refused.status_code == 507
    assert agent.terminate() == 0, agent.log_tail()

    # The Pi reboots with the disk still full: the agent must come up and say so, not crash-loop.
    agent.start()
    agent.wait_ready()
    with httpx.Client(base_url=agent.base_url, timeout=30, verify=False) as client:
        full = client.post("/v1/sales", json=make_sale(900_000))
        assert full.status_code == 507, full.text
        assert client.get(f"/v1/records/{acked[-1]}").status_code == 200
        filler.unlink()
        after = client.post("/v1/sales", json=make_sale(900_001))
        assert after.status_code == 201, after.text
    assert agent.terminate() == 0, agent.log_tail()
    assert set(acked) | {"sale:kassa-1:900001"} <= set(stored_keys(agent.db))
