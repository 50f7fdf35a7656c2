"""The text of a SIE type 4I file: header, the accounts used, the vouchers, ``#KSUMMA``.

Only what a 4I (import of vouchers) file may hold is written: no ``#IB``,
``#UB``, ``#RES`` or ``#PSALDO``. Text fields are always quoted, dates are
YYYYMMDD, amounts have a dot and two decimals, and the whole file is CP437
with CR LF line ends (see ``agent.sie.format``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from agent.sie.accounting import UnbalancedVoucher, Voucher
from agent.sie.config import SieAccounts
from agent.sie.format import ENCODING, NEWLINE, Ksumma, amount, quote, to_cp437_text

BAS_NAMES: dict[str, str] = {
    "1510": "Kundfordringar",
    "1580": "Fordringar för kontokort och kuponger",
    "1910": "Kassa",
    "1930": "Företagskonto/checkkonto/affärskonto",
    "2421": "Ej inlösta presentkort",
    "2611": "Utgående moms på försäljning inom Sverige, 25 %",
    "2621": "Utgående moms på försäljning inom Sverige, 12 %",
    "2631": "Utgående moms på försäljning inom Sverige, 6 %",
    "3001": "Försäljning inom Sverige, 25 % moms",
    "3002": "Försäljning inom Sverige, 12 % moms",
    "3003": "Försäljning inom Sverige, 6 % moms",
    "3004": "Försäljning inom Sverige, momsfri",
    "3520": "Fakturerade frakter",
    "3730": "Lämnade rabatter",
    "3731": "Lämnade kassarabatter",
    "3740": "Öres- och kronutjämning",
}
"""The BAS chart's names of the accounts Kassabro books on by default, by account number.

An importer that offers to take ``#KONTO`` names renames the shop's accounts
with them, so only names BAS itself gives are written, and only for the
account number BAS gives them to (a shop that books discounts on 3731 gets
"Lämnade kassarabatter", not the name of 3730). An account BAS does not name
here (1934 Swish, 1689, 3540, any account of the shop's own) gets no
``#KONTO`` line: the importer keeps the name the shop's chart has.
"""


@dataclass(frozen=True)
class SieHeader:
    """What identifies the file and the company it books for."""

    company_name: str
    orgnr: str
    program_version: str
    generated: date
    kptyp: str = "EUBAS97"
    series: str = ""


def account_names(accounts: SieAccounts) -> dict[str, str]:
    """Account number -> BAS name, for the accounts ``BAS_NAMES`` knows."""
    used = {str(value) for value in accounts.model_dump().values()}
    return {number: name for number, name in BAS_NAMES.items() if number in used}


class _Lines:
    """Collects the file's lines and feeds every item after the first ``#KSUMMA`` to the CRC."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.crc: Ksumma | None = None
        self.replaced = 0

    def text(self, value: str) -> tuple[str, str]:
        clean, replaced = to_cp437_text(value)
        self.replaced += replaced
        return quote(clean), clean

    def item(self, label: str, *fields: tuple[str, str]) -> None:
        """One labelled line; each field is (as written, its content for the checksum)."""
        self.lines.append(" ".join([label, *(written for written, _ in fields)]))
        if self.crc is not None:
            self.crc.add(label, [content for _, content in fields])

    def bare(self, line: str) -> None:
        self.lines.append(line)


def _raw(value: str) -> tuple[str, str]:
    return value, value


def render(
    header: SieHeader,
    vouchers: list[Voucher],
    accounts: SieAccounts,
    *,
    checksum: bool = True,
) -> tuple[bytes, int]:
    """The file's bytes and how many characters had to be replaced for CP437.

    Raises:
        UnbalancedVoucher: a voucher does not sum to exactly 0.00; nothing is written.
        ValueError: there are no vouchers.
    """
    if not vouchers:
        raise ValueError("a SIE file needs at least one voucher")
    for voucher in vouchers:
        if not voucher.balance.is_zero() or not voucher.rows:
            raise UnbalancedVoucher(
                f"the voucher {voucher.text!r} does not balance (sums to {voucher.balance}); not written"
            )
    out = _Lines()
    out.item("#FLAGGA", _raw("0"))
    if checksum:
        out.item("#KSUMMA")
        out.crc = Ksumma()
    out.item("#PROGRAM", out.text("Kassabro"), out.text(header.program_version))
    out.item("#FORMAT", _raw("PC8"))
    out.item("#GEN", _raw(header.generated.strftime("%Y%m%d")))
    out.item("#SIETYP", _raw("4"))
    out.item("#ORGNR", _raw(header.orgnr))
    out.item("#FNAMN", out.text(header.company_name))
    out.item("#KPTYP", _raw(header.kptyp))
    names = account_names(accounts)
    used = sorted({row.account for voucher in vouchers for row in voucher.rows}, key=lambda a: (len(a), a))
    for account in used:
        if account in names:
            out.item("#KONTO", _raw(account), out.text(names[account]))
    for voucher in vouchers:
        day = voucher.day.strftime("%Y%m%d")
        out.item("#VER", out.text(header.series), out.text(""), _raw(day), out.text(voucher.text))
        out.bare("{")
        for row in voucher.rows:
            out.item("#TRANS", _raw(row.account), ("{}", ""), _raw(amount(row.amount)), _raw(day), out.text(row.text))
        out.bare("}")
    if out.crc is not None:
        crc, out.crc = out.crc.value, None
        out.item("#KSUMMA", _raw(str(crc)))
    text = NEWLINE.join(out.lines) + NEWLINE
    return text.encode(ENCODING), out.replaced
