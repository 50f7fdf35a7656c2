"""What the tills were told, and the check that the outbox still holds all of it.

Shared by the chaos tests that kill the agent (at random moments, or at a
chosen fsync): each till thread posts sales and batches and notes every
acknowledged key with the id and seq it was given; after the kill the file
must hold every one of them, unchanged.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import make_sale


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


def till(base_url: str, ledger: Ledger, stop: threading.Event, seed: int) -> None:
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


def check_file(db: Path, ledger: Ledger) -> None:
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
