"""The NATS server config of a chain: one account, one user per shop, each fenced to its own topics.

A shop's Kassabro publishes MQTT topics ``{topic_prefix}/{store_id}/...``; NATS's
MQTT gateway maps them to subjects ``{prefix}.{store_id}....`` (``/`` becomes
``.``), and a user's NATS permissions decide what the gateway lets through. So
each shop's user may publish only under its own ``{prefix}.{store_id}.>`` and
subscribe only to its own ``{prefix}.{store_id}.ingest.>`` (plus ``$MQTT.sub.>``,
the delivery subjects of the gateway's own JetStream consumers, which a QoS 1
subscription needs). A publish elsewhere is PUBACKed (MQTT 3.1.1 has no way
to say no) but dropped and logged as a "Publish Violation"; it never reaches a
stream. The ``fleet`` user (the consumer and the fleet view) may use the whole
account.

docs/fleet.md shows the rendered file; ``kassabro-fleet nats-config`` prints it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["CHAIN_ACCOUNT", "NodeAddresses", "accounts_block", "node_config", "subject_prefix"]

CHAIN_ACCOUNT = "CHAIN"
_STORE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def subject_prefix(topic_prefix: str) -> str:
    """The NATS subject of an MQTT topic prefix: ``kassabro/chain`` -> ``kassabro.chain``."""
    return topic_prefix.replace("/", ".")


def _quote(value: str) -> str:
    """A NATS config string (its syntax accepts JSON strings)."""
    return json.dumps(value)


def shop_permissions(store_id: str, topic_prefix: str = "kassabro") -> dict[str, dict[str, list[str]]]:
    """What one shop's user may do: publish under its own prefix, subscribe to its own ingest.

    Raises:
        ValueError: a store id NATS cannot carry as one subject token (a ``.``
            in it would split the token; the MQTT gateway of nats-server 2.9
            refuses such topics).
    """
    if not _STORE_ID.fullmatch(store_id):
        raise ValueError(f"store_id {store_id!r}: over NATS only letters, digits, '_' and '-' (no '.')")
    base = f"{subject_prefix(topic_prefix)}.{store_id}"
    return {
        "publish": {"allow": [f"{base}.>"]},
        # "{base}.ingest" too: an MQTT filter "ingest/#" also matches its parent level.
        "subscribe": {"allow": [f"{base}.ingest", f"{base}.ingest.>", "$MQTT.sub.>"]},
    }


def accounts_block(
    shops: Mapping[str, str],
    *,
    fleet_password: str,
    system_password: str,
    topic_prefix: str = "kassabro",
) -> str:
    """The ``accounts`` and ``system_account`` part of every node's config.

    Args:
        shops: store id -> that shop's MQTT password (the user name is the store id).
        fleet_password: the password of user ``fleet`` (consumer and fleet view).
        system_password: the password of user ``sys`` in the system account.
        topic_prefix: the agents' ``topic_prefix``.
    """
    users = [f"      {{user: {_quote('fleet')}, password: {_quote(fleet_password)}}}"]
    for store_id, password in shops.items():
        permissions = json.dumps(shop_permissions(store_id, topic_prefix))
        users.append(f"      {{user: {_quote(store_id)}, password: {_quote(password)}, permissions: {permissions}}}")
    return (
        "accounts {\n"
        f"  {CHAIN_ACCOUNT}: {{\n"
        "    jetstream: enabled\n"
        "    users: [\n" + "\n".join(users) + "\n    ]\n"
        "  }\n"
        f'  SYS: {{ users: [{{user: "sys", password: {_quote(system_password)}}}] }}\n'
        "}\n"
        "system_account: SYS\n"
    )


@dataclass(frozen=True)
class NodeAddresses:
    """Where one node listens: NATS clients, MQTT, routes, and HTTP monitoring."""

    name: str
    host: str
    client_port: int
    mqtt_port: int
    cluster_port: int
    monitor_port: int


def node_config(
    node: NodeAddresses,
    peers: Iterable[NodeAddresses],
    *,
    store_dir: str,
    accounts: str,
    cluster_name: str = "kassabro",
    max_file_store: str = "32G",
) -> str:
    """One node's complete config: JetStream, cluster routes to every peer, the MQTT gateway.

    The MQTT gateway needs JetStream and a ``server_name``; ``stream_replicas``
    3 keeps the gateway's own session and retained-message streams on every node.
    """
    routes = ", ".join(f"nats-route://{peer.host}:{peer.cluster_port}" for peer in peers)
    return (
        f"server_name: {_quote(node.name)}\n"
        f"listen: {_quote(f'{node.host}:{node.client_port}')}\n"
        f"http: {_quote(f'{node.host}:{node.monitor_port}')}\n"
        f"jetstream {{ store_dir: {_quote(store_dir)}, max_memory_store: 256MB, max_file_store: {max_file_store} }}\n"
        f"cluster {{ name: {_quote(cluster_name)}, listen: {_quote(f'{node.host}:{node.cluster_port}')}, routes: [{routes}] }}\n"
        f"mqtt {{ listen: {_quote(f'{node.host}:{node.mqtt_port}')}, stream_replicas: 3 }}\n" + accounts
    )
