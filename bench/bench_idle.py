"""Idle: the agent's CPU time over 60 s with nothing to send and every destination up.

``python -m bench.bench_idle [--seconds 60]``

The simulated Hogia API, Sharespine and a chain backend (the generic
receiver) each run under uvicorn in a process of their own; ``kassabro run``
runs in another, with all three as destinations. A few records are sent and
delivered first, so every destination has been reached and is ``online``;
then the agent's user + system CPU time (``/proc/PID/stat``, every thread
counted) is read at the start and the end of the window. Target: under 0.5 s
in 60 s. The loops sleep on events, not on timers, so what is left is the
status sampler (every 30 s), the idle recheck of each loop (every 60 s) and
the event loop itself.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench._common import machine, sale, table
from bench.bench_drain import AgentRun, SimulatorProcess, acked_seq, cpu_seconds, rss_mib

TARGET_S = 0.5


def max_seq(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT MAX(seq) FROM records").fetchone()[0])
    finally:
        conn.close()


def destinations_toml(urls: dict[str, str]) -> str:
    return (
        '[flow]\nsales_to_hogia = "kassabro"\nwebshop_stock = "kassabro"\n'
        f'[[destinations]]\nname = "hogia"\nkind = "hogia"\nbase_url = "{urls["hogia"]}"\nauth = "none"\n'
        "read_register = false\n"
        f'[[destinations]]\nname = "sharespine"\nkind = "sharespine"\nbase_url = "{urls["sharespine"]}"\n'
        'auth = "none"\n'
        f'[[destinations]]\nname = "backend"\nkind = "http"\nurl = "{urls["backend"]}/ingest"\n'
    )


def run(seconds: float, workdir: Path) -> None:
    sims = {
        "hogia": SimulatorProcess("agent.simulators.hogia:create_app", workdir / "hogia.log"),
        "sharespine": SimulatorProcess("agent.simulators.sharespine:create_app", workdir / "sharespine.log"),
        "backend": SimulatorProcess("agent.simulators.receiver:create_app", workdir / "receiver.log"),
    }
    data_dir = workdir / "data"
    try:
        agent = AgentRun(workdir / "agent", data_dir, destinations_toml({n: s.url for n, s in sims.items()}))
        try:
            with httpx.Client(base_url=agent.ingest_url, timeout=10) as client:
                for n in range(1, 11):
                    client.post("/v1/sales", json=sale(n)).raise_for_status()
            last = max_seq(data_dir / "outbox.db")
            deadline = time.monotonic() + 30
            while not all(acked_seq(data_dir / "outbox.db", name) >= last for name in sims):
                if time.monotonic() > deadline:
                    raise RuntimeError("the first records were not delivered within 30 s")
                time.sleep(0.1)
            states = {d["name"]: d["state"] for d in httpx.get(f"{agent.status_url}/api/status").json()["destinations"]}
            time.sleep(2.0)  # let the last batch's bookkeeping settle
            cpu0, wall0 = cpu_seconds(agent.pid), time.monotonic()
            time.sleep(seconds)
            cpu, wall = cpu_seconds(agent.pid) - cpu0, time.monotonic() - wall0
            rss = rss_mib(agent.pid)
        finally:
            agent.stop()
    finally:
        for sim in sims.values():
            sim.stop()
    print(f"Machine: {machine(workdir)}\n")
    print(
        table(
            ["destinations (state before the window)", "window s", "agent CPU s (user + sys)", "CPU share", "RSS MiB"],
            [[", ".join(f"{n} ({s})" for n, s in states.items()), f"{wall:.1f}", f"{cpu:.2f}", f"{cpu / wall:.2%}",
              f"{rss:.1f}"]],
        )
    )  # fmt: skip
    print()
    scaled = cpu * 60 / wall
    print(
        f"- CPU time over 60 s: {scaled:.2f} s (target < {TARGET_S} s): **{'met' if scaled < TARGET_S else 'NOT met'}**"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_idle", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(prefix="kassabro-bench-idle-", dir=os.environ.get("KASSABRO_BENCH_DIR")) as tmp:
        run(args.seconds, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
