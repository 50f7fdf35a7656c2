"""Sales -> one balanced voucher per till and business day, or per Z-report (prices include VAT).

A voucher's receipts are added up per VAT rate, per payment method and for
rounding (``agent.receipts``: the same arithmetic reconciliation uses); then
the voucher is booked:

- per VAT rate: the output VAT is, by default (``vat_basis = "receipt"``),
  the sum of the receipts' VAT: what each receipt printed (``vat``) when it
  says, else ``round(gross × rate / (100 + rate))`` of that receipt, so the
  books match the till's receipts and its Z-report to the öre. In Z mode the
  Z-report's own VAT is booked (any difference to the receipts is a problem on
  the status page, never booked silently). ``vat_basis = "day"`` computes it
  once on the voucher's gross per rate instead, for tills that do so. The
  rest of the gross is credited net of VAT to the sales account (and, for
  fees, to the shipping and handling accounts, each at its own rate);
- gift cards sold (lines on a ``[skus] gift_card`` SKU, VAT rate 0) are not
  revenue: they credit the gift-card account (2421) without VAT, and paying
  with a gift card debits it, so 2421 holds what is outstanding;
- discounts (line discounts and the receipt discount): with
  ``discount_mode = "separate"`` sales are credited before discount and the
  discount is debited, net of VAT, on the discount account (3730); with
  ``"net"`` sales are credited after discount. A receipt discount is spread
  over the receipt's VAT rates in proportion to the line amounts, to the öre;
- each payment method's total is debited on its account; öresavrundning goes
  to the rounding account without VAT; a return is a negative sale and so
  books in reverse.

Net amounts per account are rounded to the öre and the sales account takes
the last öre, so every voucher balances to exactly 0.00 by construction; the
balance is still checked before anything is written.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from agent.receipts import ReceiptTotals, Unspreadable, receipt_totals, vat_of
from agent.records import RecordValidationError, Sale, money, parse_record
from agent.sie.config import SieAccounts

ZERO = Decimal("0.00")
RATES = (25, 12, 6, 0)
PAYMENT_METHODS = ("cash", "card", "swish", "gift_card", "invoice", "other")
PAYMENT_TEXT = {
    "cash": "Kontant",
    "card": "Kort",
    "swish": "Swish",
    "gift_card": "Presentkort",
    "invoice": "Faktura",
    "other": "Övrigt betalsätt",
}


class RecordRefused(ValueError):
    """A record this destination can never book; it becomes a dead letter with this reason."""


class UnbalancedVoucher(ValueError):
    """A voucher whose rows do not sum to 0.00: never written."""


@dataclass(frozen=True)
class Row:
    """One ``#TRANS`` line: positive is debit, negative is credit."""

    account: str
    amount: Decimal
    text: str


@dataclass
class Voucher:
    """One ``#VER``: a till's business day (or that day's late sales)."""

    day: date
    text: str
    till_id: str
    late: bool
    rows: list[Row]
    record_ids: list[str]
    receipts: list[int]
    z: tuple[int, int, int] | None = None
    """``(z_no, first_receipt_no, last_receipt_no)`` of a Z-report's voucher."""

    @property
    def balance(self) -> Decimal:
        return sum((row.amount for row in self.rows), ZERO)

    def by_account(self) -> dict[str, Decimal]:
        """The voucher summed per account (what an accountant reconciles)."""
        out: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for row in self.rows:
            out[row.account] += row.amount
        return dict(out)


def business_day(occurred_at: datetime, zone: ZoneInfo) -> date:
    """The local date of ``occurred_at`` in the shop's time zone."""
    return occurred_at.astimezone(zone).date()


def read_sale(data: object) -> Sale:
    """Validate a stored sale again and refuse what cannot be booked in SEK.

    Raises:
        RecordRefused: with a reason an accountant can act on.
    """
    try:
        sale = parse_record("sale", data)
    except RecordValidationError as exc:
        parts = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in exc.details)
        raise RecordRefused(f"not a valid sale: {parts}") from None
    assert isinstance(sale, Sale)
    if sale.currency != "SEK":
        raise RecordRefused(f"currency {sale.currency}: SIE day files are booked in SEK only")
    return sale


def _rate_label(rate: int) -> str:
    return "momsfri" if rate == 0 else f"{rate} % moms"


def _net(gross: Decimal, rate: int) -> Decimal:
    return money(gross * 100 / (100 + rate))


def totals_of(sales: Iterable[Sale], gift_card_skus: Collection[str] = ()) -> ReceiptTotals:
    """The receipts added up (``agent.receipts``).

    Raises:
        RecordRefused: a receipt discount that cannot be spread over the receipt.
    """
    totals = ReceiptTotals()
    for sale in sales:
        try:
            totals.add(receipt_totals(sale, gift_card_skus))
        except Unspreadable as exc:
            raise RecordRefused(f"receipt {sale.receipt_no}: {exc}") from None
    return totals


def rows_for(
    totals: ReceiptTotals,
    accounts: SieAccounts,
    discount_mode: str,
    *,
    vat_basis: str = "receipt",
    vat: Mapping[int, Decimal] | None = None,
) -> list[Row]:
    """Turn added-up receipts into ``#TRANS`` rows; zero rows are left out.

    Args:
        vat: the VAT per rate to book instead (a Z-report's), or None.

    Order: payments (debits), discounts, sales per rate, gift cards sold,
    fees, output VAT per rate, rounding: the order a Z-report is read in.
    """
    payments = [
        Row(accounts.payment(m), totals.payments[m], PAYMENT_TEXT[m]) for m in PAYMENT_METHODS if m in totals.payments
    ]
    discounts: list[Row] = []
    sales: list[Row] = []
    fees: list[Row] = []
    vats: list[Row] = []
    gift_cards = ZERO
    for rate in RATES:
        if rate not in totals.rates:
            continue
        part = totals.rates[rate]
        label = _rate_label(rate)
        gift_cards += part.gift_cards
        revenue = part.revenue
        if not rate:
            output_vat = ZERO
        elif vat is not None:
            output_vat = vat.get(rate, ZERO)
        elif vat_basis == "day":
            output_vat = vat_of(revenue, rate)
        else:
            output_vat = totals.vat.get(rate, ZERO)
        shipping = _net(part.shipping, rate)
        handling = _net(part.handling, rate)
        discount = _net(part.discounts, rate) if discount_mode == "separate" else ZERO
        net_sales = revenue - output_vat - shipping - handling + discount
        discounts.append(Row(accounts.discount, discount, f"Rabatter {label}"))
        sales.append(Row(accounts.sales(rate), -net_sales, f"Försäljning {label}"))
        fees.append(Row(accounts.shipping, -shipping, f"Frakt {label}"))
        fees.append(Row(accounts.handling, -handling, f"Expeditionsavgift {label}"))
        if rate:
            vats.append(Row(accounts.vat(rate), -output_vat, f"Utgående moms {rate} %"))
    sold = [Row(accounts.gift_card, -gift_cards, "Sålda presentkort")]
    rounding = [Row(accounts.rounding, -totals.rounding, "Öresavrundning")]
    rows = payments + discounts + sales + sold + fees + vats + rounding
    return [row for row in rows if not row.amount.is_zero()]


def _receipt_span(numbers: list[int]) -> str:
    ordered = sorted(numbers)
    if len(ordered) <= 4:
        return ", ".join(str(n) for n in ordered)
    return f"{ordered[0]}-{ordered[-1]}"


def build_voucher(
    till_id: str,
    day: date,
    sales: list[tuple[str, Sale]],
    accounts: SieAccounts,
    *,
    discount_mode: str = "separate",
    vat_basis: str = "receipt",
    gift_card_skus: Collection[str] = (),
    late: bool = False,
    text: str | None = None,
    vat: Mapping[int, Decimal] | None = None,
) -> Voucher:
    """One voucher for ``sales`` (record id, sale) of one till and business day (or one Z-report).

    Args:
        text: the voucher text; by default "Kassa <till> <day> kvitto <span> (<n> kvitton)".
        vat: VAT per rate to book (a Z-report's) instead of the receipts'.

    Raises:
        UnbalancedVoucher: if the rows do not sum to exactly 0.00.
        RecordRefused: if a receipt cannot be spread over its VAT rates.
    """
    ordered = sorted(sales, key=lambda item: (item[1].receipt_no, item[0]))
    totals = totals_of((sale for _, sale in ordered), gift_card_skus)
    rows = rows_for(totals, accounts, discount_mode, vat_basis=vat_basis, vat=vat)
    receipts = [sale.receipt_no for _, sale in ordered]
    if text is None:
        count = f"{len(receipts)} kvitto" if len(receipts) == 1 else f"{len(receipts)} kvitton"
        span = _receipt_span(receipts)
        if late:
            text = f"Sen försäljning / late sale {till_id} {day.isoformat()} kvitto {span} ({count})"
        else:
            text = f"Kassa {till_id} {day.isoformat()} kvitto {span} ({count})"
    voucher = Voucher(day, text, till_id, late, rows, [rid for rid, _ in ordered], receipts)
    if voucher.balance != ZERO:
        raise UnbalancedVoucher(f"the voucher {text!r} does not balance: it sums to {voucher.balance}")
    return voucher
