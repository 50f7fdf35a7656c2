"""Test helpers: a subscriber that survives broker restarts, envelopes, configs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from agent.mqtt import MqttDestinationConfig

STORE_ID = "store-1"


def envelopes(count: int, *, first_seq: int = 1) -> list[dict[str, Any]]:
    """Envelopes as the outbox hands them out, alternating the two record types."""
    out = []
    for seq in range(first_seq, first_seq + count):
        record_type = "sale" if seq % 3 else "stock_movement"
        out.append(
            {
                "id": str(uuid.uuid4()),
                "key": f"{record_type}:kassa-1:{seq}",
                "type": record_type,
                "store_id": STORE_ID,
                "seq": seq,
                "received_at": "2026-11-26T13:59:01.120Z",
                "clock_synced": True,
                "data": {"till_id": "kassa-1", "n": seq, "name": "Mjölk 1,5%"},
            }
        )
    return out


def config(port: int, **keys: Any) -> MqttDestinationConfig:
    """An mqtt destination on the test broker, with quick backoff."""
    values: dict[str, Any] = {
        "name": "central",
        "host": "127.0.0.1",
        "port": port,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.5,
        "publish_timeout_s": 5,
    }
    values.update(keys)
    return MqttDestinationConfig(**values)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    """Subscribes to ``topic`` with QoS 1 on a persistent session and records
    every message in arrival order, reconnecting when the broker comes back.

    One ``aiomqtt.Client`` is reused across reconnects so messages read just
    before a disconnect stay in its queue and are still recorded.
    """

    port: int
    topic: str
    client_id: str = "test-collector"
    tls_context: Any = None
    messages: list[Received] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    """Envelopes in arrival order with repeats dropped by id, as a consumer keeps them."""
    _ids: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        client = aiomqtt.Client(
            "127.0.0.1", self.port, identifier=self.client_id, clean_session=False, keepalive=10,
            tls_context=self.tls_context, max_queued_incoming_messages=0,
        )  # fmt: skip
        while True:
            try:
                async with client:
                    await client.subscribe(self.topic, qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        self._record(message)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def _record(self, message: aiomqtt.Message) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        received = Received(str(message.topic), payload, bool(message.retain))
        self.messages.append(received)
        if received.topic.endswith(("/sale", "/stock_movement")) and "/ingest/" not in received.topic:
            envelope = received.json()
            if envelope["id"] not in self._ids:
                self._ids.add(envelope["id"])
                self.records.append(envelope)
        self.changed.set()

    def on(self, topic: str) -> list[Received]:
        return [m for m in self.messages if m.topic == topic]

    async def wait_for(self, predicate: Any, timeout_s: float = 15.0, what: str = "a condition") -> None:
        """Wait (bounded) until ``predicate()`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {len(self.messages)} messages")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.5))


@contextlib.asynccontextmanager
async def collecting(port: int, topic: str, **kwargs: Any) -> AsyncIterator[Collector]:
    collector = Collector(port, topic, **kwargs)
    task = asyncio.create_task(collector.run())
    try:
        await asyncio.wait_for(collector.subscribed.wait(), 10)
        yield collector
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
