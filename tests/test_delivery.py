"""The delivery loop against a real receiver on loopback and a real outbox file."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agent.backoff import RetryPolicy
from agent.delivery import DeliveryLoop
from agent.destinations.http import HttpDestination, HttpDestinationConfig
from agent.outbox.service import Outbox
from agent.records import parse_record
from agent.simulators import receiver
from agent.simulators._server import serve
from tests.helpers import eventually, make_sale


@pytest.fixture
async def outbox(outbox: Outbox) -> Outbox:
    """The shared outbox with the ``backend`` destination registered."""
    await outbox.call(lambda s: s.register_destinations([("backend", "http", ["sale"])]))
    return outbox


@pytest.fixture
async def backend() -> AsyncIterator[str]:
    async with serve(receiver.create_app()) as url:
        yield url


async def ledger(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{url}/_ledger")).json()


async def faults(url: str, **knobs: Any) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{url}/_faults", json=knobs)).raise_for_status()


async def start_loop(outbox: Outbox, url: str, **policy: float) -> tuple[DeliveryLoop, HttpDestination]:
    dest = HttpDestination(
        HttpDestinationConfig(name="backend", url=f"{url}/ingest", timeout_s=2.0), store_id="store-001"
    )
    await dest.start()
    loop = DeliveryLoop(
        outbox, dest, policy=RetryPolicy(base_s=policy.get("base", 0.05), cap_s=policy.get("cap", 0.2)), batch_max=50
    )
    loop.start()
    return loop, dest


async def enqueue_sales(outbox: Outbox, numbers: range, **kw: Any) -> list[str]:
    ids = []
    for n in numbers:
        result = await outbox.enqueue([parse_record("sale", make_sale(n, **kw))])
        ids.append(result[0].id)
    return ids


async def test_every_record_arrives_once_in_seq_order(outbox: Outbox, backend: str) -> None:
    loop, dest = await start_loop(outbox, backend)
    try:
        ids = await enqueue_sales(outbox, range(1, 121))

        async def all_there() -> bool:
            return len((await ledger(backend))["records"]) == 120

        async def all_acknowledged() -> bool:
            # The receiver holds the last batch a moment before the loop commits its completion.
            return (await outbox.destination_stats())[0]["pending"] == 0

        await eventually(all_there)
        await eventually(all_acknowledged)
        got = (await ledger(backend))["records"]
        assert [r["id"] for r in got] == ids
        assert [r["seq"] for r in got] == sorted(r["seq"] for r in got)
        stats = (await outbox.destination_stats())[0]
        assert stats["pending"] == 0 and stats["last_success_at"] is not None
        assert loop.state == "online"
    finally:
        await loop.stop()
        await dest.close()


async def test_poison_record_alone_becomes_a_dead_letter(outbox: Outbox, backend: str) -> None:
    await faults(backend, refuse_skus=["POISON"], refuse_mode="422")
    ids = await enqueue_sales(outbox, range(1, 250))
    ids += await enqueue_sales(outbox, range(250, 251), sku="POISON")
    ids += await enqueue_sales(outbox, range(251, 501))
    loop, dest = await start_loop(outbox, backend)
    try:

        async def drained() -> bool:
            return (await outbox.destination_stats())[0]["pending"] == 0

        await eventually(drained, 30)
        got = [r["id"] for r in (await ledger(backend))["records"]]
        assert len(got) == 499 and ids[249] not in got
        assert got == [i for i in ids if i != ids[249]]
        letters = await outbox.list_dead_letters()
        assert [d.record_id for d in letters] == [ids[249]]
        assert letters[0].status == 422 and "POISON" in letters[0].error
        assert loop.state == "degraded"

        # The shop fixes the article in Hogia; support retries the dead letter.
        await faults(backend, refuse_skus=[])
        assert await outbox.retry_dead_letters("backend") == 1
        loop.kick()

        async def replayed() -> bool:
            return ids[249] in [r["id"] for r in (await ledger(backend))["records"]]

        await eventually(replayed)
        assert await outbox.list_dead_letters() == []
    finally:
        await loop.stop()
        await dest.close()


async def test_a_lost_answer_is_a_duplicate_on_the_wire_not_in_the_ledger(outbox: Outbox, backend: str) -> None:
    await faults(backend, lose_answer_next=2, lose_answer_mode="drop")
    ids = await enqueue_sales(outbox, range(1, 41))
    loop, dest = await start_loop(outbox, backend)
    try:

        async def drained() -> bool:
            return (await outbox.destination_stats())[0]["pending"] == 0

        await eventually(drained)
        book = await ledger(backend)
        assert [r["id"] for r in book["records"]] == ids
        assert book["idempotent_replays"] + book["duplicates"] >= 1
    finally:
        await loop.stop()
        await dest.close()


async def test_down_then_back_goes_offline_and_drains(outbox: Outbox, backend: str) -> None:
    await faults(backend, down="503")
    loop, dest = await start_loop(outbox, backend)
    try:
        ids = await enqueue_sales(outbox, range(1, 31))

        async def offline() -> bool:
            return loop.state == "offline"

        await eventually(offline)
        stats = (await outbox.destination_stats())[0]
        assert stats["pending"] == 30 and stats["failing_since"] and "503" in (stats["last_error"] or "")
        await faults(backend, down="off")

        async def drained() -> bool:
            return (await outbox.destination_stats())[0]["pending"] == 0

        await eventually(drained)
        assert [r["id"] for r in (await ledger(backend))["records"]] == ids
        assert loop.state in ("online", "degraded")
        assert (await outbox.destination_stats())[0]["failing_since"] is None
    finally:
        await loop.stop()
        await dest.close()


async def test_retry_after_is_honoured(outbox: Outbox, backend: str) -> None:
    await faults(backend, throttle_next=1, retry_after_s=1)
    loop, dest = await start_loop(outbox, backend, base=0.01, cap=5.0)
    try:
        started = time.monotonic()
        await enqueue_sales(outbox, range(1, 2))

        async def delivered() -> bool:
            return len((await ledger(backend))["records"]) == 1

        await eventually(delivered)
        assert time.monotonic() - started >= 0.95  # waited for Retry-After: 1, not the 10 ms base
    finally:
        await loop.stop()
        await dest.close()


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=300.0, rng=random.Random(42))
    for attempt in range(1, 30):
        ceiling = min(300.0, 2.0 ** (attempt - 1))
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # full jitter really spreads up to the ceiling
    assert policy.ceiling(100) == 300.0


def test_retry_after_is_capped_and_preferred() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=60.0, rng=random.Random(1))
    assert policy.delay(1, retry_after_s=7.0) == 7.0
    assert policy.delay(9, retry_after_s=3600.0) == 60.0
    assert policy.delay(1, retry_after_s=-5.0) == 0.0


def test_seeded_policies_repeat() -> None:
    a = RetryPolicy(rng=random.Random(7))
    b = RetryPolicy(rng=random.Random(7))
    assert [a.delay(n) for n in range(1, 12)] == [b.delay(n) for n in range(1, 12)]


async def test_a_wrong_url_is_offline_not_a_flood_of_dead_letters(outbox: Outbox, backend: str) -> None:
    dest = HttpDestination(
        HttpDestinationConfig(name="backend", url=f"{backend}/wrong-path", timeout_s=2.0), store_id="store-001"
    )
    await dest.start()
    loop = DeliveryLoop(outbox, dest, policy=RetryPolicy(base_s=0.05, cap_s=0.2), batch_max=50)
    loop.start()
    try:
        await enqueue_sales(outbox, range(1, 21))

        async def offline() -> bool:
            return loop.state == "offline" and loop.attempt >= 2

        await eventually(offline)
        stats = (await outbox.destination_stats())[0]
        assert stats["pending"] == 20 and stats["dead_letters"] == 0
        assert "check the URL" in (loop.last_error or "")
    finally:
        await loop.stop()
        await dest.close()


async def test_a_paused_destination_waits_for_its_resume_not_for_every_commit(
    outbox: Outbox, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While paused, a till's commits do not wake the loop to claim (a Pi's CPU per sale); a resume does."""
    await outbox.set_paused("backend", True)
    claims = 0
    real_claim = outbox.claim_batch

    async def counting_claim(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await real_claim(*args, **kwargs)

    monkeypatch.setattr(outbox, "claim_batch", counting_claim)
    loop, dest = await start_loop(outbox, backend)
    try:
        await eventually(lambda: claims >= 1, what="the loop's first claim")
        ids = await enqueue_sales(outbox, range(1, 31))  # 30 commits
        await asyncio.sleep(0.3)
        assert claims == 1, f"a paused destination claimed {claims} times for 30 commits"
        assert (await ledger(backend))["records"] == []
        await outbox.set_paused("backend", False)  # what the page's resume does: resume, then kick
        loop.kick()

        async def all_there() -> bool:
            return [r["id"] for r in (await ledger(backend))["records"]] == ids

        await eventually(all_there, timeout=5.0, what="the paused sales sent after the resume")
    finally:
        await loop.stop()
        await dest.close()
