"""Destination kind ``mqtt``: every record to a broker with QoS 1 (contract §3).

Each record goes to ``{topic_prefix}/{store_id}/{type}`` with the envelope as
its JSON payload. A batch's publishes are all put in flight at once (paho
sends them over the one TCP connection in seq order, at most
``max_inflight`` unacknowledged) and the batch counts as delivered only when
every PUBACK is back; so the outbox still advances in seq order. A timeout or
a lost connection is a ``RetryableError``: the same batch is published again
and consumers drop the repeats by ``id``.

Presence: the connection's will sets the retained ``.../status`` to
``{"online": false}``; on every connect and every ``status_interval_s`` the
agent publishes a retained status JSON (backlog per destination, oldest
pending age, dead letters, version). docs/mqtt.md has the payloads.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

import agent
from agent import clock
from agent.backoff import RetryPolicy
from agent.destinations.base import Destination, PermanentError, RetryableError, SendResult
from agent.mqtt import (
    BrokerAccess,
    Connection,
    MqttDestinationConfig,
    NotConnected,
    PublishError,
    PublishRefused,
    Topics,
    load_access,
    make_client,
)
from agent.outbox.types import Batch, Envelope

__all__ = ["MqttDestination", "MqttDestinationConfig", "StatusSource"]

log = logging.getLogger(__name__)

StatusSource = Callable[[], Awaitable[dict[str, Any]]]
"""Returns the agent's status in the shape of ``GET /api/status`` (contract §4)."""

OFFLINE_WILL = json.dumps({"online": False}).encode()
_STATUS_KEYS = ("name", "pending", "oldest_pending_age_s", "dead_letters", "state")
_STATUS_SOURCE_TIMEOUT_S = 5.0


def encode_envelope(envelope: Envelope) -> bytes:
    """The payload of one record: the envelope as compact UTF-8 JSON."""
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class MqttDestination(Destination):
    """Publishes frozen batches to an MQTT broker and keeps the store's presence.

    Args:
        config: the destination's keys.
        store_id: the store; part of every topic.
        status_source: the agent's status (``/api/status`` shape), for the
            retained status message; None publishes presence only.
    """

    kind = "mqtt"

    def __init__(
        self,
        config: MqttDestinationConfig,
        *,
        store_id: str,
        status_source: StatusSource | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.store_id = store_id
        self.topics = Topics(config.topic_prefix, store_id)
        self._status_source = status_source
        self._access: BrokerAccess | None = None
        self._connection: Connection | None = None
        self._status_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether a broker connection is up right now."""
        return self._connection is not None and self._connection.session is not None

    @property
    def broker_in_use(self) -> str | None:
        """``host:port`` of the broker the live connection is on (one of ``hosts``); None while not connected."""
        return None if self._connection is None else self._connection.broker_in_use

    @property
    def last_error(self) -> str | None:
        """Why the last connection attempt failed, while not connected."""
        return None if self._connection is None else self._connection.last_error

    async def start(self) -> None:
        """Read the TLS and password files, then connect in the background.

        Never waits for the broker: the agent starts (and takes records in)
        while the broker is unreachable.

        Raises:
            ValueError: naming the key whose file cannot be used.
        """
        if self._connection is not None:
            return
        self._access = await asyncio.to_thread(load_access, self.config)
        will = aiomqtt.Will(self.topics.status, OFFLINE_WILL, qos=1, retain=True)
        access = self._access
        identifier = self.config.default_client_id(self.store_id)
        self._connection = Connection(
            label=f"mqtt {self.name!r}",
            make_client=lambda broker: make_client(
                self.config, access, identifier=identifier, will=will, broker=broker
            ),
            brokers=self.config.brokers,
            policy=RetryPolicy(self.config.backoff_base_s, self.config.backoff_cap_s),
            on_connect=self._publish_status,
        )
        self._connection.start()
        self._status_task = asyncio.create_task(self._status_loop(), name=f"mqtt {self.name!r} status")

    async def close(self) -> None:
        """Say ``{"online": false}`` (a clean disconnect drops the will), then disconnect."""
        if self._status_task is not None:
            self._status_task.cancel()
            await asyncio.gather(self._status_task, return_exceptions=True)
            self._status_task = None
        if self._connection is not None:
            await self._connection.close(before_disconnect=self._publish_offline)
            self._connection = None

    async def send(self, batch: Batch) -> SendResult:
        """Publish every record of the batch with QoS 1; return when all are acknowledged.

        Raises:
            RetryableError: not connected, the connection dropped, or a PUBACK
                did not come within ``publish_timeout_s``.
            PermanentError: paho refused a record outright (an impossible topic
                or a payload over MQTT's 256 MiB).
        """
        if self._connection is None:
            await self.start()
        assert self._connection is not None
        messages = ((self.topics.record(record["type"]), encode_envelope(record)) for record in batch.records)
        try:
            session = await self._connection.wait_session(self.config.publish_timeout_s)
            await session.publish_many(
                messages, timeout_s=self.config.publish_timeout_s, max_inflight=self.config.max_inflight
            )
        except NotConnected as exc:
            raise RetryableError(str(exc)) from exc
        except PublishRefused as exc:
            raise PermanentError(f"mqtt {self.name!r}: record refused by the client: {exc.reason}") from exc
        except PublishError as exc:
            raise RetryableError(f"mqtt {self.name!r}: {exc}") from exc
        return SendResult()

    async def status_payload(self) -> dict[str, Any]:
        """The retained status JSON: presence, version, each destination's backlog, problems and tills."""
        payload: dict[str, Any] = {
            "online": True,
            "store_id": self.store_id,
            "version": agent.__version__,
            "at": clock.iso_now(),
        }
        if self._status_source is None:
            return payload
        try:
            status = await asyncio.wait_for(self._status_source(), _STATUS_SOURCE_TIMEOUT_S)
        except Exception as exc:
            log.warning("mqtt %r: status source failed: %s", self.name, exc)
            return payload
        if "uptime_s" in status:
            payload["uptime_s"] = status["uptime_s"]
        payload["destinations"] = [
            {key: entry.get(key) for key in _STATUS_KEYS}
            for entry in status.get("destinations", [])
            if isinstance(entry, dict)
        ]
        payload["problems"] = list(status.get("problems") or [])
        payload["tills"] = list(status.get("tills") or [])
        return payload

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        payload = json.dumps(await self.status_payload()).encode()
        await client.publish(self.topics.status, payload, qos=1, retain=True, timeout=self.config.publish_timeout_s)

    async def _publish_offline(self, client: aiomqtt.Client) -> None:
        payload = {"online": False, "store_id": self.store_id, "version": agent.__version__, "at": clock.iso_now()}
        await client.publish(
            self.topics.status, json.dumps(payload).encode(), qos=1, retain=True, timeout=self.config.publish_timeout_s
        )

    async def _status_loop(self) -> None:
        """Refresh the retained status every ``status_interval_s`` while connected."""
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            session = None if self._connection is None else self._connection.session
            if session is None:
                continue  # the next connect publishes it anyway
            try:
                await self._publish_status(session.client)
            except aiomqtt.MqttError as exc:
                log.info("mqtt %r: status not published: %s", self.name, exc)
