"""A golden day in both voucher modes: fixed receipts (and their Z-report) give exactly the expected voucher.

The expected amounts were computed by hand (prices include VAT; VAT per receipt, as the till prints it):

- 12 %: receipts 1001 (31.80 + 54.95 = 86.75, VAT 9.29), 1002 (58.44, VAT 6.26), the return 1006
  (-54.95, VAT -5.89): gross 90.24, VAT 9.66 (the day's gross would give 9.67); net 80.58.
- 6 %: 1002 (39.00, VAT 2.21), 1004 (249.00 - 24.90, its share of the 27.40 receipt discount
  = 224.10, VAT 12.68): gross 263.10, VAT 14.89; discount net 24.90 × 100/106 = 23.49;
  sales 263.10 - 14.89 + 23.49 = 271.70.
- 25 %: 1002 (49.90, VAT 9.98), 1003 (398.00 - 50.00 = 348.00, VAT 69.60), 1004 (25.00 - 2.50, VAT 4.50),
  1005 (800.00 + 99.00 + 29.00 = 928.00, VAT 185.60): VAT 269.68; shipping net 79.20, handling net
  23.20, discount net 42.00; sales 1348.40 - 269.68 - 79.20 - 23.20 + 42.00 = 1018.32.
- payments: cash 87.00 - 55.00, card 147.34 + 46.60, Swish 348.00, gift card 200.00,
  invoice 928.00 = 1701.94 = the receipts' totals; rounding 0.25 - 0.05 = 0.20 credited.
- discounts on 3730 (BAS "Lämnade rabatter"); 3540 and 1934 get no #KONTO name (BAS gives none we trust).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.outbox.store import OutboxStore
from agent.reconcile import Reconciler
from agent.sie.reader import read_strict
from tests.sie.factory import Books, by_account, golden_sales

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_DAY = GOLDEN_DIR / "kassabro-20261126-store-001-golden-day.si"
GOLDEN_Z = GOLDEN_DIR / "kassabro-20261126-store-001-golden-z.si"

EXPECTED = {
    "1910": Decimal("32.00"),
    "1580": Decimal("193.94"),
    "1934": Decimal("348.00"),
    "2421": Decimal("200.00"),
    "1510": Decimal("928.00"),
    "3730": Decimal("65.49"),
    "3001": Decimal("-1018.32"),
    "3002": Decimal("-80.58"),
    "3003": Decimal("-271.70"),
    "3520": Decimal("-79.20"),
    "3540": Decimal("-23.20"),
    "2611": Decimal("-269.68"),
    "2621": Decimal("-9.66"),
    "2631": Decimal("-14.89"),
    "3740": Decimal("-0.20"),
}


def golden_z(**changes: Any) -> dict[str, Any]:
    """The till's Z-report of the golden day, as it printed it."""
    z = {
        "till_id": "kassa-1",
        "z_no": 245,
        "opened_at": "2026-11-26T08:55:00+01:00",
        "closed_at": "2026-11-26T18:02:00+01:00",
        "first_receipt_no": 1001,
        "last_receipt_no": 1006,
        "receipt_count": 6,
        "gross": [
            {"rate": 25, "amount": "1348.40"},
            {"rate": 12, "amount": "90.24"},
            {"rate": 6, "amount": "263.10"},
        ],
        "vat": [{"rate": 25, "amount": "269.68"}, {"rate": 12, "amount": "9.66"}, {"rate": 6, "amount": "14.89"}],
        "payments": [
            {"method": "card", "amount": "193.94"},
            {"method": "cash", "amount": "32.00"},
            {"method": "gift_card", "amount": "200.00"},
            {"method": "invoice", "amount": "928.00"},
            {"method": "swish", "amount": "348.00"},
        ],
        "rounding": "0.20",
        "returns_total": "-55.00",
        "grand_total": "987654.32",
    }
    return z | changes


def write(tmp_path: Path, mode: str, z: dict[str, Any] | None = None) -> Path:
    books = Books(tmp_path, voucher_per=mode)
    try:
        books.put(*golden_sales())
        if z is not None:
            books.put(z, record_type="z_report")
        report = books.run()
        assert report.refused == {} and report.waiting == 0
        [file] = books.files()
        return file
    finally:
        books.close()


def test_golden_day_is_exactly_the_checked_in_file(tmp_path: Path) -> None:
    assert write(tmp_path, "day").read_bytes() == GOLDEN_DAY.read_bytes()


def test_golden_z_day_is_exactly_the_checked_in_file(tmp_path: Path) -> None:
    assert write(tmp_path, "z_report", golden_z()).read_bytes() == GOLDEN_Z.read_bytes()


def test_golden_day_account_by_account_in_both_modes(tmp_path: Path) -> None:
    for golden, text in (
        (GOLDEN_DAY, "Kassa kassa-1 2026-11-26 kvitto 1001-1006 (6 kvitton)"),
        (GOLDEN_Z, "Kassa kassa-1 Z 245 2026-11-26 kvitto 1001-1006 (6 kvitton)"),
    ):
        doc = read_strict(golden.read_bytes())
        [voucher] = doc.vouchers
        assert voucher.date is not None and voucher.date.isoformat() == "2026-11-26"
        assert voucher.text == text
        assert by_account(voucher) == EXPECTED
        assert sum(EXPECTED.values()) == 0
        assert sum(by_account(voucher)[a] for a in ("1910", "1580", "1934", "2421", "1510")) == Decimal("1701.94")
        assert doc.company_name == 'Kafé & Bok "Hörnan" AB'
        assert doc.orgnr == "556677-8899" and doc.checksum_ok is True
        assert set(doc.accounts) == set(EXPECTED) - {"1934", "3540"}


def test_the_golden_z_report_reconciles_with_its_receipts(tmp_path: Path) -> None:
    """The Z the golden Z day books is one the agent's reconciliation finds in order."""
    books = Books(tmp_path)
    try:
        books.put(*golden_sales())
        books.put(golden_z(), record_type="z_report")
        reconciler = Reconciler(None)
        reader = OutboxStore.open_reader(tmp_path / "outbox.db", store_id="store-001")
        try:
            reconciler.catch_up(reader)
        finally:
            reader.conn.close()
        assert reconciler.problems() == []
        assert reconciler.summaries()[0]["last_z"]["state"] == "ok"  # type: ignore[index]
    finally:
        books.close()


def test_z_mode_books_the_z_reports_vat_and_the_difference_shows(tmp_path: Path) -> None:
    """A till that computes VAT on the day's gross prints 9.67 at 12 %: Z mode books what it printed."""
    file = write(tmp_path, "z_report", golden_z(vat=[{"rate": 25, "amount": "269.68"}, {"rate": 12, "amount": "9.67"},
                                                      {"rate": 6, "amount": "14.89"}]))  # fmt: skip
    accounts = by_account(read_strict(file.read_bytes()).vouchers[0])
    assert (accounts["2621"], accounts["3002"]) == (Decimal("-9.67"), Decimal("-80.57"))
    reconciler = Reconciler(None)
    reader = OutboxStore.open_reader(tmp_path / "outbox.db", store_id="store-001")
    try:
        reconciler.catch_up(reader)
    finally:
        reader.conn.close()
    assert [p["text"] for p in reconciler.problems()] == [
        "Kassa 1, Z 245 stämmer inte med kvittona: moms 12 %: Z 9,67, kvitton 9,66"
    ]


def test_vat_basis_day_computes_vat_on_the_days_gross(tmp_path: Path) -> None:
    accounts = by_account(read_strict(write(tmp_path, "day").read_bytes()).vouchers[0])
    assert accounts["2621"] == Decimal("-9.66")
    books = Books(tmp_path / "day-basis", vat_basis="day")
    try:
        books.put(*golden_sales())
        books.run()
        day_basis = by_account(books.vouchers()[0])
    finally:
        books.close()
    assert (day_basis["2621"], day_basis["3002"]) == (Decimal("-9.67"), Decimal("-80.57"))


def test_printed_vat_on_a_receipt_is_booked_as_printed(tmp_path: Path) -> None:
    sales = golden_sales()
    sales[0] = sales[0] | {"vat": [{"rate": 12, "amount": "9.30"}]}  # the till printed 9.30 on receipt 1001
    books = Books(tmp_path)
    try:
        books.put(*sales)
        books.run()
        accounts = by_account(books.vouchers()[0])
    finally:
        books.close()
    assert (accounts["2621"], accounts["3002"]) == (Decimal("-9.67"), Decimal("-80.57"))
