"""MQTT ingest: a till publishes records on the broker, the agent takes them in.

For an mqtt destination with ``ingest = true`` the agent subscribes (QoS 1, a
persistent session of its own, client id ``{destination client id}-ingest``)
to ``{prefix}/{store_id}/ingest/sale``, ``.../ingest/stock_movement`` and
``.../ingest/z_report``. Each
message is one record and goes through ``agent.ingest.Ingestor``, exactly like
``POST /v1/sales``.

A message is acknowledged (PUBACK) only after its answer is final, which
keeps contract §2's rule "acknowledged only once durably committed":

- 201 / 200 (stored, or a harmless duplicate): acknowledged.
- 422 / 409 (invalid, conflict): answered on ``.../ingest/rejected`` with the
  reason and the record's key, then acknowledged: resending cannot help.
- 503 / 507 (shutting down, storage full): answered on ``.../ingest/rejected``
  too, but not acknowledged; the session ends, and after a growing backoff the
  agent reconnects and the broker delivers the message again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiomqtt

from agent.backoff import RetryPolicy
from agent.ingest import Ingestor
from agent.mqtt import (
    Connection,
    MqttDestinationConfig,
    PauseSession,
    Topics,
    ack,
    load_access,
    make_client,
)
from agent.records import RECORD_TYPES

log = logging.getLogger(__name__)

_KEY_FIELDS = {"sale": "receipt_no", "stock_movement": "movement_id", "z_report": "z_no"}
_FINAL_REFUSALS = frozenset({409, 413, 415, 422})


def natural_key(record_type: str, payload: bytes) -> str | None:
    """``sale:{till_id}:{receipt_no}``, ``stock_movement:{till_id}:{movement_id}`` or
    ``z_report:{till_id}:{z_no}`` when the payload names them, so a rejection can
    say which record it was."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    till_id, number = data.get("till_id"), data.get(_KEY_FIELDS[record_type])
    if isinstance(till_id, str) and isinstance(number, (str, int)) and not isinstance(number, bool):
        return f"{record_type}:{till_id}:{number}"
    return None


class MqttIngestSource:
    """Takes records in from the broker of one mqtt destination.

    Args:
        config: the destination's keys (broker, TLS, credentials, prefix).
        store_id: the store; part of every topic.
        ingestor: the one path into the outbox.
    """

    def __init__(self, config: MqttDestinationConfig, *, store_id: str, ingestor: Ingestor) -> None:
        self.config = config
        self.store_id = store_id
        self.ingestor = ingestor
        self.topics = Topics(config.topic_prefix, store_id)
        self._types = {self.topics.ingest(t): t for t in RECORD_TYPES}
        self._connection: Connection | None = None

    @classmethod
    def from_config(cls, config: MqttDestinationConfig, *, store_id: str, ingestor: Ingestor) -> MqttIngestSource:
        return cls(config, store_id=store_id, ingestor=ingestor)

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.session is not None

    @property
    def running(self) -> bool:
        """True while the connection task lives (connected or retrying); False once it ended or before start."""
        return self._connection is not None and self._connection.running

    async def start(self) -> None:
        """Connect and subscribe in the background; never waits for the broker."""
        if self._connection is not None:
            return
        access = await asyncio.to_thread(load_access, self.config)
        identifier = self.config.default_client_id(self.store_id) + "-ingest"
        self._connection = Connection(
            label=f"mqtt ingest {self.config.name!r}",
            make_client=lambda broker: make_client(
                self.config, access, identifier=identifier, manual_ack=True, broker=broker
            ),
            brokers=self.config.brokers,
            policy=RetryPolicy(self.config.backoff_base_s, self.config.backoff_cap_s),
            on_connect=self._subscribe,
            on_message=self._on_message,
        )
        self._connection.start()

    async def close(self) -> None:
        """Disconnect; messages not yet acknowledged stay with the broker."""
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        await client.subscribe([(topic, 1) for topic in self._types])

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = str(message.topic)
        record_type = self._types.get(topic)
        if record_type is None:  # not ours: a leftover subscription of this session, say
            ack(client, message)
            return
        payload = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
        answer = await self.ingestor.one(record_type, payload)
        if answer.ok:
            ack(client, message)
            return
        await self._reject(client, topic, record_type, payload, answer.status, answer.body)
        if answer.status in _FINAL_REFUSALS:
            ack(client, message)
            return
        # 503 / 507: leave it unacknowledged; the broker delivers it again after we reconnect.
        raise PauseSession(
            f"ingest answered {answer.status} ({answer.body.get('error')}); the broker keeps the message"
        )

    async def _reject(
        self, client: aiomqtt.Client, topic: str, record_type: str, payload: bytes, status: int, body: dict[str, Any]
    ) -> None:
        """Publish the reason on ``.../ingest/rejected`` (QoS 1, not retained)."""
        answer: dict[str, Any] = {"topic": topic, "status": status}
        key = body.get("key") or natural_key(record_type, payload)
        if key:
            answer["key"] = key
        answer.update({k: v for k, v in body.items() if k != "key"})
        log.info("mqtt ingest: %s refused with %d (%s)", key or topic, status, body.get("error"))
        await client.publish(self.topics.rejected, json.dumps(answer, ensure_ascii=False).encode(), qos=1,
                             timeout=self.config.publish_timeout_s)  # fmt: skip
