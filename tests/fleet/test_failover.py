"""Failover in the ``mqtt`` destination: with ``hosts`` listing the cluster's nodes, killing the node in use
moves the agent to another within the backoff, and nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet.conftest import SHOPS, ChainSide, ConsumerProcess
from tests.fleet.test_consume import POLL, stored_ids
from tests.helpers import KassabroProcess, eventually, make_sale, stored_keys

pytestmark = pytest.mark.slow

BACKOFF_CAP_S = 1.0


async def api_status(agent: KassabroProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        body: dict[str, Any] = (await client.get(f"http://127.0.0.1:{agent.status_port}/api/status")).json()
        return body


async def test_killing_the_node_in_use_moves_the_agent_to_another_nothing_lost(
    chain: ChainSide, tmp_path: Path
) -> None:
    cluster = chain.cluster
    (tmp_path / "mqtt-password").write_text(SHOPS["agent-1"])
    hosts = ", ".join(f'"127.0.0.1:{node.mqtt_port}"' for node in cluster.nodes)
    agent = KassabroProcess(
        tmp_path,
        f"""
[[destinations]]
name = "chain"
kind = "mqtt"
hosts = [{hosts}]
username = "agent-1"
password_file = "{tmp_path / "mqtt-password"}"
batch_max = 20
backoff_base_s = 0.2
backoff_cap_s = {BACKOFF_CAP_S}
publish_timeout_s = 5
""",
        store_id="agent-1",
    )
    worker = ConsumerProcess(chain, tmp_path / "worker.log")
    worker.start()
    agent.start()
    killed = None
    try:
        async with httpx.AsyncClient(base_url=agent.ingest_url, timeout=10) as client:
            for n in range(1, 21):
                assert (await client.post("/v1/sales", json=make_sale(n))).status_code == 201

            async def on_a_broker() -> bool:
                return bool((await api_status(agent))["destinations"][0].get("broker"))

            await eventually(on_a_broker, 20, lambda: "the agent connected\n" + agent.log_tail(), **POLL)
            before = (await api_status(agent))["destinations"][0]["broker"]
            page = httpx.get(f"http://127.0.0.1:{agent.status_port}/").text
            assert "Ansluten till" in page and before in page
            killed = next(node for node in cluster.nodes if before.endswith(f":{node.mqtt_port}"))
            killed.kill()
            killed_at = time.monotonic()
            for n in range(21, 41):  # the till goes on selling while the node is gone
                assert (await client.post("/v1/sales", json=make_sale(n))).status_code == 201
                await asyncio.sleep(0.05)

        async def moved() -> bool:
            return (await api_status(agent))["destinations"][0].get("broker") not in (None, before)

        await eventually(moved, 20, lambda: "the agent on another node\n" + agent.log_tail(), **POLL)
        moved_s = time.monotonic() - killed_at
        after = (await api_status(agent))["destinations"][0]["broker"]
        # The dead node's socket closes at once; one backoff (at most the cap), then the next host's
        # connect, which waits while the cluster re-elects the leader of the gateway's session stream
        # if the dead node held it (a few seconds, nats-server's election timeout).
        assert moved_s < BACKOFF_CAP_S + 10, f"moved after {moved_s:.1f} s"

        async def delivered() -> bool:
            return (await api_status(agent))["destinations"][0]["pending"] == 0

        # Publishes can wait out the cluster re-electing the leaders the dead node held.
        await eventually(delivered, 60, lambda: "nothing pending\n" + agent.log_tail(), **POLL)
        delivered_s = time.monotonic() - killed_at

        acknowledged = {record_id for record_id, _ in stored_keys(agent.db).values()}
        assert len(acknowledged) == 80  # 40 sales, 40 derived stock movements

        async def all_stored() -> bool:
            return set(await stored_ids(chain.dsn)) >= acknowledged

        await eventually(all_stored, 60, lambda: "every record of the agent in PostgreSQL\n" + worker.log(), **POLL)
        ids = await stored_ids(chain.dsn)
        assert len(ids) == len(set(ids)) and set(ids) == acknowledged
        print(
            f"\nfailover: {before} killed; on {after} {moved_s:.1f} s later, nothing pending after {delivered_s:.1f} s;"
            " 80 records once in PostgreSQL"
        )
    finally:
        agent.kill()
        worker.stop()
        if killed is not None and not killed.running:
            await asyncio.to_thread(cluster.restart, killed)
