"""A golden day: fixed receipts give exactly the expected voucher, account by account.

The expected amounts were computed by hand (prices include VAT):

- 12 %: 31.80 + 54.95 + 58.44 - 54.95 = 90.24 gross; VAT 90.24 × 12/112 = 9.67; net 80.57.
- 6 %: 39.00 + 249.00 - 24.90 (share of the 27.40 receipt discount: 27.40 × 249/274)
  = 263.10 gross; VAT 14.89; discount net 24.90 × 100/106 = 23.49; sales 248.21 + 23.49 = 271.70.
- 25 %: goods 49.90 + 398.00 + 25.00 + 800.00 = 1272.90, discounts 50.00 + 2.50 = 52.50,
  fees 99.00 + 29.00; gross 1348.40; VAT 269.68; shipping net 79.20, handling net 23.20,
  discount net 42.00; sales 1078.72 - 79.20 - 23.20 + 42.00 = 1018.32 (= 1272.90 × 0.8).
- payments: cash 87.00 - 55.00, card 147.34 + 46.60, Swish 348.00, gift card 200.00,
  invoice 928.00 = 1701.94 = the receipts' totals; rounding 0.25 - 0.05 = 0.20 credited.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from agent.destinations.sie import SieDestination
from agent.sie.reader import read_strict
from tests.sie.factory import FixedClock, batch, config, envelope, golden_sales

GOLDEN = Path(__file__).parent / "golden" / "kassabro-20261126-store-001-golden-day.si"

EXPECTED = {
    "1910": Decimal("32.00"),
    "1580": Decimal("193.94"),
    "1934": Decimal("348.00"),
    "2421": Decimal("200.00"),
    "1510": Decimal("928.00"),
    "3731": Decimal("65.49"),
    "3001": Decimal("-1018.32"),
    "3002": Decimal("-80.57"),
    "3003": Decimal("-271.70"),
    "3520": Decimal("-79.20"),
    "3540": Decimal("-23.20"),
    "2611": Decimal("-269.68"),
    "2621": Decimal("-9.67"),
    "2631": Decimal("-14.89"),
    "3740": Decimal("-0.20"),
}


async def write_golden_day(directory: Path) -> Path:
    clock = FixedClock("2026-11-27T02:00:00+01:00")
    dest = SieDestination(config(directory), clock=clock, program_version="0.1.0")
    await dest.start()
    records = [envelope(s, record_id=f"golden-{i}") for i, s in enumerate(golden_sales(), start=1)]
    assert all(dest.accept(r) for r in records)
    result = await dest.send(batch(records, batch_id="golden-day"))
    assert result.rejected == {}
    files = sorted(directory.glob("*.si"))
    assert [f.name for f in files] == [GOLDEN.name]
    return files[0]


async def test_golden_day_is_exactly_the_checked_in_file(tmp_path: Path) -> None:
    written = await write_golden_day(tmp_path)
    assert written.read_bytes() == GOLDEN.read_bytes()


async def test_golden_day_account_by_account(tmp_path: Path) -> None:
    doc = read_strict((await write_golden_day(tmp_path)).read_bytes())
    assert len(doc.vouchers) == 1
    voucher = doc.vouchers[0]
    assert voucher.date is not None and voucher.date.isoformat() == "2026-11-26"
    assert voucher.text == "Kassa kassa-1 2026-11-26 kvitto 1001-1006 (6 kvitton)"
    by_account: dict[str, Decimal] = {}
    for row in voucher.rows:
        by_account[row.account] = by_account.get(row.account, Decimal(0)) + row.amount
    assert by_account == EXPECTED
    assert sum(EXPECTED.values()) == 0
    payments = sum(by_account[a] for a in ("1910", "1580", "1934", "2421", "1510"))
    assert payments == Decimal("1701.94")
    assert doc.company_name == 'Kafé & Bok "Hörnan" AB'
    assert doc.orgnr == "556677-8899" and doc.checksum_ok is True
