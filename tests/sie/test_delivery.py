"""The SIE destination under the agent's own delivery loop and asyncio outbox: the missed run at start-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.backoff import RetryPolicy
from agent.delivery import DeliveryLoop
from agent.destinations.sie import SieDestination
from agent.outbox.service import Outbox
from agent.records import parse_record
from agent.sie.reader import read_strict
from tests.sie.factory import FixedClock, config, golden_sales, line, sale


async def test_a_missed_run_books_at_start_and_the_loop_acknowledges_it(tmp_path: Path) -> None:
    """The agent was off at 02:00: it books the 26th when it starts at 09:00; the 27th waits."""
    outbox = Outbox(tmp_path / "outbox.db", store_id="store-001")
    await outbox.start()
    await outbox.call(lambda s: s.register_destinations([("bokforing", "sie", ["sale"])]))
    sie_dir = tmp_path / "sie"
    dest = SieDestination(
        config(sie_dir), outbox=outbox, clock=FixedClock("2026-11-27T09:00:00+01:00"), program_version="t"
    )
    loop = DeliveryLoop(outbox, dest, policy=RetryPolicy(base_s=0.05, cap_s=0.1), batch_max=1000)
    dest.on_booked = loop.kick
    try:
        await outbox.enqueue([parse_record("sale", s) for s in golden_sales()])
        await outbox.enqueue(
            [
                parse_record(
                    "sale",
                    sale(
                        2001, "2026-11-27T08:30:00+01:00", [line("K", "Kaffe", "1", "25.00", 12)], [("cash", "25.00")]
                    ),
                )
            ]
        )
        await dest.start()  # the run the agent missed at 02:00, now
        loop.start()
        for _ in range(200):  # at most 10 s
            stats = await outbox.destination_stats()
            if next(d for d in stats if d["name"] == "bokforing")["pending"] == 1:
                break
            await asyncio.sleep(0.05)
        [file] = sorted(sie_dir.glob("*.si"))
        [voucher] = read_strict(file.read_bytes()).vouchers
        assert voucher.text == "Kassa kassa-1 2026-11-26 kvitto 1001-1006 (6 kvitton)"
        stats = await outbox.destination_stats()
        assert next(d for d in stats if d["name"] == "bokforing")["pending"] == 1  # the 27th waits for 02:00
        assert not await asyncio.to_thread(dest.books.run_missed)
    finally:
        await dest.close()
        await loop.stop()
        await outbox.close()
