"""Status endpoints under a shop's load (and flat out), and what that does to ingest.

``python -m bench.bench_status [--seconds 30] [--rate 20] [--status-rate 50] [--clients 8] [--slice 2]``

``kassabro run`` runs in its own process with the three simulators (Hogia,
Sharespine, a chain backend) each under uvicorn in another. A till (this
script) posts one sale per request at a steady ``--rate`` the whole time, and
the agent delivers each to all three destinations as it comes. A separate
load process sends the status requests.

Two loads, each measured for ``--seconds`` against as many seconds without
it. Quiet and loaded ``--slice``-second slices alternate (quiet, loaded,
quiet, ...), so whatever else the shared machine does at the time falls on
both alike; each till request counts for the slice it was sent in.

1. **Fixed rate** (the target is judged here): ``--status-rate`` requests per
   second in total, spread evenly and in turn over ``GET /``, ``/live``,
   ``/api/status``, ``/metrics`` and ``/healthz``. An open loop: each request
   is sent at its time on a fixed grid whether or not the earlier ones were
   answered (up to 64 connections), and its latency counts from that time,
   so a slow agent cannot slow the load down. 50/s is five times what a
   shop's real readers send (50 status pages open at once, each fetching
   ``/live`` every 5 s: 10/s; a Prometheus scrape every 15 s and a health
   check every 10 s: 0.2/s), and it asks for the full page and ``/metrics``
   10 times a second each.
2. **Flat out** (for information only): ``--clients`` concurrent clients,
   each sending its next request the moment the last is answered. This
   measures the most the status server answers, not a load anyone causes: on
   a 2-core machine the load process competes with the agent, the till and
   the simulators for the same cores.

Reported: ingest p50 / p99 in each kind of slice, the agent's CPU and its
wait for a CPU; status requests per second and p50 / p99 per endpoint.
Target: ingest p99 under the fixed-rate load within 2x of its p99 without.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from bench._common import machine, percentile, sale, table
from bench.bench_drain import (
    AgentRun,
    SimulatorProcess,
    acked_seq,
    cpu_seconds,
    cpu_wait_seconds,
)
from bench.bench_idle import destinations_toml, max_seq

ENDPOINTS = ("/", "/live", "/api/status", "/metrics", "/healthz")
TARGET_RATIO = 2.0
MAX_CONNECTIONS = 64
IDLE_REUSE_S = 10.0
"""The load reuses a kept connection only this long after its last answer (the agent closes them after 30 s)."""


# ------------------------------------------------------------------ time slices
class Slices:
    """Wall-clock slices shared by the till and the load process: even ones quiet, odd ones loaded.

    Alternating short slices instead of one quiet phase and one loaded phase
    means whatever else the (shared) machine is doing falls on both alike.
    """

    def __init__(self, t0: float, length: float, count: int) -> None:
        self.t0, self.length, self.count = t0, length, count

    def index(self, t: float) -> int:
        return int((t - self.t0) // self.length)

    def loaded(self) -> list[tuple[float, float]]:
        """``(start, end)`` wall-clock times of the loaded slices."""
        return [(self.t0 + k * self.length, self.t0 + (k + 1) * self.length) for k in range(1, self.count, 2)]

    @property
    def end(self) -> float:
        return self.t0 + self.count * self.length


async def _sleep_until(t: float) -> None:
    delay = t - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# ------------------------------------------------------------------ the load
Results = dict[str, Any]


def _empty() -> Results:
    return {"latencies": {path: [] for path in ENDPOINTS}, "failures": [], "late": 0}


class RawClient:
    """A minimal HTTP/1.1 keep-alive client for the load: a prepared GET, a ``Content-Length`` body.

    httpx spends about 0.8 ms of CPU per request, twice what the agent spends
    answering one (this client: under 0.1 ms); on a 2-core machine that load
    process took more of the agent's cores than the agent's answers did. The
    shop's real readers are phones and PCs, not the Pi, so the load process
    should cost as little as it can.
    """

    def __init__(self, base_url: str, max_connections: int) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._requests = {
            path: (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench\r\n"
                   "Accept-Language: sv-SE,sv;q=0.9,en;q=0.8\r\n\r\n").encode()
            for path in ENDPOINTS
        }  # fmt: skip

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """The most recently used idle connection, or a new one; True when new."""
        while self._idle:
            reader, writer, last_used = self._idle.pop()
            if time.monotonic() - last_used < IDLE_REUSE_S:
                return reader, writer, False
            writer.close()  # the server may close it any moment (uvicorn: 30 s idle)
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, True

    async def get(self, path: str) -> int:
        """GET ``path`` on an idle connection (or a new one); the status code."""
        async with self._slots:
            reader, writer, fresh = await self._connection()
            while True:
                try:
                    writer.write(self._requests[path])
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    at = head.lower().find(b"\r\ncontent-length:")
                    length = int(head[at + 17 : head.index(b"\r\n", at + 2)]) if at >= 0 else 0
                    await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError):
                    writer.close()
                    if fresh:
                        raise
                    # The server closed a kept connection just then: once more on a new one.
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    fresh = True
                    continue
                self._idle.append((reader, writer, time.monotonic()))
                return status

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()


async def _fixed_rate(base_url: str, slices: Slices, rate: float) -> Results:
    """``rate`` requests/s on a fixed grid in each loaded slice, each sent on time (open loop)."""
    results = _empty()
    http = RawClient(base_url, MAX_CONNECTIONS)

    async def one(path: str, due: float) -> None:
        try:
            status = await http.get(path)
        except (OSError, asyncio.IncompleteReadError) as exc:
            results["failures"].append(f"{path}: {type(exc).__name__} {exc}")
            return
        results["latencies"][path].append(time.time() - due)
        if status != 200:
            results["failures"].append(f"{path}: {status}")

    tasks = []
    n = 0
    for start, _ in slices.loaded():
        for i in range(int(rate * slices.length)):
            due = start + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.01:
                results["late"] += 1  # the load process itself fell behind its grid
            tasks.append(asyncio.create_task(one(ENDPOINTS[n % len(ENDPOINTS)], due)))
            n += 1
    await asyncio.gather(*tasks)
    http.close()
    return results


async def _flat_out(base_url: str, slices: Slices, clients: int) -> Results:
    """``clients`` closed loops in each loaded slice, each asking again the moment it is answered."""
    results = _empty()

    async def client(offset: int) -> None:
        http = RawClient(base_url, 1)
        n = offset
        for start, end in slices.loaded():
            await _sleep_until(start)
            while time.time() < end:
                path = ENDPOINTS[n % len(ENDPOINTS)]
                n += 1
                started = time.perf_counter()
                status = await http.get(path)
                results["latencies"][path].append(time.perf_counter() - started)
                if status != 200:
                    results["failures"].append(f"{path}: {status}")
        http.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return results


def load_process(mode: str, base_url: str, slices: Slices, amount: float, conn: Connection) -> None:
    """Entry point of the load process: load the odd slices, send the results and its CPU time back."""
    if mode == "fixed":
        results = asyncio.run(_fixed_rate(base_url, slices, amount))
    else:
        results = asyncio.run(_flat_out(base_url, slices, int(amount)))
    results["cpu"] = time.process_time()
    conn.send(results)
    conn.close()


# ------------------------------------------------------------------ the till
async def till(
    ingest_url: str, rate: float, seconds: float, first: int, t0: float | None = None
) -> list[tuple[float, float]]:
    """Post one sale every 1/rate s on a fixed grid from ``t0`` (one connection); ``(sent at, latency)`` per request."""
    latencies: list[tuple[float, float]] = []
    count = int(rate * seconds)
    async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as http:
        start = time.time() if t0 is None else t0
        for i in range(count):
            await _sleep_until(start + i / rate)
            sent, started = time.time(), time.perf_counter()
            response = await http.post("/v1/sales", json=sale(first + i))
            latencies.append((sent, time.perf_counter() - started))
            if response.status_code != 201:
                raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:200]}")
    return latencies


class Phase:
    """One kind of slice's figures: the till's latencies, the agent's CPU, the load's results."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ingest: list[float] = []
        self.cpu = self.wait = 0.0
        self.load: Results | None = None


async def _till_and_cpu(
    agent: AgentRun, slices: Slices, rate: float, first: int
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The till over all slices, and the agent's (CPU, CPU wait) seconds in each slice."""

    async def sample() -> list[tuple[float, float]]:
        per_slice = []
        await _sleep_until(slices.t0)
        cpu, wait = cpu_seconds(agent.pid), cpu_wait_seconds(agent.pid)
        for k in range(1, slices.count + 1):
            await _sleep_until(slices.t0 + k * slices.length)
            cpu1, wait1 = cpu_seconds(agent.pid), cpu_wait_seconds(agent.pid)
            per_slice.append((cpu1 - cpu, wait1 - wait))
            cpu, wait = cpu1, wait1
        return per_slice

    return await asyncio.gather(till(agent.ingest_url, rate, slices.count * slices.length, first, slices.t0), sample())


def measure(agent: AgentRun, quiet: Phase, loaded: Phase, rate: float, seconds: float, slice_s: float, first: int,
            load: tuple[str, float]) -> None:  # fmt: skip
    """``seconds`` of quiet slices and as many of loaded ones, alternating, with the till running throughout."""
    count = 2 * max(1, round(seconds / slice_s))
    slices = Slices(time.time() + 2.0, slice_s, count)  # 2 s for the load process to import and connect
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    mode, amount = load
    process = ctx.Process(target=load_process, args=(mode, agent.status_url, slices, amount, send), daemon=True)
    process.start()
    sent, per_slice = asyncio.run(_till_and_cpu(agent, slices, rate, first))
    for when, latency in sent:
        (loaded if slices.index(when) % 2 else quiet).ingest.append(latency)
    for k, (cpu, wait) in enumerate(per_slice):
        phase = loaded if k % 2 else quiet
        phase.cpu += cpu
        phase.wait += wait
    loaded.load = receive.recv()
    process.join(30)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def describe_failures(results: Results) -> str:
    """``0``, or how many and what they were."""
    failures = results["failures"]
    if not failures:
        return "0"
    kinds = Counter(failures)
    return f"{len(failures)}: " + ", ".join(f"{n} x {kind}" for kind, n in kinds.most_common(5))


def load_table(results: Results, seconds: float) -> str:
    rows = []
    total = 0
    for path in ENDPOINTS:
        values = results["latencies"][path]
        total += len(values)
        rows.append([f"`GET {path}`", f"{len(values):,}", f"{len(values) / seconds:,.1f}",
                     ms(percentile(values, 50)), ms(percentile(values, 99))])  # fmt: skip
    rows.append(["all five", f"{total:,}", f"{total / seconds:,.1f}", "", ""])
    return table(["endpoint", "requests", "requests/s", "p50 ms", "p99 ms"], rows)


def run(seconds: float, rate: float, status_rate: float, clients: int, slice_s: float, workdir: Path) -> None:
    sims = {
        "hogia": SimulatorProcess("agent.simulators.hogia:create_app", workdir / "hogia.log"),
        "sharespine": SimulatorProcess("agent.simulators.sharespine:create_app", workdir / "sharespine.log"),
        "backend": SimulatorProcess("agent.simulators.receiver:create_app", workdir / "receiver.log"),
    }
    data_dir = workdir / "data"
    db = data_dir / "outbox.db"
    quiet1, fixed = Phase("without status load (between the fixed-rate slices)"), \
        Phase(f"**fixed rate, {status_rate:g} status requests/s**")  # fmt: skip
    quiet2, flat = Phase("without status load (between the flat-out slices)"), \
        Phase(f"flat out, {clients} clients (for information)")  # fmt: skip
    try:
        agent = AgentRun(workdir / "agent", data_dir, destinations_toml({n: s.url for n, s in sims.items()}))
        try:
            asyncio.run(till(agent.ingest_url, rate, 2.0, 1))  # warm up: connections, first batches
            measure(agent, quiet1, fixed, rate, seconds, slice_s, 10_000, ("fixed", status_rate))
            measure(agent, quiet2, flat, rate, seconds, slice_s, 100_000, ("flat", clients))
            last = max_seq(db)
            deadline = time.monotonic() + 60
            while not all(acked_seq(db, name) >= last for name in sims):
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent did not drain within 60 s of the end")
                time.sleep(0.1)
            drained_after = 60 - (deadline - time.monotonic())
        finally:
            agent.stop()
    finally:
        for sim in sims.values():
            sim.stop()

    assert fixed.load is not None and flat.load is not None
    loaded_s = len(fixed.ingest) / rate
    print(f"Machine: {machine(workdir)}\n")
    print(f"Ingest: one sale per `POST /v1/sales` at {rate:g}/s on one connection (each sale + 2 derived movements "
          f"delivered to all three destinations as they come). {slice_s:g} s slices without and with the status "
          f"load alternate, {seconds:.0f} s of each per load:\n")  # fmt: skip
    rows = []
    for phase, base in ((quiet1, quiet1), (fixed, quiet1), (quiet2, quiet2), (flat, quiet2)):
        values = phase.ingest
        rows.append([phase.name, len(values), ms(percentile(values, 50)), ms(percentile(values, 99)), ms(max(values)),
                     f"{percentile(values, 99) / percentile(base.ingest, 99):.2f}x", f"{phase.cpu:.1f}",
                     f"{phase.wait:.1f}"])  # fmt: skip
    print(table(["ingest", "requests", "p50 ms", "p99 ms", "max ms", "p99 / without", "agent CPU s",
                 "agent waiting for a CPU s"], rows))  # fmt: skip
    print()
    ratio = percentile(fixed.ingest, 99) / percentile(quiet1.ingest, 99)
    print(f"- ingest p99 under the fixed-rate load / without = {ratio:.2f}x (target within {TARGET_RATIO:g}x): "
          f"**{'met' if ratio <= TARGET_RATIO else 'NOT met here'}**")  # fmt: skip
    print(f"- every destination caught up {drained_after:.1f} s after the till stopped\n")
    print(f"Status endpoints at a fixed {status_rate:g} requests/s (open loop, from a separate process):\n")
    print(load_table(fixed.load, loaded_s))
    print(f"\n(failed or non-200 answers: {describe_failures(fixed.load)}; requests the load process sent more than 10 ms late: "
          f"{fixed.load['late']}; the load process used {fixed.load['cpu']:.1f} s of CPU)\n")  # fmt: skip
    print(f"Status endpoints flat out, {clients} concurrent clients (for information, not a shop's load):\n")
    print(load_table(flat.load, loaded_s))
    print(
        f"\n(failed or non-200 answers: {describe_failures(flat.load)}; the load process used {flat.load['cpu']:.1f} s of CPU)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_status", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20.0, help="till sales per second")
    parser.add_argument("--status-rate", type=float, default=50.0, help="status requests per second (fixed rate)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent status clients (flat out)")
    parser.add_argument("--slice", type=float, default=2.0, help="length of one quiet or loaded slice, s")
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="kassabro-bench-status-", dir=os.environ.get("KASSABRO_BENCH_DIR")) as tmp:
        run(args.seconds, args.rate, args.status_rate, args.clients, args.slice, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
