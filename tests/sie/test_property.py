"""Properties of the books: balanced vouchers with the receipts' VAT and payments, whatever the arrival.

1. Random valid receipts always give a balanced voucher whose payments are the
   receipts' totals and whose VAT is the sum of the receipts' VAT.
2. The same receipts stored in any order, in batches of any size, with runs
   before they are due and the agent restarted (even killed between the
   commit and the file) at random points, give the same file byte for byte.
"""

from __future__ import annotations

import tempfile
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.receipts import receipt_totals
from agent.records import Line, Sale, line_amount, money, normalize, parse_record
from agent.sie.accounting import build_voucher, read_sale
from agent.sie.config import SieAccounts
from agent.sie.errors import SieWriteFailed
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
    per_receipt: dict[int, Decimal] = {}
    for s in sales:
        for rate, amount in receipt_totals(s).vat.items():
            per_receipt[rate] = per_receipt.get(rate, Decimal(0)) + amount
    for rate in gross:
        assert vat.get(rate, Decimal(0)) == (per_receipt.get(rate, Decimal(0)) if rate else Decimal(0)), rate
    for s in sales:  # each receipt's VAT, computed independently when it has no receipt discount
        if s.discount == 0:
            at: dict[int, Decimal] = {}
            for ln in s.lines:
                at[ln.vat_rate] = at.get(ln.vat_rate, Decimal(0)) + line_amount(ln)
            for fee in s.fees:
                at[fee.vat_rate] = at.get(fee.vat_rate, Decimal(0)) + fee.amount
            mine = receipt_totals(s).vat
            assert {r: money(a * r / (100 + r)) for r, a in at.items() if r} == {r: v for r, v in mine.items() if r}
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


def _day_receipts(draw: Any) -> list[dict[str, Any]]:
    """Receipts of two tills over three days, as the till sends them."""
    out = []
    for till in ("kassa-1", "kassa-2"):
        number = 1
        for day in (24, 25, 26):
            for _ in range(draw(st.integers(0, 3))):
                sale = draw(receipts(number))
                data = normalize(sale) | {"till_id": till, "occurred_at": f"2026-11-{day}T1{number % 10}:00:00+01:00"}
                out.append(data)
                number += 1
    return out


def _book(root: Path, receipts_: list[dict[str, Any]], draw: Any | None) -> bytes:
    """Store the receipts (shuffled and batched by ``draw``), run and restart at random, then book them."""
    from tests.sie.factory import Books

    books = Books(root, now="2026-11-24T01:00:00+01:00")  # nothing due while they arrive
    try:
        order = list(receipts_)
        if draw is not None:
            order = draw(st.permutations(order))
        index = 0
        while index < len(order):
            size = draw(st.integers(1, 4)) if draw is not None else len(order)
            books.put(*order[index : index + size])
            index += size
            if draw is not None and draw(st.booleans()):
                books.run()  # a run before anything is due: everything waits
            if draw is not None and draw(st.booleans()):
                books.restart()
        books.clock.set("2026-11-27T02:00:00+01:00")
        if draw is not None and draw(st.booleans()):

            def killed(tmp: Path) -> None:
                raise OSError(5, "killed")

            books.destination.books.before_link = killed
            try:
                books.run()
            except SieWriteFailed:
                pass
            books.restart()
        books.run()
        files = books.files()
        assert len(files) <= 1
        return files[0].read_bytes() if files else b""
    finally:
        books.close()


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_the_same_receipts_give_the_same_file_whatever_their_arrival(data: Any) -> None:
    receipts_ = _day_receipts(data.draw)
    with tempfile.TemporaryDirectory() as reference_dir, tempfile.TemporaryDirectory() as shuffled_dir:
        reference = _book(Path(reference_dir), receipts_, None)
        shuffled = _book(Path(shuffled_dir), receipts_, data.draw)
    assert shuffled == reference
    if reference:
        doc = read_strict(reference)
        assert all(v.balance == 0 for v in doc.vouchers)
        assert len({(v.text.split()[1], v.date) for v in doc.vouchers}) == len(doc.vouchers)  # one per till and day
