"""The till simulator: valid Swedish receipts, and its own count of what the agent took."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from datetime import datetime
from decimal import Decimal

import pytest

from agent.ingest import Ingestor
from agent.outbox.service import Outbox
from agent.records import expected_total, parse_record
from agent.simulators import serve
from agent.simulators.till import STOCKHOLM, Till, TillStats, generate_receipt, receipt_total, run_till
from agent.sources.http import create_ingest_app

TOKEN = "till-token"


def test_every_receipt_satisfies_the_money_rule():
    rng = random.Random(20261126)
    seen = Counter()
    for receipt_no in range(1, 3001):
        data = generate_receipt(rng, receipt_no=receipt_no)
        sale = parse_record("sale", data)  # raises, naming the field, on any broken rule
        assert expected_total(sale) == sale.total == receipt_total(data)
        assert sum((p.amount for p in sale.payments), Decimal(0)) == sale.total
        methods = {p.method for p in sale.payments}
        if "cash" in methods:
            assert sale.total == sale.total.to_integral_value(), "cash is paid in whole kronor"
        seen["return" if sale.kind == "return" else "sale"] += 1
        seen.update(f"vat{line.vat_rate}" for line in sale.lines)
        seen.update(methods)
        seen.update(f"fee:{fee.role}" for fee in sale.fees)
        seen["discount"] += sale.discount > 0
        seen["rounding"] += sale.rounding != 0
        seen["by_weight"] += any(line.quantity != line.quantity.to_integral_value() for line in sale.lines)
    # The shop's variety actually shows up.
    for feature in (
        "sale",
        "return",
        "vat25",
        "vat6",
        "vat0",
        "card",
        "cash",
        "swish",
        "gift_card",
        "fee:shipping",
        "fee:handling",
        "discount",
        "rounding",
        "by_weight",
    ):
        assert seen[feature] > 0, feature


def test_the_same_seed_gives_the_same_day():
    def day(seed: int) -> list:
        till = Till(seed=seed, clock=lambda: datetime(2026, 11, 26, 12, 0, tzinfo=STOCKHOLM))
        return [till.next_record() for _ in range(50)]

    assert day(7) == day(7)
    assert day(7) != day(8)


def test_movements_are_valid_and_numbered_per_till():
    till = Till(seed=3, movement_rate=1.0)
    records = [till.next_record() for _ in range(200)]
    assert {t for t, _ in records} == {"stock_movement"}
    ids = [parse_record("stock_movement", r).movement_id for _, r in records]
    assert len(set(ids)) == len(ids)


@pytest.fixture
async def ingest(tmp_path):
    """The agent's real ingest API on loopback, over a real outbox file."""
    outbox = Outbox(tmp_path / "outbox.sqlite", store_id="store-001")
    await outbox.start()
    try:
        app = create_ingest_app(Ingestor(outbox), token=TOKEN)
        async with serve(app) as base_url:
            yield base_url, outbox
    finally:
        await outbox.close()


async def test_run_till_counts_what_the_agent_acknowledged(ingest):
    base_url, outbox = ingest

    def till() -> Till:
        return Till(seed=5, clock=lambda: datetime(2026, 11, 26, 12, 0, tzinfo=STOCKHOLM))

    first = await run_till(base_url, rate_per_s=500, count=40, token=TOKEN, till=till(), concurrency=4)
    assert (first.sent, first.created, first.duplicates, sum(first.failed.values())) == (40, 40, 0, 0)
    # The same seed again: the same keys and content, so every one is a harmless duplicate.
    again = await run_till(base_url, rate_per_s=500, count=40, token=TOKEN, till=till())
    assert (again.created, again.duplicates) == (0, 40)
    assert again.accepted == first.accepted
    for key, record_id in first.accepted.items():
        stored = await outbox.call(lambda store, key=key: store.get_record(key))
        assert stored is not None and stored["record"]["id"] == record_id


async def test_run_till_counts_refusals(ingest):
    base_url, _ = ingest
    stats = TillStats()
    await run_till(base_url, rate_per_s=500, count=3, token="wrong", seed=1, stats=stats)
    assert (stats.created, stats.failed["401"], stats.retries) == (0, 3, 0)


async def test_run_till_needs_a_limit():
    with pytest.raises(ValueError, match="count or duration_s"):
        await run_till("http://127.0.0.1:9", rate_per_s=1)


async def test_a_cancelled_till_leaves_no_request_behind(serve_sim):
    from agent.simulators import receiver

    async with serve_sim(receiver.create_app()) as sim:
        await sim.faults(slow_s=1)  # every post hangs a while
        stats = TillStats()
        task = asyncio.create_task(run_till(sim.base_url, rate_per_s=1000, count=50, concurrency=5, stats=stats))
        for _ in range(200):  # at most ~2 s for the first sends to be in flight
            if stats.sent >= 5:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sim.faults(slow_s=0)
    assert stats.sent == 5 and stats.acknowledged == 0


async def test_the_tills_z_report_reconciles_and_a_lost_receipt_shows_until_released(ingest):
    """Through the real ingest API: a day with gift cards, one receipt lost, the Z; then the receipt resent."""
    from agent.reconcile import Reconciler

    base_url, outbox = ingest
    till = Till(seed=11, gift_card_rate=0.2, movement_rate=0.0)
    till.miss_next()
    await run_till(base_url, rate_per_s=500, count=30, token=TOKEN, till=till)
    assert len(till.held) == 1
    lost = till.held[0]["receipt_no"]
    z = till.z_report()
    assert z["receipt_count"] == 31 and z["last_receipt_no"] - z["first_receipt_no"] == 30
    await run_till(base_url, rate_per_s=500, count=1, token=TOKEN, till=till)  # the Z goes out

    reconciler = Reconciler(None, gift_card_skus={"presentkort"})
    await outbox.read(reconciler.catch_up)
    assert [p["text"] for p in reconciler.problems()] == [f"Kassa 1, Z 1: 1 kvitto saknas ({lost})"]
    till.release()
    await run_till(base_url, rate_per_s=500, count=1, token=TOKEN, till=till)
    await outbox.read(reconciler.catch_up)
    assert reconciler.problems() == []
    assert reconciler.summaries()[0]["last_z"]["state"] == "ok"
    gift_cards = await outbox.read(
        lambda s: s.conn.execute("SELECT COUNT(*) FROM records WHERE data LIKE '%presentkort%'").fetchone()[0]
    )
    assert gift_cards > 0
