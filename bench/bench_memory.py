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

import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx

from bench._common import STORE_ID, AgentProcess, machine, sale, table

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


def measure(agent: AgentProcess) -> dict[str, float]:
    """Start, wait to ready, settle, read RSS; then once more after a status page poll."""
    startup = agent.start()
    time.sleep(SETTLE_S)
    rss, _ = agent.rss_mib()
    with httpx.Client(timeout=120) as client:
        client.get(f"http://127.0.0.1:{agent.status_port}/api/status")
        client.get(f"http://127.0.0.1:{agent.status_port}/")
    time.sleep(1.0)
    after_status, peak = agent.rss_mib()
    agent.stop()
    return {"startup_s": startup, "rss": rss, "rss_status": after_status, "peak": peak}


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
    big = measure(big_agent)

    def verdict(value: float, target: float) -> str:
        return "met" if value < target else "NOT met"

    rows = [
        [
            "idle (empty outbox)",
            f"{idle['startup_s']:.2f}",
            f"{idle['rss']:.1f}",
            f"{idle['rss_status']:.1f}",
            f"{idle['peak']:.1f}",
        ],
        [
            f"{PENDING:,} pending ({size_mib:,.0f} MiB file)",
            f"{big['startup_s']:.2f}",
            f"{big['rss']:.1f}",
            f"{big['rss_status']:.1f}",
            f"{big['peak']:.1f}",
        ],
    ]
    worst_rss = max(idle["rss_status"], big["rss_status"], idle["peak"], big["peak"])
    return "\n".join(
        [
            "### Memory and start-up (bench/bench_memory.py)",
            "",
            f"Machine: {machine(root)}",
            "",
            table(
                ["outbox", "start-up to ready s", "RSS after 5 s MiB", "RSS after a status poll MiB", "peak RSS MiB"],
                rows,
            ),
            "",
            (
                f"- building the {PENDING:,}-record outbox took {build_s:.0f} s; `PRAGMA quick_check` on it alone "
                f"takes {check_s:.2f} s (page cache warm), and start-up runs it before the port opens"
            ),
            f"- RSS under {RSS_TARGET_MIB} MiB (peak {worst_rss:.1f} MiB): {verdict(worst_rss, RSS_TARGET_MIB)}",
            (
                f"- start-up with {PENDING:,} pending under {STARTUP_TARGET_S:.0f} s ({big['startup_s']:.2f} s): "
                f"{verdict(big['startup_s'], STARTUP_TARGET_S)}"
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
