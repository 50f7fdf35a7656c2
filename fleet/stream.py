"""The chain's JetStream stream and the fleet's durable consumer on it.

``KASSABRO`` captures every shop's records and statuses, ``{prefix}.*.*``
(``{prefix}/{store}/{type}`` from the MQTT gateway; ``ingest/...`` has one
level more and is not captured), on 3 replicas in files, kept 14 days (at most 20 GiB, oldest dropped first) whether
or not they were consumed (limits retention): long enough to replay into a
rebuilt database, as long as the agents keep their own outbox. The consumer
``fleet-pg`` is one durable pull consumer that every worker shares; JetStream
hands each message to one worker and sends it again after ``ack_wait`` if that
worker did not acknowledge it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError

from fleet.natsconf import subject_prefix

__all__ = ["StreamSettings", "consumer_lag", "ensure_consumer", "ensure_stream"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSettings:
    """The stream and consumer names and limits (docs/fleet.md states them)."""

    topic_prefix: str = "kassabro"
    stream: str = "KASSABRO"
    durable: str = "fleet-pg"
    replicas: int = 3
    max_age: timedelta = timedelta(days=14)
    max_bytes: int = 20 * 1024**3
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20_000

    @property
    def subject_prefix(self) -> str:
        return subject_prefix(self.topic_prefix)

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.*.*"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            max_age=self.max_age.total_seconds(),
            max_bytes=self.max_bytes,
            discard=DiscardPolicy.OLD,
            duplicate_window=120.0,
        )

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            max_waiting=512,
        )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the stream unless it exists (then its config is left as the cluster has it)."""
    try:
        await js.stream_info(settings.stream)
        return
    except NotFoundError:
        pass
    try:
        await js.add_stream(settings.stream_config())
        log.info("created stream %s (%s replicas)", settings.stream, settings.replicas)
    except BadRequestError as exc:
        if "already in use" not in str(exc):
            raise
        log.info("stream %s: made by another worker a moment ago", settings.stream)


async def ensure_consumer(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the shared durable consumer unless it exists."""
    try:
        await js.consumer_info(settings.stream, settings.durable)
        return
    except NotFoundError:
        pass
    await js.add_consumer(settings.stream, settings.consumer_config())
    log.info("created consumer %s on %s", settings.durable, settings.stream)


async def consumer_lag(js: JetStreamContext, settings: StreamSettings) -> tuple[int, int]:
    """``(not yet delivered, delivered but not acknowledged)`` for the durable consumer."""
    info = await js.consumer_info(settings.stream, settings.durable)
    return int(info.num_pending or 0), int(info.num_ack_pending or 0)
