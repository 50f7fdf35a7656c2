"""The lexical rules of a SIE file, shared by the writer and the strict reader.

SIE 4 (4B/4C, format unchanged) is a line format in IBM PC-8 (code page 437):
a label such as ``#TRANS`` followed by fields separated by spaces. A field
with spaces is quoted, a quote inside it is written ``\\"``, an object list is
written in braces (``{}``), and ``{`` / ``}`` on lines of their own open and
close a voucher's transactions.

``#KSUMMA``: an empty ``#KSUMMA`` line starts the checksum and a final
``#KSUMMA <n>`` ends it. ``n`` is the standard CRC-32 (polynomial 0xEDB88320
reflected, initial value and final XOR 0xFFFFFFFF: zlib's) over the CP437
bytes of every item in between: each line's label and the content of each
field, without the spaces and tabs between fields, the enclosing quotes, the
escape backslashes or the braces. It is written as an unsigned decimal.
"""

from __future__ import annotations

import unicodedata
import zlib
from decimal import Decimal

ENCODING = "cp437"
NEWLINE = "\r\n"
"""Windows line ends: the programs that import SIE files are Windows programs."""

_TYPOGRAPHIC = {
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u2018": "'",
    "\u2019": "'",
    "\u201a": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u201e": '"',
    "\u2026": "...",
    "\u20ac": "EUR",
    "\u00a0": " ",
    "\u2009": " ",
    "\u202f": " ",
    "\\": "/",
}


def _encodable(ch: str) -> bool:
    try:
        ch.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def to_cp437_text(text: str) -> tuple[str, int]:
    """Text CP437 can hold, and how many characters had to be replaced.

    Never drops a character silently: control characters become a space,
    typographic dashes and quotes their plain forms, ``€`` becomes ``EUR``, a
    letter with an accent CP437 lacks loses the accent (``ł``, ``ő`` -> ``o``)
    and anything else becomes ``?``, so the accountant sees that something was
    there. A backslash becomes ``/`` because SIE uses it to escape quotes.
    """
    out: list[str] = []
    replaced = 0
    for ch in text:
        if ch in _TYPOGRAPHIC:
            out.append(_TYPOGRAPHIC[ch])
            replaced += ch != "\\"
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(" ")
            replaced += 1
        elif _encodable(ch):
            out.append(ch)
        else:
            base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
            out.append(base if base and all(_encodable(c) for c in base) else "?")
            replaced += 1
    return "".join(out), replaced


def quote(text: str) -> str:
    """A quoted field: ``"text"`` with inner quotes escaped as ``\\"``."""
    return '"' + text.replace('"', '\\"') + '"'


def amount(value: Decimal) -> str:
    """An amount as SIE writes it: a dot, two decimals, a minus for credit, never ``-0.00``."""
    value = value.quantize(Decimal("0.01"))
    if value.is_zero():
        value = abs(value)
    return f"{value:.2f}"


class Ksumma:
    """The running ``#KSUMMA`` CRC-32 over labels and field contents."""

    def __init__(self) -> None:
        self._crc = 0

    def add(self, label: str, fields: list[str]) -> None:
        """Add one item: its label and the decoded content of its fields, in order.

        Object lists are passed as their content without braces (``""`` for ``{}``).
        """
        self._crc = zlib.crc32(label.encode(ENCODING), self._crc)
        for field in fields:
            self._crc = zlib.crc32(field.encode(ENCODING), self._crc)

    @property
    def value(self) -> int:
        return self._crc & 0xFFFFFFFF
