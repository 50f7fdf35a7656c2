"""The SIE destination's day logic and file handling, through its send/accept with real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from agent.destinations.base import RetryableError
from agent.destinations.sie import SieDestination
from agent.sie.reader import read_strict
from agent.sie.state import STATE_NAME
from tests.sie.factory import (
    FixedClock,
    batch,
    config,
    envelope,
    golden_sales,
    line,
    sale,
)

REPO = Path(__file__).resolve().parents[2]


def coffee(receipt_no: int, occurred_at: str, *, till_id: str = "kassa-1", amount: str = "25.00") -> dict:
    return sale(receipt_no, occurred_at, [line("KAFFE", "Kaffe", "1", amount, 12)], [("card", amount)], till_id=till_id)


def si_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.si"))


async def make(tmp_path: Path, now: str, **overrides: object) -> tuple[SieDestination, FixedClock]:
    clock = FixedClock(now)
    dest = SieDestination(config(tmp_path, **overrides), clock=clock, program_version="test")
    await dest.start()
    return dest, clock


async def test_a_day_is_due_at_export_at_on_the_next_day_in_local_time(tmp_path: Path) -> None:
    dest, clock = await make(tmp_path, "2026-11-27T01:59:00+01:00")
    evening = envelope(coffee(1, "2026-11-26T22:10:00+00:00"))  # 23:10 in Stockholm: still the 26th
    late_night = envelope(coffee(2, "2026-11-26T23:30:00+00:00"))  # 00:30 on the 27th in Stockholm
    older = envelope(coffee(3, "2026-11-24T12:00:00+01:00"))
    assert not dest.accept(evening)
    assert dest.accept(older)  # a day the agent missed is due at once
    assert dest.next_due_at().isoformat() == "2026-11-27T02:00:00+01:00"
    clock.set("2026-11-27T02:00:00+01:00")
    assert dest.accept(evening)
    assert not dest.accept(late_night)
    assert dest.next_due_at().isoformat() == "2026-11-28T02:00:00+01:00"


async def test_export_at_and_timezone_are_honoured(tmp_path: Path) -> None:
    dest, clock = await make(tmp_path, "2026-11-27T05:59:00+00:00", export_at="06:30", timezone="UTC")
    record = envelope(coffee(1, "2026-11-26T23:30:00+00:00"))
    assert not dest.accept(record)
    clock.set("2026-11-27T06:30:00+00:00")
    assert dest.accept(record)


async def test_force_day_makes_today_due_for_one_till(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-26T18:00:00+01:00")
    mine = envelope(coffee(1, "2026-11-26T10:00:00+01:00", till_id="kassa-2"))
    other = envelope(coffee(2, "2026-11-26T10:00:00+01:00", till_id="kassa-1"))
    dest.force_day(date(2026, 11, 26), "kassa-2")
    assert dest.accept(mine) and not dest.accept(other)


async def test_one_voucher_per_till_and_day_and_every_record_in_one_file(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-28T03:00:00+01:00")
    records = [
        envelope(coffee(1, "2026-11-26T10:00:00+01:00")),
        envelope(coffee(1, "2026-11-26T10:05:00+01:00", till_id="kassa-2")),
        envelope(coffee(2, "2026-11-26T11:00:00+01:00")),
        envelope(coffee(3, "2026-11-27T09:00:00+01:00")),
    ]
    result = await dest.send(batch(records))
    assert result.rejected == {}
    [file] = si_files(tmp_path)
    doc = read_strict(file.read_bytes())
    assert [(v.date.isoformat() if v.date else "", v.text) for v in doc.vouchers] == [
        ("2026-11-26", "Kassa kassa-1 2026-11-26 kvitto 1, 2 (2 kvitton)"),
        ("2026-11-26", "Kassa kassa-2 2026-11-26 kvitto 1 (1 kvitto)"),
        ("2026-11-27", "Kassa kassa-1 2026-11-27 kvitto 3 (1 kvitto)"),
    ]
    assert [v.balance for v in doc.vouchers] == [0, 0, 0]


async def test_a_late_sale_goes_into_the_next_file_as_its_own_voucher(tmp_path: Path) -> None:
    dest, clock = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    first = [envelope(coffee(1, "2026-11-26T10:00:00+01:00")), envelope(coffee(2, "2026-11-26T12:00:00+01:00"))]
    await dest.send(batch(first, "b1"))
    [day_file] = si_files(tmp_path)
    before = day_file.read_bytes()

    clock.set("2026-11-28T02:00:00+01:00")
    late = envelope(coffee(3, "2026-11-26T16:00:00+01:00", amount="40.00"))  # arrived after an outage
    next_day = envelope(coffee(4, "2026-11-27T09:00:00+01:00"))
    assert dest.accept(late) and dest.accept(next_day)
    await dest.send(batch([late, next_day], "b2"))

    files = si_files(tmp_path)
    assert len(files) == 2 and day_file.read_bytes() == before  # never re-exported
    doc = read_strict(next(f for f in files if f != day_file).read_bytes())
    texts = [v.text for v in doc.vouchers]
    assert texts == [
        "Sen försäljning / late sale kassa-1 2026-11-26 kvitto 3 (1 kvitto)",
        "Kassa kassa-1 2026-11-27 kvitto 4 (1 kvitto)",
    ]
    late_voucher = doc.vouchers[0]
    assert late_voucher.date == date(2026, 11, 26)
    assert {r.account: r.amount for r in late_voucher.rows}["1580"] == 40


async def test_a_resent_batch_is_answered_without_a_second_file(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    records = [envelope(coffee(1, "2026-11-26T10:00:00+01:00"))]
    await dest.send(batch(records, "b1"))
    again = await dest.send(batch(records, "b1"))  # the acknowledgement was lost
    assert again.rejected == {}
    assert len(si_files(tmp_path)) == 1


async def test_crash_after_rename_before_state_is_recognised_on_resend(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    state = tmp_path / STATE_NAME
    records = [envelope(coffee(1, "2026-11-26T10:00:00+01:00"))]
    await dest.send(batch(records, "b1"))
    [file] = si_files(tmp_path)
    content = file.read_bytes()
    state.unlink()  # as if the agent died right after the rename
    restarted, _ = await make(tmp_path, "2026-11-27T02:05:00+01:00")
    await restarted.send(batch(records, "b1"))
    assert si_files(tmp_path) == [file] and file.read_bytes() == content
    saved = json.loads(state.read_text())
    assert saved["days"]["kassa-1"]["2026-11-26"] == file.name
    assert saved["batches"]["b1"]["records"] == [records[0]["id"]]


async def test_a_record_already_in_an_earlier_file_is_not_booked_again(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    records = [envelope(coffee(1, "2026-11-26T10:00:00+01:00"))]
    await dest.send(batch(records, "b1"))
    result = await dest.send(batch(records, "b2"))  # the same record in another batch (a replay)
    assert result.rejected == {} and len(si_files(tmp_path)) == 1


async def test_crash_between_write_and_rename_leaves_no_half_file(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    records = [envelope(s) for s in golden_sales()]

    def crash(tmp: Path) -> None:
        assert tmp.exists()
        raise RuntimeError("power cut")

    dest.exporter.before_link = crash
    with pytest.raises(RuntimeError):
        await dest.send(batch(records, "b1"))
    assert si_files(tmp_path) == []
    assert not (tmp_path / STATE_NAME).exists()

    restarted, _ = await make(tmp_path, "2026-11-27T02:01:00+01:00")
    assert list(tmp_path.glob(".kassabro-*.tmp")) == []  # the leftover is cleaned at start
    await restarted.send(batch(records, "b1"))
    [file] = si_files(tmp_path)
    doc = read_strict(file.read_bytes())
    assert len(doc.vouchers) == 1 and doc.vouchers[0].text.endswith("(6 kvitton)")


@pytest.mark.slow
def test_killed_between_write_and_rename_nothing_lost_nothing_doubled(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    out = tmp_path / "out"
    script.write_text(
        "import asyncio, os, sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from pathlib import Path\n"
        "from agent.destinations.sie import SieDestination\n"
        "from tests.sie.factory import FixedClock, batch, config, envelope, golden_sales\n"
        f"dest = SieDestination(config(Path({str(out)!r})), clock=FixedClock('2026-11-27T02:00:00+01:00'))\n"
        "asyncio.run(dest.start())\n"
        "dest.exporter.before_link = lambda tmp: os._exit(9)\n"
        "records = [envelope(s, record_id=f'r{i}') for i, s in enumerate(golden_sales())]\n"
        "asyncio.run(dest.send(batch(records, 'b1')))\n"
    )
    done = subprocess.run([sys.executable, str(script)], timeout=60, capture_output=True, text=True, check=False)
    assert done.returncode == 9, done.stderr
    assert list(out.glob("*.si")) == []
    assert len(list(out.glob(".kassabro-*.tmp"))) == 1

    resend = tmp_path / "resend.py"
    resend.write_text(script.read_text().replace("dest.exporter.before_link = lambda tmp: os._exit(9)\n", ""))
    for _ in range(2):  # the resend, and a resend of the resend (a lost acknowledgement)
        again = subprocess.run([sys.executable, str(resend)], timeout=60, capture_output=True, text=True, check=False)
        assert again.returncode == 0, again.stderr
    [file] = list(out.glob("*.si"))
    assert list(out.glob(".kassabro-*.tmp")) == []
    doc = read_strict(file.read_bytes())
    assert len(doc.vouchers) == 1 and len(doc.vouchers[0].rows) == 16


async def test_records_that_cannot_be_booked_are_refused_with_the_reason(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    good = envelope(coffee(1, "2026-11-26T10:00:00+01:00"))
    euro = envelope(
        sale(2, "2026-11-26T10:00:00+01:00", [line("X", None, "1", "10.00", 25)], [("card", "10.00")], currency="EUR")
    )
    broken_data = dict(coffee(3, "2026-11-26T10:00:00+01:00"))
    broken_data["total"] = "99.00"
    broken = envelope(broken_data)
    movement = envelope({"till_id": "kassa-1", "movement_id": "m1"}, record_type="stock_movement")
    result = await dest.send(batch([good, euro, broken, movement]))
    assert set(result.rejected) == {euro["id"], broken["id"], movement["id"]}
    assert "EUR" in result.rejected[euro["id"]]
    assert "total" in result.rejected[broken["id"]]
    assert "sales only" in result.rejected[movement["id"]]
    [file] = si_files(tmp_path)
    assert read_strict(file.read_bytes()).vouchers[0].text == "Kassa kassa-1 2026-11-26 kvitto 1 (1 kvitto)"


async def test_characters_cp437_lacks_are_replaced_visibly(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00", company_name='Smørrebrød & Łódź “Kök” — 5 € \\ "Åsa"')
    await dest.send(batch([envelope(coffee(1, "2026-11-26T10:00:00+01:00"))]))
    [file] = si_files(tmp_path)
    doc = read_strict(file.read_bytes())
    assert doc.company_name == 'Sm?rrebr?d & ?ódz "Kök" - 5 EUR / "Åsa"'
    assert b'#FNAMN "Sm?rrebr?d & ?\xa2dz \\"K\x94k\\" - 5 EUR / \\"\x8fsa\\""' in file.read_bytes()


async def test_without_checksum_there_is_no_ksumma(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00", checksum=False, series="K")
    await dest.send(batch([envelope(coffee(1, "2026-11-26T10:00:00+01:00"))]))
    [file] = si_files(tmp_path)
    assert b"#KSUMMA" not in file.read_bytes()
    doc = read_strict(file.read_bytes(), require_checksum=False)
    assert doc.checksum_ok is None and doc.vouchers[0].series == "K"


async def test_net_discount_mode_books_sales_after_discount(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00", discount_mode="net")
    record = envelope(
        sale(1, "2026-11-26T10:00:00+01:00", [line("T", "Tröja", "2", "199.00", 25, "50.00")], [("swish", "348.00")])
    )
    await dest.send(batch([record]))
    [file] = si_files(tmp_path)
    rows = {r.account: r.amount for r in read_strict(file.read_bytes()).vouchers[0].rows}
    assert rows == {"1934": Decimal("348.00"), "3001": Decimal("-278.40"), "2611": Decimal("-69.60")}


async def test_an_unwritable_directory_is_a_retryable_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    dest = SieDestination(config(blocker / "sie"), clock=FixedClock("2026-11-27T02:00:00+01:00"))
    with pytest.raises(RetryableError, match="cannot write SIE file"):
        await dest.send(batch([envelope(coffee(1, "2026-11-26T10:00:00+01:00"))]))


async def test_the_file_is_durable_and_has_no_temporary_left(tmp_path: Path) -> None:
    dest, _ = await make(tmp_path, "2026-11-27T02:00:00+01:00")
    await dest.send(batch([envelope(coffee(1, "2026-11-26T10:00:00+01:00"))], "0193-abc"))
    names = sorted(os.listdir(tmp_path))
    assert names == [".kassabro-sie-state.json", ".kassabro-sie.lock", "kassabro-20261126-store-001-0193-abc.si"]
