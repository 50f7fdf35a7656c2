"""Contract §1's money rule to the öre, the stored form, and derived stock movements.

The SIE and Hogia adapters book ``line_amount``/``expected_total``; the outbox
decides duplicate versus conflict on ``digest(normalize(record))``. These tests
pin both down, ending with a property test over random valid receipts.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.records import (
    RecordValidationError,
    Sale,
    derive_movements,
    digest,
    expected_total,
    line_amount,
    money,
    normalize,
    parse_record,
)
from tests.helpers import valid_receipts


def receipt(lines: list[dict[str, Any]], total: str, **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "till_id": "kassa-1",
        "receipt_no": 7,
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "lines": lines,
        "total": total,
        "payments": [{"method": "card", "amount": total}],
    }
    data.update(fields)
    return data


def line(quantity: Any, unit_price: Any, vat_rate: int = 25, **fields: Any) -> dict[str, Any]:
    return {"sku": "SKU1", "quantity": quantity, "unit_price": unit_price, "vat_rate": vat_rate, **fields}


# ----------------------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        ("0.125", "0.13"),
        ("-0.125", "-0.13"),
        ("2.675", "2.68"),
        ("0.135", "0.14"),
        ("1.0049", "1.00"),
        ("-0.004", "0.00"),
        (5, "5.00"),
    ],
)
def test_money_rounds_half_away_from_zero(value: Any, rounded: str) -> None:
    assert str(money(value)) == rounded


@pytest.mark.parametrize(
    ("quantity", "unit_price", "amount"),
    [
        ("0.333", "10.00", "3.33"),
        ("0.5", "0.25", "0.13"),
        ("-0.5", "0.25", "-0.13"),
        ("1.5", "0.75", "1.13"),
        ("0.125", "1.00", "0.13"),
        ("0.125", "0.10", "0.01"),
        ("1.250", "49.90", "62.38"),
        ("2", "15.90", "31.80"),
        ("-3", "0.99", "-2.97"),
    ],
)
def test_line_amount_is_rounded_half_up_to_the_ore(quantity: str, unit_price: str, amount: str) -> None:
    sale = parse_record(
        "sale", receipt([line(quantity, unit_price)], amount, kind="sale" if amount[0] != "-" else "return")
    )
    assert isinstance(sale, Sale)
    assert str(line_amount(sale.lines[0])) == amount
    assert str(expected_total(sale)) == amount


def test_a_bankers_rounded_total_is_refused() -> None:
    # 0.5 × 0.25 = 0.125: half-even would say 0.12, the contract says 0.13.
    data = receipt([line("0.5", "0.25")], "0.12")
    assert Decimal("0.125").quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN) == Decimal("0.12")
    with pytest.raises(RecordValidationError) as caught:
        parse_record("sale", data)
    assert caught.value.details == [
        {"loc": ["total"], "msg": "total is 0.12 but lines, fees, discount and rounding add up to 0.13"}
    ]


def test_each_line_is_rounded_before_summing() -> None:
    # Three lines of 0.125 each: rounded per line 3 × 0.13 = 0.39, not round(0.375) = 0.38.
    lines = [line("0.5", "0.25") for _ in range(3)]
    assert parse_record("sale", receipt(lines, "0.39")).total == Decimal("0.39")
    with pytest.raises(RecordValidationError):
        parse_record("sale", receipt(lines, "0.38"))


def test_fractional_quantity_with_line_discount_and_cash_rounding() -> None:
    # 1.250 kg × 49.90 = 62.375 -> 62.38, minus 2.38 line discount = 60.00,
    # minus 5.00 receipt discount = 55.00, plus shipping 49.00 = 104.00, rounded down 0.00.
    data = receipt(
        [line("1.250", "49.90", 12, discount="2.38"), line("0.333", "10.00", 12)],
        "107.00",
        fees=[{"role": "shipping", "amount": "49.00", "vat_rate": 25}],
        discount="5.00",
        rounding="-0.33",
    )
    sale = parse_record("sale", data)
    assert [str(line_amount(x)) for x in sale.lines] == ["60.00", "3.33"]
    assert str(expected_total(sale)) == "107.00"


# ----------------------------------------------------------------------------- returns mirror sales


def mirror(sale_data: dict[str, Any]) -> dict[str, Any]:
    """The return of a whole sale without fees: quantities, rounding, total and payments negated."""
    neg = lambda v: str(-Decimal(str(v)))  # noqa: E731
    back = dict(sale_data, kind="return", receipt_no=sale_data["receipt_no"] + 1)
    back["lines"] = [dict(x, quantity=neg(x["quantity"])) for x in sale_data["lines"]]
    back["rounding"] = neg(sale_data.get("rounding", 0))
    back["total"] = neg(sale_data["total"])
    back["payments"] = [dict(p, amount=neg(p["amount"])) for p in sale_data["payments"]]
    return back


def test_a_return_mirrors_its_sale_exactly() -> None:
    sold = receipt(
        [line("0.5", "0.25", discount="0.03"), line("1.250", "49.90", 12), line("3", "0.99", 6, discount="1.00")],
        "64.00",
        discount="0.50",
        rounding="0.05",
    )
    sale = parse_record("sale", sold)
    returned = parse_record("sale", mirror(sold))
    assert isinstance(sale, Sale) and isinstance(returned, Sale)
    assert [line_amount(x) for x in returned.lines] == [-line_amount(x) for x in sale.lines]
    assert expected_total(returned) == -expected_total(sale) == Decimal("-64.00")


def test_a_return_discount_moves_the_total_toward_zero() -> None:
    lines = [line(-1, "100.00")]
    assert parse_record("sale", receipt(lines, "-90.00", kind="return", discount="10.00")).total == Decimal("-90.00")
    with pytest.raises(RecordValidationError) as caught:
        parse_record("sale", receipt(lines, "-110.00", kind="return", discount="10.00"))
    assert caught.value.details[0]["msg"] == "total is -110.00 but lines, fees, discount and rounding add up to -90.00"


def test_a_sale_discount_moves_the_total_toward_zero() -> None:
    assert parse_record("sale", receipt([line(1, "100.00")], "90.00", discount="10.00")).total == Decimal("90.00")


def test_a_discount_bigger_than_the_receipt_makes_the_total_cross_zero() -> None:
    with pytest.raises(RecordValidationError) as caught:
        parse_record("sale", receipt([line(1, "10.00")], "-5.00", discount="15.00"))
    assert caught.value.details == [{"loc": ["total"], "msg": "a sale's total must not be negative, got -5.00"}]


# ----------------------------------------------------------------------------- unicode


def test_unicode_names_are_preserved() -> None:
    names = ["Räksmörgås", "ÅÄÖ åäö", "Kanelbulle 🥐", "Ägg 12-p 🥚🐣", "Crème brûlée"]
    lines = [dict(line(1, "10.00"), sku=f"S{i}", name=n) for i, n in enumerate(names)]
    sale = parse_record("sale", receipt(lines, "50.00"))
    data = normalize(sale)
    assert [x["name"] for x in data["lines"]] == names
    assert json.loads(json.dumps(data, ensure_ascii=False))["lines"][3]["name"] == "Ägg 12-p 🥚🐣"
    other = parse_record("sale", receipt([dict(x, name=x["name"].upper()) for x in lines], "50.00"))
    assert digest(normalize(other)) != digest(data)


# ----------------------------------------------------------------------------- the stored form


ARCHITECTURE_EXAMPLE = {
    "till_id": "kassa-1",
    "receipt_no": 100234,
    "occurred_at": "2026-11-26T14:59:01+01:00",
    "kind": "sale",
    "currency": "SEK",
    "lines": [
        {
            "sku": "7310865004703",
            "name": "Mjölk 1,5%",
            "quantity": "2.000",
            "unit_price": "15.90",
            "vat_rate": 12,
            "discount": "0.00",
        }
    ],
    "fees": [{"role": "shipping", "amount": "49.00", "vat_rate": 25}],
    "discount": "0.00",
    "rounding": "0.20",
    "total": "81.00",
    "payments": [{"method": "cash", "amount": "81.00"}],
}


def test_normalize_writes_exactly_the_documented_form() -> None:
    sloppy = {
        "payments": [{"amount": 81, "method": "cash"}],
        "total": 81.0,
        "rounding": 0.2,
        "fees": [{"vat_rate": "25", "amount": "49", "role": "shipping"}],
        "lines": [
            {"vat_rate": 12.0, "unit_price": 15.9, "quantity": "2", "name": "Mjölk 1,5%", "sku": "7310865004703"}
        ],
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "receipt_no": 100234,
        "till_id": "kassa-1",
    }
    data = normalize(parse_record("sale", sloppy))
    assert data == ARCHITECTURE_EXAMPLE
    assert list(data) == list(ARCHITECTURE_EXAMPLE)
    assert list(data["lines"][0]) == list(ARCHITECTURE_EXAMPLE["lines"][0])
    assert json.dumps(data, ensure_ascii=False) == json.dumps(ARCHITECTURE_EXAMPLE, ensure_ascii=False)


def test_normalize_stock_movement_and_nulls() -> None:
    movement = parse_record(
        "stock_movement",
        {
            "till_id": "kassa-1",
            "movement_id": "d-1",
            "sku": "S",
            "delta": 24,
            "reason": "delivery",
            "occurred_at": "2026-11-26T07:00:00Z",
        },
    )
    assert normalize(movement) == {
        "till_id": "kassa-1",
        "movement_id": "d-1",
        "sku": "S",
        "delta": "24.000",
        "reason": "delivery",
        "occurred_at": "2026-11-26T07:00:00+00:00",
        "note": None,
    }


def test_omitted_optionals_are_null_and_fees_empty() -> None:
    data = normalize(parse_record("sale", receipt([line(1, "10.00")], "10.00")))
    assert data["lines"][0]["name"] is None
    assert data["fees"] == [] and data["discount"] == "0.00" and data["rounding"] == "0.00"


def test_ten_and_ten_point_zero_zero_are_the_same_content() -> None:
    spellings = [10, 10.0, "10", "10.00", "10.000", Decimal("10"), " 10.0"]
    digests = {
        digest(normalize(parse_record("sale", receipt([line(1, s)], s, payments=[{"method": "card", "amount": s}]))))
        for s in spellings
    }
    assert len(digests) == 1


def test_negative_zero_is_stored_as_zero() -> None:
    data = normalize(parse_record("sale", receipt([line(1, "10.00")], "10.00", rounding="-0.00", discount="-0")))
    assert data["rounding"] == "0.00" and data["discount"] == "0.00"


def test_field_order_is_irrelevant_to_the_digest() -> None:
    forward = receipt([line(2, "15.90", 12)], "31.80")
    backward = {k: forward[k] for k in reversed(list(forward))}
    backward["lines"] = [{k: v for k, v in reversed(list(forward["lines"][0].items()))}]
    one = normalize(parse_record("sale", forward))
    two = normalize(parse_record("sale", backward))
    assert one == two and digest(one) == digest(two)
    assert digest(dict(reversed(list(one.items())))) == digest(one)


def test_different_content_has_a_different_digest() -> None:
    one = normalize(parse_record("sale", receipt([line(1, "10.00")], "10.00")))
    two = normalize(parse_record("sale", receipt([line(1, "10.00")], "10.00", occurred_at="2026-11-26T14:59:02+01:00")))
    three = normalize(parse_record("sale", receipt([line(1, "10.00")], "10.00", occurred_at="2026-11-26T13:59:01Z")))
    assert len({digest(one), digest(two), digest(three)}) == 3
    assert len(digest(one)) == 64 and set(digest(one)) <= set("0123456789abcdef")


def test_stored_data_parses_back_to_the_same_data() -> None:
    sale = parse_record("sale", ARCHITECTURE_EXAMPLE)
    assert normalize(sale) == ARCHITECTURE_EXAMPLE
    assert normalize(parse_record("sale", json.loads(json.dumps(normalize(sale))))) == ARCHITECTURE_EXAMPLE


# ----------------------------------------------------------------------------- derived movements


def test_derive_movements_one_per_line_counted_from_zero() -> None:
    sale = parse_record(
        "sale",
        receipt([dict(line("2", "15.90", 12), sku="MILK"), dict(line("0.250", "200.00"), sku="CHEESE")], "81.80"),
    )
    assert isinstance(sale, Sale)
    movements = derive_movements(sale)
    assert [normalize(m) for m in movements] == [
        {"till_id": "kassa-1", "movement_id": "r7.0", "sku": "MILK", "delta": "-2.000", "reason": "sale",
         "occurred_at": "2026-11-26T14:59:01+01:00", "note": None},
        {"till_id": "kassa-1", "movement_id": "r7.1", "sku": "CHEESE", "delta": "-0.250", "reason": "sale",
         "occurred_at": "2026-11-26T14:59:01+01:00", "note": None},
    ]  # fmt: skip
    assert [m.key for m in movements] == ["stock_movement:kassa-1:r7.0", "stock_movement:kassa-1:r7.1"]


def test_derive_movements_of_a_return_put_stock_back() -> None:
    sale = parse_record("sale", receipt([line("-1.5", "10.00")], "-15.00", kind="return"))
    assert isinstance(sale, Sale)
    (movement,) = derive_movements(sale)
    assert (movement.reason, normalize(movement)["delta"], movement.movement_id) == ("return", "1.500", "r7.0")
    # Derived without validating again (the sale was): the same record as a validated one.
    assert parse_record("stock_movement", normalize(movement)) == movement
    assert normalize(parse_record("stock_movement", normalize(movement))) == normalize(movement)


def test_derive_movements_of_1000_lines_have_valid_distinct_ids() -> None:
    lines = [dict(line(1, "1.00"), sku=f"S{i}") for i in range(1000)]
    sale = parse_record("sale", receipt(lines, "1000.00", receipt_no=2**63 - 1))
    assert isinstance(sale, Sale)
    movements = derive_movements(sale)
    assert len({m.key for m in movements}) == 1000
    assert movements[-1].movement_id == f"r{2**63 - 1}.999"
    for movement in movements[:3] + movements[-3:]:
        assert parse_record("stock_movement", normalize(movement)) == movement


# ----------------------------------------------------------------------------- property: random valid receipts


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_receipts())
def test_random_valid_receipts_validate_and_normalize_idempotently(data: dict[str, Any]) -> None:
    sale = parse_record("sale", data)
    assert isinstance(sale, Sale)
    stored = normalize(sale)
    again = normalize(parse_record("sale", json.loads(json.dumps(stored, ensure_ascii=False))))
    assert again == stored
    assert digest(again) == digest(stored)
    assert Decimal(stored["total"]) == expected_total(sale)
    assert (sale.total >= 0) if sale.kind == "sale" else (sale.total <= 0)
    movements = derive_movements(sale)
    assert [Decimal(normalize(m)["delta"]) for m in movements] == [-x.quantity for x in sale.lines]


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(valid_receipts(), st.sampled_from(["total", "payment"]), st.sampled_from([Decimal("0.01"), Decimal("-0.01")]))
def test_random_receipts_off_by_one_ore_are_refused(data: dict[str, Any], where: str, off: Decimal) -> None:
    if where == "total":
        data["total"] = str(Decimal(str(data["total"])) + off)
        expected_loc = ["total"]
    else:
        data["payments"][0]["amount"] = str(Decimal(str(data["payments"][0]["amount"])) + off)
        expected_loc = ["payments"]
    with pytest.raises(RecordValidationError) as caught:
        parse_record("sale", data)
    assert caught.value.details[0]["loc"] == expected_loc
