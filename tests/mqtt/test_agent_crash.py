"""``kassabro run`` with an mqtt destination, SIGKILLed mid-publish and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path

import aiomqtt
import pytest

from tests.helpers import KassabroProcess, make_sale, stored_keys
from tests.mqtt.conftest import Mosquitto
from tests.mqtt.helpers import STORE_ID, collecting

pytestmark = pytest.mark.slow

BASE = f"kassabro/{STORE_ID}"
SALES = 1500  # each with one derived stock movement: 3000 records


def mqtt_agent(tmp_path: Path, broker_port: int, *, ingest: bool = False) -> KassabroProcess:
    """``kassabro run`` with one mqtt destination on the test's broker."""
    return KassabroProcess(
        tmp_path,
        f"""
[[destinations]]
name = "central"
kind = "mqtt"
host = "127.0.0.1"
port = {broker_port}
batch_max = 50
backoff_base_s = 0.05
backoff_cap_s = 0.5
ingest = {"true" if ingest else "false"}
""",
        store_id=STORE_ID,
    )


def kassabro(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


async def test_agent_sigkilled_mid_publish_publishes_the_unacknowledged_again(
    broker: Mosquitto, tmp_path: Path
) -> None:
    agent = mqtt_agent(tmp_path, broker.port)
    batch = tmp_path / "sales.json"
    batch.write_text(json.dumps({"sales": [make_sale(n) for n in range(1, SALES + 1)]}))
    submitted = await asyncio.to_thread(
        subprocess.run,
        kassabro("submit", "--config", str(agent.config_path), str(batch)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr.decode()
    expected = stored_keys(agent.db)
    assert len(expected) == 2 * SALES

    async with collecting(broker.port, f"{BASE}/#") as collector:
        agent.start()
        try:
            await collector.wait_for(lambda: len(collector.records) >= 300, timeout_s=30, what="publishing to start")
            agent.kill()
            seen_at_kill = len(collector.records)
            agent.start()
            await collector.wait_for(
                lambda: len(collector.records) >= len(expected), timeout_s=60, what="every record after the restart"
            )
        finally:
            agent.terminate()
    assert seen_at_kill < len(expected), "the agent finished before it was killed; nothing was proved"
    got = {e["key"]: (e["id"], e["seq"]) for e in collector.records}
    assert got == expected  # every record, with the id and seq it was stored with
    seqs = [e["seq"] for e in collector.records]
    assert seqs == sorted(seqs)


async def test_mqtt_ingest_through_the_running_agent(broker: Mosquitto, tmp_path: Path) -> None:
    agent = mqtt_agent(tmp_path, broker.port, ingest=True)

    def arrived() -> bool:
        return any(e["key"] == "sale:kassa-1:77" for e in collector.records)

    async with collecting(broker.port, f"{BASE}/#") as collector:
        agent.start()
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="till") as till:
                # The agent subscribes a moment after it starts; until then a
                # message has no taker. Resending is harmless (a duplicate).
                for _ in range(40):
                    await till.publish(f"{BASE}/ingest/sale", json.dumps(make_sale(77)).encode(), qos=1)
                    with contextlib.suppress(AssertionError):
                        await collector.wait_for(arrived, timeout_s=0.5, what="the sale")
                    if arrived():
                        break
            assert arrived(), f"the sale published on MQTT never came out: {agent.log_tail()}"
        finally:
            agent.terminate()
    envelope = next(e for e in collector.records if e["key"] == "sale:kassa-1:77")
    assert envelope["store_id"] == STORE_ID and envelope["data"]["receipt_no"] == 77
    assert [e["key"] for e in collector.records].count("sale:kassa-1:77") == 1
