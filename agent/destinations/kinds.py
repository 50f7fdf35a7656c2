"""Every destination kind in one table: its config model and how its adapter is built.

A new kind is one module (its ``*DestinationConfig`` with ``kind: Literal[...]``
and its adapter) and one row here; ``agent.config`` validates
``[[destinations]]`` by this table and ``agent.app`` builds the adapters by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from agent.configbase import DestinationBase, SkusConfig
from agent.destinations.base import Destination
from agent.destinations.hogia import HogiaDestination, HogiaDestinationConfig
from agent.destinations.http import HttpDestination, HttpDestinationConfig
from agent.destinations.mqtt import MqttDestination, MqttDestinationConfig, StatusSource
from agent.destinations.sharespine import SharespineDestination, SharespineDestinationConfig
from agent.destinations.sie import SieDestination, SieDestinationConfig
from agent.outbox.service import Outbox

ConfigT = TypeVar("ConfigT", bound=DestinationBase)


@dataclass(frozen=True)
class AgentContext:
    """What an adapter may take from the running agent besides its own keys.

    Args:
        store_id: the store (in bodies and topics).
        skus: ``[skus]``, the article numbers of fees and discounts.
        status_source: the agent's ``/api/status``, for MQTT's retained status.
        outbox: the agent's outbox, for the books' runs (SIE reads the sales it books).
    """

    store_id: str
    skus: SkusConfig
    status_source: StatusSource | None = None
    outbox: Outbox | None = None


@dataclass(frozen=True)
class Kind(Generic[ConfigT]):
    """One destination kind: the model of its keys, and its adapter built from a validated one."""

    config: type[ConfigT]
    build: Callable[[ConfigT, AgentContext], Destination]


KINDS: dict[str, Kind[Any]] = {
    "http": Kind(HttpDestinationConfig, lambda config, agent: HttpDestination(config, store_id=agent.store_id)),
    "hogia": Kind(HogiaDestinationConfig, lambda config, agent: HogiaDestination(config, skus=agent.skus)),
    "sharespine": Kind(
        SharespineDestinationConfig, lambda config, agent: SharespineDestination(config, store_id=agent.store_id)
    ),
    "mqtt": Kind(
        MqttDestinationConfig,
        lambda config, agent: MqttDestination(config, store_id=agent.store_id, status_source=agent.status_source),
    ),
    "sie": Kind(
        SieDestinationConfig,
        lambda config, agent: SieDestination(
            config, store_id=agent.store_id, gift_card_skus=agent.skus.gift_card, outbox=agent.outbox
        ),
    ),
}
"""kind -> its config model and adapter; the one registry of destination kinds."""


def build_destination(config: DestinationBase, agent: AgentContext) -> Destination:
    """The adapter for one validated ``[[destinations]]`` entry."""
    kind: Kind[Any] = KINDS[config.kind]
    return kind.build(config, agent)
