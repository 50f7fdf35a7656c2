"""The one registry of destination kinds: a kind's config model and its adapter, in one row."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import Config, build_config
from agent.configbase import SkusConfig
from agent.destinations.base import Destination
from agent.destinations.kinds import KINDS, AgentContext, build_destination

MINIMAL: dict[str, dict[str, Any]] = {
    "http": {"url": "http://127.0.0.1:9/in"},
    "hogia": {"base_url": "http://127.0.0.1:9/", "auth": "none"},
    "sharespine": {"base_url": "http://127.0.0.1:9/", "auth": "none"},
    "mqtt": {"host": "127.0.0.1"},
    "sie": {"dir": "/tmp/sie", "orgnr": "556677-8899", "company_name": "Butiken AB"},
}
"""The fewest keys that make a valid entry of each kind."""


def test_every_kind_has_a_minimal_example_here() -> None:
    assert set(MINIMAL) == set(KINDS)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_kind_builds_its_own_adapter_from_its_own_model(kind: str) -> None:
    [entry] = build_config(
        {
            "store_id": "store-001",
            # Setup (b) of docs/setups.md, so hogia and sharespine may send what they send.
            "flow": {"sales_to_hogia": "kassabro", "webshop_stock": "kassabro"},
            "destinations": [{"name": f"to-{kind}", "kind": kind, **MINIMAL[kind]}],
        },
        check_secrets=False,
    ).destinations
    assert type(entry) is KINDS[kind].config
    adapter = build_destination(entry, AgentContext(store_id="store-001", skus=SkusConfig()))
    assert isinstance(adapter, Destination)
    assert (adapter.kind, adapter.name) == (kind, f"to-{kind}")


def test_config_destinations_is_a_union_told_apart_by_kind() -> None:
    base = {"path": None, "store_id": "s", "data_dir": "/tmp", "log_level": "INFO"}
    sections = {"ingest": {}, "outbox": {}, "status": {}, "skus": {}}
    config = Config.model_validate(
        {
            **base,
            **sections,
            "destinations": [
                {"name": "a", "kind": "http", **MINIMAL["http"]},
                {"name": "b", "kind": "mqtt", **MINIMAL["mqtt"]},
            ],
        }
    )
    assert [type(d) for d in config.destinations] == [KINDS["http"].config, KINDS["mqtt"].config]
    with pytest.raises(ValidationError, match="ftp"):
        Config.model_validate({**base, **sections, "destinations": [{"name": "c", "kind": "ftp"}]})
    with pytest.raises(ValidationError, match="host"):  # an http key is no mqtt key
        Config.model_validate({**base, **sections, "destinations": [{"name": "d", "kind": "mqtt", "url": "x"}]})


def test_hooks_have_their_defaults_on_the_base() -> None:
    """The loop calls accept/next_due_at on every adapter; only SIE holds records back."""
    context = AgentContext(store_id="store-001", skus=SkusConfig())
    for kind in ("http", "hogia", "sharespine", "mqtt"):
        model = KINDS[kind].config.model_validate({"name": "x", "kind": kind, **MINIMAL[kind]})
        adapter = build_destination(model, context)
        assert adapter.accept is None and adapter.next_due_at() is None
