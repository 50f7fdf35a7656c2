"""200 simulated shops and two real agents into the 3-node cluster and PostgreSQL, with a node and a worker killed.

The chain's promise end to end: every record a shop had acknowledged (its
PUBACK, or the agent's outbox marking it delivered) is in PostgreSQL exactly
once, although a NATS node was SIGKILLed and restarted mid-run (shops and an
agent on it reconnect and resend) and one of the two consumer workers was
SIGKILLed once (its unacknowledged batch is redelivered to the other).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest

from fleet.consume import connect_nats
from fleet.simulate import Chain, ShopPlan
from tests.fleet.conftest import AGENT_SHOPS, SHOPS, SIMULATED_SHOPS, ChainSide, ConsumerProcess
from tests.fleet.test_consume import POLL, stored_ids
from tests.helpers import KassabroProcess, eventually, make_sale, stored_keys

pytestmark = pytest.mark.slow

RECEIPTS_PER_SHOP = 4  # + 2 movements each + 1 Z-report = 13 records a shop
AGENT_SALES = 40  # + 1 movement each = 80 records an agent


def agent_for(side: ChainSide, root: Path, store_id: str, node_index: int) -> KassabroProcess:
    root.mkdir()
    (root / "mqtt-password").write_text(SHOPS[store_id] + "\n")
    node = side.cluster.nodes[node_index]
    return KassabroProcess(
        root,
        f"""
[[destinations]]
name = "chain"
kind = "mqtt"
host = "127.0.0.1"
port = {node.mqtt_port}
username = "{store_id}"
password_file = "{root / "mqtt-password"}"
batch_max = 20
backoff_base_s = 0.1
backoff_cap_s = 1.0
publish_timeout_s = 5
""",
        store_id=store_id,
    )


async def feed(agent: KassabroProcess, count: int, pace_s: float) -> None:
    async with httpx.AsyncClient(base_url=agent.ingest_url, timeout=10) as client:
        for n in range(1, count + 1):
            answer = await client.post("/v1/sales", json=make_sale(n))
            assert answer.status_code == 201, answer.text
            await asyncio.sleep(pace_s)


async def delivered(agent: KassabroProcess) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        status = (await client.get(f"http://127.0.0.1:{agent.status_port}/api/status")).json()
    return all(d["pending"] == 0 for d in status["destinations"])


def worker_counts(logs: list[str]) -> dict[str, int]:
    """The last progress line's counters of each worker run, summed."""
    totals = {"inserted": 0, "duplicates": 0, "redelivered": 0}
    for log in logs:
        for run in log.split("migrations applied")[-1:] if False else [log]:
            found = re.findall(r"inserted=(\d+) duplicates=(\d+) .*redelivered=(\d+)", run)
            if found:
                inserted, duplicates, redelivered = map(int, found[-1])
                totals["inserted"] += inserted
                totals["duplicates"] += duplicates
                totals["redelivered"] += redelivered
    return totals


async def test_every_acknowledged_record_once_with_a_node_and_a_worker_killed(chain: ChainSide, tmp_path: Path) -> None:
    cluster = chain.cluster
    plans = [
        ShopPlan(store, SHOPS[store], receipts=RECEIPTS_PER_SHOP, z_every=RECEIPTS_PER_SHOP)
        for store in SIMULATED_SHOPS
    ]
    shops = Chain(plans, chain.mqtt_hosts, pace_s=2.0, keepalive_s=10, ramp_s=0.01)
    agents = [agent_for(chain, tmp_path / store, store, i) for i, store in enumerate(AGENT_SHOPS)]
    workers = [ConsumerProcess(chain, tmp_path / f"worker-{i}.log", batch=100) for i in range(2)]
    killed_node = cluster.nodes[0]  # a third of the shops and agent-1 are on it
    try:
        for worker in workers:
            worker.start()
        for agent in agents:
            agent.start()
        feeding = [asyncio.create_task(feed(agent, AGENT_SALES, 0.2)) for agent in agents]
        await shops.start()
        started = time.monotonic()

        await asyncio.sleep(2)
        killed_node.kill()
        await asyncio.sleep(1)
        workers[0].kill()
        await asyncio.sleep(2)
        await asyncio.to_thread(cluster.restart, killed_node)
        node_down_s = time.monotonic() - started - 2
        workers[0].start()

        await asyncio.gather(*feeding)
        assert await shops.wait_done(120), "the shops did not get every record acknowledged"
        for agent in agents:
            await eventually(
                lambda agent=agent: delivered(agent), 120, f"{agent.root.name} delivered everything", **POLL
            )
        run_s = time.monotonic() - started

        acknowledged = set(shops.acked_ids)
        for agent in agents:
            acknowledged |= {record_id for record_id, _ in stored_keys(agent.db).values()}
        assert len(acknowledged) == len(SIMULATED_SHOPS) * (RECEIPTS_PER_SHOP * 4 // 4 * 3 + 1) + 2 * AGENT_SALES * 2

        async def all_stored() -> bool:
            return set(await stored_ids(chain.dsn)) >= acknowledged

        try:
            await eventually(all_stored, 90, "every acknowledged record in PostgreSQL", **POLL)
        except AssertionError:
            missing = acknowledged - set(await stored_ids(chain.dsn))
            by_shop: dict[str, int] = {}
            for shop in shops.shops:
                if shop.acked_ids & missing:
                    by_shop[f"{shop.store_id}@{shop.first_host % 3}/{shop.connects}"] = len(shop.acked_ids & missing)
            nc = await connect_nats(cluster.urls, "fleet", cluster.fleet_password, "diag")
            info = await nc.jetstream().stream_info(chain.settings.stream)
            consumer = await nc.jetstream().consumer_info(chain.settings.stream, chain.settings.durable)
            await nc.close()
            raise AssertionError(
                f"{len(missing)} acknowledged records missing; by shop@first-node/connects {by_shop}; "
                f"stream {info.state}; consumer pending={consumer.num_pending} ack_pending={consumer.num_ack_pending}"
                f"\n{workers[0].log()}\n{workers[1].log()}"
            ) from None
        ids = await stored_ids(chain.dsn)
        assert len(ids) == len(set(ids)), "a record stored twice"
        assert set(ids) == acknowledged, "a record stored that nobody sent"
        reconnects = sum(shop.connects - 1 for shop in shops.shops)
        for worker in workers:
            worker.stop()
        counts = worker_counts([worker.log_path.read_text() for worker in workers])
        print(
            f"\nnode-kill run: {len(acknowledged)} acknowledged records ({len(SIMULATED_SHOPS)} shops, 2 agents), "
            f"{len(ids)} rows in PostgreSQL, none twice, none missing; node {killed_node.name} down {node_down_s:.1f} s, "
            f"{reconnects} shop reconnects, worker SIGKILLed once; workers counted {counts}; run {run_s:.0f} s"
        )
    finally:
        await shops.stop()
        for agent in agents:
            agent.kill()
        for worker in workers:
            worker.stop()
