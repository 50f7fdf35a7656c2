"""The booking run over a real outbox: due days, one file per run, late sales, waiting, crashes, refusals.

Each test stores sales as ingest would, moves a fixed clock, runs the books
(as at ``export_at``) and lets the destination acknowledge what they hold.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from agent.sie.errors import SieWriteFailed
from agent.sie.reader import read_strict
from agent.sie.state import ExportState
from tests.sie.factory import Books, by_account, golden_sales, line, sale

REPO = Path(__file__).resolve().parents[2]
COFFEE = [line("K", "Kaffe", "1", "25.00", 12)]


@pytest.fixture
def books(tmp_path: Path) -> Iterator[Books]:
    opened = Books(tmp_path, now="2026-11-27T01:00:00+01:00")
    yield opened
    opened.close()


def coffee(n: int, when: str, *, till: str = "kassa-1", method: str = "card") -> dict:
    return sale(n, when, COFFEE, [(method, "25.00")], till_id=till)


def test_a_day_is_due_at_export_at_on_the_next_day_in_local_time(books: Books) -> None:
    books.put(*golden_sales(), coffee(2001, "2026-11-27T00:30:00+01:00"))  # 00:30 belongs to the 27th
    assert books.run().file is None and books.files() == []  # 01:00: nothing is due yet
    books.clock.set("2026-11-27T02:00:00+01:00")
    report = books.run()
    assert report.vouchers == 1 and report.records == 6 and report.waiting == 1
    [voucher] = books.vouchers()
    assert voucher.text == "Kassa kassa-1 2026-11-26 kvitto 1001-1006 (6 kvitton)"
    assert books.acknowledge() == {} and books.pending() == 1  # the 27th's sale waits
    books.clock.set("2026-11-28T02:00:00+01:00")
    books.run()
    books.acknowledge()
    assert books.pending() == 0 and len(books.files()) == 2


def test_export_at_and_timezone_are_honoured(tmp_path: Path) -> None:
    helsinki = Books(tmp_path, now="2026-11-27T04:59:00+02:00", export_at="05:00", timezone="Europe/Helsinki")
    try:
        helsinki.put(coffee(1, "2026-11-26T23:30:00+00:00"))  # 01:30 on the 27th in Helsinki
        helsinki.clock.set("2026-11-28T04:59:00+02:00")
        assert helsinki.run().file is None
        helsinki.clock.set("2026-11-28T05:00:00+02:00")
        helsinki.run()
        assert [v.date for v in helsinki.vouchers()] == [date(2026, 11, 27)]
    finally:
        helsinki.close()


def test_a_catch_up_posted_one_receipt_at_a_time_is_one_voucher(books: Books) -> None:
    """The till resends its backlog after the Pi was off: six requests, one file, one voucher."""
    books.clock.set("2026-11-28T09:00:00+01:00")
    for receipt in golden_sales():
        books.put(receipt)
        books.acknowledge()  # the delivery loop runs between the requests: it books nothing
    assert books.files() == []
    books.clock.set("2026-11-29T02:00:00+01:00")
    books.run()
    [voucher] = books.vouchers()
    assert voucher.text.endswith("(6 kvitton)")


def test_one_file_per_run_with_a_voucher_per_till_and_day(books: Books) -> None:
    books.put(
        coffee(1, "2026-11-25T10:00:00+01:00"),
        coffee(7, "2026-11-26T10:00:00+01:00", till="kassa-2"),
        coffee(2, "2026-11-26T11:00:00+01:00"),
        coffee(3, "2026-11-26T12:00:00+01:00"),
    )
    books.clock.set("2026-11-27T02:00:00+01:00")
    books.run()
    [file] = books.files()
    texts = [v.text for v in read_strict(file.read_bytes()).vouchers]
    assert texts == [
        "Kassa kassa-1 2026-11-25 kvitto 1 (1 kvitto)",
        "Kassa kassa-1 2026-11-26 kvitto 2, 3 (2 kvitton)",
        "Kassa kassa-2 2026-11-26 kvitto 7 (1 kvitto)",
    ]
    assert file.name.startswith("kassabro-20261126-store-001-")


def test_late_sales_are_one_late_voucher_per_till_and_day_per_run(books: Books) -> None:
    books.put(coffee(1, "2026-11-26T10:00:00+01:00"))
    books.clock.set("2026-11-27T02:00:00+01:00")
    first = books.run().file
    for n in (2, 3, 4):  # the rest of the day arrives later, one by one
        books.put(coffee(n, f"2026-11-26T1{n}:00:00+01:00"))
        books.acknowledge()
    books.clock.set("2026-11-28T02:00:00+01:00")
    second = books.run().file
    assert second != first and len(books.files()) == 2
    late = read_strict((books.dir / second).read_bytes()).vouchers
    assert [v.text for v in late] == ["Sen försäljning / late sale kassa-1 2026-11-26 kvitto 2, 3, 4 (3 kvitton)"]
    assert late[0].date == date(2026, 11, 26)
    books.acknowledge()
    assert books.pending() == 0


def test_a_sale_dated_in_the_future_never_blocks_another_day(books: Books) -> None:
    """The till's clock said 2031 while the Pi's was not synchronised: that sale waits alone."""
    books.put(coffee(1, "2026-11-26T10:00:00+01:00"))
    books.put(coffee(2, "2031-01-05T10:00:00+01:00"))
    books.put(coffee(3, "2026-11-26T11:00:00+01:00"), coffee(1, "2026-11-26T12:00:00+01:00", till="kassa-2"))
    books.clock.set("2026-11-27T02:00:00+01:00")
    report = books.run()
    assert report.records == 3 and report.waiting == 1
    assert [v.text for v in books.vouchers()] == [
        "Kassa kassa-1 2026-11-26 kvitto 1, 3 (2 kvitton)",
        "Kassa kassa-2 2026-11-26 kvitto 1 (1 kvitto)",
    ]
    books.acknowledge()
    assert books.pending() == 3  # the 2031 sale holds the cursor, not the books
    [problem] = books.destination.problems()
    assert problem["code"] == "future_dated"
    assert problem["text"].startswith("Kassa 1: kvitto 2 är daterat 2031-01-05, i framtiden")
    books.put(coffee(4, "2026-11-27T09:00:00+01:00"))
    books.clock.set("2026-11-28T02:00:00+01:00")
    books.run()
    assert books.vouchers()[-1].text == "Kassa kassa-1 2026-11-27 kvitto 4 (1 kvitto)"


def test_export_of_a_day_now_makes_that_day_due_for_one_till(books: Books) -> None:
    books.put(coffee(1, "2026-11-27T00:10:00+01:00"), coffee(5, "2026-11-27T00:20:00+01:00", till="kassa-2"))
    report = books.run((date(2026, 11, 27), "kassa-1"))
    assert report.records == 1 and report.waiting == 1
    assert [v.text for v in books.vouchers()] == ["Kassa kassa-1 2026-11-27 kvitto 1 (1 kvitto)"]


def test_a_run_done_again_books_nothing_twice(books: Books) -> None:
    books.put(*golden_sales())
    books.clock.set("2026-11-27T02:00:00+01:00")
    books.run()
    books.restart()
    assert books.run().file is None
    assert len(books.files()) == 1


def test_a_crash_after_the_commit_writes_the_file_at_the_next_run(books: Books) -> None:
    books.put(*golden_sales())
    books.clock.set("2026-11-27T02:00:00+01:00")

    def crash(tmp: Path) -> None:
        raise OSError(5, "power cut")

    books.destination.books.before_link = crash
    with pytest.raises(SieWriteFailed):
        books.run()
    assert books.files() == []
    assert len(ExportState.load(books.dir / ".kassabro-sie-state.json").unwritten) == 1
    books.restart()
    assert books.run().file is None  # nothing new: the committed file is written first
    [file] = books.files()
    assert read_strict(file.read_bytes()).vouchers[0].text.endswith("(6 kvitton)")
    assert list(books.dir.glob(".kassabro-*.tmp")) == []


@pytest.mark.slow
@pytest.mark.slow
def test_killed_between_write_and_rename_nothing_lost_nothing_doubled(tmp_path: Path) -> None:
    """A real process killed (SIGKILL-like ``os._exit``) with the file fsync'd under its temporary name."""
    script = tmp_path / "run.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from agent.records import parse_record\n"
        "from tests.sie.factory import Books, golden_sales\n"
        f"books = Books(Path({str(tmp_path)!r}))\n"
        "if not books.store.conn.execute('SELECT COUNT(*) FROM records').fetchone()[0]:\n"
        "    books.put(*golden_sales())\n"
        "if sys.argv[1:] == ['crash']:\n"
        "    books.destination.books.before_link = lambda tmp: os._exit(9)\n"
        "books.run()\n"
        "books.acknowledge()\n"
        "books.close()\n"
    )
    crashed = subprocess.run([sys.executable, str(script), "crash"], timeout=60, capture_output=True, check=False)
    assert crashed.returncode == 9, crashed.stderr
    assert list((tmp_path / "sie").glob("*.si")) == []
    for _ in range(2):  # the restart, and another run after it
        again = subprocess.run([sys.executable, str(script)], timeout=60, capture_output=True, text=True, check=False)
        assert again.returncode == 0, again.stderr
    [file] = list((tmp_path / "sie").glob("*.si"))
    assert list((tmp_path / "sie").glob(".kassabro-*.tmp")) == []
    assert [v.text for v in read_strict(file.read_bytes()).vouchers] == [
        "Kassa kassa-1 2026-11-26 kvitto 1001-1006 (6 kvitton)"
    ]


def test_sales_that_cannot_be_booked_become_dead_letters_with_the_reason(books: Books) -> None:
    books.put(coffee(1, "2026-11-26T10:00:00+01:00"))
    books.put(sale(2, "2026-11-26T11:00:00+01:00", COFFEE, [("card", "25.00")], currency="EUR"))
    books.clock.set("2026-11-27T02:00:00+01:00")
    report = books.run()
    assert report.records == 1 and list(report.refused.values()) == [
        "currency EUR: SIE day files are booked in SEK only"
    ]
    refused = books.acknowledge()
    assert list(refused.values()) == ["currency EUR: SIE day files are booked in SEK only"]
    assert [d.key for d in books.store.list_dead_letters("bokforing")] == ["sale:kassa-1:2"]


def test_characters_cp437_lacks_are_replaced_visibly(tmp_path: Path) -> None:
    euro = Books(tmp_path, company_name="Café € Ø AB")
    try:
        euro.put(coffee(1, "2026-11-26T10:00:00+01:00"))
        euro.run()
        text = euro.files()[0].read_bytes().decode("cp437")
        assert '#FNAMN "Café EUR ? AB"' in text
    finally:
        euro.close()


def test_without_checksum_there_is_no_ksumma(tmp_path: Path) -> None:
    plain = Books(tmp_path, checksum=False)
    try:
        plain.put(coffee(1, "2026-11-26T10:00:00+01:00"))
        plain.run()
        assert b"#KSUMMA" not in plain.files()[0].read_bytes()
    finally:
        plain.close()


def test_net_discount_mode_books_sales_after_discount(tmp_path: Path) -> None:
    net = Books(tmp_path, discount_mode="net")
    try:
        net.put(
            sale(
                1, "2026-11-26T10:00:00+01:00", [line("T", "Tröja", "2", "199.00", 25, "50.00")], [("swish", "348.00")]
            )
        )
        net.run()
        assert by_account(net.vouchers()[0]) == {
            "1934": Decimal("348.00"),
            "3001": Decimal("-278.40"),
            "2611": Decimal("-69.60"),
        }
    finally:
        net.close()


def test_an_unwritable_directory_fails_the_run_and_books_nothing(books: Books) -> None:
    books.put(coffee(1, "2026-11-26T10:00:00+01:00"))
    books.clock.set("2026-11-27T02:00:00+01:00")
    aside = books.dir.with_name("sie-aside")
    books.dir.rename(aside)
    books.dir.write_text("a file where the directory should be (a stick not mounted, say)")
    try:
        with pytest.raises(SieWriteFailed, match="cannot write SIE files"):
            books.run()
        assert books.acknowledge() == {} and books.pending() == 1
    finally:
        books.dir.unlink()
        aside.rename(books.dir)
    books.run()
    books.acknowledge()
    assert books.pending() == 0
