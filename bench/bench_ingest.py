"""Durable ingest: records per second and latency, against two baselines in the same run.

Cases (each a fixed number of records, so the whole run stays under two minutes):

- ``enqueue xP``: ``Outbox.enqueue`` of one already validated sale per call
  from P concurrent asyncio producers. Group commit shares each fsync among
  the calls that arrive while the previous commit runs.
- ``HTTP xC``: ``POST /v1/sales`` from C concurrent httpx clients against a
  real ``kassabro run`` in its own process (validation, derived stock
  movement and commit included; delivery paused so only ingest runs).
- baseline ``sqlite3, one commit per row``: WAL, ``synchronous=FULL``, one
  INSERT + COMMIT per record, what a naive outbox does.
- baseline ``persist-queue put``: ``SQLiteAckQueue`` (multithreading,
  auto_commit, ``synchronous=FULL``), one put per record.

Targets (issue 2): enqueue x64 >= 10x the one-commit-per-row baseline; HTTP
x16 >= 2x persist-queue's put rate.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from bench._common import (
    AgentProcess,
    machine,
    pause_destinations,
    percentile,
    sale,
    table,
)

ENQUEUE_RECORDS = {1: 2000, 8: 4000, 64: 5000}
HTTP_REQUESTS = {1: 1000, 16: 3000}
BASELINE_RECORDS = 3000


class Result:
    def __init__(self, name: str, records: int, seconds: float, latencies: list[float]):
        self.name = name
        self.records = records
        self.seconds = seconds
        self.latencies = latencies

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    def row(self, baseline: Result | None, note: str = "") -> list[str]:
        if baseline is None:
            ratio = "baseline"
        else:
            times = self.rate / baseline.rate
            ratio = f"{times:.1f}x {baseline.name}" if times >= 1 else f"{times:.2f}x {baseline.name}"
        return [
            self.name,
            str(self.records),
            f"{self.rate:,.0f}",
            f"{percentile(self.latencies, 50) * 1000:.2f}",
            f"{percentile(self.latencies, 99) * 1000:.2f}",
            ratio + (f" ({note})" if note else ""),
        ]


# ----------------------------------------------------------------- baselines


def bench_sqlite(root: Path, count: int) -> Result:
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE, data TEXT)")
    payloads = [(f"sale:kassa-1:{n}", json.dumps(sale(n))) for n in range(1, count + 1)]
    latencies = []
    started = time.perf_counter()
    for key, data in payloads:
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO records(key, data) VALUES (?, ?)", (key, data))
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    conn.close()
    return Result("sqlite3 1 commit/row", count, seconds, latencies)


def bench_persist_queue(root: Path, count: int) -> Result:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(str(root / "pq"), multithreading=True, auto_commit=True)
    for conn in {id(queue._conn): queue._conn, id(queue._putter): queue._putter}.values():
        assert conn is not None
        conn.execute("PRAGMA synchronous = FULL")  # durable, as the outbox is
    items = [sale(n) for n in range(1, count + 1)]
    latencies = []
    started = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        queue.put(item)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - started
    queue.close()
    return Result("persist-queue put", count, seconds, latencies)


# ----------------------------------------------------------------- the outbox


async def _enqueue(root: Path, producers: int, count: int) -> Result:
    from agent.outbox.service import Outbox
    from agent.records import parse_record

    outbox = Outbox(root / f"enqueue-{producers}.db", store_id="store-001")
    await outbox.start()
    records = [parse_record("sale", sale(n)) for n in range(1, count + 1)]
    latencies: list[float] = []

    async def producer(mine: list) -> None:
        for record in mine:
            t = time.perf_counter()
            await outbox.enqueue([record])
            latencies.append(time.perf_counter() - t)

    shares = [records[i::producers] for i in range(producers)]
    commits_before = outbox.commits
    started = time.perf_counter()
    await asyncio.gather(*(producer(share) for share in shares))
    seconds = time.perf_counter() - started
    commits = outbox.commits - commits_before
    await outbox.close()
    result = Result(f"enqueue x{producers}", count, seconds, latencies)
    result.commits = commits  # type: ignore[attr-defined]
    return result


async def _http(agent: AgentProcess, clients: int, count: int, first: int) -> Result:
    import httpx

    bodies = [json.dumps(sale(n)).encode() for n in range(first, first + count)]
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.ingest_port}", limits=limits, timeout=30) as http:

        async def client(mine: list[bytes]) -> None:
            for body in mine:
                t = time.perf_counter()
                response = await http.post("/v1/sales", content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if response.status_code != 201:
                    raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:200]}")

        await http.post("/v1/sales", content=json.dumps(sale(first - 1)).encode(), headers=headers)  # warm up
        shares = [bodies[i::clients] for i in range(clients)]
        agent_cpu, client_cpu = agent.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(share) for share in shares))
        seconds = time.perf_counter() - started
        agent_cpu, client_cpu = agent.cpu_seconds() - agent_cpu, time.process_time() - client_cpu
    result = Result(f"HTTP x{clients}", count, seconds, latencies)
    result.cpu_note = (  # type: ignore[attr-defined]
        f"CPU per request: agent {agent_cpu / count * 1000:.2f} ms, httpx client {client_cpu / count * 1000:.2f} ms"
    )
    return result


# ----------------------------------------------------------------- the run


def _merge(first: Result, second: Result) -> Result:
    """One baseline from two runs (before and after the cases): a shared VM's disk drifts."""
    merged = Result(
        first.name, first.records + second.records, first.seconds + second.seconds, first.latencies + second.latencies
    )
    merged.note = f"runs: {first.rate:,.0f} and {second.rate:,.0f}/s"  # type: ignore[attr-defined]
    return merged


def run(root: Path) -> str:
    sqlite_runs = [bench_sqlite(root / "sqlite-1", BASELINE_RECORDS)]
    pq_runs = [bench_persist_queue(root / "pq-1", BASELINE_RECORDS)]
    enqueues = [asyncio.run(_enqueue(root, p, n)) for p, n in ENQUEUE_RECORDS.items()]
    sqlite_runs.append(bench_sqlite(root / "sqlite-2", BASELINE_RECORDS))
    pq_runs.append(bench_persist_queue(root / "pq-2", BASELINE_RECORDS))
    sqlite_base, pq_base = _merge(*sqlite_runs), _merge(*pq_runs)

    agent_root = root / "agent"
    agent_root.mkdir()
    agent = AgentProcess(agent_root)
    pause_destinations(agent.data_dir / "outbox.db", ["backend"])
    agent.start()
    try:
        https = []
        first = 1_000_000
        for clients, count in HTTP_REQUESTS.items():
            https.append(asyncio.run(_http(agent, clients, count, first)))
            first += count + 10
    finally:
        agent.stop()

    rows = [sqlite_base.row(None, sqlite_base.note), pq_base.row(None, pq_base.note)]  # type: ignore[attr-defined]
    for result in enqueues:
        commits = getattr(result, "commits", 0)
        rows.append(result.row(sqlite_base, f"{result.records / max(commits, 1):.1f} records/commit"))
    for result in https:
        rows.append(result.row(pq_base, f"sale + derived movement; {getattr(result, 'cpu_note', '')}"))
    x64 = enqueues[-1].rate / sqlite_base.rate
    h16 = https[-1].rate / pq_base.rate
    verdicts = [
        f"- enqueue x64 / sqlite3 1 commit/row = {x64:.1f}x (target >= 10x): {'met' if x64 >= 10 else 'NOT met'}",
        f"- HTTP x16 / persist-queue put = {h16:.1f}x (target >= 2x): {'met' if h16 >= 2 else 'NOT met'}",
    ]
    return "\n".join(
        [
            "### Ingest (bench/bench_ingest.py)",
            "",
            f"Machine: {machine(root)}",
            "",
            table(["case", "records", "records/s", "p50 ms", "p99 ms", "ratio"], rows),
            "",
            *verdicts,
        ]
    )


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="kassabro-bench-ingest-", dir=_bench_dir()))
    try:
        print(run(root), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _bench_dir() -> str | None:
    """``$KASSABRO_BENCH_DIR`` (e.g. a folder on the SD card), else the system's temp dir."""
    import os

    return os.environ.get("KASSABRO_BENCH_DIR") or None


if __name__ == "__main__":
    main()
