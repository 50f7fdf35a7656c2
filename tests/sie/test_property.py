"""Property: random valid receipts always give balanced vouchers with the right VAT and payments."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.records import Line, Sale, line_amount, money, normalize, parse_record
from agent.sie.accounting import build_voucher, read_sale
from agent.sie.config import SieAccounts
from agent.sie.reader import read_strict
from agent.sie.writer import SieHeader, render

ACCOUNTS = SieAccounts()
CENT = Decimal("0.01")
METHODS = ["cash", "card", "swish", "gift_card", "invoice", "other"]


def _cents(draw: Any, low: int, high: int) -> Decimal:
    return Decimal(draw(st.integers(low, high))) * CENT


@st.composite
def receipts(draw: Any, receipt_no: int) -> Sale:
    kind = draw(st.sampled_from(["sale", "sale", "return"]))
    sign = 1 if kind == "sale" else -1
    lines = []
    for index in range(draw(st.integers(1, 4))):
        quantity = (
            Decimal(draw(st.integers(1, 5000))) / 1000 if draw(st.booleans()) else Decimal(draw(st.integers(1, 9)))
        )
        price = _cents(draw, 0, 150_000)
        gross = money(quantity * price)
        discount = _cents(draw, 0, int(gross * 100)) if draw(st.booleans()) else Decimal(0)
        lines.append(
            {
                "sku": f"sku-{index}",
                "name": "Vara åäö",
                "quantity": str(sign * quantity),
                "unit_price": str(price),
                "vat_rate": draw(st.sampled_from([25, 12, 6, 0])),
                "discount": str(discount),
            }
        )
    fees = []
    if kind == "sale":
        for _ in range(draw(st.integers(0, 2))):
            fees.append(
                {
                    "role": draw(st.sampled_from(["shipping", "handling"])),
                    "amount": str(_cents(draw, 0, 50_000)),
                    "vat_rate": draw(st.sampled_from([25, 12, 6, 0])),
                }
            )
    lines_sum = sum((line_amount(Line.model_validate(ln)) for ln in lines), Decimal(0))
    base = lines_sum + sum((Decimal(f["amount"]) for f in fees), Decimal(0))
    room = abs(base)
    discount = _cents(draw, 0, int(room * 100)) if draw(st.booleans()) else Decimal(0)
    if lines_sum == 0 and discount and kind == "return":
        discount = Decimal(0)
    after = base - sign * discount  # >= 0 for a sale, <= 0 for a return
    slack = min(abs(after), Decimal("0.99"))
    rounding = _cents(draw, -int(slack * 100), 99) * sign
    total = after + rounding
    parts = draw(st.integers(1, 3))
    cuts = sorted(_cents(draw, 0, int(abs(total) * 100)) for _ in range(parts - 1))
    amounts = [b - a for a, b in zip([Decimal(0), *cuts], [*cuts, abs(total)], strict=True)]
    payments = [{"method": draw(st.sampled_from(METHODS)), "amount": str(sign * a)} for a in amounts]
    raw = {
        "till_id": "kassa-1",
        "receipt_no": receipt_no,
        "occurred_at": "2026-11-26T12:00:00+01:00",
        "kind": kind,
        "lines": lines,
        "fees": fees,
        "discount": str(discount),
        "rounding": str(rounding),
        "total": str(total),
        "payments": payments,
    }
    return read_sale(normalize(parse_record("sale", raw)))


def _rate_of(text: str) -> int | None:
    if text.endswith("momsfri"):
        return 0
    for rate in (25, 12, 6):
        if text.endswith(f" {rate} % moms") or text == f"Utgående moms {rate} %":
            return rate
    return None


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(["separate", "net"]))
def test_random_receipts_give_balanced_vouchers(data: Any, discount_mode: str) -> None:
    sales = [data.draw(receipts(1000 + i)) for i in range(data.draw(st.integers(1, 8)))]
    voucher = build_voucher(
        "kassa-1",
        date(2026, 11, 26),
        [(f"id{i}", s) for i, s in enumerate(sales)],
        ACCOUNTS,
        discount_mode=discount_mode,
    )
    # every voucher balances to exactly 0.00
    assert voucher.balance == 0
    # the payment debits are the receipts' totals
    payment_accounts = {ACCOUNTS.payment(m) for m in METHODS}
    paid = sum((r.amount for r in voucher.rows if r.account in payment_accounts), Decimal(0))
    assert paid == sum((s.total for s in sales), Decimal(0))
    # VAT per rate is the gross at that rate × rate / (100 + rate), to the öre
    gross: dict[int, Decimal] = {}
    vat: dict[int, Decimal] = {}
    for row in voucher.rows:
        rate = _rate_of(row.text)
        if rate is None:
            continue
        gross[rate] = gross.get(rate, Decimal(0)) - row.amount
        if rate and row.account == ACCOUNTS.vat(rate) and row.text.startswith("Utgående"):
            vat[rate] = -row.amount
    for rate, amount in gross.items():
        expected = money(amount * rate / (100 + rate)) if rate else Decimal(0)
        assert vat.get(rate, Decimal(0)) == expected, (rate, amount)
    rounding = sum((s.rounding for s in sales), Decimal(0))
    assert sum(gross.values(), Decimal(0)) == sum((s.total for s in sales), Decimal(0)) - rounding
    # without receipt discounts, the gross per rate is simply the lines and fees at that rate
    if all(s.discount == 0 for s in sales):
        independent: dict[int, Decimal] = {}
        for s in sales:
            for ln in s.lines:
                independent[ln.vat_rate] = independent.get(ln.vat_rate, Decimal(0)) + line_amount(ln)
            for fee in s.fees:
                independent[fee.vat_rate] = independent.get(fee.vat_rate, Decimal(0)) + fee.amount
        assert {r: a for r, a in independent.items() if a} == {r: a for r, a in gross.items() if a}
    # and the strict reader reads the file that would be written
    if voucher.rows:
        body, _ = render(SieHeader("Åsa's Kiosk", "556677-8899", "t", date(2026, 11, 27)), [voucher], ACCOUNTS)
        doc = read_strict(body)
        assert doc.vouchers[0].balance == 0
