"""The chain's side end to end: simulated shops -> 3-node NATS cluster -> PostgreSQL, beside bare nats-py.

``python -m bench.bench_fleet [--shops 200] [--receipts 10] [--saturday-s 60]``
starts a local 3-node nats-server cluster (JetStream, MQTT gateway) and a
PostgreSQL on loopback (``fleet.localcluster``) and, in the same run:

- **bare nats-py**: the same envelopes published straight into a 3-replica
  JetStream stream (``js.publish``, each acknowledged, 200 in flight) and read
  back by a pull consumer that acks each: what the cluster does with no MQTT,
  no PostgreSQL and no Python per record beyond the client;
- **flat out**: ``--shops`` simulated shops (``fleet.simulate``, one MQTT client
  each) send ``--receipts`` receipts each as fast as PUBACKs come back, two
  ``kassabro-fleet consume`` workers store them; records/s from the first
  publish until the last row is committed;
- **a busy Saturday**: the same shops at a receipt every 30 s each (120 an
  hour, two lines: a sale and two stock movements) for ``--saturday-s``
  seconds: the offered rate, what reached PostgreSQL, and the latency from the
  shop's envelope (``received_at``) to the committed row.

For both shop runs it samples the durable consumer's lag (not yet delivered +
not yet acknowledged) every 0.5 s from the moment the shops start ringing up
(all connected, their first statuses stored) and prints the largest and the
median; a Saturday "keeps up" when the median lag is under one second's
offered records. Everything listens
on 127.0.0.1 only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from bench._common import machine, percentile, table
from fleet.consume import connect_nats
from fleet.localcluster import LocalPostgres, NatsCluster, shop_password
from fleet.simulate import SATURDAY_PACE_S, Chain, ShopPlan
from fleet.stream import StreamSettings, consumer_lag, ensure_consumer, ensure_stream

_RECORD_TABLES = "SELECT count(*) FROM (SELECT id FROM sales UNION ALL SELECT id FROM stock_movements UNION ALL SELECT id FROM z_reports) r"


class Workers:
    """Two ``kassabro-fleet consume`` subprocesses on one database."""

    def __init__(self, cluster: NatsCluster, dsn: str, root: Path, count: int = 2) -> None:
        password = root / "fleet-password"
        password.write_text(cluster.fleet_password)
        self.procs = []
        for i in range(count):
            with open(root / f"worker-{i}.log", "ab") as log:
                command = [sys.executable, "-m", "fleet.cli", "consume", "--nats", ",".join(cluster.urls), "--user",
                           "fleet", "--password-file", str(password), "--dsn", dsn, "--batch", "500"]  # fmt: skip
                self.procs.append(
                    subprocess.Popen(
                        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}
                    )
                )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(30)


async def _count(dsn: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        row = await (await conn.execute(_RECORD_TABLES.encode())).fetchone()
        return int(row[0]) if row else 0


async def _fresh(cluster: NatsCluster, postgres: LocalPostgres, name: str) -> str:
    """An empty stream with a new durable consumer, and a new database; its DSN."""
    settings = StreamSettings()
    nc = await connect_nats(cluster.urls, "fleet", cluster.fleet_password, "bench")
    js = nc.jetstream(timeout=10)
    for _ in range(100):
        try:
            await ensure_stream(js, settings)
            for consumer in await js.consumers_info(settings.stream):
                await js.delete_consumer(settings.stream, consumer.name)
            await js.purge_stream(settings.stream)
            await ensure_consumer(js, settings)
            break
        except Exception:
            await asyncio.sleep(0.2)
    await nc.close()
    async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {name}".encode())
    return postgres.dsn.replace(f"dbname={postgres.database}", f"dbname={name}")


async def _lag_sampler(cluster: NatsCluster, samples: list[int], stop: asyncio.Event) -> None:
    nc = await connect_nats(cluster.urls, "fleet", cluster.fleet_password, "bench lag")
    js = nc.jetstream(timeout=5)
    try:
        while not stop.is_set():
            try:
                pending, ack_pending = await consumer_lag(js, StreamSettings())
                samples.append(pending + ack_pending)
            except Exception:
                pass
            await asyncio.sleep(0.5)
    finally:
        await nc.close()


async def bare(cluster: NatsCluster, envelopes: list[bytes]) -> float:
    """Records/s of a bare JetStream publish (acked, 200 in flight) and pull-consume-ack loop."""
    nc = await connect_nats(cluster.urls, "fleet", cluster.fleet_password, "bench bare")
    js = nc.jetstream(timeout=10)
    name = "BENCH_BARE"
    for _ in range(100):
        try:
            await js.add_stream(StreamConfig(name=name, subjects=["bench.>"], num_replicas=3, storage=StorageType.FILE))
            await js.add_consumer(name, ConsumerConfig(durable_name="bare", ack_policy=AckPolicy.EXPLICIT))
            break
        except Exception:
            await asyncio.sleep(0.2)
    started = time.perf_counter()
    window = asyncio.Semaphore(200)

    async def publish(payload: bytes) -> None:
        async with window:
            await js.publish("bench.shop.sale", payload)

    async def consume() -> None:
        sub = await js.pull_subscribe_bind("bare", name)
        got = 0
        while got < len(envelopes):
            try:
                msgs = await sub.fetch(500, timeout=1)
            except Exception:
                continue
            for msg in msgs:
                await msg.ack()
            got += len(msgs)

    await asyncio.gather(asyncio.gather(*(publish(e) for e in envelopes)), consume())
    elapsed = time.perf_counter() - started
    await js.delete_stream(name)
    await nc.close()
    return len(envelopes) / elapsed


async def shops_run(
    cluster: NatsCluster, dsn: str, root: Path, shops: list[str], receipts: int, pace_s: float, duration_s: float
) -> dict[str, float]:
    """One run of simulated shops into PostgreSQL; figures of it."""
    workers = Workers(cluster, dsn, root)
    lags: list[int] = []
    stop = asyncio.Event()
    plans = [ShopPlan(s, shop_password(s), receipts, z_every=receipts) for s in shops]
    chain = Chain(plans, [("127.0.0.1", n.mqtt_port) for n in cluster.nodes], pace_s=pace_s, ramp_s=0.005, hold=True)
    await chain.start()
    if not await chain.wait_connected(120):
        raise RuntimeError("not every simulated shop connected within 120 s")
    await asyncio.sleep(2)  # the workers have bound, the shops' statuses are stored
    started = time.perf_counter()
    since = time.time()
    sampler = asyncio.create_task(_lag_sampler(cluster, lags, stop))
    chain.go.set()
    if pace_s:
        await asyncio.sleep(duration_s)
        chain.stop_event.set()
    else:
        await chain.wait_done(duration_s)
    published = time.perf_counter() - started
    acked = chain.acked_ids
    deadline = time.monotonic() + 120
    while await _count(dsn) < len(acked) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stored_s = time.perf_counter() - started
    stop.set()
    await sampler
    await chain.stop()
    workers.stop()
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            b"SELECT extract(epoch FROM stored_at - received_at) FROM sales WHERE received_at > to_timestamp(%s)"
            b" UNION ALL SELECT extract(epoch FROM stored_at - received_at) FROM stock_movements"
            b" WHERE received_at > to_timestamp(%s)",
            (since, since),
        )
        latencies = [float(row[0]) for row in await cursor.fetchall()]
    stored = await _count(dsn)
    return {
        "records": float(len(acked)),
        "stored": float(stored),
        "published_s": published,
        "stored_s": stored_s,
        "lag_max": float(max(lags, default=0)),
        "lag_p50": percentile([float(x) for x in lags], 50),
        "latency_p50": percentile(latencies, 50),
        "latency_p99": percentile(latencies, 99),
    }


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    shops = [f"shop-{i:04d}" for i in range(args.shops)]
    cluster = NatsCluster(root / "nats", {s: shop_password(s) for s in shops})
    postgres = LocalPostgres()
    cluster.start()
    postgres.start()
    try:
        print(machine(root), "\n")
        flat_dsn = await _fresh(cluster, postgres, "bench_flat")
        flat = await shops_run(cluster, flat_dsn, root, shops, args.receipts, 0.0, 300)
        sample = json.dumps(
            {"id": "0193a3c4-5e6f-7a8b-9c0d-1e2f3a4b5c6d", "key": "sale:kassa-1:1", "type": "sale",
             "store_id": "shop-0000", "seq": 1, "received_at": "2026-11-26T13:59:01.120Z", "clock_synced": True,
             "data": {"till_id": "kassa-1", "receipt_no": 1, "total": "127.00"}}
        ).encode()  # fmt: skip
        bare_rate = await bare(cluster, [sample] * int(flat["records"]))
        saturday_dsn = await _fresh(cluster, postgres, "bench_saturday")
        saturday = await shops_run(cluster, saturday_dsn, root, shops, 10_000, SATURDAY_PACE_S, args.saturday_s)
    finally:
        cluster.stop()
        postgres.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    offered = args.shops * 3 / SATURDAY_PACE_S
    flat_rate = flat["stored"] / flat["stored_s"]
    rows = [
        ["bare nats-py: JetStream publish (R3, acked) + pull consume + ack", f"{int(flat['records']):,}",
         f"{bare_rate:,.0f}", "–", "–", "baseline"],
        [f"flat out: {args.shops} shops x {args.receipts} receipts -> 2 workers -> PostgreSQL",
         f"{int(flat['stored']):,}", f"{flat_rate:,.0f}", f"{flat['lag_max']:,.0f} (p50 {flat['lag_p50']:,.0f})",
         f"{flat['latency_p50']:.2f} / {flat['latency_p99']:.2f}", f"{flat_rate / bare_rate:.2f} x bare"],
        [f"busy Saturday: {args.shops} shops, a receipt / {SATURDAY_PACE_S:.0f} s each ({offered:.0f} records/s offered), "
         f"{args.saturday_s:.0f} s", f"{int(saturday['stored']):,}", f"{saturday['stored'] / saturday['published_s']:,.1f}",
         f"{saturday['lag_max']:,.0f} (p50 {saturday['lag_p50']:,.0f})",
         f"{saturday['latency_p50']:.2f} / {saturday['latency_p99']:.2f}", "keeps up" if saturday['lag_p50'] < offered else "falls behind"],
    ]  # fmt: skip
    headers = ["run", "records", "records/s", "consumer lag max (messages)", "latency p50 / p99 (s)", "vs"]
    print(table(headers, rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--shops", type=int, default=200)
    parser.add_argument("--receipts", type=int, default=10)
    parser.add_argument("--saturday-s", type=float, default=60.0)
    # Under `python -m bench` sys.argv holds the runner's arguments: the defaults then.
    asyncio.run(run(parser.parse_args([] if argv is None else argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
