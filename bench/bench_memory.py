"""Memory and start-up of ``kassabro run``: idle, and with 1,000,000 pending records.

The big outbox is built quickly but honestly: the real schema (``OutboxStore.open``
runs the migrations), real envelopes' data (a validated, normalised sale per
row with its digest), one destination that has acknowledged nothing, so all
million records are pending. Only the build skips fsync; the agent then opens
the file as it would after a power cut.

Targets (issue 2): RSS under 80 MiB idle and with 1,000,000 pending; start-up
to ready (the ingest port accepts) under 2 s with 1,000,000 pending.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx

from bench._common import FAULTS, STORE_ID, AgentProcess, machine, sale, table

PENDING = int(os.environ.get("KASSABRO_BENCH_PENDING", "1000000"))
SETTLE_S = 5.0
RSS_TARGET_MIB = 80
STARTUP_TARGET_S = 2.0


def build_outbox(db: Path, count: int) -> float:
    """``count`` pending sales in a real outbox at ``db``; returns the build time."""
    from agent import clock
    from agent.ids import uuid7
    from agent.outbox.store import OutboxStore
    from agent.records import digest, normalize, parse_record

    started = time.perf_counter()
    store = OutboxStore.open(db, store_id=STORE_ID)
    store.register_destinations([("backend", "http", ["sale", "stock_movement"])])
    store.close()

    template = normalize(parse_record("sale", sale(1)))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # the build only; the agent runs with FULL
    received_at = clock.iso_now()
    chunk = 50_000
    for start in range(1, count + 1, chunk):
        rows = []
        for n in range(start, min(start + chunk, count + 1)):
            data = {**template, "receipt_no": n}
            rows.append(
                (
                    uuid7(),
                    f"sale:kassa-1:{n}",
                    "sale",
                    received_at,
                    1,
                    digest(data),
                    json.dumps(data, ensure_ascii=False, separators=(",", ":")),
                )
            )
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO records(id, key, type, received_at, clock_synced, digest, data) VALUES (?,?,?,?,?,?,?)", rows
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def quick_check_s(db: Path) -> float:
    """How long the start-up ``PRAGMA quick_check`` takes on this file (page cache warm)."""
    conn = sqlite3.connect(db)
    started = time.perf_counter()
    conn.execute("PRAGMA quick_check").fetchall()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


_RECEIPTS = itertools.count(10_000_000)


def till_client(agent: AgentProcess, timeout: float = 120.0) -> httpx.Client:
    """The till's client, made before the agent starts: its own set-up (a TLS context) is not the agent's time."""
    return httpx.Client(base_url=f"http://127.0.0.1:{agent.ingest_port}", timeout=timeout)


def first_sale_s(agent: AgentProcess, started: float, client: httpx.Client, timeout: float = 120.0) -> float:
    """Seconds from ``started`` until a sale is acknowledged (201): "accepting sales", not only the port."""
    body = sale(next(_RECEIPTS))
    while True:
        answer = client.post("/v1/sales", json=body)
        if answer.status_code == 201:
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"no 201 within {timeout} s: {answer.status_code} {answer.text[:200]}")
        time.sleep(0.005)


def measure(agent: AgentProcess, *, crashed: bool = False) -> dict[str, float]:
    """Start, wait to ready, settle, read RSS; then once more after a status page poll.

    ``crashed``: remove the clean-close note first, as a power cut leaves the file.
    """
    if crashed:
        (agent.data_dir / "outbox.db.clean").unlink(missing_ok=True)
    with till_client(agent) as client:
        started = time.perf_counter()
        startup = agent.start()
        accepting = first_sale_s(agent, started, client)
    time.sleep(SETTLE_S)
    rss, _ = agent.rss_mib()
    with httpx.Client(timeout=120) as client:
        client.get(f"http://127.0.0.1:{agent.status_port}/api/status")
        client.get(f"http://127.0.0.1:{agent.status_port}/")
    time.sleep(1.0)
    after_status, peak = agent.rss_mib()
    agent.stop()
    return {"startup_s": startup, "accepting_s": accepting, "rss": rss, "rss_status": after_status, "peak": peak}


def run(root: Path) -> str:
    (root / "idle").mkdir()
    idle_agent = AgentProcess(root / "idle")
    idle = measure(idle_agent)

    (root / "big").mkdir()
    big_agent = AgentProcess(root / "big")
    db = big_agent.data_dir / "outbox.db"
    build_s = build_outbox(db, PENDING)
    size_mib = db.stat().st_size / 1024 / 1024
    check_s = quick_check_s(db)
    big = measure(big_agent, crashed=True)
    slow = AgentProcess(root / "big", prefix=[FAULTS, "slow-fsync", "5", "--"])
    big_slow = measure(slow, crashed=True)

    def verdict(value: float, target: float) -> str:
        return "met" if value < target else "NOT met"

    def row(name: str, f: dict[str, float]) -> list[str]:
        return [name, f"{f['startup_s']:.2f}", f"{f['accepting_s']:.2f}", f"{f['rss']:.1f}", f"{f['rss_status']:.1f}",
                f"{f['peak']:.1f}"]  # fmt: skip

    rows = [
        row("idle (empty outbox)", idle),
        row(f"{PENDING:,} pending ({size_mib:,.0f} MiB file), after a crash", big),
        row(f"{PENDING:,} pending, after a crash, every fsync 5 ms late", big_slow),
    ]
    worst_rss = max(idle["rss_status"], big["rss_status"], idle["peak"], big["peak"])
    worst_start = max(big["accepting_s"], big_slow["accepting_s"])
    return "\n".join(
        [
            "### Memory and start-up (bench/bench_memory.py)",
            "",
            f"Machine: {machine(root)}",
            "",
            table(
                [
                    "outbox",
                    "start-up to the port s",
                    "to the first 201 s",
                    "RSS after 5 s MiB",
                    "RSS after a status poll MiB",
                    "peak RSS MiB",
                ],
                rows,
            ),
            "",
            (
                f"- building the {PENDING:,}-record outbox took {build_s:.0f} s; `PRAGMA quick_check` on it alone "
                f"takes {check_s:.2f} s (page cache warm); start-up runs it in the background after the ports open"
            ),
            f"- RSS under {RSS_TARGET_MIB} MiB (peak {worst_rss:.1f} MiB): {verdict(worst_rss, RSS_TARGET_MIB)}",
            (
                f"- start-up after a crash with {PENDING:,} pending to the first acknowledged sale under "
                f"{STARTUP_TARGET_S:.0f} s, also with 5 ms fsyncs ({big['accepting_s']:.2f} s, "
                f"{big_slow['accepting_s']:.2f} s): {verdict(worst_start, STARTUP_TARGET_S)}"
            ),
        ]
    )


def main() -> None:
    base = os.environ.get("KASSABRO_BENCH_DIR") or None
    root = Path(tempfile.mkdtemp(prefix="kassabro-bench-memory-", dir=base))
    try:
        print(run(root), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
