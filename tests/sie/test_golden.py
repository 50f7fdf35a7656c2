"""A golden day in both voucher modes: fixed receipts (and their Z-report) give exactly the expected voucher.

The expected amounts were computed by hand (prices include VAT; food at 6 %, the reduced rate in
force since 2026-04-01; VAT per receipt, as the till prints it):

- 6 %: receipts 1001 (31.80 + 54.95 = 86.75, VAT 4.91), 1002 (58.44 + 39.00 = 97.44, VAT 5.52),
  1004 (249.00 - 24.90, its share 27.40 × 249/274 of the receipt discount, = 224.10, VAT 12.68),
  the return 1006 (-54.95, VAT -3.11): gross 353.34, VAT 20.00; discount net 24.90 × 100/106 = 23.49;
  sales 353.34 - 20.00 + 23.49 = 356.83.
- 25 %: 1002 (49.90, VAT 9.98), 1003 (398.00 - 50.00 = 348.00, VAT 69.60), 1004 (25.00 - 2.50, VAT 4.50),
  1005 (800.00 + 99.00 + 29.00 = 928.00, VAT 185.60): gross 1348.40, VAT 269.68; shipping net 79.20,
  handling net 23.20, discount net 42.00; sales 1348.40 - 269.68 - 79.20 - 23.20 + 42.00 = 1018.32.
- payments: cash 87.00 - 55.00, card 147.34 + 46.60, Swish 348.00, gift card 200.00,
  invoice 928.00 = 1701.94 = the receipts' totals; rounding 0.25 - 0.05 = 0.20 credited.
- debits 1701.94 + 65.49 = credits 1018.32 + 356.83 + 79.20 + 23.20 + 269.68 + 20.00 + 0.20 = 1767.43.
- discounts on 3730 (BAS "Lämnade rabatter"); 3540 and 1934 get no #KONTO name (BAS gives none we trust).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.outbox.store import OutboxStore
from agent.reconcile import Reconciler
from agent.sie.reader import read_strict
from tests.sie.factory import Books, by_account, golden_sales, line, sale

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
    "3003": Decimal("-356.83"),
    "3520": Decimal("-79.20"),
    "3540": Decimal("-23.20"),
    "2611": Decimal("-269.68"),
    "2631": Decimal("-20.00"),
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
        "gross": [{"rate": 25, "amount": "1348.40"}, {"rate": 6, "amount": "353.34"}],
        "vat": [{"rate": 25, "amount": "269.68"}, {"rate": 6, "amount": "20.00"}],
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
    """A till that printed 20.01 at 6 % on its Z: Z mode books what it printed, the page shows the öre."""
    file = write(tmp_path, "z_report", golden_z(vat=[{"rate": 25, "amount": "269.68"}, {"rate": 6, "amount": "20.01"}]))
    accounts = by_account(read_strict(file.read_bytes()).vouchers[0])
    assert (accounts["2631"], accounts["3003"]) == (Decimal("-20.01"), Decimal("-356.82"))
    reconciler = Reconciler(None)
    reader = OutboxStore.open_reader(tmp_path / "outbox.db", store_id="store-001")
    try:
        reconciler.catch_up(reader)
    finally:
        reader.conn.close()
    assert [p["text"] for p in reconciler.problems()] == [
        "Kassa 1, Z 245 stämmer inte med kvittona: moms 6 %: Z 20,01, kvitton 20,00"
    ]


def ten_kronor(n: int) -> dict[str, Any]:
    """A 10.00 receipt at 6 %: its VAT is 0.57 (0.566...), three of them 1.71; the day's 30.00 gives 1.70."""
    return sale(n, "2026-11-26T10:00:00+01:00", [line("BULLE", "Kanelbulle", "1", "10.00", 6)], [("card", "10.00")])


def test_vat_is_the_receipts_sum_unless_vat_basis_is_day(tmp_path: Path) -> None:
    results = {}
    for basis in ("receipt", "day"):
        books = Books(tmp_path / basis, vat_basis=basis)
        try:
            books.put(*[ten_kronor(n) for n in (1, 2, 3)])
            books.run()
            accounts = by_account(books.vouchers()[0])
        finally:
            books.close()
        results[basis] = (accounts["2631"], accounts["3003"])
    assert results == {
        "receipt": (Decimal("-1.71"), Decimal("-28.29")),
        "day": (Decimal("-1.70"), Decimal("-28.30")),
    }


def test_printed_vat_on_a_receipt_is_booked_as_printed(tmp_path: Path) -> None:
    receipts = [ten_kronor(1), ten_kronor(2), ten_kronor(3) | {"vat": [{"rate": 6, "amount": "0.56"}]}]
    books = Books(tmp_path)
    try:
        books.put(*receipts)
        books.run()
        accounts = by_account(books.vouchers()[0])
    finally:
        books.close()
    assert (accounts["2631"], accounts["3003"]) == (Decimal("-1.70"), Decimal("-28.30"))
