"""The strict reader refuses what a careful importer would, and recomputes #KSUMMA."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from agent.sie.reader import SieFormatError, read, read_strict, split_line

GOLDEN = Path(__file__).parent / "golden" / "kassabro-20261126-store-001-golden-day.si"


def body(*lines: str, checksum: bool = True) -> bytes:
    """A minimal 4I file around ``lines``, with a correct #KSUMMA computed independently."""
    items = [
        '#PROGRAM "Kassabro" "1.0"',
        "#FORMAT PC8",
        "#GEN 20261127",
        "#SIETYP 4",
        '#FNAMN "Åsa \\"Kiosk\\" AB"',
        *lines,
    ]
    text = ["#FLAGGA 0"] + (["#KSUMMA"] if checksum else []) + items
    if checksum:
        # the spec's scope, spelled out by hand: labels and field contents, no spaces,
        # no enclosing quotes or escape backslashes, no braces
        content = (
            "#PROGRAMKassabro1.0#FORMATPC8#GEN20261127#SIETYP4"
            + '#FNAMNÅsa "Kiosk" AB'
            + "".join(_content(line) for line in lines)
        )
        text.append(f"#KSUMMA {zlib.crc32(content.encode('cp437'))}")
    return ("\r\n".join(text) + "\r\n").encode("cp437")


def _content(line: str) -> str:
    if line.strip() in ("{", "}"):
        return ""
    try:
        label, fields = split_line(line)
    except ValueError:
        return ""  # the reader reports the broken line itself
    return label + "".join(f.value for f in fields)


VOUCHER = [
    '#VER "" "" 20261126 "Dag"',
    "{",
    '#TRANS 1910 {} 100.00 20261126 "Kontant"',
    "#TRANS 3001 {} -80.00",
    "#TRANS 2611 {} -20.00",
    "}",
]


def test_the_golden_file_reads_strictly() -> None:
    doc = read_strict(GOLDEN.read_bytes())
    assert doc.checksum_ok and doc.format == "PC8" and doc.sietyp == "4"
    assert doc.accounts["3740"] == "Öres- och kronutjämning"


def test_ksumma_matches_an_independent_computation() -> None:
    doc = read_strict(body(*VOUCHER))
    assert doc.checksum_ok is True and doc.vouchers[0].balance == 0


def test_a_changed_amount_breaks_the_checksum() -> None:
    data = body(*VOUCHER).replace(b"100.00", b"90.00").replace(b"-80.00", b"-70.00")
    with pytest.raises(SieFormatError, match="#KSUMMA says"):
        read_strict(data)


def test_a_checksum_in_signed_form_is_the_same_sum() -> None:
    data = body(*VOUCHER)
    declared = int(data.rsplit(b" ", 1)[1])
    signed = declared - (1 << 32) if declared >= 1 << 31 else declared
    assert read(data.replace(str(declared).encode(), str(signed).encode())).checksum_ok is True


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["#IB 0 1910 100.00", *VOUCHER], "#IB (a balance) may not be in a type 4I file"),
        (["#UB 0 1910 100.00", *VOUCHER], "#UB"),
        (["#RES 0 3001 -80.00", *VOUCHER], "#RES"),
        (["#PSALDO 0 202611 3001 {} -80.00", *VOUCHER], "#PSALDO"),
        (
            ['#VER "" "" 20261126 "Dag"', "{", "#TRANS 1910 {} 100.00", "#TRANS 3001 {} -99.99", "}"],
            "sums to 0.01, not 0.00",
        ),
        (['#VER "" "" 20261131 "Dag"', "{", "#TRANS 1910 {} 0.00", "}"], "not a real date"),
        (['#VER "" "" 20261126 "Dag', "{", "}"], "quoted field is not closed"),
        (['#VER "" "" 20261126 "Dag"', "{", '#TRANS 1910 {1 "7" 100.00', "}"], "object list is not closed"),
        (
            ['#VER "" "" 20261126 "Dag"', "{", "#TRANS 1910 {} 1.005", "#TRANS 3001 {} -1.005", "}"],
            "at most two decimals",
        ),
        (['#VER "" "" 20261126 "Dag"', "{", "#TRANS 1910 100.00", "}"], "object list in braces"),
        (["#TRANS 1910 {} 100.00"], "#TRANS outside a voucher"),
        (['#VER "" "" 20261126 "Dag"', "#TRANS 1910 {} 0.00"], "followed by '{'"),
        (['#VER "" "" 20261126 "Dag"', "{", "#TRANS 1910 {} 0.00"], "not closed with '}'"),
        (['#VER "" "" 20261126 "Dag"', "{", "}"], "has no #TRANS rows"),
        (["#HEMLIG 1", *VOUCHER], "unknown label #HEMLIG"),
        (["#FORMAT PC8", *VOUCHER], "#FORMAT appears twice"),
    ],
)
def test_strict_reader_refuses(lines: list[str], problem: str) -> None:
    with pytest.raises(SieFormatError) as caught:
        read_strict(body(*lines))
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_a_missing_checksum_is_refused_when_required() -> None:
    with pytest.raises(SieFormatError, match="#KSUMMA is missing"):
        read_strict(body(*VOUCHER, checksum=False))
    assert read_strict(body(*VOUCHER, checksum=False), require_checksum=False).checksum_ok is None


def test_a_file_must_start_with_flagga_and_be_type_4() -> None:
    data = body(*VOUCHER).replace(b"#SIETYP 4", b"#SIETYP 3")
    with pytest.raises(SieFormatError, match="#SIETYP must be 4"):
        read_strict(data)
    with pytest.raises(SieFormatError, match="starts with #FLAGGA"):
        read_strict(b"#GEN 20261127\r\n" + body(*VOUCHER))


def test_quotes_escapes_and_braces_are_split_as_the_spec_says() -> None:
    label, fields = split_line('#TRANS 1910 {1 "Butik 7" 6 12} -1.50 "" "Säg \\"hej\\" {inte}"')
    assert label == "#TRANS"
    assert [f.value for f in fields] == ["1910", "1Butik 7612", "-1.50", "", 'Säg "hej" {inte}']
    assert fields[1].is_list and fields[1].items == ("1", "Butik 7", "6", "12")
