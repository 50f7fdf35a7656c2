"""MQTT for the destination and the ingest source alike: one package both use.

- ``config``: the broker's keys (``MqttDestinationConfig``), the TLS context
  and password read at start (``load_access``).
- ``topics``: every topic name of a store (``Topics``).
- ``client``: client construction and ``Connection``, the supervised
  connection that reconnects by itself and publishes a batch in order.
- ``errors``: what a connection raises (``BrokerError`` and below); the
  destination translates them into delivery errors, the source never sees them.

Neither ``agent.destinations`` nor ``agent.sources`` is imported from here.
"""

from agent.mqtt.client import Connection, Session, ack, make_client
from agent.mqtt.config import BrokerAccess, MqttDestinationConfig, load_access, make_tls_context
from agent.mqtt.errors import (
    BrokerError,
    ConnectionLost,
    NotConnected,
    PauseSession,
    PublishError,
    PublishFailed,
    PublishRefused,
    PublishTimeout,
)
from agent.mqtt.topics import Topics

__all__ = [
    "BrokerAccess",
    "BrokerError",
    "Connection",
    "ConnectionLost",
    "MqttDestinationConfig",
    "NotConnected",
    "PauseSession",
    "PublishError",
    "PublishFailed",
    "PublishRefused",
    "PublishTimeout",
    "Session",
    "Topics",
    "ack",
    "load_access",
    "make_client",
    "make_tls_context",
]
