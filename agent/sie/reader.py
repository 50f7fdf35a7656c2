"""A strict SIE 4I reader: it refuses what a careful importer would refuse.

It checks the lexical rules (CP437, quoting with ``\\"`` escapes, object lists
in braces, ``{`` / ``}`` around each voucher's rows), the header a 4I file
must have (``#FLAGGA``, ``#FORMAT PC8``, ``#SIETYP 4``, ``#GEN``, ``#FNAMN``),
that no balance records (``#IB``, ``#UB``, ``#RES``, ``#PSALDO``, ...) are
present, that dates are real YYYYMMDD dates and amounts have at most two
decimals, that every voucher sums to exactly zero, and recomputes ``#KSUMMA``.
Unknown labels are refused too: a file Kassabro wrote never has them. An
account without a ``#KONTO`` line is fine: a 4I file books on the importer's
own chart, and Kassabro names only the accounts BAS names (``agent.sie.writer``).

``read`` collects every problem; ``read_strict`` raises ``SieFormatError``
listing them. ``kassabro sie show`` and the tests use both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal

from agent.sie.format import ENCODING, Ksumma

_AMOUNT = re.compile(r"^-?[0-9]+(\.[0-9]{1,2})?$")
_ACCOUNT = re.compile(r"^[0-9]+$")
_INTEGER = re.compile(r"^-?[0-9]+$")
FORBIDDEN_IN_4I = frozenset({"#IB", "#UB", "#OIB", "#OUB", "#RES", "#PSALDO", "#PBUDGET"})
KNOWN = frozenset(
    {
        "#FLAGGA",
        "#KSUMMA",
        "#PROGRAM",
        "#FORMAT",
        "#GEN",
        "#SIETYP",
        "#PROSA",
        "#FTYP",
        "#FNR",
        "#ORGNR",
        "#BKOD",
        "#ADRESS",
        "#FNAMN",
        "#RAR",
        "#TAXAR",
        "#OMFATTN",
        "#KPTYP",
        "#VALUTA",
        "#KONTO",
        "#KTYP",
        "#ENHET",
        "#SRU",
        "#DIM",
        "#UNDERDIM",
        "#OBJEKT",
        "#VER",
        "#TRANS",
    }
)

_REPEATABLE = frozenset({"#KONTO", "#KTYP", "#ENHET", "#SRU", "#DIM", "#UNDERDIM", "#OBJEKT", "#RAR", "#VER", "#TRANS"})


class SieFormatError(ValueError):
    """The file breaks the SIE rules; ``problems`` lists each one with its line."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Field:
    """One field: its decoded content, and whether it was an object list or quoted."""

    value: str
    is_list: bool = False
    items: tuple[str, ...] = ()


@dataclass
class SieTrans:
    account: str
    amount: Decimal
    date: date | None
    text: str
    line: int


@dataclass
class SieVoucher:
    series: str
    number: str
    date: date | None
    text: str
    line: int
    rows: list[SieTrans] = field(default_factory=list)

    @property
    def balance(self) -> Decimal:
        return sum((row.amount for row in self.rows), Decimal("0.00"))


@dataclass
class SieDocument:
    """What a SIE file says, and every problem found in it."""

    flagga: str | None = None
    program: list[str] = field(default_factory=list)
    format: str | None = None
    generated: date | None = None
    sietyp: str | None = None
    orgnr: str | None = None
    company_name: str | None = None
    kptyp: str | None = None
    accounts: dict[str, str] = field(default_factory=dict)
    vouchers: list[SieVoucher] = field(default_factory=list)
    checksum_declared: int | None = None
    checksum_computed: int | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def has_checksum(self) -> bool:
        return self.checksum_declared is not None

    @property
    def checksum_ok(self) -> bool | None:
        """True or False when the file carries ``#KSUMMA``, None when it does not."""
        if self.checksum_declared is None:
            return None
        computed = self.checksum_computed
        # Some writers print the CRC as a signed 32-bit number; it is the same sum.
        return computed is not None and self.checksum_declared & 0xFFFFFFFF == computed

    @property
    def unbalanced(self) -> list[SieVoucher]:
        return [v for v in self.vouchers if v.balance != 0]


class _LineError(ValueError):
    pass


def split_line(text: str) -> tuple[str, list[Field]]:
    """A line's label and fields, per the SIE quoting and brace rules.

    Raises:
        _LineError: on an unterminated quote or brace, or a stray quote or brace.
    """
    pos, end = 0, len(text)
    tokens: list[Field] = []

    def skip_space() -> None:
        nonlocal pos
        while pos < end and text[pos] in " \t":
            pos += 1

    def word(in_list: bool = False) -> str:
        nonlocal pos
        if text[pos] == '"':
            pos += 1
            out: list[str] = []
            while True:
                if pos >= end:
                    raise _LineError("a quoted field is not closed")
                ch = text[pos]
                if ch == "\\" and pos + 1 < end and text[pos + 1] == '"':
                    out.append('"')
                    pos += 2
                elif ch == '"':
                    pos += 1
                    break
                else:
                    out.append(ch)
                    pos += 1
            if pos < end and text[pos] not in " \t}":
                raise _LineError("a quoted field must be followed by a space")
            return "".join(out)
        start = pos
        while pos < end and text[pos] not in " \t":
            if in_list and text[pos] == "}":
                break
            if text[pos] in '"{}':
                raise _LineError(f"unexpected {text[pos]!r} inside a field")
            pos += 1
        return text[start:pos]

    skip_space()
    while pos < end:
        if text[pos] == "{":
            pos += 1
            items: list[str] = []
            while True:
                skip_space()
                if pos >= end:
                    raise _LineError("an object list is not closed with '}'")
                if text[pos] == "}":
                    pos += 1
                    break
                if text[pos] == "{":
                    raise _LineError("object lists cannot be nested")
                items.append(word(in_list=True))
            tokens.append(Field("".join(items), True, tuple(items)))
        elif text[pos] == "}":
            raise _LineError("a '}' without its '{'")
        else:
            tokens.append(Field(word()))
        skip_space()
    if not tokens:
        return "", []
    label = tokens[0]
    if label.is_list or not label.value.startswith("#"):
        raise _LineError("a line must start with a #LABEL")
    return label.value.upper(), tokens[1:]


def _date(value: str) -> date:
    if not re.fullmatch(r"[0-9]{8}", value):
        raise _LineError(f"{value!r} is not a date YYYYMMDD")
    try:
        return datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        raise _LineError(f"{value!r} is not a real date") from None


def _amount(value: str) -> Decimal:
    if not _AMOUNT.match(value):
        raise _LineError(f"{value!r} is not an amount (digits, a dot, at most two decimals)")
    return Decimal(value)


def read(data: bytes) -> SieDocument:
    """Parse ``data`` (the file's bytes) and collect every problem in ``errors``."""
    doc = SieDocument()
    text = data.decode(ENCODING)
    if "\r" in text.replace("\r\n", ""):
        doc.errors.append("line ends: a CR that is not part of CR LF")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    crc: Ksumma | None = None
    closed_checksum = False
    current: SieVoucher | None = None
    in_block = False
    expect_block = False
    seen: set[str] = set()

    for number, raw in enumerate(lines, start=1):
        bad = [c for c in raw if ord(c) < 32 and c != "\t"]
        if bad:
            doc.errors.append(f"line {number}: control character {ord(bad[0]):#04x}")
            continue
        stripped = raw.strip(" \t")
        if stripped == "{":
            if not expect_block:
                doc.errors.append(f"line {number}: '{{' that does not follow a #VER")
            expect_block, in_block = False, True
            continue
        if stripped == "}":
            if not in_block or current is None:
                doc.errors.append(f"line {number}: '}}' without an open voucher")
            else:
                if not current.rows:
                    doc.errors.append(f"line {current.line}: voucher {current.text!r} has no #TRANS rows")
                doc.vouchers.append(current)
            current, in_block = None, False
            continue
        try:
            label, fields = split_line(raw)
        except _LineError as exc:
            doc.errors.append(f"line {number}: {exc}")
            continue
        if not label:
            continue
        if expect_block:
            doc.errors.append(f"line {number}: a #VER must be followed by '{{' on its own line")
            expect_block = False
        if number == 1 and label != "#FLAGGA":
            doc.errors.append("line 1: a SIE file starts with #FLAGGA")
        if closed_checksum:
            doc.errors.append(f"line {number}: {label} after the closing #KSUMMA")
        if label == "#KSUMMA":
            if crc is None and not fields and not closed_checksum:
                crc = Ksumma()
            elif crc is not None and len(fields) == 1 and _INTEGER.match(fields[0].value):
                doc.checksum_declared = int(fields[0].value)
                doc.checksum_computed = crc.value
                crc, closed_checksum = None, True
            else:
                doc.errors.append(f"line {number}: #KSUMMA is an empty opening line and a closing line with the sum")
            continue
        if crc is not None:
            crc.add(label, [f.value for f in fields])
        values = [f.value for f in fields]
        try:
            _item(doc, label, fields, values, number, seen)
            if label == "#VER":
                if in_block or current is not None:
                    raise _LineError("a #VER inside another voucher")
                current = _voucher(values, number)
                expect_block = True
            elif label == "#TRANS":
                if not in_block or current is None:
                    raise _LineError("#TRANS outside a voucher's braces")
                current.rows.append(_trans(fields, number))
        except _LineError as exc:
            doc.errors.append(f"line {number}: {exc}")
        if label in ("#VER", "#TRANS") or not in_block:
            continue
        doc.errors.append(f"line {number}: {label} inside a voucher")
    if crc is not None:
        doc.errors.append("the checksum was opened with #KSUMMA but never closed")
    if in_block or current is not None:
        doc.errors.append("the last voucher is not closed with '}'")
    for required in ("#FLAGGA", "#FORMAT", "#GEN", "#SIETYP", "#FNAMN"):
        if required not in seen:
            doc.errors.append(f"{required} is missing")
    for voucher in doc.vouchers:
        if voucher.rows and voucher.balance != 0:
            doc.errors.append(f"line {voucher.line}: voucher {voucher.text!r} sums to {voucher.balance}, not 0.00")
    if doc.checksum_ok is False:
        doc.errors.append(f"#KSUMMA says {doc.checksum_declared} but the content sums to {doc.checksum_computed}")
    return doc


def _item(doc: SieDocument, label: str, fields: list[Field], values: list[str], number: int, seen: set[str]) -> None:
    if label in FORBIDDEN_IN_4I:
        raise _LineError(f"{label} (a balance) may not be in a type 4I file")
    if label not in KNOWN:
        raise _LineError(f"unknown label {label}")
    if label not in _REPEATABLE and label in seen:
        raise _LineError(f"{label} appears twice")
    seen.add(label)
    if any(f.is_list for f in fields) and label != "#TRANS":
        raise _LineError(f"{label} cannot hold an object list")
    first = values[0] if values else None
    if label == "#FLAGGA":
        if first not in ("0", "1"):
            raise _LineError("#FLAGGA is 0 or 1")
        doc.flagga = first
    elif label == "#PROGRAM":
        doc.program = values
    elif label == "#FORMAT":
        if first != "PC8":
            raise _LineError("#FORMAT must be PC8 (IBM PC-8, code page 437)")
        doc.format = first
    elif label == "#GEN":
        if first is None:
            raise _LineError("#GEN needs a date")
        doc.generated = _date(first)
    elif label == "#SIETYP":
        if first != "4":
            raise _LineError(f"#SIETYP must be 4 for a 4I file, got {first!r}")
        doc.sietyp = first
    elif label == "#ORGNR":
        doc.orgnr = first
    elif label == "#FNAMN":
        if not first:
            raise _LineError("#FNAMN needs the company name")
        doc.company_name = first
    elif label == "#KPTYP":
        doc.kptyp = first
    elif label == "#KONTO":
        if len(values) < 2 or not _ACCOUNT.match(values[0]):
            raise _LineError("#KONTO is an account number and a name")
        doc.accounts[values[0]] = values[1]


def _voucher(values: list[str], number: int) -> SieVoucher:
    if len(values) < 3:
        raise _LineError("#VER needs a series, a number and a date")
    return SieVoucher(values[0], values[1], _date(values[2]), values[3] if len(values) > 3 else "", number)


def _trans(fields: list[Field], number: int) -> SieTrans:
    if len(fields) < 3 or not fields[1].is_list:
        raise _LineError("#TRANS is an account, an object list in braces and an amount")
    if fields[0].is_list or not _ACCOUNT.match(fields[0].value):
        raise _LineError(f"#TRANS account {fields[0].value!r} is not an account number")
    when = None
    if len(fields) > 3 and fields[3].value:
        when = _date(fields[3].value)
    text = fields[4].value if len(fields) > 4 else ""
    return SieTrans(fields[0].value, _amount(fields[2].value), when, text, number)


def read_strict(data: bytes, *, require_checksum: bool = True) -> SieDocument:
    """Parse ``data`` and raise on any problem (or a missing ``#KSUMMA`` when required).

    Raises:
        SieFormatError: listing every problem with its line number.
    """
    doc = read(data)
    problems = list(doc.errors)
    if require_checksum and not doc.has_checksum:
        problems.append("#KSUMMA is missing")
    if not doc.vouchers:
        problems.append("the file holds no voucher")
    if problems:
        raise SieFormatError(problems)
    return doc
