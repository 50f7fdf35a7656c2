"""``voucher_per = "z_report"``, gift cards over two days, and ``copy_to``, over a real outbox."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agent.sie.reader import read_strict
from tests.helpers import make_z_report
from tests.sie.factory import Books, by_account, line, sale

COFFEE = [line("K", "Kaffe", "1", "25.00", 12)]


def coffee(n: int, when: str = "2026-11-26T10:00:00+01:00") -> dict:
    return sale(n, when, COFFEE, [("card", "25.00")])


def z(z_no: int, first: int, last: int, **changes: object) -> dict:
    day = [coffee(n) for n in range(first, last + 1)]
    return make_z_report(z_no, first, last, sales=day, opened_at="2026-11-26T08:00:00+01:00", **changes)


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Books]:
    opened = Books(tmp_path, now="2026-11-26T20:30:00+01:00", voucher_per="z_report", z_wait_hours=24)
    yield opened
    opened.close()


def test_a_z_report_with_all_its_receipts_is_booked_at_the_next_run(books: Books) -> None:
    books.put(*[coffee(n) for n in (1, 2, 3)])
    books.put(z(9, 1, 3), record_type="z_report")
    report = books.run()
    assert report.vouchers == 1 and report.records == 3
    [voucher] = books.vouchers()
    assert voucher.text == "Kassa kassa-1 Z 9 2026-11-26 kvitto 1-3 (3 kvitton)"
    assert by_account(voucher)["2621"] == Decimal("-8.04")  # the Z's VAT: 3 × 2.68
    books.acknowledge()
    assert books.pending() == 0


def test_a_z_report_waits_for_its_receipts_then_names_the_missing_ones(books: Books) -> None:
    books.put(coffee(1), coffee(3))
    books.put(z(9, 1, 3), record_type="z_report")
    assert books.run().file is None and books.files() == []  # receipt 2 may still come
    books.acknowledge()
    assert books.pending() == 2
    books.clock.set("2026-11-27T20:06:00+01:00")  # z_wait_hours after it closed (20:05)
    books.run()
    [voucher] = books.vouchers()
    assert voucher.text == "Kassa kassa-1 Z 9 2026-11-26 kvitto 1-3 (2 kvitton) saknas: 2"
    assert by_account(voucher)["1580"] == Decimal("50.00")
    assert by_account(voucher)["2621"] == Decimal("-5.36")  # the receipts' VAT: the Z's covers a receipt not here
    books.put(coffee(2))  # it turns up after all: a late voucher of its day, next run
    books.clock.set("2026-11-28T02:00:00+01:00")
    late = books.run().file
    assert late is not None
    assert [v.text for v in read_strict((books.dir / late).read_bytes()).vouchers] == [
        "Sen försäljning / late sale kassa-1 2026-11-26 kvitto 2 (1 kvitto)"
    ]
    books.acknowledge()
    assert books.pending() == 0


def test_sales_no_z_report_covers_are_booked_per_day_after_the_wait(books: Books) -> None:
    books.put(coffee(1), coffee(2))
    books.clock.set("2026-11-27T02:00:00+01:00")
    assert books.run().file is None  # their Z may still come
    books.clock.set("2026-11-28T02:00:00+01:00")
    books.run()
    assert [v.text for v in books.vouchers()] == ["Kassa kassa-1 2026-11-26 kvitto 1, 2 (2 kvitton)"]


def test_gift_cards_sold_and_redeemed_over_two_days(tmp_path: Path) -> None:
    """Day 1 sells two gift cards (500 + 300); day 2 redeems 200 of one: 2421 nets to the 600 outstanding."""
    books = Books(tmp_path)
    try:
        gift = [
            line("presentkort", "Presentkort", "1", "500.00", 0),
            line("presentkort", "Presentkort", "1", "300.00", 0),
        ]
        books.put(sale(1, "2026-11-25T10:00:00+01:00", gift, [("card", "800.00")]))
        books.put(sale(2, "2026-11-26T11:00:00+01:00", COFFEE * 1, [("card", "25.00")]))
        books.put(
            sale(
                3,
                "2026-11-26T12:00:00+01:00",
                [line("T", "Tröja", "1", "200.00", 25)],
                [("gift_card", "200.00")],
            )
        )
        books.run()
        first, second = sorted(books.vouchers(), key=lambda v: v.date)
        day1, day2 = by_account(first), by_account(second)
        assert day1 == {"1580": Decimal("800.00"), "2421": Decimal("-800.00")}  # no revenue, no VAT
        assert day2["2421"] == Decimal("200.00") and day2["2611"] == Decimal("-40.00")
        assert day2["3001"] == Decimal("-160.00")
        assert day1["2421"] + day2["2421"] == Decimal("-600.00")  # the liability outstanding
    finally:
        books.close()


def test_copy_to_receives_each_file_once_it_is_durable(tmp_path: Path) -> None:
    stick = tmp_path / "usb"
    stick.mkdir()
    books = Books(tmp_path / "pi", copy_to=stick)
    try:
        books.put(coffee(1))
        books.run()
        [file] = books.files()
        assert (stick / file.name).read_bytes() == file.read_bytes()
        assert list(stick.glob(".kassabro-*")) == []
        (stick / file.name).unlink()  # the stick was emptied, or was not mounted at the run
        books.put(coffee(2, "2026-11-26T11:00:00+01:00"))
        books.clock.set("2026-11-28T02:00:00+01:00")
        books.run()
        assert sorted(p.name for p in stick.iterdir()) == sorted(p.name for p in books.files())
    finally:
        books.close()
