"""The broker dies mid-stream, the agent dies uncleanly: nothing is lost, presence follows."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from agent.destinations.base import RetryableError
from agent.destinations.mqtt import MqttDestination
from agent.outbox.types import Batch
from tests.mqtt.conftest import Mosquitto
from tests.mqtt.helpers import STORE_ID, Collector, collecting, config, envelopes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BASE = f"kassabro/{STORE_ID}"


async def deliver(destination: MqttDestination, batches: list[Batch], collector: Collector) -> int:
    """Send every batch in order the way the delivery loop would: a batch is
    resent until it is acknowledged. Returns how many batches were left when
    the first send failed (0: none failed).

    Before each batch it waits until the consumer has the previous ones.
    Mosquitto holds what it acknowledged but has not yet forwarded in memory
    until its next autosave, so a SIGKILL may lose that: the broker's
    durability, not the agent's. With the consumer caught up, the only records
    at risk when the broker dies are the ones the agent has not had
    acknowledged, which is what this test is about.
    """
    left_at_first_failure = 0
    for index, batch in enumerate(batches):
        before = batch.first_seq - 1
        await collector.wait_for(lambda: len(collector.records) >= before, what="the consumer")  # noqa: B023
        for _ in range(300):
            try:
                await destination.send(batch)
                break
            except RetryableError:
                left_at_first_failure = left_at_first_failure or len(batches) - index
                await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"batch {batch.batch_id} never acknowledged")
    return left_at_first_failure


async def test_broker_killed_mid_stream_loses_nothing_and_the_agent_reconnects(broker: Mosquitto) -> None:
    records = envelopes(2000)
    batches = [Batch(f"b{i}", "central", records[i : i + 50]) for i in range(0, len(records), 50)]
    destination = MqttDestination(config(broker.port, publish_timeout_s=2), store_id=STORE_ID)
    sent_before_kill: list[int] = []

    async def kill_and_restart() -> None:
        await collector.wait_for(lambda: len(collector.records) >= 300, what="the stream to start")
        broker.kill()
        sent_before_kill.append(len(collector.records))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(broker.start)

    async with collecting(broker.port, f"{BASE}/#") as collector:
        broker.save()  # the consumer's subscription survives the broker's death
        await destination.start()
        try:
            await asyncio.gather(deliver(destination, batches, collector), kill_and_restart())
            await collector.wait_for(lambda: len(collector.records) >= len(records), timeout_s=30, what="every record")
            # It came back online by itself: a status after the restart says so.
            await collector.wait_for(
                lambda: sum(1 for m in collector.on(f"{BASE}/status") if m.json()["online"]) >= 2,
                what="the status after reconnecting",
            )
        finally:
            await destination.close()
    assert sent_before_kill[0] < len(records) - 300, "the broker died after the stream ended; nothing was proved"
    assert [e["seq"] for e in collector.records] == list(range(1, len(records) + 1))
    assert collector.records == records


def start_agent(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mqtt.agent_process", str(port)], cwd=REPO, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"started"
    return proc


async def test_status_goes_offline_through_the_will_and_back_online(broker: Mosquitto) -> None:
    topic = f"{BASE}/status"
    async with collecting(broker.port, topic) as collector:
        agent = start_agent(broker.port)
        try:
            await collector.wait_for(lambda: collector.on(topic) and collector.on(topic)[-1].json()["online"],
                                     what="online")  # fmt: skip
            agent.kill()  # SIGKILL: no DISCONNECT, so the broker publishes the will
            agent.wait(5)
            await collector.wait_for(lambda: not collector.on(topic)[-1].json()["online"], what="the will")
            assert collector.on(topic)[-1].json() == {"online": False}
            agent = start_agent(broker.port)
            await collector.wait_for(lambda: collector.on(topic)[-1].json()["online"], what="online again")
        finally:
            agent.kill()
            agent.wait(5)
