"""Status endpoints under load while the agent ingests and drains, and what that does to ingest.

``python -m bench.bench_status [--seconds 30] [--rate 20] [--clients 8]``

``kassabro run`` runs in its own process with the three simulators (Hogia,
Sharespine, a chain backend) each under uvicorn in another. A till (this
script) posts one sale per request at a steady ``--rate`` the whole time, and
the agent delivers each to all three destinations as it comes.

1. Without load: the till alone for ``--seconds``; its latency per request.
2. Under load: the same till, and at the same time ``--clients`` concurrent
   clients in a separate process cycling through ``GET /api/status``,
   ``/metrics``, ``/`` and ``/healthz`` as fast as they are answered.

Reported: status requests per second and p50 / p99 per endpoint, ingest p50 /
p99 without and with the load. Target: ingest p99 under load within 2x of
its p99 without.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

from bench._common import machine, percentile, sale, table
from bench.bench_drain import AgentRun, SimulatorProcess, acked_seq, cpu_seconds, cpu_wait_seconds
from bench.bench_idle import destinations_toml, max_seq

ENDPOINTS = ("/api/status", "/metrics", "/", "/healthz")
TARGET_RATIO = 2.0


# --------------------------------------------------------------- the hammer
async def _hammer(base_url: str, seconds: float, clients: int) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    failures: list[str] = []
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            n = offset
            while time.perf_counter() < deadline:
                path = ENDPOINTS[n % len(ENDPOINTS)]
                n += 1
                started = time.perf_counter()
                response = await http.get(path)
                latencies[path].append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(f"{path}: {response.status_code}")

    await asyncio.gather(*(client(i) for i in range(clients)))
    latencies["failures"] = [float(len(failures))]
    latencies["cpu"] = [time.process_time()]
    return latencies


def hammer_process(base_url: str, seconds: float, clients: int, conn: Connection) -> None:
    """Entry point of the load process: hammer, then send the latencies back."""
    conn.send(asyncio.run(_hammer(base_url, seconds, clients)))
    conn.close()


# --------------------------------------------------------------- the till
async def till(ingest_url: str, rate: float, seconds: float, first: int) -> list[float]:
    """Post one sale every 1/rate s on a fixed grid (one connection); latency per request."""
    latencies: list[float] = []
    count = int(rate * seconds)
    async with httpx.AsyncClient(base_url=ingest_url, timeout=30) as http:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.perf_counter()
            response = await http.post("/v1/sales", json=sale(first + i))
            latencies.append(time.perf_counter() - started)
            if response.status_code != 201:
                raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:200]}")
    return latencies


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def run(seconds: float, rate: float, clients: int, workdir: Path) -> None:
    sims = {
        "hogia": SimulatorProcess("agent.simulators.hogia:create_app", workdir / "hogia.log"),
        "sharespine": SimulatorProcess("agent.simulators.sharespine:create_app", workdir / "sharespine.log"),
        "backend": SimulatorProcess("agent.simulators.receiver:create_app", workdir / "receiver.log"),
    }
    data_dir = workdir / "data"
    db = data_dir / "outbox.db"
    try:
        agent = AgentRun(workdir / "agent", data_dir, destinations_toml({n: s.url for n, s in sims.items()}))
        try:
            asyncio.run(till(agent.ingest_url, rate, 2.0, 1))  # warm up: connections, first batches
            cpu0, wait0 = cpu_seconds(agent.pid), cpu_wait_seconds(agent.pid)
            quiet = asyncio.run(till(agent.ingest_url, rate, seconds, 10_000))
            cpu_quiet, wait_quiet = cpu_seconds(agent.pid) - cpu0, cpu_wait_seconds(agent.pid) - wait0

            ctx = multiprocessing.get_context("spawn")
            receive, send = ctx.Pipe(duplex=False)
            load = ctx.Process(target=hammer_process, args=(agent.status_url, seconds, clients, send), daemon=True)
            load.start()
            time.sleep(1.0)  # the load process imports and connects
            cpu0, wait0 = cpu_seconds(agent.pid), cpu_wait_seconds(agent.pid)
            loaded = asyncio.run(till(agent.ingest_url, rate, seconds - 1.0, 100_000))
            cpu_loaded, wait_loaded = cpu_seconds(agent.pid) - cpu0, cpu_wait_seconds(agent.pid) - wait0
            hammered = receive.recv()
            load.join(30)
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

    print(f"Machine: {machine(workdir)}\n")
    print(f"Status endpoints, {clients} concurrent clients in their own process for {seconds:.0f} s:\n")
    rows = []
    total = 0
    for path in ENDPOINTS:
        values = hammered[path]
        total += len(values)
        rows.append([f"`GET {path}`", f"{len(values):,}", f"{len(values) / seconds:,.0f}",
                     ms(percentile(values, 50)), ms(percentile(values, 99))])  # fmt: skip
    rows.append(["all four", f"{total:,}", f"{total / seconds:,.0f}", "", ""])
    print(table(["endpoint", "requests", "requests/s", "p50 ms", "p99 ms"], rows))
    failures = int(hammered["failures"][0])
    print(f"\n(non-200 answers: {failures}; the load process itself used {hammered['cpu'][0]:.1f} s of CPU)\n")
    print(f"Ingest: one sale per `POST /v1/sales` at {rate:g}/s on one connection (each sale + 2 derived movements "
          f"delivered to all three destinations as they come):\n")  # fmt: skip
    ratio = percentile(loaded, 99) / percentile(quiet, 99)
    print(
        table(
            ["ingest", "requests", "p50 ms", "p99 ms", "max ms", "agent CPU s", "agent waiting for a CPU s"],
            [
                ["without status load", len(quiet), ms(percentile(quiet, 50)), ms(percentile(quiet, 99)),
                 ms(max(quiet)), f"{cpu_quiet:.1f}", f"{wait_quiet:.1f}"],
                ["under status load", len(loaded), ms(percentile(loaded, 50)), ms(percentile(loaded, 99)),
                 ms(max(loaded)), f"{cpu_loaded:.1f}", f"{wait_loaded:.1f}"],
            ],
        )
    )  # fmt: skip
    print()
    print(f"- every destination caught up {drained_after:.1f} s after the till stopped")
    print(f"- ingest p99 under load / without = {ratio:.2f}x (target within {TARGET_RATIO:g}x): "
          f"**{'met' if ratio <= TARGET_RATIO else 'NOT met here'}**")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_status", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=20.0, help="till sales per second")
    parser.add_argument("--clients", type=int, default=8, help="concurrent status clients")
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="kassabro-bench-status-", dir=os.environ.get("KASSABRO_BENCH_DIR")) as tmp:
        run(args.seconds, args.rate, args.clients, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
