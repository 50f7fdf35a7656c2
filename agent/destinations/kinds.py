"""Every destination kind in one table: its config model and how its adapter is built.

A new kind is one module (its ``*DestinationConfig`` with ``kind: Literal[...]``
and its adapter) and one row here; ``agent.config`` validates
``[[destinations]]`` by this table and ``agent.app`` builds the adapters by it.

The config models are imported here, because validating a config needs them
all; an adapter's module only when one of its kind is built, so a command
that only reads the config, or a shop without an SIE or MQTT destination,
does not pay for loading the SIE exporter or an MQTT client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar, Union

from pydantic import Field

from agent.configbase import DestinationBase, SkusConfig
from agent.destinations.base import Destination
from agent.destinations.hogia import HogiaDestinationConfig
from agent.destinations.http import HttpDestinationConfig
from agent.destinations.sharespine import SharespineDestinationConfig
from agent.mqtt.config import MqttDestinationConfig
from agent.sie.config import SieDestinationConfig

if TYPE_CHECKING:
    from agent.destinations.mqtt import StatusSource
    from agent.outbox.service import Outbox
    from agent.register import ArticleRegister

ConfigT = TypeVar("ConfigT", bound=DestinationBase)


@dataclass(frozen=True)
class AgentContext:
    """What an adapter may take from the running agent besides its own keys.

    Args:
        store_id: the store (in bodies and topics).
        skus: ``[skus]``, the article numbers of fees and discounts.
        status_source: the agent's ``/api/status``, for MQTT's retained status.
        outbox: the agent's outbox, for the books' runs (SIE reads the sales it books).
        register: Hogia Smart's article register on the Pi (hogia fills it, sharespine filters by it).
    """

    store_id: str
    skus: SkusConfig
    status_source: StatusSource | None = None
    outbox: Outbox | None = None
    register: ArticleRegister | None = None


@dataclass(frozen=True)
class Kind(Generic[ConfigT]):
    """One destination kind: the model of its keys, and its adapter built from a validated one."""

    config: type[ConfigT]
    build: Callable[[ConfigT, AgentContext], Destination]


def _http(config: HttpDestinationConfig, agent: AgentContext) -> Destination:
    from agent.destinations.http import HttpDestination

    return HttpDestination(config, store_id=agent.store_id)


def _hogia(config: HogiaDestinationConfig, agent: AgentContext) -> Destination:
    from agent.destinations.hogia import HogiaDestination

    return HogiaDestination(config, skus=agent.skus, register=agent.register)


def _sharespine(config: SharespineDestinationConfig, agent: AgentContext) -> Destination:
    from agent.destinations.sharespine import SharespineDestination

    return SharespineDestination(config, store_id=agent.store_id, register=agent.register)


def _mqtt(config: MqttDestinationConfig, agent: AgentContext) -> Destination:
    from agent.destinations.mqtt import MqttDestination

    return MqttDestination(config, store_id=agent.store_id, status_source=agent.status_source)


def _sie(config: SieDestinationConfig, agent: AgentContext) -> Destination:
    from agent.destinations.sie import SieDestination

    return SieDestination(config, store_id=agent.store_id, gift_card_skus=agent.skus.gift_card, outbox=agent.outbox)


KINDS: dict[str, Kind[Any]] = {
    "http": Kind(HttpDestinationConfig, _http),
    "hogia": Kind(HogiaDestinationConfig, _hogia),
    "sharespine": Kind(SharespineDestinationConfig, _sharespine),
    "mqtt": Kind(MqttDestinationConfig, _mqtt),
    "sie": Kind(SieDestinationConfig, _sie),
}
"""kind -> its config model and adapter; the one registry of destination kinds."""

if TYPE_CHECKING:
    DestinationConfig = DestinationBase
else:
    DestinationConfig = Annotated[Union[tuple(kind.config for kind in KINDS.values())], Field(discriminator="kind")]  # noqa: UP007
"""A validated ``[[destinations]]`` entry: one of the kinds' models, told apart by ``kind``.

pydantic reads it as the discriminated union of every model in ``KINDS``; for
the type checker it is their common base, so code that needs a kind's own keys
narrows with ``isinstance``.
"""


def build_destination(config: DestinationBase, agent: AgentContext) -> Destination:
    """The adapter for one validated ``[[destinations]]`` entry."""
    kind: Kind[Any] = KINDS[config.kind]
    return kind.build(config, agent)
