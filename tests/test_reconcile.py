"""Reconciliation over a real outbox file: gaps, Z-reports against receipts, refusals, restarts.

The reconciler reads what the outbox stored (as the running agent's does, on a
reader connection), so these tests store records with the outbox's own
``enqueue`` and look at the problems and till summaries that come out.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.outbox import integrity
from agent.outbox.salvage import SalvageReport
from agent.outbox.store import OutboxStore
from agent.reconcile import Reconciler, number_list, outbox_problem, till_label
from agent.records import parse_record
from tests.helpers import make_sale, make_z_report

NOW = datetime(2026, 11, 26, 21, 0, tzinfo=UTC)


class Shop:
    """An outbox file, a reconciler on a second connection, and a way to store records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = OutboxStore.open(root / "outbox.db", store_id="store-001")
        self.state = root / "reconcile.json"
        self.reconciler = self.fresh()

    def fresh(self) -> Reconciler:
        reconciler = Reconciler(self.state, gift_card_skus={"presentkort"}, now=lambda: NOW)
        reconciler.load()
        return reconciler

    def put(self, record_type: str, *items: dict[str, Any]) -> None:
        self.store.enqueue([parse_record(record_type, item) for item in items])

    def catch_up(self, reconciler: Reconciler | None = None) -> None:
        reader = OutboxStore.open_reader(self.root / "outbox.db", store_id="store-001")
        try:
            while (reconciler or self.reconciler).catch_up(reader, limit=3) >= 3:
                pass
        finally:
            reader.conn.close()

    def texts(self, lang: str = "sv") -> list[str]:
        self.catch_up()
        return [p["text"] if lang == "sv" else p["text_en"] for p in self.reconciler.problems()]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    opened = Shop(tmp_path)
    yield opened
    opened.store.close()


def sales(*numbers: int, **fields: Any) -> list[dict[str, Any]]:
    return [make_sale(n, **fields) for n in numbers]


def test_words_for_tills_and_numbers() -> None:
    assert till_label("kassa-1", "sv") == "Kassa 1" and till_label("kassa-1", "en") == "Till 1"
    assert till_label("K2", "sv") == "Kassa K2" and till_label("till_3", "en") == "Till 3"
    assert number_list([(1004, 1004), (1010, 1011)]) == "1004, 1010, 1011"
    assert number_list([(5, 5), (100, 900)]) == "5, 100–900"
    assert number_list([(n, n) for n in range(1, 30, 2)], limit=3) == "1, 3, 5, …"


def test_a_gap_between_receipts_is_a_problem_until_the_receipt_arrives(shop: Shop) -> None:
    shop.put("sale", *sales(1, 2, 3, 6))
    assert shop.texts() == ["Kassa 1: 2 kvitton saknas (4, 5)"]
    assert shop.texts("en") == ["Till 1: 2 receipts missing (4, 5)"]
    problem = shop.reconciler.problems()[0]
    assert problem["code"] == "missing_receipts" and problem["since"] == "2026-11-26T21:00:00.000Z"
    [till] = shop.reconciler.summaries()
    assert (till["till_id"], till["last_receipt_no"], till["missing_receipts"], till["missing"]) == (
        "kassa-1",
        6,
        2,
        [4, 5],
    )
    shop.put("sale", *sales(5, 4))
    assert shop.texts() == []
    assert shop.reconciler.summaries()[0]["missing_receipts"] == 0


def test_a_z_report_names_the_receipts_of_its_range_that_never_came(shop: Shop) -> None:
    day = sales(*range(1001, 1013))
    shop.put("sale", *[s for s in day if s["receipt_no"] not in (1004, 1010, 1011)])
    shop.put("z_report", make_z_report(245, 1001, 1012, sales=day))
    assert shop.texts() == ["Kassa 1, Z 245: 3 kvitton saknas (1004, 1010, 1011)"]
    assert shop.texts("en") == ["Till 1, Z 245: 3 receipts missing (1004, 1010, 1011)"]
    assert shop.reconciler.summaries()[0]["last_z"] == {
        "z_no": 245,
        "closed_at": "2026-11-26T20:05:00+01:00",
        "first_receipt_no": 1001,
        "last_receipt_no": 1012,
        "state": "missing_receipts",
    }
    shop.put("sale", *[s for s in day if s["receipt_no"] in (1004, 1010, 1011)])
    assert shop.texts() == []
    assert shop.reconciler.summaries()[0]["last_z"]["state"] == "ok"  # type: ignore[index]


def test_a_z_report_before_its_receipts_waits_for_them(shop: Shop) -> None:
    day = sales(1, 2, 3)
    shop.put("z_report", make_z_report(1, 1, 3, sales=day))
    assert shop.texts() == ["Kassa 1, Z 1: 3 kvitton saknas (1–3)"]
    shop.put("sale", *day)
    assert shop.texts() == []


def test_a_z_total_off_by_one_ore_is_shown_figure_by_figure(shop: Shop) -> None:
    day = sales(1, 2, 3)
    shop.put("sale", *day)
    honest = make_z_report(7, 1, 3, sales=day)
    assert honest["vat"] == [{"rate": 12, "amount": "10.23"}] and honest["gross"][0]["amount"] == "95.40"
    shop.put(
        "z_report",
        honest
        | {"z_no": 8, "vat": [{"rate": 12, "amount": "10.24"}], "payments": [{"method": "card", "amount": "95.41"}]},
    )
    assert shop.texts() == [
        "Kassa 1, Z 8 stämmer inte med kvittona: moms 12 %: Z 10,24, kvitton 10,23; kort: Z 95,41, kvitton 95,40"
    ]
    assert shop.texts("en")[0] == (
        "Till 1, Z 8 does not match the receipts: VAT 12 %: Z 10.24, receipts 10.23; card: Z 95.41, receipts 95.40"
    )
    assert shop.reconciler.problems()[0]["code"] == "z_mismatch"


def test_vat_is_summed_per_receipt_or_taken_as_printed(shop: Shop) -> None:
    """Three receipts of 31.80 at 12 %: 3 × 3.41 = 10.23, where the day's gross would give 10.22."""
    day = sales(1, 2, 3)
    printed = sales(4, vat=[{"rate": 12, "amount": "3.40"}])  # the till printed its own VAT
    shop.put("sale", *day, *printed)
    shop.put("z_report", make_z_report(1, 1, 4, sales=day + sales(4)) | {"vat": [{"rate": 12, "amount": "13.63"}]})
    assert shop.texts() == []


def test_a_refused_receipt_leaves_a_gap_that_says_why(shop: Shop) -> None:
    shop.put("sale", *sales(1, 2, 4))
    shop.reconciler.refused("sale", make_sale(3, total="1.00"), [{"loc": ["total"], "msg": "total is 1.00 but ..."}])
    assert shop.texts() == ["Kassa 1: 1 kvitto saknas (3); 3 avvisades av agenten: total: total is 1.00 but ..."]
    assert shop.texts("en") == [
        "Till 1: 1 receipt missing (3); 3 was refused by the agent: total: total is 1.00 but ..."
    ]
    # a refused receipt past the last one received is missing too
    shop.reconciler.refused("sale", make_sale(5, total="1.00"), [{"loc": ["total"], "msg": "wrong"}])
    assert shop.texts()[0].startswith("Kassa 1: 2 kvitton saknas (3, 5); 3 (+1) avvisades")
    shop.put("sale", *sales(3, 5))
    assert shop.texts() == []


def test_a_refusal_without_a_readable_till_and_number_is_ignored(shop: Shop) -> None:
    for data in ({"till_id": "kassa-1"}, {"receipt_no": 4}, {"till_id": "no spaces", "receipt_no": 4}, [1], None):
        shop.reconciler.refused("sale", data, [])
    shop.reconciler.refused("stock_movement", {"till_id": "kassa-1", "receipt_no": 9}, [])
    shop.put("sale", *sales(1))
    assert shop.texts() == []


def test_a_refused_or_skipped_z_report_is_a_problem(shop: Shop) -> None:
    shop.put("z_report", make_z_report(1, None, None), make_z_report(4, None, None))
    shop.reconciler.refused("z_report", make_z_report(2, None, None), [{"loc": ["vat"], "msg": "bad"}])
    assert shop.texts() == ["Kassa 1: Z 2 avvisades av agenten: vat: bad", "Kassa 1: 1 Z-rapport saknas (Z 3)"]
    shop.put("z_report", make_z_report(2, None, None), make_z_report(3, None, None))
    assert shop.texts() == []


def test_gift_cards_sold_count_in_the_gross_at_rate_zero(shop: Shop) -> None:
    gift = make_sale(
        1,
        lines=[{"sku": "presentkort", "quantity": 1, "unit_price": "500.00", "vat_rate": 0}],
        total="500.00",
        payments=[{"method": "cash", "amount": "500.00"}],
    )
    shop.put("sale", gift)
    z = make_z_report(1, 1, 1, sales=[gift])
    assert z["gross"] == [{"rate": 0, "amount": "500.00"}] and z["vat"] == []
    shop.put("z_report", z)
    assert shop.texts() == []


def test_the_state_survives_a_restart_and_is_rebuilt_when_lost(shop: Shop) -> None:
    day = sales(1, 2, 3, 5)
    shop.put("sale", *day)
    shop.put("z_report", make_z_report(1, 1, 5, sales=day + sales(4)))
    shop.reconciler.refused("sale", make_sale(4, total="2.00"), [{"loc": ["total"], "msg": "no"}])
    expected = shop.texts()
    assert expected == ["Kassa 1, Z 1: 1 kvitto saknas (4); 4 avvisades av agenten: total: no"]
    shop.reconciler.save()
    saved = json.loads(shop.state.read_text())
    assert saved["outbox_seq"] == shop.reconciler.outbox_seq and saved["tills"]["kassa-1"]["seen"] == [[1, 3], [5, 5]]

    restarted = shop.fresh()  # the saved state, nothing read from the outbox yet
    assert [p["text"] for p in restarted.problems()] == expected

    shop.put("sale", *sales(4))  # arrives while "the agent" restarts
    shop.catch_up(restarted)
    assert restarted.problems() == []
    assert restarted.summaries()[0]["last_z"]["state"] == "ok"  # type: ignore[index]

    shop.state.unlink()  # lost: rebuilt from what the outbox holds (the refusal is forgotten, nothing else)
    rebuilt = shop.fresh()
    shop.catch_up(rebuilt)
    assert rebuilt.problems() == [] and rebuilt.summaries() == restarted.summaries()


def test_folding_the_same_records_twice_changes_nothing(shop: Shop) -> None:
    """A crash after the outbox committed but before the state was saved reads records again."""
    day = sales(1, 2, 3)
    shop.put("sale", *day[:2])
    shop.put("z_report", make_z_report(1, 1, 3, sales=day))
    shop.catch_up()
    shop.reconciler.save()
    shop.put("sale", day[2])
    shop.catch_up()
    once = shop.reconciler.summaries()
    again = shop.fresh()  # the state saved before receipt 3, then everything since read again
    again.outbox_seq = 0
    shop.catch_up(again)
    assert again.summaries() == once and again.problems() == []
    assert again.z_check("kassa-1", 1).sums.count == 3  # type: ignore[union-attr]


def test_a_replaced_outbox_is_read_from_its_start(shop: Shop, tmp_path: Path) -> None:
    shop.put("sale", *sales(1, 2, 3, 4, 5, 6))
    shop.catch_up()
    shop.reconciler.save()
    shop.store.close()
    shutil.move(tmp_path / "outbox.db", tmp_path / "outbox.db.corrupt")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"outbox.db{suffix}").unlink(missing_ok=True)
    shop.store = OutboxStore.open(tmp_path / "outbox.db", store_id="store-001")
    shop.put("sale", *sales(8))
    assert shop.texts() == ["Kassa 1: 1 kvitto saknas (7)"]


@pytest.mark.parametrize(
    "english",
    [
        pytest.param(
            "2026-12-01T03:00:00Z: "
            + integrity.damaged_file_moved("database disk image is malformed", "/x/outbox.db.corrupt-1"),
            id="moved aside while running",
        ),
        pytest.param(integrity.Vetting(moved_to="/x/outbox.db.corrupt-2").event, id="moved aside at start"),
        pytest.param(integrity.deferred_check_failed("page 7: btreeInitPage"), id="restart needed"),
        pytest.param(SalvageReport("/x/outbox.db.corrupt-1", read=9, carried=9).summary(), id="salvaged"),
        pytest.param(SalvageReport("/x/o.db", error="not a database").summary(), id="nothing salvaged"),
    ],
)
def test_an_outbox_problem_is_told_in_swedish_first_with_the_english_details(english: str) -> None:
    """The shop reads Swedish: each wording the outbox keeps has its own sentence, not the catch-all."""
    problem = outbox_problem(english)
    catch_all = outbox_problem("a wording nobody translated")["text"].split(" (Detaljer:")[0]
    assert problem["code"] == "outbox" and problem["text_en"] == english
    swedish, _, details = problem["text"].partition(" (Detaljer: ")
    assert swedish != catch_all and details == f"{english})"
