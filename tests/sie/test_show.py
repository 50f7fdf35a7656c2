"""``kassabro sie show FILE``: vouchers, a balance verdict and a checksum verdict."""

from __future__ import annotations

from pathlib import Path

from agent.sie.show import show

GOLDEN = Path(__file__).parent / "golden" / "kassabro-20261126-store-001-golden-day.si"


def test_show_a_good_file() -> None:
    result = show(GOLDEN)
    assert result.exit_code == 0
    assert 'Company:  Kafé & Bok "Hörnan" AB (556677-8899)' in result.text
    assert "Voucher 1  2026-11-26  Kassa kassa-1 2026-11-26 kvitto 1001-1006 (6 kvitton)" in result.text
    assert "  3001   Försäljning inom Sverige, 25 % moms       -1 018.32  Försäljning 25 % moms" in result.text
    assert "Balance:  OK, all 1 voucher(s) sum to 0.00" in result.text
    assert "Checksum: OK (#KSUMMA " in result.text
    assert result.text.rstrip().endswith("Problems: none")


def test_show_a_tampered_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.si"
    bad.write_bytes(GOLDEN.read_bytes().replace(b"#TRANS 1910 {} 32.00", b"#TRANS 1910 {} 33.00"))
    result = show(bad)
    assert result.exit_code == 1
    assert "DOES NOT BALANCE" in result.text
    assert "Balance:  NOT OK, 1 of 1 voucher(s) do not sum to 0.00" in result.text
    assert "Checksum: NOT OK" in result.text


def test_show_a_missing_file(tmp_path: Path) -> None:
    result = show(tmp_path / "nope.si")
    assert result.exit_code == 1 and "cannot read" in result.text
