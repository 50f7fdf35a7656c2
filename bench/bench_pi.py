"""Ingest, drain and SD-card wear on a Raspberry Pi's terms: a 5 ms flush, two cores and one.

``python -m bench pi`` (``python -m bench.bench_pi --fsync-ms 5 --latency-seconds 30 --wear-seconds 30``;
``--only wear`` runs the SD-card wear rows alone, in about three minutes)

Every fsync of the process under test returns 5 ms late (``tools/faults
slow-fsync 5``, strace at the system-call level): what an A1/A2 SD card's
flush costs (2-20 ms). The baselines run under the same 5 ms in the same run.
Then the same rows with the process pinned to one core (``taskset -c 0``),
as on a small Pi.

- ``sqlite3 1 commit/row``: WAL, ``synchronous = FULL``, one INSERT + COMMIT
  per sale: what a naive outbox does (a child process under faults).
- ``persist-queue put``: ``SQLiteAckQueue`` (multithreading, auto_commit,
  ``synchronous = FULL``), one put per sale (a child process under faults).
- ``enqueue x64``: ``Outbox.enqueue`` of one validated sale per call from 64
  asyncio producers (group commit), in a child process under faults.
- ``HTTP x16``: ``POST /v1/sales`` of 3-line sales (each stored with its 3
  derived movements) from 16 keep-alive tills against ``kassabro run`` under
  faults, delivery paused. The tills are ``RawPoster`` (well under 0.1 ms of
  CPU a request), as real tills are other machines.
- ``one till at 1 sale/s``: that till's latency while 15 others post flat out.
- ``drain``: 20,000 pending sales to the generic HTTP receiver at batch 500
  (``kassabro run`` under faults), beside a bare httpx loop posting the same
  batches (the ceiling, not under faults: it writes nothing).
- SD-card wear: ``kassabro run`` with three destinations (the Hogia and
  Sharespine simulators and the generic receiver, each its own process), a
  till posting 3-line sales at a steady 4 per second; the agent's
  ``/proc/PID/io`` ``write_bytes`` per acknowledged sale once every sale is
  delivered everywhere, and where the bytes went (strace: bytes written to
  the WAL, to the database file by checkpoints, elsewhere), and the same with
  every destination paused (ingest alone).

Targets (issue 16): enqueue x64 >= 10x sqlite3 1 commit/row; HTTP x16 >= 2x
persist-queue put; the 1/s till's p99 < 50 ms; <= 64 KiB written per sale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench._common import (
    FAULTS,
    AgentProcess,
    RawPoster,
    flat_out,
    machine,
    pause_destinations,
    percentile,
    sale,
    table,
)

REPO = Path(__file__).resolve().parent.parent
BASELINE_ROWS = 400
ENQUEUE_RECORDS = 5000
HTTP_REQUESTS = 3000
DRAIN_RECORDS = 20_000
DRAIN_BATCH = 500
WEAR_RATE = 4.0
TARGET_ENQUEUE = 10.0
TARGET_HTTP = 2.0
TARGET_P99_MS = 50.0
TARGET_WEAR = 64 * 1024


# ----------------------------------------------------------------- the children (run under faults)


def child_sqlite(root: Path, count: int) -> dict[str, Any]:
    """The one-commit-per-row baseline of ``bench ingest``, run here under the child's prefix."""
    from bench.bench_ingest import bench_sqlite

    result = bench_sqlite(root, count)
    return {"records": result.records, "seconds": result.seconds, "latencies": result.latencies}


def child_persist_queue(root: Path, count: int) -> dict[str, Any]:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(str(root / "pq"), multithreading=True, auto_commit=True)
    for conn in {id(queue._conn): queue._conn, id(queue._putter): queue._putter}.values():
        conn.execute("PRAGMA synchronous = FULL")  # durable, as the outbox is
    items = [sale(n) for n in range(1, count + 1)]
    latencies = []
    started = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        queue.put(item)
        latencies.append(time.perf_counter() - t)
    return {"records": count, "seconds": time.perf_counter() - started, "latencies": latencies}


def child_enqueue(root: Path, count: int, producers: int = 64) -> dict[str, Any]:
    from agent.outbox.service import Outbox
    from agent.records import parse_record

    async def go() -> dict[str, Any]:
        outbox = Outbox(root / "enqueue.db", store_id="store-001")
        await outbox.start()
        records = [parse_record("sale", sale(n)) for n in range(1, count + 1)]
        latencies: list[float] = []

        async def producer(mine: list[Any]) -> None:
            for record in mine:
                t = time.perf_counter()
                await outbox.enqueue([record])
                latencies.append(time.perf_counter() - t)

        commits = outbox.commits
        started = time.perf_counter()
        await asyncio.gather(*(producer(records[i::producers]) for i in range(producers)))
        seconds = time.perf_counter() - started
        commits = outbox.commits - commits
        await outbox.close()
        return {"records": count, "seconds": seconds, "latencies": latencies, "commits": commits}

    return asyncio.run(go())


CHILDREN = {"sqlite": child_sqlite, "pq": child_persist_queue, "enqueue": child_enqueue}


def in_child(case: str, count: int, root: Path, prefix: list[str]) -> dict[str, Any]:
    """Run one child case under ``prefix`` (taskset, faults); its figures."""
    root.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [*prefix, sys.executable, "-m", "bench.bench_pi", "child", case, str(count), str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"child {case} failed ({out.returncode}): {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------- HTTP against the agent


async def paced_beside_flat_out(port: int, seconds: float, others: int, first: int) -> tuple[list[float], int]:
    """One till posting a sale a second for ``seconds`` while ``others`` post flat out; (its latencies, their count)."""
    stop = asyncio.Event()
    sent = [0]

    async def busy(offset: int) -> None:
        poster = RawPoster(port)
        n = first + 1_000_000 * (offset + 1)
        try:
            while not stop.is_set():
                await poster.accepted(json.dumps(sale(n, till_id=f"kassa-{offset + 2}", lines=3)).encode())
                n += 1
                sent[0] += 1
        finally:
            poster.close()

    async def paced() -> list[float]:
        # The paced till is another machine: its own process, so the 15 others'
        # client work (building and reading their requests) is not in its times.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, paced_till, port, seconds, first)
            finally:
                stop.set()

    tasks = [asyncio.create_task(busy(i)) for i in range(others)]
    latencies = await paced()
    await asyncio.gather(*tasks)
    return latencies, sent[0]


def paced_till(port: int, seconds: float, first: int) -> list[float]:
    """A till posting a 3-line sale a second for ``seconds`` (after a second's start); its latencies."""

    async def run() -> list[float]:
        poster = RawPoster(port)
        latencies = []
        try:
            start = time.perf_counter() + 1.0  # let the others get going
            for k in range(int(seconds)):
                await asyncio.sleep(max(0.0, start + k - time.perf_counter()))
                latencies.append(await poster.accepted(json.dumps(sale(first + k, lines=3)).encode()))
        finally:
            poster.close()
        return latencies

    return asyncio.run(run())


def http_rows(root: Path, prefix: list[str], latency_seconds: float) -> dict[str, Any]:
    root.mkdir(parents=True)
    agent = AgentProcess(root, prefix=prefix)
    pause_destinations(agent.data_dir / "outbox.db", ["backend"])
    agent.start()
    try:
        asyncio.run(flat_out(agent.ingest_port, 4, 1, 200))  # warm up
        cpu0 = agent.cpu_seconds()
        seconds, latencies = asyncio.run(flat_out(agent.ingest_port, 16, 1000, HTTP_REQUESTS))
        cpu = agent.cpu_seconds() - cpu0
        paced, others = asyncio.run(paced_beside_flat_out(agent.ingest_port, latency_seconds, 15, 100_000))
    finally:
        agent.stop()
    return {"seconds": seconds, "latencies": latencies, "cpu": cpu, "paced": paced, "others": others}


# ----------------------------------------------------------------- drain


def drain_rows(root: Path, prefix: list[str], receiver_url: str) -> dict[str, Any]:
    from bench.bench_drain import drain, fill_outbox, reset_ledger

    db = root / "data" / "outbox.db"
    db.parent.mkdir(parents=True)
    name = "drain"
    fill_outbox(db, DRAIN_RECORDS, [name])
    result = drain(root, db, receiver_url, name, DRAIN_BATCH, DRAIN_RECORDS, prefix=prefix)
    reset_ledger(receiver_url, DRAIN_RECORDS)
    return result


def drain_ceiling(root: Path, receiver_url: str) -> float:
    from bench.bench_drain import bare_loop, fill_outbox, prebuilt_batches, reset_ledger, stored_envelopes

    db = root / "ceiling" / "outbox.db"
    db.parent.mkdir(parents=True)
    fill_outbox(db, DRAIN_RECORDS, ["x"])
    bodies = prebuilt_batches(stored_envelopes(db), DRAIN_BATCH)
    seconds = asyncio.run(bare_loop(f"{receiver_url}/ingest", bodies))
    reset_ledger(receiver_url, DRAIN_RECORDS)
    return DRAIN_RECORDS / seconds


# ----------------------------------------------------------------- wear


_WRITE = re.compile(r"^\d+\s+(?:pwrite64|write|pwritev|writev)\((\d+)<([^>]*)>.*\)\s+=\s+(\d+)$")


def wear(root: Path, seconds: float, *, paused: bool, trace: bool) -> dict[str, Any]:
    """Bytes written per acknowledged sale at a steady ``WEAR_RATE``, delivered to three destinations."""
    from bench.bench_drain import SimulatorProcess, acked_seq
    from bench.bench_idle import destinations_toml, max_seq

    root.mkdir(parents=True)
    sims = {
        "hogia": SimulatorProcess("agent.simulators.hogia:create_app", root / "hogia.log"),
        "sharespine": SimulatorProcess("agent.simulators.sharespine:create_app", root / "sharespine.log"),
        "backend": SimulatorProcess("agent.simulators.receiver:create_app", root / "receiver.log"),
    }
    strace_log = root / "writes.strace"
    prefix = (
        ["strace", "-f", "-qq", "--seccomp-bpf", "-s", "0", "-yy", "-e", "trace=pwrite64,write,pwritev,writev", "-e", "signal=none",
         "-o", str(strace_log)]
        if trace else []
    )  # fmt: skip
    agent = AgentProcess(root, destinations_toml=destinations_toml({n: s.url for n, s in sims.items()}), prefix=prefix)
    db = agent.data_dir / "outbox.db"
    if paused:
        from agent.outbox.store import OutboxStore

        store = OutboxStore.open(db, store_id="store-001")
        store.register_destinations([("hogia", "hogia", ["sale"]), ("sharespine", "sharespine", ["sale"]),
                                     ("backend", "http", ["sale", "stock_movement"])])  # fmt: skip
        for name in sims:
            store.set_paused(name, True)
        store.close()

    def delivered() -> None:
        last = max_seq(db)
        deadline = time.monotonic() + 60
        while not paused and not all(acked_seq(db, name) >= last - 3 for name in sims):
            if time.monotonic() > deadline:
                raise RuntimeError("the sales were not delivered within 60 s")
            time.sleep(0.1)
        time.sleep(2.0)  # the last outcomes written down

    async def till(first: int, count: int) -> None:
        poster = RawPoster(agent.ingest_port)
        start = time.perf_counter()
        try:
            for k in range(count):
                await asyncio.sleep(max(0.0, start + k / WEAR_RATE - time.perf_counter()))
                status, answer = await poster.post(json.dumps(sale(first + k, lines=3)).encode())
                if status != 201:
                    raise RuntimeError(f"ingest answered {status}: {answer[:200]!r}")
        finally:
            poster.close()

    agent.start()
    try:
        asyncio.run(till(1, 40))  # warm up: every destination reached, the WAL in use
        delivered()
        offset = strace_log.stat().st_size if trace else 0
        before = agent.write_bytes()
        count = int(seconds * WEAR_RATE)
        asyncio.run(till(1000, count))
        delivered()
        written = agent.write_bytes() - before
    finally:
        agent.stop()
        for sim in sims.values():
            sim.stop()
    by_file: dict[str, int] = {}
    if trace:
        with open(strace_log, encoding="utf-8", errors="replace") as log:
            log.seek(offset)
            for line in log:
                match = _WRITE.match(line.strip())
                if match:
                    path = match.group(2)
                    if not path.startswith("/"):
                        continue  # a socket or a pipe: not the card
                    kind = (
                        "WAL"
                        if path.endswith("-wal")
                        else "database file (checkpoints)"
                        if path.endswith(".db")
                        else "log and other files"
                    )
                    by_file[kind] = by_file.get(kind, 0) + int(match.group(3))
    return {"sales": count, "written": written, "by_file": by_file}


# ----------------------------------------------------------------- the run


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def run(args: argparse.Namespace, root: Path) -> str:
    from bench.bench_drain import SimulatorProcess

    slow = [FAULTS, "slow-fsync", str(args.fsync_ms), "--"]
    cores = {"2 cores": [], "1 core (taskset -c 0)": ["taskset", "-c", "0"]}
    out: dict[str, dict[str, Any]] = {}
    receiver = SimulatorProcess("agent.simulators.receiver:create_app", root / "receiver.log")
    try:
        ceiling = drain_ceiling(root, receiver.url) if args.only != "wear" else 0.0
        for label, pin in cores.items() if args.only != "wear" else ():
            tag = "one" if pin else "two"
            figures: dict[str, Any] = {}
            figures["sqlite"] = in_child("sqlite", BASELINE_ROWS, root / f"sqlite-{tag}", pin + slow)
            figures["pq"] = in_child("pq", BASELINE_ROWS, root / f"pq-{tag}", pin + slow)
            figures["enqueue"] = in_child("enqueue", ENQUEUE_RECORDS, root / f"enqueue-{tag}", pin + slow)
            figures["http"] = http_rows(root / f"http-{tag}", pin + slow, args.latency_seconds)
            figures["drain"] = drain_rows(root / f"drain-{tag}", pin + slow, receiver.url)
            out[label] = figures
    finally:
        receiver.stop()
    wear_on = wear(root / "wear", args.wear_seconds, paused=False, trace=True)
    wear_plain = wear(root / "wear-plain", args.wear_seconds, paused=False, trace=False)
    wear_ingest = wear(root / "wear-ingest", args.wear_seconds, paused=True, trace=False)

    rows = []
    verdicts = []
    for label, f in out.items():
        sq, pq, en, ht, dr = f["sqlite"], f["pq"], f["enqueue"], f["http"], f["drain"]
        sq_rate, pq_rate = sq["records"] / sq["seconds"], pq["records"] / pq["seconds"]
        en_rate, ht_rate = en["records"] / en["seconds"], HTTP_REQUESTS / ht["seconds"]
        dr_rate = DRAIN_RECORDS / dr["seconds"]
        p99 = percentile(ht["paced"], 99) * 1000

        def ms(values: list[float], p: float) -> str:
            return f"{percentile(values, p) * 1000:.1f}"

        rows += [
            [label, "sqlite3 1 commit/row", f"{sq_rate:,.0f}", ms(sq["latencies"], 50), ms(sq["latencies"], 99), "baseline"],
            [label, "persist-queue put", f"{pq_rate:,.0f}", ms(pq["latencies"], 50), ms(pq["latencies"], 99), "baseline"],
            [label, "enqueue x64", f"{en_rate:,.0f}", ms(en["latencies"], 50), ms(en["latencies"], 99),
             f"**{en_rate / sq_rate:.1f}x** sqlite3 1 commit/row ({en['records'] / max(en['commits'], 1):.1f} records/commit)"],
            [label, "HTTP x16 (sales/s)", f"{ht_rate:,.0f}", ms(ht["latencies"], 50), ms(ht["latencies"], 99),
             f"**{ht_rate / pq_rate:.1f}x** persist-queue put (agent CPU {ht['cpu'] / HTTP_REQUESTS * 1000:.2f} ms per sale)"],
            [label, "one till at 1 sale/s, 15 flat out", f"{len(ht['paced'])} sales", ms(ht["paced"], 50), f"**{p99:.1f}**",
             f"max {max(ht['paced']) * 1000:.1f} ms; the 15 others: {ht['others'] / args.latency_seconds:,.0f} sales/s"],
            [label, f"drain, batch {DRAIN_BATCH}", f"{dr_rate:,.0f}", "", "",
             f"{dr_rate / ceiling:.0%} of the bare httpx loop ({ceiling:,.0f}/s); agent CPU {dr['cpu'] / DRAIN_RECORDS * 1e6:.0f} µs per record"],
        ]  # fmt: skip
        verdicts += [
            f"- {label}: enqueue x64 = {en_rate / sq_rate:.1f}x sqlite3 1 commit/row (target >= {TARGET_ENQUEUE:.0f}x): "
            f"**{'met' if en_rate / sq_rate >= TARGET_ENQUEUE else 'NOT met'}**",
            f"- {label}: HTTP x16 = {ht_rate / pq_rate:.1f}x persist-queue put (target >= {TARGET_HTTP:.0f}x): "
            f"**{'met' if ht_rate / pq_rate >= TARGET_HTTP else 'NOT met'}**",
            f"- {label}: p99 of the till at 1 sale/s = {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms): "
            f"**{'met' if p99 < TARGET_P99_MS else 'NOT met'}**",
        ]
    per_sale = wear_plain["written"] / wear_plain["sales"]
    traced = wear_on["by_file"]
    traced_total = sum(traced.values()) or 1
    wear_rows = [
        ["3 destinations delivering", wear_plain["sales"], kib(wear_plain["written"]), f"**{kib(per_sale)}**",
         f"{per_sale * 1000 / 1024**2:,.1f} MiB"],
        ["same, under strace (for the split below)", wear_on["sales"], kib(wear_on["written"]),
         kib(wear_on["written"] / wear_on["sales"]), ""],
        ["destinations paused (ingest alone)", wear_ingest["sales"], kib(wear_ingest["written"]),
         kib(wear_ingest["written"] / wear_ingest["sales"]), ""],
    ]  # fmt: skip
    split = ", ".join(
        f"{kind} {kib(n / wear_on['sales'])} KiB/sale ({n / traced_total:.0%})" for kind, n in sorted(traced.items())
    )
    verdicts.append(
        f"- SD-card wear: {kib(per_sale)} KiB written per acknowledged sale (target <= 64 KiB): "
        f"**{'met' if per_sale <= TARGET_WEAR else 'NOT met'}**; a 1,000-sale day: {per_sale * 1000 / 1024**2:,.1f} MiB"
    )
    lines = [
        "### Ingest, drain and wear on a Pi's terms (bench/bench_pi.py)",
        "",
        f"Machine: {machine(root)}",
        "",
        *(
            []
            if args.only == "wear"
            else [
                f"Every fsync of the process under test {args.fsync_ms} ms late (tools/faults slow-fsync {args.fsync_ms}); "
                f"baselines {BASELINE_ROWS} rows each, enqueue {ENQUEUE_RECORDS:,}, HTTP {HTTP_REQUESTS:,} 3-line sales, "
                f"the paced till {args.latency_seconds:.0f} s, drain {DRAIN_RECORDS:,} sales.",
                "",
                table(["cores", "case", "records/s", "p50 ms", "p99 ms", "ratio / notes"], rows),
                "",
            ]
        ),
        f"SD-card wear: `/proc/PID/io` write_bytes of `kassabro run`, {WEAR_RATE:.0f} 3-line sales/s for "
        f"{args.wear_seconds:.0f} s after a warm-up, each delivered to hogia, sharespine and backend "
        f"(no faults; the data on {machine(root).split('disk ')[1].split(',')[0]}).",
        "",
        table(["run", "sales", "KiB written", "KiB per sale", "a 1,000-sale day"], wear_rows),
        "",
        f"Where the bytes went (strace, bytes handed to write/pwrite64): {split}.",
        "",
        *verdicts,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None and __name__ == "__main__" else (argv or [])
    if argv[:1] == ["child"]:
        case, count, root = argv[1], int(argv[2]), Path(argv[3])
        print(json.dumps(CHILDREN[case](root, count)), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pi", description=__doc__.splitlines()[0])
    parser.add_argument("--fsync-ms", type=int, default=5)
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--wear-seconds", type=float, default=30.0)
    parser.add_argument("--only", choices=["wear"], help="run only the SD-card wear rows (minutes, not a quarter hour)")
    args = parser.parse_args(argv if argv is not None else [])
    for tool in ("strace", "taskset"):
        if shutil.which(tool) is None:
            print(f"bench pi needs {tool} (Debian: apt-get install {'strace' if tool == 'strace' else 'util-linux'})")
            return 2
    root = Path(tempfile.mkdtemp(prefix="kassabro-bench-pi-", dir=os.environ.get("KASSABRO_BENCH_DIR") or None))
    try:
        print(run(args, root), flush=True)
    except BaseException:
        print(f"(logs kept under {root})", file=sys.stderr)
        raise
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
