"""Contract §1: every field rule of sale and stock_movement, as a till developer meets it.

Each refusal asserts the ``loc`` a 422 answer will carry and the words of its
``msg``, because that is what the person fixing their till integration reads.
The money rule, normalisation and derived movements are in test_records_money.py.
"""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from agent.records import (
    RECORD_TYPES,
    Line,
    RecordValidationError,
    Sale,
    StockMovement,
    normalize,
    parse_record,
)


def a_sale(**overrides: Any) -> dict[str, Any]:
    """A valid sale of 2 × 15.90 at 12 % plus 49.00 shipping, rounded to 81.00."""
    data: dict[str, Any] = {
        "till_id": "kassa-1",
        "receipt_no": 100234,
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "kind": "sale",
        "currency": "SEK",
        "lines": [{"sku": "7310865004703", "name": "Mjölk 1,5%", "quantity": 2, "unit_price": "15.90", "vat_rate": 12}],
        "fees": [{"role": "shipping", "amount": 49, "vat_rate": 25}],
        "discount": 0,
        "rounding": "0.20",
        "total": "81.00",
        "payments": [{"method": "cash", "amount": 81}],
    }
    data.update(overrides)
    return data


def a_simple_sale(price: Any = "100.00", **overrides: Any) -> dict[str, Any]:
    """A one-line sale of 1 × ``price`` at 25 % paid by card, no fees."""
    data = a_sale(
        lines=[{"sku": "A1", "quantity": 1, "unit_price": price, "vat_rate": 25}],
        fees=[],
        rounding=0,
        total=price,
        payments=[{"method": "card", "amount": price}],
    )
    data.update(overrides)
    return data


def with_line(**line_fields: Any) -> dict[str, Any]:
    """A one-line sale whose line has ``line_fields`` changed; total left at 100.00."""
    data = a_simple_sale()
    data["lines"][0].update(line_fields)
    return data


def a_movement(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "till_id": "kassa-1",
        "movement_id": "d-2026-11-26-1",
        "sku": "7310865004703",
        "delta": 24,
        "reason": "delivery",
        "occurred_at": "2026-11-26T08:00:00+01:00",
    }
    data.update(overrides)
    return data


def refusal(record_type: str, data: object) -> list[dict[str, Any]]:
    with pytest.raises(RecordValidationError) as caught:
        parse_record(record_type, data)
    assert caught.value.record_type == record_type
    return caught.value.details


def only_error(record_type: str, data: object) -> dict[str, Any]:
    details = refusal(record_type, data)
    assert len(details) == 1, details
    return details[0]


def assert_refused(record_type: str, data: object, loc: list[Any], *words: str) -> str:
    """The record is refused with exactly one error at ``loc`` whose msg holds ``words``."""
    error = only_error(record_type, data)
    assert error["loc"] == loc, error
    for word in words:
        assert word in error["msg"], error
    return error["msg"]


# ----------------------------------------------------------------------------- basics


def test_the_architecture_example_is_valid() -> None:
    sale = parse_record("sale", a_sale())
    assert isinstance(sale, Sale)
    assert sale.key == "sale:kassa-1:100234"
    assert sale.record_type == "sale"
    assert RECORD_TYPES == ("sale", "stock_movement", "z_report")


def test_defaults_kind_currency_fees_discount_rounding() -> None:
    data = a_simple_sale()
    for name in ("kind", "currency", "fees", "discount", "rounding"):
        del data[name]
    sale = parse_record("sale", data)
    assert (sale.kind, sale.currency, sale.fees) == ("sale", "SEK", [])
    assert (sale.discount, sale.rounding) == (Decimal("0.00"), Decimal("0.00"))


def test_unknown_record_type_is_refused() -> None:
    details = refusal("refund", {})
    assert details == [
        {"loc": ["record_type"], "msg": "unknown record type 'refund'; expected sale, stock_movement or z_report"}
    ]


@pytest.mark.parametrize("data", [[1, 2], "a sale", 5, None])
def test_a_record_must_be_an_object(data: object) -> None:
    assert_refused("sale", data, [], "a sale must be a JSON object")
    assert_refused("stock_movement", data, [], "a stock_movement must be a JSON object")


def test_a_model_instance_passes_through() -> None:
    sale = parse_record("sale", a_sale())
    assert parse_record("sale", sale) is sale


def test_every_problem_is_reported_at_once() -> None:
    data = a_sale(till_id="bad id", receipt_no=0, currency="sek")
    data["lines"][0]["vat_rate"] = 20
    locs = [d["loc"] for d in refusal("sale", data)]
    assert locs == [["till_id"], ["receipt_no"], ["currency"], ["lines", 0, "vat_rate"]]


def test_the_error_is_a_value_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"invalid sale: receipt_no: receipt_no must be at least 1"):
        parse_record("sale", a_sale(receipt_no=0))


def test_huge_input_is_never_echoed_back() -> None:
    huge = "x" * 100_000
    data = a_sale(till_id=huge, currency=huge, occurred_at=huge, total=huge, **{huge: 1})
    data["lines"][0]["sku"] = huge
    data["lines"][0]["name"] = huge
    details = refusal("sale", data)
    assert {tuple(d["loc"]) for d in details} >= {("till_id",), ("currency",), ("occurred_at",), ("total",)}
    for detail in details:
        assert len(detail["msg"]) < 200, detail["msg"][:300]
    with pytest.raises(RecordValidationError) as caught:
        parse_record("sale", data)
    assert len(str(caught.value)) < 1000


# ----------------------------------------------------------------------------- unknown fields


def test_an_unknown_top_level_field_is_named_with_a_suggestion() -> None:
    data = a_sale(totl="81.00")
    assert_refused("sale", data, ["totl"], "unknown field 'totl'", "did you mean 'total'?")


def test_an_unknown_line_field_is_named_with_its_path() -> None:
    data = a_sale()
    data["lines"][0]["quantty"] = 2
    assert_refused("sale", data, ["lines", 0, "quantty"], "unknown field 'quantty'", "did you mean 'quantity'?")


def test_unknown_fields_in_fees_payments_and_movements() -> None:
    data = a_sale()
    data["fees"][0]["colour"] = "red"
    assert_refused("sale", data, ["fees", 0, "colour"], "unknown field 'colour'")
    data = a_sale()
    data["payments"][0]["ammount"] = 81
    assert_refused("sale", data, ["payments", 0, "ammount"], "did you mean 'amount'?")
    assert_refused("stock_movement", a_movement(qty=1), ["qty"], "unknown field 'qty'")


# ----------------------------------------------------------------------------- till_id, receipt_no


@pytest.mark.parametrize("till_id", ["kassa-1", "K", "a" * 64, "Till_2.b-9"])
def test_till_id_accepted(till_id: str) -> None:
    assert parse_record("sale", a_sale(till_id=till_id)).till_id == till_id


@pytest.mark.parametrize("till_id", ["", "a" * 65, "kassa 1", "kassa/1", "kassa:1", "kassa-ö"])
def test_till_id_refused(till_id: str) -> None:
    assert_refused("sale", a_sale(till_id=till_id), ["till_id"], "till_id must be 1 to 64 characters of A-Z")


@pytest.mark.parametrize("till_id", [5, None, ["k"]])
def test_till_id_must_be_a_string(till_id: object) -> None:
    assert_refused("sale", a_sale(till_id=till_id), ["till_id"], "till_id must be a string")


@pytest.mark.parametrize("receipt_no", [1, 100234, 2**63 - 1])
def test_receipt_no_accepted(receipt_no: int) -> None:
    assert parse_record("sale", a_sale(receipt_no=receipt_no)).receipt_no == receipt_no


def test_receipt_no_integral_json_number_accepted() -> None:
    # JSON cannot tell 7 from 7.0; a decoder may hand over either.
    sale = parse_record("sale", a_sale(receipt_no=7.0))
    assert sale.receipt_no == 7 and isinstance(sale.receipt_no, int)


@pytest.mark.parametrize(
    ("receipt_no", "words"),
    [
        (0, "at least 1"),
        (-3, "at least 1"),
        (2**63, "at least 1"),
        (1.5, "must be an integer, got 1.5"),
        (True, "must be an integer, not true"),
        (False, "must be an integer, not false"),
        ("100234", "must be an integer"),
        (None, "must be an integer"),
    ],
)
def test_receipt_no_refused(receipt_no: object, words: str) -> None:
    assert_refused("sale", a_sale(receipt_no=receipt_no), ["receipt_no"], "receipt_no", words)


def test_receipt_no_required() -> None:
    data = a_sale()
    del data["receipt_no"]
    assert_refused("sale", data, ["receipt_no"], "receipt_no is required")


# ----------------------------------------------------------------------------- occurred_at


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-11-26T14:59:01+01:00", "2026-11-26T14:59:01+01:00"),
        ("2026-11-26T13:59:01Z", "2026-11-26T13:59:01+00:00"),
        ("2026-11-26t13:59:01z", "2026-11-26T13:59:01+00:00"),
        ("2026-11-26 14:59:01+01:00", "2026-11-26T14:59:01+01:00"),
        ("2026-11-26T14:59:01.12+01:00", "2026-11-26T14:59:01.120000+01:00"),
        ("2026-11-26T14:59:01.123456789-05:30", "2026-11-26T14:59:01.123456-05:30"),
    ],
)
def test_occurred_at_rfc3339_accepted_and_stored_with_its_offset(given: str, stored: str) -> None:
    sale = parse_record("sale", a_sale(occurred_at=given))
    assert normalize(sale)["occurred_at"] == stored


def test_occurred_at_naive_is_refused_clearly() -> None:
    msg = assert_refused("sale", a_sale(occurred_at="2026-11-26T14:59:01"), ["occurred_at"], "occurred_at")
    assert "UTC offset" in msg


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2026-11-26", "RFC 3339"),
        ("26/11/2026 14:59", "RFC 3339"),
        ("2026-11-26T14:59+01:00", "RFC 3339"),
        ("2026-11-26T14:59:01+0100", "RFC 3339"),
        ("2026-02-30T10:00:00+01:00", "not a real date and time"),
        ("2026-11-26T25:00:00+01:00", "not a real date and time"),
        (1764165541, "RFC 3339 date-time string"),
        (None, "RFC 3339 date-time string"),
    ],
)
def test_occurred_at_refused(value: object, words: str) -> None:
    assert_refused("sale", a_sale(occurred_at=value), ["occurred_at"], "occurred_at", words)


def test_occurred_at_python_datetimes() -> None:
    aware = datetime(2026, 11, 26, 14, 59, 1, tzinfo=timezone(timedelta(hours=1)))
    assert parse_record("sale", a_sale(occurred_at=aware)).occurred_at == aware
    naive = datetime(2026, 11, 26, 14, 59, 1)
    assert_refused("sale", a_sale(occurred_at=naive), ["occurred_at"], "UTC offset")


# ----------------------------------------------------------------------------- kind, currency


def test_kind_refused() -> None:
    assert_refused("sale", a_sale(kind="refund"), ["kind"], "kind must be 'sale' or 'return'")


@pytest.mark.parametrize("currency", ["SEK", "EUR", "NOK"])
def test_currency_accepted(currency: str) -> None:
    assert parse_record("sale", a_sale(currency=currency)).currency == currency


@pytest.mark.parametrize("currency", ["sek", "SE", "SEKK", "", "S1K"])
def test_currency_refused(currency: str) -> None:
    assert_refused("sale", a_sale(currency=currency), ["currency"], "currency must be an ISO 4217 code")


def test_currency_must_be_a_string() -> None:
    assert_refused("sale", a_sale(currency=752), ["currency"], "currency must be a string")


# ----------------------------------------------------------------------------- lines


def test_lines_required_non_empty_list_of_objects() -> None:
    data = a_sale()
    del data["lines"]
    assert_refused("sale", data, ["lines"], "lines is required")
    assert_refused("sale", a_sale(lines=[]), ["lines"], "lines must have at least 1 item")
    assert_refused("sale", a_sale(lines="milk"), ["lines"], "lines must be a list")
    assert_refused("sale", a_sale(lines=[5]), ["lines", 0], "lines[0] must be an object")


def thousand_line_sale(count: int) -> dict[str, Any]:
    lines = [{"sku": f"SKU{i}", "quantity": 1, "unit_price": "0.50", "vat_rate": 25} for i in range(count)]
    total = f"{Decimal('0.50') * count:.2f}"
    return a_simple_sale(lines=lines, total=total, payments=[{"method": "card", "amount": total}])


def test_a_receipt_of_1000_lines_is_accepted() -> None:
    sale = parse_record("sale", thousand_line_sale(1000))
    assert len(sale.lines) == 1000 and sale.total == Decimal("500.00")


def test_a_receipt_of_1001_lines_is_refused() -> None:
    assert_refused("sale", thousand_line_sale(1001), ["lines"], "lines must have at most 1000 items")


@pytest.mark.parametrize("sku", ["A", "7310865004703", "x" * 64, "Ö-å 1"])
def test_sku_accepted(sku: str) -> None:
    assert parse_record("sale", with_line(sku=sku)).lines[0].sku == sku


@pytest.mark.parametrize(
    ("sku", "words"),
    [("", "sku must not be empty"), ("x" * 65, "at most 64 characters"), (7310865004703, "sku must be a string")],
)
def test_sku_refused(sku: object, words: str) -> None:
    assert_refused("sale", with_line(sku=sku), ["lines", 0, "sku"], words)


def test_line_name_optional_up_to_200_characters() -> None:
    data = a_simple_sale()
    assert parse_record("sale", data).lines[0].name is None
    assert parse_record("sale", with_line(name=None)).lines[0].name is None
    assert parse_record("sale", with_line(name="n" * 200)).lines[0].name == "n" * 200
    assert parse_record("sale", with_line(name="🦐" * 200)).lines[0].name == "🦐" * 200
    assert_refused("sale", with_line(name="n" * 201), ["lines", 0, "name"], "name must be at most 200 characters")
    assert_refused("sale", with_line(name=12), ["lines", 0, "name"], "name must be a string")


@pytest.mark.parametrize("quantity", [0, "0", "0.000", 0.0, "-0.000"])
def test_quantity_zero_refused(quantity: object) -> None:
    assert_refused("sale", with_line(quantity=quantity), ["lines", 0, "quantity"], "quantity must not be zero")


def test_quantity_more_than_3_decimals_refused() -> None:
    assert_refused(
        "sale", with_line(quantity="1.0005"), ["lines", 0, "quantity"], "quantity has more than 3 decimals: 1.0005"
    )


def test_quantity_trailing_zeros_are_fine() -> None:
    assert parse_record("sale", with_line(quantity="1.000000")).lines[0].quantity == Decimal("1.000")


def test_unit_price_negative_refused() -> None:
    assert_refused(
        "sale", with_line(unit_price="-0.01"), ["lines", 0, "unit_price"], "unit_price must not be negative, got -0.01"
    )


def test_unit_price_more_than_2_decimals_refused() -> None:
    assert_refused(
        "sale",
        with_line(unit_price="99.999"),
        ["lines", 0, "unit_price"],
        "unit_price has more than 2 decimals: 99.999",
    )


def test_unit_price_zero_is_a_free_item() -> None:
    data = a_simple_sale("0.00")
    assert parse_record("sale", data).total == Decimal("0.00")


@pytest.mark.parametrize(
    ("given", "rate"), [(25, 25), (12, 12), (6, 6), (0, 0), ("25", 25), (25.0, 25), ("12.00", 12), (Decimal("6"), 6)]
)
def test_vat_rate_accepted(given: object, rate: int) -> None:
    sale = parse_record("sale", with_line(vat_rate=given))
    assert sale.lines[0].vat_rate == rate and type(sale.lines[0].vat_rate) is int


@pytest.mark.parametrize("given", [25.5, "25.5", 20, -25, True, None, "abc", "25%", [25]])
def test_vat_rate_refused(given: object) -> None:
    assert_refused(
        "sale", with_line(vat_rate=given), ["lines", 0, "vat_rate"], "vat_rate must be one of 25, 12, 6 or 0"
    )


def test_line_discount_negative_refused() -> None:
    assert_refused("sale", with_line(discount="-1"), ["lines", 0, "discount"], "discount must not be negative")


def test_line_discount_exceeding_the_line_refused() -> None:
    data = with_line(quantity=2, unit_price="5.00", discount="10.01")
    assert_refused("sale", data, ["lines", 0, "discount"], "discount 10.01 exceeds the line's amount 10.00")


def test_line_discount_exceeding_a_returned_line_refused() -> None:
    data = a_sale(kind="return", fees=[], rounding=0, total="0.00", payments=[{"method": "card", "amount": 0}])
    data["lines"] = [{"sku": "A", "quantity": -1, "unit_price": "10.00", "vat_rate": 25, "discount": "10.50"}]
    assert_refused("sale", data, ["lines", 0, "discount"], "discount 10.50 exceeds the line's amount 10.00")


def test_line_discount_compares_with_the_rounded_amount() -> None:
    # 0.333 × 10.00 = 3.33 after rounding: 3.33 off is the whole line, 3.34 is too much.
    data = with_line(quantity="0.333", unit_price="10.00", discount="3.33")
    data.update(total="0.00", payments=[{"method": "card", "amount": 0}])
    assert parse_record("sale", data).total == Decimal("0.00")
    data["lines"][0]["discount"] = "3.34"
    assert_refused("sale", data, ["lines", 0, "discount"], "exceeds the line's amount 3.33")


# ----------------------------------------------------------------------------- fees, discount, rounding


def test_fees_optional_and_null_means_none() -> None:
    data = a_simple_sale()
    del data["fees"]
    assert parse_record("sale", data).fees == []
    assert parse_record("sale", a_simple_sale(fees=None)).fees == []


def test_a_return_with_fees_is_refused() -> None:
    data = a_sale(kind="return", total="-81.00", rounding="-0.20", payments=[{"method": "cash", "amount": "-81.00"}])
    data["lines"][0]["quantity"] = -2
    assert_refused("sale", data, ["fees"], "a return cannot have fees")


def test_a_return_with_an_empty_fee_list_is_fine() -> None:
    data = a_simple_sale(kind="return", fees=[], total="-100.00", payments=[{"method": "card", "amount": "-100"}])
    data["lines"][0]["quantity"] = -1
    assert parse_record("sale", data).kind == "return"


def test_fee_rules() -> None:
    data = a_sale()
    data["fees"][0]["role"] = "postage"
    assert_refused("sale", data, ["fees", 0, "role"], "role must be 'shipping' or 'handling'")
    data = a_sale()
    data["fees"][0]["amount"] = "-49.00"
    assert_refused("sale", data, ["fees", 0, "amount"], "amount must not be negative")
    data = a_sale()
    data["fees"][0]["vat_rate"] = 7
    assert_refused("sale", data, ["fees", 0, "vat_rate"], "vat_rate must be one of 25, 12, 6 or 0")
    data = a_sale()
    del data["fees"][0]["vat_rate"]
    assert_refused("sale", data, ["fees", 0, "vat_rate"], "vat_rate is required")


def test_handling_fee_counts_in_the_total() -> None:
    data = a_simple_sale(fees=[{"role": "handling", "amount": "19.00", "vat_rate": 25}], total="119.00")
    data["payments"] = [{"method": "invoice", "amount": "119.00"}]
    assert parse_record("sale", data).fees[0].role == "handling"


def test_receipt_discount_negative_refused() -> None:
    assert_refused("sale", a_simple_sale(discount="-5.00"), ["discount"], "discount must not be negative")


@pytest.mark.parametrize("rounding", ["0.99", "-0.99", "0.49", 0])
def test_rounding_below_one_accepted(rounding: str) -> None:
    total = f"{Decimal('100.00') + Decimal(rounding):.2f}"
    data = a_simple_sale(rounding=rounding, total=total, payments=[{"method": "cash", "amount": total}])
    assert parse_record("sale", data).rounding == Decimal(rounding)


@pytest.mark.parametrize("rounding", ["1.00", "-1.00", 1, "1.5"])
def test_rounding_of_one_or_more_refused(rounding: object) -> None:
    total = f"{Decimal('100.00') + Decimal(str(rounding)):.2f}"
    data = a_simple_sale(rounding=rounding, total=total, payments=[{"method": "cash", "amount": total}])
    assert_refused("sale", data, ["rounding"], "rounding must be less than 1.00 in absolute value")


# ----------------------------------------------------------------------------- total and payments


def test_total_off_by_one_ore_refused() -> None:
    data = a_simple_sale(total="100.01", payments=[{"method": "card", "amount": "100.01"}])
    error = only_error("sale", data)
    assert error == {"loc": ["total"], "msg": "total is 100.01 but lines, fees, discount and rounding add up to 100.00"}


def test_total_required() -> None:
    data = a_simple_sale()
    del data["total"]
    details = refusal("sale", data)
    assert details == [{"loc": ["total"], "msg": "total is required"}]


def test_a_sale_cannot_have_a_negative_total() -> None:
    data = a_simple_sale(total="-100.00", payments=[{"method": "card", "amount": "-100.00"}])
    data["lines"][0]["quantity"] = -1
    assert_refused("sale", data, ["total"], "a sale's total must not be negative, got -100.00")


def test_a_return_cannot_have_a_positive_total() -> None:
    data = a_simple_sale(kind="return")
    assert_refused("sale", data, ["total"], "a return's total must not be positive, got 100.00")


def test_an_exchange_sale_with_a_returned_line_is_fine() -> None:
    data = a_simple_sale(total="60.00", payments=[{"method": "card", "amount": 60}])
    data["lines"].append({"sku": "B2", "quantity": -1, "unit_price": "40.00", "vat_rate": 25})
    assert parse_record("sale", data).total == Decimal("60.00")


def test_payments_required_and_non_empty() -> None:
    assert_refused("sale", a_simple_sale(payments=[]), ["payments"], "payments must have at least 1 item")
    data = a_simple_sale()
    del data["payments"]
    assert_refused("sale", data, ["payments"], "payments is required")


def test_payments_off_by_one_ore_refused() -> None:
    data = a_simple_sale(payments=[{"method": "card", "amount": "60.00"}, {"method": "cash", "amount": "39.99"}])
    error = only_error("sale", data)
    assert error == {"loc": ["payments"], "msg": "payments add up to 99.99 but total is 100.00"}


@pytest.mark.parametrize("method", ["card", "cash", "swish", "gift_card", "invoice", "other"])
def test_payment_methods(method: str) -> None:
    data = a_simple_sale(payments=[{"method": method, "amount": 100}])
    assert parse_record("sale", data).payments[0].method == method


def test_payment_method_refused() -> None:
    data = a_simple_sale(payments=[{"method": "bitcoin", "amount": 100}])
    assert_refused(
        "sale",
        data,
        ["payments", 0, "method"],
        "method must be 'card', 'cash', 'swish', 'gift_card', 'invoice' or 'other'",
    )


def test_split_payment_with_cash_change_adds_up() -> None:
    data = a_simple_sale(
        payments=[
            {"method": "gift_card", "amount": 50},
            {"method": "cash", "amount": 60},
            {"method": "cash", "amount": -10},
        ]
    )
    assert len(parse_record("sale", data).payments) == 3


# ----------------------------------------------------------------------------- how decimals may be written


@pytest.mark.parametrize("spelling", [100, 100.0, "100", "100.00", " 100.0 ", "+100", Decimal("100.000"), "100.00000"])
def test_amounts_as_numbers_or_decimal_strings(spelling: object) -> None:
    data = a_simple_sale(total=spelling, payments=[{"method": "card", "amount": spelling}])
    data["lines"][0]["unit_price"] = spelling
    sale = parse_record("sale", data)
    assert sale.total == Decimal("100.00") and str(sale.total) == "100.00"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("nan"), "total must be a finite number"),
        (float("inf"), "total must be a finite number"),
        (Decimal("NaN"), "total must be a finite number"),
        ("NaN", 'total must be a decimal number such as "12.50"'),
        ("Infinity", 'total must be a decimal number such as "12.50"'),
        ("1e2", 'total must be a decimal number such as "12.50"'),
        ("100,00", "total must be a decimal number such as \"12.50\", got '100,00'"),
        ("", 'total must be a decimal number such as "12.50"'),
        (True, "total must be a number, not true"),
        (None, "total must be a number or a decimal string"),
        ([100], "total must be a number or a decimal string"),
        ("100.001", "total has more than 2 decimals: 100.001"),
        (100.001, "total has more than 2 decimals: 100.001"),
        (1e10, "total is out of range"),
        ("-10000000000", "total is out of range"),
        (10**30, "total is out of range"),
    ],
)
def test_bad_amounts_refused_with_a_clear_message(value: object, words: str) -> None:
    assert_refused("sale", a_simple_sale(total=value), ["total"], words)


def test_largest_amount_accepted() -> None:
    data = a_simple_sale("9999999999.99")
    assert parse_record("sale", data).total == Decimal("9999999999.99")


@pytest.mark.parametrize(
    "price",
    ["100", "100.0", "100.00", 100, Decimal("100.00"), Decimal("1E+2"), " 100.00 ", "+100", "0000000100.00", "١٠٠"],
)
def test_an_amount_reads_the_same_in_every_accepted_spelling(price: object) -> None:
    # Plain ASCII decimals take a quicker path than the others; what they are read as must not differ.
    sale = parse_record("sale", a_simple_sale(price))
    assert isinstance(sale, Sale)
    assert [str(sale.total), str(sale.lines[0].unit_price), str(sale.lines[0].quantity)] == [
        "100.00",
        "100.00",
        "1.000",
    ]
    assert str(parse_record("sale", a_simple_sale("-0.00")).total) == "0.00"  # never a negative zero


# ----------------------------------------------------------------------------- stock_movement


def test_stock_movement_valid_and_keyed() -> None:
    movement = parse_record("stock_movement", a_movement())
    assert isinstance(movement, StockMovement)
    assert movement.key == "stock_movement:kassa-1:d-2026-11-26-1"
    assert movement.record_type == "stock_movement"
    assert movement.note is None


@pytest.mark.parametrize("movement_id", ["m1", "r100234.0", "inv:2026:11", "a" * 64, "A.b_c-d:e"])
def test_movement_id_accepted(movement_id: str) -> None:
    assert parse_record("stock_movement", a_movement(movement_id=movement_id)).movement_id == movement_id


@pytest.mark.parametrize("movement_id", ["", "a" * 65, "m 1", "m/1", "m#1"])
def test_movement_id_refused(movement_id: str) -> None:
    assert_refused(
        "stock_movement",
        a_movement(movement_id=movement_id),
        ["movement_id"],
        "movement_id must be 1 to 64 characters of",
    )


def test_movement_sku_rules() -> None:
    assert_refused("stock_movement", a_movement(sku=""), ["sku"], "sku must not be empty")
    assert_refused("stock_movement", a_movement(sku="s" * 65), ["sku"], "at most 64 characters")


@pytest.mark.parametrize(
    ("given", "stored"), [(24, "24.000"), ("-0.25", "-0.250"), (-1.5, "-1.500"), ("0.001", "0.001")]
)
def test_delta_stored_with_three_decimals(given: object, stored: str) -> None:
    assert normalize(parse_record("stock_movement", a_movement(delta=given)))["delta"] == stored


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (0, "delta must not be zero"),
        ("0.0004", "delta has more than 3 decimals"),
        (False, "not false"),
        ("many", "decimal number"),
    ],
)
def test_delta_refused(delta: object, words: str) -> None:
    assert_refused("stock_movement", a_movement(delta=delta), ["delta"], words)


@pytest.mark.parametrize("reason", ["delivery", "stocktake", "shrinkage", "correction", "return", "sale"])
def test_movement_reasons(reason: str) -> None:
    assert parse_record("stock_movement", a_movement(reason=reason)).reason == reason


def test_movement_reason_refused() -> None:
    msg = assert_refused("stock_movement", a_movement(reason="theft"), ["reason"], "reason must be")
    assert "'shrinkage'" in msg


def test_movement_note_up_to_500_characters() -> None:
    assert parse_record("stock_movement", a_movement(note="å" * 500)).note == "å" * 500
    assert_refused("stock_movement", a_movement(note="n" * 501), ["note"], "note must be at most 500 characters")


def test_movement_occurred_at_required_with_offset() -> None:
    data = a_movement()
    del data["occurred_at"]
    assert_refused("stock_movement", data, ["occurred_at"], "occurred_at is required")
    assert_refused("stock_movement", a_movement(occurred_at="2026-11-26T08:00:00"), ["occurred_at"], "UTC offset")


def test_movement_till_id_rule_is_the_sales() -> None:
    assert_refused("stock_movement", a_movement(till_id="kassa 1"), ["till_id"], "till_id must be 1 to 64 characters")


# ----------------------------------------------------------------------------- models are values


def test_records_are_frozen() -> None:
    sale = parse_record("sale", a_sale())
    with pytest.raises(Exception):
        sale.total = Decimal("0")  # type: ignore[misc]


def test_models_validate_on_their_own_too() -> None:
    # Adapters may build a Sale directly; the cross-field rules hold there as well.
    data = a_simple_sale(total="99.00", payments=[{"method": "card", "amount": "99.00"}])
    with pytest.raises(ValueError):
        Sale.model_validate(data)
    with pytest.raises(ValueError):
        Line.model_validate({"sku": "A", "quantity": 1, "unit_price": "1.00", "vat_rate": 25, "discount": "2.00"})


def test_parse_does_not_modify_its_input() -> None:
    data = a_sale()
    before = copy.deepcopy(data)
    parse_record("sale", data)
    assert data == before
