"""Sales -> one balanced voucher per till and business day (prices include VAT).

The day's receipts are summed per VAT rate, per payment method, and for
rounding; then the voucher is booked:

- per VAT rate: the output VAT is computed once on the day's gross at that
  rate, ``round(gross × rate / (100 + rate))`` to the öre, and credited to the
  rate's VAT account; the rest of the gross is credited net of VAT to the
  sales account (and, for fees, to the shipping and handling accounts, each
  at its own rate);
- discounts (line discounts and the receipt discount): with
  ``discount_mode = "separate"`` sales are credited before discount and the
  discount is debited, net of VAT, on the discount account; with ``"net"``
  sales are credited after discount. A receipt discount is spread over the
  receipt's VAT rates in proportion to the line amounts, to the öre;
- each payment method's total is debited on its account (a gift-card payment
  debits the gift-card liability); öresavrundning goes to the rounding account
  without VAT; a return is a negative sale and so books in reverse.

Net amounts per account are rounded to the öre and the sales account takes
the last öre, so every voucher balances to exactly 0.00 by construction; the
balance is still checked before anything is written.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from agent.records import (
    RecordValidationError,
    Sale,
    line_amount,
    line_gross,
    money,
    parse_record,
)
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


def _spread(amount: Decimal, weights: dict[int, Decimal]) -> dict[int, Decimal]:
    """Split ``amount`` over the rates in proportion to ``weights``, to the öre, summing exactly."""
    total = sum(weights.values(), ZERO)
    if amount.is_zero():
        return {}
    if total.is_zero():
        raise RecordRefused("the receipt discount has no lines or fees to be taken from")
    shares = {rate: money(amount * w / total) for rate, w in weights.items()}
    rest = amount - sum(shares.values(), ZERO)
    if rest:
        biggest = max(weights, key=lambda r: (abs(weights[r]), r))
        shares[biggest] += rest
    return shares


@dataclass
class _Rate:
    goods: Decimal = ZERO  # Σ round(quantity × unit_price)
    discounts: Decimal = ZERO  # Σ line discounts (signed) + the receipt discount's share
    shipping: Decimal = ZERO
    handling: Decimal = ZERO

    @property
    def gross(self) -> Decimal:
        return self.goods - self.discounts + self.shipping + self.handling


@dataclass
class DayTotals:
    """What a till's day adds up to, before it is turned into rows."""

    rates: dict[int, _Rate] = field(default_factory=lambda: defaultdict(_Rate))
    payments: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    rounding: Decimal = ZERO
    totals: Decimal = ZERO

    def add(self, sale: Sale) -> None:
        """Add one receipt; the receipt discount is spread over its VAT rates first."""
        line_weights: dict[int, Decimal] = defaultdict(lambda: ZERO)
        fee_weights: dict[int, Decimal] = defaultdict(lambda: ZERO)
        part: dict[int, _Rate] = defaultdict(_Rate)
        for line in sale.lines:
            gross = line_gross(line)
            amount = line_amount(line)
            part[line.vat_rate].goods += gross
            part[line.vat_rate].discounts += gross - amount
            line_weights[line.vat_rate] += amount
        for fee in sale.fees:
            if fee.role == "shipping":
                part[fee.vat_rate].shipping += fee.amount
            else:
                part[fee.vat_rate].handling += fee.amount
            fee_weights[fee.vat_rate] += fee.amount
        k = 1 if sale.kind == "sale" else -1
        receipt_discount = k * sale.discount
        if not receipt_discount.is_zero():
            weights = line_weights if any(line_weights.values()) else fee_weights
            for rate, share in _spread(receipt_discount, dict(weights)).items():
                part[rate].discounts += share
        for rate, value in part.items():
            into = self.rates[rate]
            into.goods += value.goods
            into.discounts += value.discounts
            into.shipping += value.shipping
            into.handling += value.handling
        for payment in sale.payments:
            self.payments[payment.method] += payment.amount
        self.rounding += sale.rounding
        self.totals += sale.total


def _rate_label(rate: int) -> str:
    return "momsfri" if rate == 0 else f"{rate} % moms"


def vat_of(gross: Decimal, rate: int) -> Decimal:
    """The output VAT in a VAT-inclusive ``gross``: ``round(gross × rate / (100 + rate))``."""
    return money(gross * rate / (100 + rate))


def _net(gross: Decimal, rate: int) -> Decimal:
    return money(gross * 100 / (100 + rate))


def rows_for(totals: DayTotals, accounts: SieAccounts, discount_mode: str) -> list[Row]:
    """Turn a day's totals into ``#TRANS`` rows; zero rows are left out.

    Order: payments (debits), discounts, sales per rate, fees, output VAT per
    rate, rounding: the order a Z-report is read in.
    """
    payments = [
        Row(accounts.payment(m), totals.payments[m], PAYMENT_TEXT[m]) for m in PAYMENT_METHODS if m in totals.payments
    ]
    discounts: list[Row] = []
    sales: list[Row] = []
    fees: list[Row] = []
    vats: list[Row] = []
    for rate in RATES:
        if rate not in totals.rates:
            continue
        part = totals.rates[rate]
        label = _rate_label(rate)
        vat = vat_of(part.gross, rate)
        shipping = _net(part.shipping, rate)
        handling = _net(part.handling, rate)
        discount = _net(part.discounts, rate) if discount_mode == "separate" else ZERO
        net_sales = part.gross - vat - shipping - handling + discount
        discounts.append(Row(accounts.discount, discount, f"Rabatter {label}"))
        sales.append(Row(accounts.sales(rate), -net_sales, f"Försäljning {label}"))
        fees.append(Row(accounts.shipping, -shipping, f"Frakt {label}"))
        fees.append(Row(accounts.handling, -handling, f"Expeditionsavgift {label}"))
        if rate:
            vats.append(Row(accounts.vat(rate), -vat, f"Utgående moms {rate} %"))
    rounding = [Row(accounts.rounding, -totals.rounding, "Öresavrundning")]
    rows = payments + discounts + sales + fees + vats + rounding
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
    late: bool = False,
) -> Voucher:
    """One voucher for ``sales`` (record id, sale) of one till and business day.

    Raises:
        UnbalancedVoucher: if the rows do not sum to exactly 0.00.
        RecordRefused: if a receipt cannot be spread over its VAT rates.
    """
    totals = DayTotals()
    for _, sale in sales:
        totals.add(sale)
    rows = rows_for(totals, accounts, discount_mode)
    receipts = [sale.receipt_no for _, sale in sales]
    count = f"{len(receipts)} kvitto" if len(receipts) == 1 else f"{len(receipts)} kvitton"
    span = _receipt_span(receipts)
    if late:
        text = f"Sen försäljning / late sale {till_id} {day.isoformat()} kvitto {span} ({count})"
    else:
        text = f"Kassa {till_id} {day.isoformat()} kvitto {span} ({count})"
    voucher = Voucher(day, text, till_id, late, rows, [rid for rid, _ in sales], receipts)
    if voucher.balance != ZERO:
        raise UnbalancedVoucher(
            f"the voucher for {till_id} {day.isoformat()} does not balance: it sums to {voucher.balance}"
        )
    return voucher
