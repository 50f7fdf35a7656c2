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

ACCOUNT_NAMES = {
    "sales_25": "Försäljning inom Sverige, 25 % moms",
    "sales_12": "Försäljning inom Sverige, 12 % moms",
    "sales_6": "Försäljning inom Sverige, 6 % moms",
    "sales_0": "Försäljning inom Sverige, momsfri",
    "vat_25": "Utgående moms, 25 %",
    "vat_12": "Utgående moms, 12 %",
    "vat_6": "Utgående moms, 6 %",
    "cash": "Kassa",
    "card": "Fordringar för kontokort",
    "swish": "Swish",
    "gift_card": "Ej inlösta presentkort",
    "invoice": "Kundfordringar",
    "other": "Övriga kortfristiga fordringar",
    "rounding": "Öres- och kronutjämning",
    "discount": "Lämnade rabatter",
    "shipping": "Fakturerade frakter",
    "handling": "Expeditionsavgifter",
}
"""The ``#KONTO`` name written for each role's account (BAS names, shortened)."""


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
    """Account number -> name; when two roles share an account the first role names it."""
    names: dict[str, str] = {}
    for role, name in ACCOUNT_NAMES.items():
        names.setdefault(str(getattr(accounts, role)), name)
    return names


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
        out.item("#KONTO", _raw(account), out.text(names.get(account, f"Konto {account}")))
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
