"""The stream the chain's records are read from, and the fleet's durable consumer on it.

The records are read from ``$MQTT_msgs``, the stream in which NATS's MQTT
gateway stores every QoS 1 publish *before* it sends the PUBACK (nats-server
2.9 ``mqttProcessPub``: a synchronous JetStream store of
``$MQTT.msgs.{subject}``). That is what makes a PUBACK mean "on 3 replicas":
a stream of our own over ``kassabro.*.*`` would capture the same publishes
only asynchronously, and in tests/fleet/test_chain.py such a stream lost 435
of 2,760 PUBACKed records while its leader was re-elected after a node was
SIGKILLed. So this module creates ``$MQTT_msgs`` itself before any shop
connects (the gateway takes the stream as it finds it), with the gateway's
settings plus stated limits:

- 3 replicas, file storage, subjects ``$MQTT.msgs.>``;
- interest retention: a message is kept until every durable consumer on it
  (here ``fleet-pg``) has acknowledged it, so nothing is dropped while the
  consumer is down, and nothing is kept after PostgreSQL has it;
- bounded by ``max_age`` (14 days, the agents' own outbox retention) and
  ``max_bytes`` (20 GiB), oldest dropped first, so a consumer gone for weeks
  cannot fill the cluster's disks.

The consumer ``fleet-pg`` (filter ``$MQTT.msgs.{prefix}.*.*``: records and
statuses, not ``ingest/...``) is one durable pull consumer that every worker
shares; JetStream hands each message to one worker and sends it again after
``ack_wait`` if that worker did not acknowledge it.
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

MQTT_STREAM = "$MQTT_msgs"
"""The MQTT gateway's stream of QoS 1 messages (nats-server 2.9's name for it)."""
MQTT_SUBJECT_PREFIX = "$MQTT.msgs"


@dataclass(frozen=True)
class StreamSettings:
    """The stream and consumer names and limits (docs/fleet.md states them)."""

    topic_prefix: str = "kassabro"
    stream: str = MQTT_STREAM
    durable: str = "fleet-pg"
    replicas: int = 3
    max_age: timedelta = timedelta(days=14)
    max_bytes: int = 20 * 1024**3
    ack_wait_s: float = 30.0
    max_ack_pending: int = 20_000

    @property
    def subject_prefix(self) -> str:
        """Where the chain's messages are in the stream: ``$MQTT.msgs.kassabro``."""
        return f"{MQTT_SUBJECT_PREFIX}.{subject_prefix(self.topic_prefix)}"

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            subjects=[f"{MQTT_SUBJECT_PREFIX}.>"],
            retention=RetentionPolicy.INTEREST,
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
            filter_subject=f"{self.subject_prefix}.*.*",
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self.max_ack_pending,
            max_waiting=512,
        )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings) -> None:
    """Create the stream unless it exists (then its config is left as the cluster has it).

    Run before any shop connects: with interest retention, a message stored
    while no durable consumer exists is dropped at once.
    """
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
