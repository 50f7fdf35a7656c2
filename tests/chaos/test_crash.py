"""SIGKILL the agent under concurrent HTTP ingest, again and again, on the same data.

The promise under test (contract §2): a record is acknowledged only after it
is durably committed. So after any kill, every record that got 201 or 200 is
in the outbox exactly once, with the id it was first given, and the file
passes ``PRAGMA integrity_check``. Kills land at random moments (seeded, so a
failure can be replayed): during start-up, in the middle of group commits,
between requests.
"""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.chaos.conftest import AgentProcess
from tests.helpers import make_sale

CLIENTS = 8
SEED = int(os.environ.get("KASSABRO_CRASH_SEED", "20261126"))


@dataclass
class Ledger:
    """What the clients were told: key -> (id, seq) for every 201/200 answer."""

    acked: dict[str, tuple[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    receipts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_receipt(self) -> int:
        with self.lock:
            return next(self.receipts)

    def acknowledge(self, key: str, rid: str, seq: int, duplicate: bool) -> None:
        with self.lock:
            known = self.acked.get(key)
            if known is not None and known != (rid, seq):
                self.problems.append(f"{key} was {known}, now answered {(rid, seq)}")
            elif known is None and duplicate:
                # A duplicate of a request whose first answer was lost in a kill: fine,
                # as long as the stored id stays the same from now on.
                pass
            self.acked.setdefault(key, (rid, seq))

    def some_acked(self, rng: random.Random) -> tuple[str, int] | None:
        with self.lock:
            if not self.acked:
                return None
            key = rng.choice(list(self.acked))
        return key, int(key.rsplit(":", 1)[1])


def _client(base_url: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """One till: new sales, sometimes a small batch, sometimes a resend of an acknowledged one."""
    rng = random.Random(seed)
    # Plain HTTP on loopback: verify=False only skips loading a CA bundle per client.
    with httpx.Client(base_url=base_url, timeout=10, verify=False) as client:
        for _ in range(5000):  # bounded; a kill ends the loop long before
            if stop.is_set():
                return
            roll = rng.random()
            resend = ledger.some_acked(rng) if roll < 0.1 else None
            try:
                if resend is not None:
                    key, receipt = resend
                    response = client.post("/v1/sales", json=make_sale(receipt))
                    answers = [response.json()] if response.status_code in (200, 201) else []
                    if response.status_code != 200:
                        ledger.problems.append(f"resend of {key} answered {response.status_code}")
                elif roll < 0.25:
                    receipts = [ledger.new_receipt() for _ in range(3)]
                    response = client.post("/v1/batch", json={"sales": [make_sale(n) for n in receipts]})
                    answers = response.json()["records"] if response.status_code in (200, 201) else []
                else:
                    response = client.post("/v1/sales", json=make_sale(ledger.new_receipt()))
                    answers = [response.json()] if response.status_code in (200, 201) else []
            except (httpx.TransportError, ValueError):
                return  # the agent died under us: the answer never came, nothing was promised
            with ledger.lock:
                ledger.requests += 1
            if response.status_code not in (200, 201):
                ledger.problems.append(f"unexpected {response.status_code}: {response.text[:200]}")
                return
            for answer in answers:
                ledger.acknowledge(answer["key"], answer["id"], answer["seq"], answer["duplicate"])


def _check_file(db: Path, ledger: Ledger) -> None:
    """On the killed agent's file: integrity, and every acknowledged record once, unchanged."""
    conn = sqlite3.connect(db)  # a writable connection: it replays the WAL as SQLite does
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchall()
        assert verdict == [("ok",)], verdict
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'records'").fetchone() is None:
            # Killed before the very first migration committed: a fresh file, nothing promised yet.
            assert not ledger.acked, "the records table is gone"
            return
        stored = {key: (rid, seq) for key, rid, seq in conn.execute("SELECT key, id, seq FROM records")}
        per_key = conn.execute("SELECT COUNT(*), COUNT(DISTINCT key), COUNT(DISTINCT id) FROM records").fetchone()
    finally:
        conn.close()
    assert per_key[0] == per_key[1] == per_key[2]
    missing = [k for k in ledger.acked if k not in stored]
    assert not missing, f"{len(missing)} acknowledged record(s) lost, e.g. {missing[:5]}"
    changed = [k for k, v in ledger.acked.items() if stored[k] != v]
    assert not changed, f"acknowledged record(s) changed id or seq, e.g. {changed[:5]}"
    aside = [p.name for p in db.parent.iterdir() if ".corrupt-" in p.name]
    assert not aside, f"the outbox was moved aside as corrupt: {aside}"


def crash_cycles(agent: AgentProcess, cycles: int, seed: int) -> tuple[int, Ledger]:
    rng = random.Random(seed)
    ledger = Ledger()
    for _cycle in range(cycles):
        agent.start()
        if rng.random() < 0.1:
            # Kill during start-up: opening, checking or migrating the file.
            time.sleep(rng.uniform(0.0, 0.4))
            agent.kill()
            if agent.db.exists():
                _check_file(agent.db, ledger)
            continue
        agent.wait_ready()
        # After the restart, the agent itself answers for what it was given before.
        sample = rng.sample(sorted(ledger.acked), min(3, len(ledger.acked)))
        with httpx.Client(base_url=agent.base_url, timeout=10, verify=False) as client:
            for key in sample:
                found = client.get(f"/v1/records/{key}")
                assert found.status_code == 200, (key, found.status_code, found.text[:300], agent.log_tail())
                assert (found.json()["record"]["id"], found.json()["record"]["seq"]) == ledger.acked[key]
        stop = threading.Event()
        threads = [
            threading.Thread(target=_client, args=(agent.base_url, ledger, stop, rng.randrange(2**32)), daemon=True)
            for _ in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.02, 0.6))
        agent.kill()
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
        assert not any(t.is_alive() for t in threads), "a client hung after the kill"
        assert not ledger.problems, ledger.problems[:5]
        _check_file(agent.db, ledger)
    return cycles, ledger


def _report(cycles: int, ledger: Ledger, seconds: float, seed: int) -> None:
    print(
        f"\ncrash test: {cycles} SIGKILL cycles, {ledger.requests} answered requests, "
        f"{len(ledger.acked)} acknowledged records, none lost, integrity ok after every kill "
        f"({seconds:.0f} s, seed {seed})"
    )


def test_sigkill_under_concurrent_ingest_loses_nothing_acknowledged(agent_process):
    agent = agent_process()
    started = time.monotonic()
    cycles, ledger = crash_cycles(agent, 50, SEED)
    _report(cycles, ledger, time.monotonic() - started, SEED)
    assert len(ledger.acked) > 100  # the clients really got records in between the kills


@pytest.mark.soak
@pytest.mark.timeout(4 * 3600)
def test_sigkill_soak(agent_process):
    agent = agent_process()
    started = time.monotonic()
    cycles, ledger = crash_cycles(agent, 1000, SEED + 1)
    _report(cycles, ledger, time.monotonic() - started, SEED + 1)
    assert len(ledger.acked) > 2000
