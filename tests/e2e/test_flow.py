"""Till -> agent -> Hogia, Sharespine and a chain backend, all real, over loopback."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.simulators.till import Till, run_till
from tests.e2e.conftest import (
    RunningAgent,
    Shop,
    assert_all_ledgers,
    assert_till_acknowledged,
    stored,
)
from tests.helpers import eventually

pytestmark = pytest.mark.slow

OPENING = datetime(2026, 11, 26, 9, 0, tzinfo=ZoneInfo("Europe/Stockholm"))


async def test_a_shop_day_reaches_every_destination_exactly_once_in_order(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)
    till = Till(seed=11, first_receipt_no=100_001, movement_rate=0.1, return_rate=0.05)
    stats = await run_till(agent.ingest_url, 400.0, count=300, till=till, concurrency=4)
    assert stats.acknowledged == 300

    await eventually(agent.drained, 60, "every destination drained")
    box = stored(agent.db)
    assert_till_acknowledged(stats, box)
    assert len(box.sales) + len([m for m in box.movements if m["data"]["reason"] not in ("sale", "return")]) == 300
    await assert_all_ledgers(shop, box)

    status = await agent.api_status()
    states = {d["name"]: (d["state"], d["pending"], d["dead_letters"]) for d in status["destinations"]}
    assert states == {"hogia": ("online", 0, 0), "sharespine": ("online", 0, 0), "backend": ("online", 0, 0)}
    assert status["ingest"]["accepted_total"] >= 300
    # The OAuth2 token was fetched once and reused, not once per order.
    assert (await shop.hogia.ledger())["tokens_issued"] == 1


async def test_a_record_posted_twice_is_stored_and_delivered_once(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)

    def same_till() -> Till:
        return Till(seed=3, first_receipt_no=500, clock=lambda: OPENING)

    first = await run_till(agent.ingest_url, 200.0, count=40, till=same_till())
    # The till loses its answers and posts the same 40 records again.
    again = await run_till(agent.ingest_url, 200.0, count=40, till=same_till())
    assert (first.created, again.duplicates) == (40, 40)
    assert again.accepted == first.accepted

    await eventually(agent.drained, 30, "every destination drained")
    box = stored(agent.db)
    assert_till_acknowledged(first, box)
    await assert_all_ledgers(shop, box)
