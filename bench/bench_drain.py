"""Drain: 100,000 pending records to the generic HTTP receiver, against a bare httpx loop.

``python -m bench.bench_drain [--records 100000] [--batch 100,500]``

- The outbox is filled in bulk (``OutboxStore.enqueue`` in groups of 5,000
  real, validated sales) with one paused destination per batch size, before
  the agent starts.
- The receiver (``agent.simulators.receiver``) runs under uvicorn in its own
  process, the agent (``kassabro run``) in another, so neither shares a GIL
  with the other or with this script.
- The ceiling, measured in the same run against the same receiver: a bare
  ``httpx.AsyncClient`` loop posting the same records as pre-built batch
  bodies (same batch size, same canonical JSON, one request in flight as the
  agent has), before and after the agent runs; the better of the two is the
  ceiling.
- The agent's drain is timed from ``POST /api/destinations/NAME/resume`` on
  its status page to the destination's ``acked_seq`` reaching the last
  record (read from the outbox every 10 ms). Its RSS is sampled every second.

Targets: >= 70 % of the ceiling, >= 10,000 records/s, and RSS that does not
grow while the backlog shrinks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Self

import httpx

from agent.backoff import RetryPolicy
from agent.delivery import DeliveryLoop
from agent.destinations._httpcommon import dumps
from agent.destinations.http import HttpDestination, HttpDestinationConfig
from agent.outbox.envelopes import MEMBER, batch_from_rows, envelope, member_rows
from agent.outbox.service import Outbox
from agent.outbox.store import OutboxStore
from agent.records import parse_record
from bench._common import STORE_ID, agent_pid, free_port, machine, port_accepts, sale, stop_agent, table

TARGET_RATIO = 0.70
TARGET_RATE = 10_000
ADMIN_TOKEN = "bench-admin-token"


# ------------------------------------------------------------------ processes
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wait_seconds(pid: int) -> float:
    """Seconds the threads of ``pid`` have spent runnable but waiting for a CPU (``/proc/PID/task/*/schedstat``).

    On a shared machine this tells a slow agent from a starved one.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if port_accepts(port):
            return
        time.sleep(0.01)
    raise RuntimeError(f"{what} did not listen within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


class SimulatorProcess:
    """A simulator app (``module:create_app``) under uvicorn in its own process, on loopback."""

    def __init__(self, factory: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", factory, "--factory", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning", "--no-access-log", "--lifespan", "off"],
                stdout=out, stderr=out,
            )  # fmt: skip
        wait_port(self.port, self.proc, factory)

    def stop(self) -> None:
        stop(self.proc)


class AgentRun:
    """``kassabro run`` in its own process, with an admin token and the given destinations."""

    def __init__(self, root: Path, data_dir: Path, destinations_toml: str, *, prefix: list[str] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        token = root / "admin-token"
        token.write_text(ADMIN_TOKEN + "\n", encoding="utf-8")
        self.ingest_port, self.status_port = free_port(), free_port()
        config = root / "kassabro.toml"
        config.write_text(
            f'store_id = "{STORE_ID}"\ndata_dir = "{data_dir}"\nlog_level = "WARNING"\n'
            f'[ingest]\nlisten = "127.0.0.1:{self.ingest_port}"\n'
            f'[status]\nlisten = "127.0.0.1:{self.status_port}"\nadmin_token_file = "{token}"\n' + destinations_toml,
            encoding="utf-8",
        )
        self.log = root / "agent.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
                stdout=out,
                stderr=out,
            )
        self._pid: int | None = None
        wait_port(self.ingest_port, self.proc, "kassabro run")
        wait_port(self.status_port, self.proc, "kassabro run (status)")

    @property
    def pid(self) -> int:
        if self._pid is None:
            self._pid = agent_pid(self.proc.pid)
        return self._pid

    @property
    def status_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}"

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.ingest_port}"

    def resume(self, name: str) -> None:
        answer = httpx.post(
            f"{self.status_url}/api/destinations/{name}/resume",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        answer.raise_for_status()

    def stop(self) -> None:
        stop_agent(self.proc, self.pid)


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(rss_mib(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(rss_mib(self.pid))


# ------------------------------------------------------------------ the outbox
def fill_outbox(db: Path, count: int, destinations: list[str], group: int = 5000) -> float:
    """``count`` sales in groups of ``group``, with ``destinations`` registered and paused; returns seconds."""
    started = time.perf_counter()
    template = parse_record("sale", sale(1))
    store = OutboxStore.open(db, store_id=STORE_ID)
    try:
        store.register_destinations([(name, "http", ["sale", "stock_movement"]) for name in destinations])
        for name in destinations:
            store.set_paused(name, True)
        for first in range(1, count + 1, group):
            last = min(count, first + group - 1)
            store.enqueue([template.model_copy(update={"receipt_no": n}) for n in range(first, last + 1)])
    finally:
        store.close()
    return time.perf_counter() - started


def stored_envelopes(db: Path) -> list[dict[str, Any]]:
    """Every record as the agent sends it (the envelope), in seq order."""
    store = OutboxStore.open_reader(db, store_id=STORE_ID)
    try:
        return [envelope(row, STORE_ID) for row in store.conn.execute("SELECT * FROM records ORDER BY seq")]
    finally:
        store.close()


def prebuilt_batches(envelopes: list[dict[str, Any]], batch: int) -> list[tuple[str, bytes]]:
    """(batch_id, body) per batch: exactly the bytes the http adapter would send."""
    out = []
    for start in range(0, len(envelopes), batch):
        batch_id = str(uuid.uuid4())
        body = {"store_id": STORE_ID, "batch_id": batch_id, "records": envelopes[start : start + batch]}
        out.append((batch_id, dumps(body)))
    return out


def acked_seq(db: Path, name: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT acked_seq FROM destinations WHERE name = ?", (name,)).fetchone()[0])
    finally:
        conn.close()


# ------------------------------------------------------------------ the runs
async def bare_loop(url: str, batches: list[tuple[str, bytes]]) -> float:
    """Seconds for one httpx client to post every pre-built batch, one at a time."""
    async with httpx.AsyncClient(timeout=30) as client:
        started = time.perf_counter()
        for batch_id, body in batches:
            response = await client.post(
                url, content=body, headers={"Idempotency-Key": batch_id, "Content-Type": "application/json"}
            )
            response.raise_for_status()
        return time.perf_counter() - started


def reset_ledger(base_url: str, expect: int) -> None:
    """Check the receiver holds ``expect`` records, none twice, then empty it."""
    book = httpx.get(f"{base_url}/_ledger", timeout=60).json()
    if len(book["records"]) != expect or book["duplicates"]:
        raise RuntimeError(
            f"receiver holds {len(book['records'])} records ({book['duplicates']} duplicates), not {expect}"
        )
    httpx.delete(f"{base_url}/_ledger", timeout=60).raise_for_status()


def drain(
    root: Path, db: Path, receiver_url: str, name: str, batch: int, count: int, *, prefix: list[str] | None = None
) -> dict[str, Any]:
    """One agent drain of ``name`` (the agent run under ``prefix``, if any); records/s, CPU and RSS figures."""
    destination = (
        f'[[destinations]]\nname = "{name}"\nkind = "http"\nurl = "{receiver_url}/ingest"\nbatch_max = {batch}\n'
    )
    agent = AgentRun(root / name, db.parent, destination, prefix=prefix)
    try:
        time.sleep(1.0)  # let start-up settle: its CPU is not the drain's
        before_rss = rss_mib(agent.pid)
        cpu0, wait0 = cpu_seconds(agent.pid), cpu_wait_seconds(agent.pid)
        with RssSampler(agent.pid) as sampler:
            started = time.perf_counter()
            agent.resume(name)
            deadline = started + 600
            while acked_seq(db, name) < count:
                if time.perf_counter() > deadline or agent.proc.poll() is not None:
                    raise RuntimeError(f"drain of {name} did not finish; see {agent.log}")
                time.sleep(0.01)
            seconds = time.perf_counter() - started
        cpu, wait = cpu_seconds(agent.pid) - cpu0, cpu_wait_seconds(agent.pid) - wait0
    finally:
        agent.stop()
    return {"seconds": seconds, "cpu": cpu, "wait": wait, "rss_before": before_rss, "rss": sampler.samples}


async def phase_times(db: Path, url: str, name: str, batch: int, upto: int) -> tuple[float, dict[str, list[float]]]:
    """The agent's parts in this process (Outbox + DeliveryLoop + HttpDestination), each phase timed.

    Returns the wall seconds to deliver ``upto`` records and the seconds of:
    ``claim`` (every ``claim_batch`` on the outbox thread, the one frozen ahead
    while the previous batch is on the wire included: SQL, the envelopes' JSON
    text, the commit), ``send`` (the body, the HTTP round trip), ``complete``
    (``complete_batch`` from the loop's side: the hop to the outbox thread,
    SQL, the commit, while the next batch is already on the wire) and ``wait_next`` (the loop waiting for the batch frozen
    ahead once the previous one is answered: zero when claiming keeps up).
    """
    times: dict[str, list[float]] = {"claim": [], "send": [], "complete": [], "wait_next": []}
    box = Outbox(db, store_id=STORE_ID)
    await box.start()
    dest = HttpDestination(HttpDestinationConfig(name=name, url=url), store_id=STORE_ID)
    await dest.start()

    def timed(phase: str, fn: Any) -> Any:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                times[phase].append(time.perf_counter() - started)

        return wrapper

    def timed_sync(phase: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[phase].append(time.perf_counter() - started)

        return wrapper

    store = box.store
    store.claim_batch = timed_sync("claim", store.claim_batch)  # type: ignore[method-assign]
    box.complete_batch = timed("complete", box.complete_batch)  # type: ignore[method-assign]
    dest.send = timed("send", dest.send)  # type: ignore[method-assign]
    await box.call(lambda s: s.set_paused(name, False))
    loop = DeliveryLoop(box, dest, policy=RetryPolicy(), batch_max=batch)
    loop._settle = timed("wait_next", loop._settle)  # type: ignore[method-assign]
    started = time.perf_counter()
    loop.start()
    try:
        while await box.read(lambda s: s._destination(name)["acked_seq"]) < upto:
            await asyncio.sleep(0.01)
        return time.perf_counter() - started, times
    finally:
        await loop.stop()
        await dest.close()
        await box.close()


def codec_ms(db: Path, batch: int) -> tuple[float, float, float]:
    """Milliseconds per batch: the body the agent sends now (envelopes' text from the stored rows,
    spliced), and what decoding the rows into envelopes and encoding the body whole would cost."""
    store = OutboxStore.open_reader(db, store_id=STORE_ID)
    dest = HttpDestination(HttpDestinationConfig(name="x", url="http://127.0.0.1:9/"), store_id=STORE_ID)
    try:
        rows = member_rows(store.conn, f"SELECT {MEMBER} FROM records ORDER BY seq LIMIT ?", (batch,))
        started = time.perf_counter()
        for _ in range(10):
            dest.body(batch_from_rows("x", "x", rows, store_id=STORE_ID, attempts=0, kind="normal", created_at=""))
        spliced = (time.perf_counter() - started) / 10
        full_rows = store.conn.execute("SELECT * FROM records ORDER BY seq LIMIT ?", (batch,)).fetchall()
        started = time.perf_counter()
        for _ in range(10):
            envelopes = [envelope(row, STORE_ID) for row in full_rows]
        decode = (time.perf_counter() - started) / 10
    finally:
        store.close()
    started = time.perf_counter()
    for _ in range(10):
        dumps({"store_id": STORE_ID, "batch_id": "x", "records": envelopes})
    encode = (time.perf_counter() - started) / 10
    return spliced * 1000, decode * 1000, encode * 1000


def breakdown_table(batch: int, wall: float, upto: int, times: dict[str, list[float]],
                    codec: tuple[float, float, float], loop_ms: float) -> list[list[str]]:  # fmt: skip
    """Rows of "where the time of one batch goes"."""
    batches = len(times["complete"]) or 1
    per_batch = wall / batches * 1000
    claim, send, complete, wait_next = (
        sum(times[p]) / max(1, len(times[p])) * 1000 for p in ("claim", "send", "complete", "wait_next")
    )
    spliced, decode, encode = codec
    other = per_batch - send - wait_next  # claim and complete run while a batch is on the wire
    return [
        [str(batch), f"{upto / wall:,.0f}", f"{per_batch:.1f}",
         f"{claim:.1f}", f"{send:.1f} (bare loop's whole batch {loop_ms:.1f})",
         f"{spliced:.1f} (decode + encode instead: {decode:.1f} + {encode:.1f})",
         f"{complete:.1f}", f"{wait_next:.1f}", f"{other:.1f}"],
    ]  # fmt: skip


def run(count: int, batches: list[int], workdir: Path) -> None:
    names = [f"drain-{b}" for b in batches] + [f"parts-{b}" for b in batches]
    db = workdir / "data" / "outbox.db"
    db.parent.mkdir(parents=True)
    fill_s = fill_outbox(db, count, names)
    envelopes = stored_envelopes(db)
    size = len(dumps(envelopes[0]))
    receiver = SimulatorProcess("agent.simulators.receiver:create_app", workdir / "receiver.log")
    rows = []
    verdicts = []
    parts: list[list[str]] = []
    upto = min(count, 20_000)
    try:
        for batch, name in zip(batches, names, strict=False):
            bodies = prebuilt_batches(envelopes, batch)
            url = f"{receiver.url}/ingest"
            ceilings = []
            ceiling_cpu = []
            for when in ("before", "after"):
                if when == "after":
                    rcpu0 = cpu_seconds(receiver.proc.pid)
                    result = drain(workdir, db, receiver.url, name, batch, count)
                    receiver_cpu = cpu_seconds(receiver.proc.pid) - rcpu0
                    reset_ledger(receiver.url, count)
                rcpu0 = cpu_seconds(receiver.proc.pid)
                ceilings.append(count / asyncio.run(bare_loop(url, bodies)))
                ceiling_cpu.append(cpu_seconds(receiver.proc.pid) - rcpu0)
                reset_ledger(receiver.url, count)
            ceiling = max(ceilings)
            wall, times = asyncio.run(phase_times(db, url, f"parts-{batch}", batch, upto))
            httpx.delete(f"{receiver.url}/_ledger", timeout=60).raise_for_status()
            parts += breakdown_table(batch, wall, upto, times, codec_ms(db, batch), batch / ceiling * 1000)
            rate = count / result["seconds"]
            rss = result["rss"]
            ratio = rate / ceiling
            rows.append(
                [
                    batch,
                    f"{count:,}",
                    f"{rate:,.0f}",
                    f"{ceiling:,.0f} (runs: {ceilings[0]:,.0f} and {ceilings[1]:,.0f})",
                    f"{ratio:.0%}",
                    f"{result['seconds']:.1f} / {result['cpu']:.1f} / {result['wait']:.1f}",
                    (
                        f"{result['cpu'] / count * 1e6:.0f} / {receiver_cpu / count * 1e6:.0f} "
                        f"(receiver in the loop: {min(ceiling_cpu) / count * 1e6:.0f})"
                    ),
                    f"{result['rss_before']:.1f}",
                    f"{min(rss):.1f} / {max(rss):.1f} ({len(rss)} samples)",
                ]
            )
            # The first sample is taken at the resume, before any batch; from the
            # first second on, the working set is one batch at a time.
            warm = rss[1] if len(rss) > 2 else rss[0]
            growth = max(rss[1:]) - warm
            verdicts.append(
                f"- batch {batch}: {rate:,.0f} records/s = {ratio:.0%} of the bare loop (target >= 70 %): "
                f"**{'met' if ratio >= TARGET_RATIO else 'NOT met here'}**; >= 10,000 records/s: "
                f"**{'met' if rate >= TARGET_RATE else 'NOT met here'}**; RSS {min(rss):.1f}-{max(rss):.1f} MiB, "
                f"highest after the first second vs the first second {growth:+.1f} MiB: "
                f"**{'constant' if growth <= 4.0 else 'GROWING'}**"
            )
    finally:
        receiver.stop()
    print(f"Machine: {machine(workdir)}\n")
    print(
        f"{count:,} pending sales of {size} bytes of envelope JSON each; outbox filled in {fill_s:.1f} s; "
        f"receiver and agent in separate processes.\n"
    )
    headers = [
        "batch_max", "records", "agent records/s", "bare httpx loop records/s", "agent / loop",
        "agent drain s / CPU s / waiting for a CPU s",
        "CPU µs per record: agent / receiver", "agent RSS before MiB", "agent RSS during drain min / max MiB",
    ]  # fmt: skip
    print(table(headers, rows))
    print()
    print("\n".join(verdicts))
    print(f"\nWhere the time of one batch goes: the same parts in one process (Outbox, DeliveryLoop, "
          f"HttpDestination), each phase timed, first {upto:,} records; ms per batch:\n")  # fmt: skip
    headers = [
        "batch_max",
        "records/s",
        "per batch",
        "claim_batch on the outbox thread (while the batch before is sent)",
        "send",
        "of which the body (envelopes' JSON text)",
        "complete_batch (while the batch after is sent)",
        "waiting for the batch frozen ahead",
        "the rest (answer to next send)",
    ]
    print(table(headers, parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_drain", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", default="100,500", help="batch_max values to run, comma-separated")
    args = parser.parse_args(argv if argv is not None else [])
    base = os.environ.get("KASSABRO_BENCH_DIR")
    with tempfile.TemporaryDirectory(prefix="kassabro-bench-drain-", dir=base) as tmp:
        run(args.records, [int(b) for b in args.batch.split(",")], Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
