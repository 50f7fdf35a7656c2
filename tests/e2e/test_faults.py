"""One test per fault, through the whole agent and the Hogia, Sharespine and receiver simulators.

Each test breaks the destinations with the simulators' own fault knobs, lets
the till keep selling, then checks that every ledger still equals the
acknowledged ingest exactly once, in seq order, and that the status API told
the truth meanwhile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.simulators.till import Till, run_till
from tests.e2e.conftest import (
    RunningAgent,
    Shop,
    assert_all_ledgers,
    assert_backend_ledger,
    assert_hogia_ledger,
    assert_sharespine_ledger,
    assert_till_acknowledged,
    movement,
    stored,
)
from tests.helpers import eventually

pytestmark = pytest.mark.slow

NAMES = ("hogia", "sharespine", "backend")


async def sell(agent: RunningAgent, count: int, *, first: int, seed: int = 1) -> Any:
    till = Till(seed=seed, first_receipt_no=first, movement_rate=0.15)
    stats = await run_till(agent.ingest_url, 500.0, count=count, till=till, concurrency=4)
    assert stats.acknowledged == count, stats.failed
    return stats


async def test_destinations_down_then_back_go_offline_keep_everything_and_drain(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)
    await shop.hogia.faults(down="503")
    await shop.sharespine.faults(down="close")
    await shop.backend.faults(down="close")
    stats = await sell(agent, 60, first=1000)

    async def all_offline() -> bool:
        return [(await agent.destination(n))["state"] for n in NAMES] == ["offline"] * 3

    await eventually(all_offline, 20, "all three offline")
    box = stored(agent.db)

    async def whole_backlog_shown() -> bool:  # /api/status is computed at most every 0.5 s
        return [d["pending"] for d in (await agent.api_status())["destinations"] if d["name"] == "backend"] == [
            len(box.rows)
        ]

    await eventually(whole_backlog_shown, 5, "the backlog on /api/status")
    status = {d["name"]: d for d in (await agent.api_status())["destinations"]}
    assert status["sharespine"]["pending"] == len(box.rows)  # sales as orders too
    assert all(status[n]["state"] == "offline" and status[n]["last_error"] for n in NAMES)
    assert "503" in status["hogia"]["last_error"]
    assert (await shop.backend.ledger())["records"] == []

    for sim in shop.all().values():
        await sim.faults(down="off")
    await eventually(agent.drained, 30, "drained after the outage")
    assert_till_acknowledged(stats, box)
    await assert_all_ledgers(shop, box)
    for name in NAMES:  # delivering again; "degraded" while the failures are recent
        dest = await agent.destination(name)
        assert dest["state"] in ("online", "degraded") and dest["failing_since"] is None, dest


async def test_a_429_storm_is_waited_out_as_retry_after_says(shop: Shop, start_agent: Any) -> None:
    # Backoff alone would retry after at most 50 ms; Retry-After asks for 1 s.
    overrides = {"backoff_base_s": 0.05, "backoff_cap_s": 5.0}
    agent: RunningAgent = await start_agent(shop, hogia=overrides, sharespine=overrides, backend=overrides)
    for sim in shop.all().values():
        await sim.faults(throttle_next=3, retry_after_s=1)
    stats = await sell(agent, 30, first=2000)

    await eventually(agent.drained, 30, "drained after the storm")
    assert_till_acknowledged(stats, box := stored(agent.db))
    await assert_all_ledgers(shop, box)
    for name, sim in shop.all().items():
        throttled = [h for h in sim.hits if h.status == 429]
        assert len(throttled) == 3, name
        for hit in throttled:
            later = [h.arrived for h in sim.hits if h.arrived > hit.arrived]
            assert later, f"{name}: nothing was sent after a 429"
            assert hit.answered is not None
            # No request before Retry-After has passed (10 ms for timer granularity).
            assert min(later) - hit.answered >= 0.99, f"{name}: resent {min(later) - hit.answered:.3f} s after 429"


async def test_server_errors_are_retried_until_accepted(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)
    await shop.hogia.faults(fail_next=4, fail_status=500)
    await shop.sharespine.faults(fail_next=4, fail_status=503)
    await shop.backend.faults(fail_next=4, fail_status=502)
    stats = await sell(agent, 40, first=3000)

    await eventually(agent.drained, 30, "drained after the 5xx")
    assert_till_acknowledged(stats, box := stored(agent.db))
    await assert_all_ledgers(shop, box)
    for name, sim in shop.all().items():
        assert [h.status for h in sim.hits].count(500 if name == "hogia" else 503 if name == "sharespine" else 502) == 4
        assert (await sim.fault_state())["fail_next"] == 0
        assert (await agent.destination(name))["failing_since"] is None


async def test_timeouts_are_retried_and_nothing_is_booked_twice(shop: Shop, start_agent: Any) -> None:
    slow = {"timeout_s": 0.3}
    agent: RunningAgent = await start_agent(shop, hogia=slow, sharespine=slow, backend=slow)
    for sim in shop.all().values():
        await sim.faults(slow_s=0.6)
    stats = await sell(agent, 30, first=4000)

    async def timing_out() -> bool:
        for name in NAMES:
            dest = await agent.destination(name)
            if dest["state"] != "offline" or "timed out" not in (dest["loop_error"] or ""):
                return False
        return all(len(sim.hits) >= 2 for sim in shop.all().values())

    await eventually(timing_out, 20, "every destination timing out")
    for sim in shop.all().values():
        await sim.faults(slow_s=0)
    await eventually(agent.drained, 30, "drained once the answers are quick again")
    # A timed-out request the simulator still committed was sent again: the
    # simulators deduplicate it, so every ledger holds each record once.
    assert_till_acknowledged(stats, box := stored(agent.db))
    await assert_all_ledgers(shop, box)


async def test_a_lost_answer_is_a_duplicate_on_the_wire_not_in_the_ledger(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)
    await shop.hogia.faults(lose_answer_next=2, lose_answer_mode="drop")
    await shop.sharespine.faults(lose_answer_next=2, lose_answer_mode="502")
    await shop.backend.faults(lose_answer_next=2, lose_answer_mode="drop")
    stats = await sell(agent, 40, first=5000)

    await eventually(agent.drained, 30, "drained after lost answers")
    assert_till_acknowledged(stats, box := stored(agent.db))
    await assert_all_ledgers(shop, box)
    backend = await shop.backend.ledger()
    keys = [h.idempotency_key for h in shop.backend.hits]
    assert backend["idempotent_replays"] == 2
    assert len(keys) - len(set(keys)) == 2, "the two lost batches went out again with the same Idempotency-Key"
    assert (await shop.hogia.ledger())["duplicates"] >= 2
    assert (await shop.sharespine.ledger())["duplicates"] >= 2


async def test_one_poison_record_among_500_is_the_only_dead_letter(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop, derive=False, backend={"batch_max": 100})
    for sim in shop.all().values():
        await sim.faults(refuse_skus=["POISON"])
    # 500 deliveries, one of an article every destination refuses for good.
    records = [movement(n, sku="POISON" if n == 250 else "7310865004703") for n in range(1, 501)]
    for start in range(0, 500, 100):
        await agent.post_batch([], records[start : start + 100])
    box = stored(agent.db)
    assert len(box.rows) == 500
    poison = box.rows[249]
    assert poison["data"]["sku"] == "POISON"

    await eventually(agent.drained, 150, "drained past the poison record")
    only = frozenset({poison["id"]})
    assert_backend_ledger(await shop.backend.ledger(), box, except_ids=only)
    assert_hogia_ledger(await shop.hogia.ledger(), box, except_ids=only)
    assert_sharespine_ledger(await shop.sharespine.ledger(), box, orders=True, except_ids=only)
    letters = await agent.agent.outbox.list_dead_letters()
    assert sorted((d.destination, d.record_id) for d in letters) == sorted((n, poison["id"]) for n in NAMES)
    assert all("422" in f"{d.status} {d.error}" and "POISON" in d.error for d in letters), letters

    async def shown() -> dict[str, tuple[Any, ...]]:
        # /api/status is computed at most every half second: wait for the fresh view.
        status = {d["name"]: d for d in (await agent.api_status())["destinations"]}
        return {n: (status[n]["state"], status[n]["pending"], status[n]["dead_letters"]) for n in NAMES}

    async def settled() -> bool:
        return await shown() == {n: ("degraded", 0, 1) for n in NAMES}

    await eventually(settled, 10, "the status page shows the drain")
    assert await shown() == {n: ("degraded", 0, 1) for n in NAMES}


async def test_one_destination_down_never_holds_up_the_others(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)
    await shop.sharespine.faults(down="close")
    backlog = []
    tills = []
    for round_no in range(3):
        tills.append(await sell(agent, 30, first=6000 + 100 * round_no, seed=round_no))
        await eventually(lambda: agent.drained("hogia", "backend"), 20, "hogia and backend caught up")
        box = stored(agent.db)
        assert_backend_ledger(await shop.backend.ledger(), box)
        assert_hogia_ledger(await shop.hogia.ledger(), box)
        sharespine = await agent.destination("sharespine")
        assert sharespine["state"] == "offline"
        assert sharespine["pending"] == len(box.rows)
        backlog.append(sharespine["pending"])
    assert backlog == sorted(backlog) and backlog[0] < backlog[-1], f"backlog did not grow: {backlog}"
    assert (await shop.sharespine.ledger())["changes"] == []

    await shop.sharespine.faults(down="off")
    await eventually(agent.drained, 30, "sharespine drained")
    assert_till_acknowledged(tills, box)
    await assert_all_ledgers(shop, box)


async def test_cutting_and_restoring_repeatedly_never_loses_or_doubles_a_record(shop: Shop, start_agent: Any) -> None:
    agent: RunningAgent = await start_agent(shop)
    selling = asyncio.create_task(
        run_till(agent.ingest_url, 100.0, count=150, till=Till(seed=9, first_receipt_no=7000), concurrency=2)
    )
    for _ in range(4):
        for sim in shop.all().values():
            await sim.faults(down="close")
        await asyncio.sleep(0.25)
        for sim in shop.all().values():
            await sim.faults(down="off")
        await asyncio.sleep(0.1)
    stats = await asyncio.wait_for(selling, 30)
    await eventually(agent.drained, 30, "drained after a flaky hour")
    assert_till_acknowledged(stats, box := stored(agent.db))
    await assert_all_ledgers(shop, box)
