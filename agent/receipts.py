"""What one receipt adds up to per VAT rate: gross, VAT, payments, rounding.

A till's Z-report sums its receipts per VAT rate; reconciliation
(``agent.reconcile``) adds up the receipts the agent holds the same way and
compares, and the SIE books (``agent.sie``) book the same figures. Both read
them here, so "what the receipts say" is one computation.

- Gross per rate: the line amounts (after line discounts) and fees at that
  rate, minus the receipt discount's share. A receipt discount is spread over
  the receipt's rates in proportion to the line amounts (the fees when the
  receipt has no line amount), to the öre, the largest rate taking the last
  öre, so the shares sum exactly to the discount.
- VAT per rate: the till's printed ``vat`` when the receipt carries it
  (contract §3: books use what the till printed); otherwise
  ``round(gross × rate / (100 + rate))`` of this receipt, so a day's VAT is the
  sum of its receipts' VAT, as on the till's Z-report.
- A return is a negative sale: its gross, VAT and payments are negative.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from agent.records import Sale, line_amount, line_gross, money

ZERO = Decimal("0.00")


class Unspreadable(ValueError):
    """A receipt discount with no line or fee amount to take it from."""


def spread(amount: Decimal, weights: Mapping[int, Decimal]) -> dict[int, Decimal]:
    """Split ``amount`` over the rates in proportion to ``weights``, to the öre, summing exactly.

    Raises:
        Unspreadable: ``amount`` is not zero but the weights sum to zero.
    """
    if amount.is_zero():
        return {}
    total = sum(weights.values(), ZERO)
    if total.is_zero():
        raise Unspreadable("the receipt discount has no lines or fees to be taken from")
    shares = {rate: money(amount * w / total) for rate, w in weights.items()}
    rest = amount - sum(shares.values(), ZERO)
    if rest:
        biggest = max(weights, key=lambda r: (abs(weights[r]), r))
        shares[biggest] += rest
    return shares


def vat_of(gross: Decimal, rate: int) -> Decimal:
    """The output VAT in a VAT-inclusive ``gross``: ``round(gross × rate / (100 + rate))``."""
    return money(gross * rate / (100 + rate))


@dataclass
class RateParts:
    """One VAT rate of a receipt, split the way the books need it.

    ``goods`` is Σ round(quantity × unit_price) of the ordinary lines,
    ``discounts`` their line discounts (signed like the goods) plus the
    receipt discount's share, ``gift_cards`` the gift cards sold (their lines
    after discount), ``shipping`` and ``handling`` the fees.
    """

    goods: Decimal = ZERO
    discounts: Decimal = ZERO
    gift_cards: Decimal = ZERO
    shipping: Decimal = ZERO
    handling: Decimal = ZERO

    @property
    def gross(self) -> Decimal:
        """Everything at this rate, VAT included: what the Z-report's ``gross`` counts."""
        return self.goods - self.discounts + self.gift_cards + self.shipping + self.handling

    @property
    def revenue(self) -> Decimal:
        """The gross that is revenue: gift cards sold are a liability, not revenue."""
        return self.gross - self.gift_cards

    def add(self, other: RateParts) -> None:
        self.goods += other.goods
        self.discounts += other.discounts
        self.gift_cards += other.gift_cards
        self.shipping += other.shipping
        self.handling += other.handling


@dataclass
class ReceiptTotals:
    """One receipt (or the sum of several) per VAT rate and payment method."""

    rates: dict[int, RateParts] = field(default_factory=lambda: defaultdict(RateParts))
    vat: dict[int, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    payments: dict[str, Decimal] = field(default_factory=lambda: defaultdict(lambda: ZERO))
    rounding: Decimal = ZERO
    total: Decimal = ZERO
    returns_total: Decimal = ZERO
    count: int = 0

    def gross(self) -> dict[int, Decimal]:
        """Gross per rate, zero rates left out."""
        return {rate: part.gross for rate, part in self.rates.items() if not part.gross.is_zero()}

    def add(self, other: ReceiptTotals) -> None:
        """Add another receipt's (or sum's) figures to these."""
        for rate, part in other.rates.items():
            self.rates[rate].add(part)
        for rate, amount in other.vat.items():
            self.vat[rate] += amount
        for method, amount in other.payments.items():
            self.payments[method] += amount
        self.rounding += other.rounding
        self.total += other.total
        self.returns_total += other.returns_total
        self.count += other.count


def receipt_totals(sale: Sale, gift_card_skus: Collection[str] = ()) -> ReceiptTotals:
    """What one receipt adds up to (see the module docstring).

    Args:
        sale: the validated receipt.
        gift_card_skus: ``[skus] gift_card``: lines on these SKUs sell gift cards.

    Raises:
        Unspreadable: a receipt discount on a receipt with nothing to take it from.
    """
    out = ReceiptTotals()
    line_weights: dict[int, Decimal] = defaultdict(lambda: ZERO)
    fee_weights: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for line in sale.lines:
        amount = line_amount(line)
        part = out.rates[line.vat_rate]
        if line.sku in gift_card_skus:
            part.gift_cards += amount
        else:
            gross = line_gross(line)
            part.goods += gross
            part.discounts += gross - amount
        line_weights[line.vat_rate] += amount
    for fee in sale.fees:
        if fee.role == "shipping":
            out.rates[fee.vat_rate].shipping += fee.amount
        else:
            out.rates[fee.vat_rate].handling += fee.amount
        fee_weights[fee.vat_rate] += fee.amount
    k = 1 if sale.kind == "sale" else -1
    receipt_discount = k * sale.discount
    if not receipt_discount.is_zero():
        weights = line_weights if any(line_weights.values()) else fee_weights
        for rate, share in spread(receipt_discount, weights).items():
            out.rates[rate].discounts += share
    if sale.vat is not None:
        for printed in sale.vat:
            out.vat[printed.rate] += printed.amount
    else:
        for rate, part in out.rates.items():
            if rate:
                out.vat[rate] += vat_of(part.gross, rate)
    for payment in sale.payments:
        out.payments[payment.method] += payment.amount
    out.rounding = sale.rounding
    out.total = sale.total
    out.returns_total = sale.total if sale.kind == "return" else ZERO
    out.count = 1
    return out
