"""The SIE destination through the real outbox: claim with accept, write, complete; and the CLI's export_day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from agent.destinations.sie import SieDestination, export_day
from agent.outbox.store import OutboxStore
from agent.records import parse_record
from agent.sie.reader import read_strict
from tests.sie.factory import FixedClock, config, golden_sales, line, sale


def open_store(tmp_path: Path) -> OutboxStore:
    store = OutboxStore.open(tmp_path / "outbox.db", store_id="store-001")
    store.register_destinations([("bokforing", "sie", ["sale"])])
    return store


def enqueue(store: OutboxStore, sales: list[dict]) -> None:
    store.enqueue([parse_record("sale", s) for s in sales])


def pending(store: OutboxStore) -> int:
    return int(next(d for d in store.destination_stats() if d["name"] == "bokforing")["pending"])


async def test_only_due_days_are_claimed_and_acknowledged_once_written(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    sie_dir = tmp_path / "sie"
    clock = FixedClock("2026-11-27T01:00:00+01:00")
    dest = SieDestination(config(sie_dir), clock=clock, program_version="test")
    await dest.start()
    enqueue(store, golden_sales())
    enqueue(
        store, [sale(2001, "2026-11-27T00:30:00+01:00", [line("K", "Kaffe", "1", "25.00", 12)], [("card", "25.00")])]
    )
    assert store.claim_batch("bokforing", 1000, accept=dest.accept) is None  # 01:00: nothing due yet
    clock.set("2026-11-27T02:00:00+01:00")
    batch = store.claim_batch("bokforing", 1000, accept=dest.accept)
    assert batch is not None and len(batch.records) == 6  # the 27th's sale waits
    result = await dest.send(batch)
    store.complete_batch("bokforing", batch.batch_id, {rid: (None, why) for rid, why in result.rejected.items()})
    assert pending(store) == 1
    [file] = sorted(sie_dir.glob("*.si"))
    assert read_strict(file.read_bytes()).vouchers[0].text.endswith("(6 kvitton)")
    assert store.claim_batch("bokforing", 1000, accept=dest.accept) is None
    store.close()


async def test_export_day_now_then_the_rest_of_the_day_is_late(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    sie_dir = tmp_path / "sie"
    cfg = config(sie_dir)
    coffee = [line("K", "Kaffe", "1", "25.00", 12)]
    enqueue(
        store,
        [
            sale(1, "2026-11-26T09:00:00+01:00", coffee, [("cash", "25.00")]),
            sale(2, "2026-11-26T10:00:00+01:00", coffee, [("card", "25.00")]),
        ],
    )
    report = export_day(store, cfg, date(2026, 11, 26), clock=FixedClock("2026-11-26T12:00:00+01:00"))
    assert report.records == 2 and len(report.files) == 1 and not report.rejected
    again = export_day(store, cfg, date(2026, 11, 26), clock=FixedClock("2026-11-26T12:01:00+01:00"))
    assert again.records == 0 and again.files == []  # nothing is exported twice

    enqueue(store, [sale(3, "2026-11-26T17:00:00+01:00", coffee, [("swish", "25.00")])])
    clock = FixedClock("2026-11-27T02:00:00+01:00")
    dest = SieDestination(cfg, clock=clock)
    batch = store.claim_batch("bokforing", 1000, accept=dest.accept)
    assert batch is not None and len(batch.records) == 1
    export_files = set(sie_dir.glob("*.si"))
    await dest.send(batch)  # the agent's regular export, the delivery loop's steps by hand
    store.complete_batch("bokforing", batch.batch_id)
    [late_file] = set(sie_dir.glob("*.si")) - export_files
    [voucher] = read_strict(late_file.read_bytes()).vouchers
    assert voucher.text == "Sen försäljning / late sale kassa-1 2026-11-26 kvitto 3 (1 kvitto)"
    assert pending(store) == 0
    store.close()


def test_export_day_with_a_till_stops_at_another_tills_waiting_sale(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    coffee = [line("K", "Kaffe", "1", "25.00", 12)]
    enqueue(
        store,
        [
            sale(1, "2026-11-26T09:00:00+01:00", coffee, [("cash", "25.00")], till_id="kassa-2"),
            sale(1, "2026-11-26T09:30:00+01:00", coffee, [("cash", "25.00")], till_id="kassa-1"),
            sale(2, "2026-11-26T10:00:00+01:00", coffee, [("cash", "25.00")], till_id="kassa-2"),
        ],
    )
    report = export_day(
        store, config(tmp_path / "sie"), date(2026, 11, 26), "kassa-2", clock=FixedClock("2026-11-26T12:00:00+01:00")
    )
    assert report.records == 1  # kassa-1's sale is next in line and not due, so the batch stops there
    assert pending(store) == 2
    store.close()
