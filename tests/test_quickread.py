"""The quick reader (``agent.quickread``) never accepts what pydantic refuses, and makes exactly pydantic's record.

Ingest reads every sale and stock movement through ``read_record``: the quick
reader when it is sure, else pydantic, which alone words the 422. A record the
quick reader let through that pydantic would refuse is a bad record stored; one
that differs from pydantic's (an amount spelled ``10.0`` instead of ``10.00``)
is a different digest, so a resent receipt would be a conflict. These tests
hold both away, on random valid receipts and movements, on a hand list of
broken ones and on random mutations of valid ones; and that
``records.construct`` and ``records.normalize`` (written out field by field)
agree with pydantic's ``model_construct`` and ``model_dump``.
"""

from __future__ import annotations

import copy
import json
import math
import string
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from agent import quickread
from agent.canonical import canonical_json
from agent.ingest import parse_json
from agent.quickread import quick_record, read_record
from agent.records import (
    MAX_LINES,
    Fee,
    Line,
    Payment,
    RateAmount,
    Record,
    RecordValidationError,
    Sale,
    StockMovement,
    amount,
    construct,
    derive_movements,
    money,
    normalize,
    parse_record,
)
from tests.helpers import make_movement, valid_receipts

# ----------------------------------------------------------------------------- the checks


def assert_same_record(quick: Record, slow: Record) -> None:
    """``quick`` is pydantic's ``slow`` in every observable way: value, Python dump, stored text."""
    assert type(quick) is type(slow)
    assert quick == slow
    assert quick.model_dump() == slow.model_dump()
    # Decimal equality ignores the exponent (10.0 == 10.00) and datetimes compare as instants:
    # repr and the JSON dump spell both out.
    assert repr(quick.model_dump()) == repr(slow.model_dump())
    assert quick.model_dump(mode="json") == slow.model_dump(mode="json")
    stored = normalize(quick)
    assert canonical_json(stored) == canonical_json(normalize(slow))
    expected = quick.model_dump(mode="json")
    if isinstance(quick, Sale) and quick.vat is None:
        del expected["vat"]
    assert stored == expected
    # Key order too, nested: the models' field order (normalize's docstring).
    assert json.dumps(stored, ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)
    assert json.dumps(normalize(slow), ensure_ascii=False) == json.dumps(expected, ensure_ascii=False)


def check(record_type: str, data: Any) -> Record | None:
    """Assert the quick reader's answer is None or pydantic's record; pydantic's record, or None when refused.

    When pydantic refuses, ``read_record`` refuses with exactly ``parse_record``'s details.
    """
    quick = quick_record(record_type, data)
    try:
        slow = parse_record(record_type, data)
    except RecordValidationError as refused:
        assert quick is None, f"the quick reader accepted what pydantic refuses: {refused.details}"
        with pytest.raises(RecordValidationError) as caught:
            read_record(record_type, data)
        assert caught.value.details == refused.details
        assert caught.value.record_type == refused.record_type
        return None
    if quick is not None:
        assert_same_record(quick, slow)
    assert_same_record(read_record(record_type, data), slow)
    return slow


def refused(record_type: str, data: Any) -> list[dict[str, Any]]:
    """``check``, for input pydantic must refuse: its details."""
    assert check(record_type, data) is None
    with pytest.raises(RecordValidationError) as caught:
        parse_record(record_type, data)
    return caught.value.details


def json_numbers(data: Any) -> Any:
    """``data`` as ingest reads it off the wire: through JSON text, numbers with a fraction as ``Decimal``."""
    return parse_json(json.dumps(data, default=float, ensure_ascii=False))


# ----------------------------------------------------------------------------- random valid records


def _is_zero(value: Any) -> bool:
    """A zero however ``spell`` wrote it: a field the till may as well leave out."""
    return Decimal(str(value)) == 0


@st.composite
def receipts(draw: st.DrawFn) -> dict[str, Any]:
    """``valid_receipts`` with the optional parts varied: printed VAT, left-out defaults, ``null`` fees, names."""
    data = draw(valid_receipts())
    if draw(st.booleans()):
        rates = draw(st.lists(st.sampled_from([25, 12, 6, 0]), unique=True, max_size=4))
        data["vat"] = [
            {
                "rate": draw(st.sampled_from([rate, str(rate), float(rate)])),
                "amount": "0.00" if rate == 0 else draw(st.sampled_from(["8.04", "-9.80", 12, 0.5, Decimal("1.10")])),
            }
            for rate in rates
        ]
    elif draw(st.booleans()):
        data["vat"] = None
    for key in ("discount", "rounding"):
        if _is_zero(data[key]) and draw(st.booleans()):
            del data[key]
    if not data["fees"]:
        left_out = draw(st.sampled_from(["[]", "null", "absent"]))
        if left_out == "null":
            data["fees"] = None
        elif left_out == "absent":
            del data["fees"]
    if data["kind"] == "sale" and draw(st.booleans()):
        del data["kind"]
    if draw(st.booleans()):
        data["currency"] = draw(st.sampled_from(["SEK", "EUR", "NOK"]))
    for line in data["lines"]:
        if line["name"] is None and draw(st.booleans()):
            del line["name"]
        if _is_zero(line["discount"]) and draw(st.booleans()):
            del line["discount"]
    if draw(st.booleans()):  # a till writes its keys in its own order
        data = dict(reversed(list(data.items())))
    return data


_NOTE_TEXT = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")


@st.composite
def movements(draw: st.DrawFn) -> dict[str, Any]:
    """A valid stock movement: any reason, a delta spelled every way, a note with line breaks and tabs."""
    delta = Decimal(draw(st.integers(-9_999_999, 9_999_999).filter(bool))).scaleb(-3)
    spellings: list[Any] = [str(delta), f"{delta:.3f}", float(delta), delta]
    if delta == delta.to_integral_value():
        spellings.append(int(delta))
    data: dict[str, Any] = {
        "till_id": draw(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True)),
        "movement_id": draw(st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)),
        "sku": draw(st.text(string.ascii_letters + string.digits + "åäö- ", min_size=1, max_size=64)),
        "delta": draw(st.sampled_from(spellings)),
        "reason": draw(st.sampled_from(["delivery", "stocktake", "shrinkage", "correction", "return", "sale"])),
        "occurred_at": draw(
            st.sampled_from(["2026-11-26T07:30:00+01:00", "2026-06-01T00:00:00Z", "2027-01-01T23:59:59.123456-03:00"])
        ),
    }
    note = draw(st.none() | st.just("Leverans\nfrån Arla\r\n\tback") | st.text(_NOTE_TEXT, max_size=500))
    if note is not None or draw(st.booleans()):
        data["note"] = note
    return data


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(receipts())
def test_random_valid_receipts_read_quickly_into_exactly_pydantics_record(data: dict[str, Any]) -> None:
    for spelled in (data, json_numbers(data)):
        quick = quick_record("sale", spelled)
        assert quick is not None, "a plainly valid receipt went the slow way"
        assert_same_record(quick, Sale.model_validate(spelled))
        assert isinstance(quick, Sale)
        for derived, validated in zip(
            derive_movements(quick), derive_movements(Sale.model_validate(spelled)), strict=True
        ):
            assert normalize(derived) == derived.model_dump(mode="json") == normalize(validated)
            assert_same_record(derived, StockMovement.model_validate(normalize(derived)))


@settings(max_examples=100, deadline=None)
@given(movements())
def test_random_valid_movements_read_quickly_into_exactly_pydantics_record(data: dict[str, Any]) -> None:
    for spelled in (data, json_numbers(data)):
        quick = quick_record("stock_movement", spelled)
        assert quick is not None, "a plainly valid movement went the slow way"
        assert_same_record(quick, StockMovement.model_validate(spelled))


def test_the_stored_form_reads_back_quickly_to_the_same_record() -> None:
    sale = quick_record("sale", BASE)
    assert sale is not None
    stored = normalize(sale)
    again = quick_record("sale", json_numbers(stored))
    assert again is not None
    assert_same_record(again, sale)
    assert canonical_json(normalize(again)) == canonical_json(stored)


# ----------------------------------------------------------------------------- broken receipts, by hand

BASE: dict[str, Any] = {
    "till_id": "kassa-1",
    "receipt_no": 100234,
    "occurred_at": "2026-11-26T14:59:01+01:00",
    "kind": "sale",
    "currency": "SEK",
    "lines": [
        {"sku": "7310865004703", "name": "Mjölk 1,5%", "quantity": 2, "unit_price": "15.90", "vat_rate": 12,
         "discount": "1.80"},
        {"sku": "KAFFE", "quantity": "0.500", "unit_price": "89.90", "vat_rate": 12},
    ],
    "fees": [{"role": "shipping", "amount": "49.00", "vat_rate": 25}],
    "discount": "4.95",
    "rounding": "0.00",
    "total": "119.00",
    "payments": [{"method": "card", "amount": "100.00"}, {"method": "cash", "amount": 19}],
    "vat": [{"rate": 12, "amount": "8.04"}, {"rate": 25, "amount": "9.80"}],
}  # fmt: skip
"""A sale with every part: two lines (a named one with a discount), a fee, a receipt discount, two payments, VAT."""

RETURN: dict[str, Any] = {
    "till_id": "kassa-1",
    "receipt_no": 100235,
    "occurred_at": "2026-11-26T15:10:00+01:00",
    "kind": "return",
    "lines": [{"sku": "KAFFE", "quantity": "-0.500", "unit_price": "89.90", "vat_rate": 12}],
    "rounding": "0.05",
    "total": "-44.90",
    "payments": [{"method": "card", "amount": "-44.90"}],
}


def test_the_hand_made_receipts_are_valid_and_read_quickly() -> None:
    for data in (BASE, RETURN):
        quick = quick_record("sale", data)
        assert quick is not None
        assert_same_record(quick, Sale.model_validate(data))


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _drop(*path: str | int) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


def _many_lines(data: dict[str, Any]) -> None:
    data["lines"] = [
        {"sku": f"S{i}", "quantity": 1, "unit_price": "1.00", "vat_rate": 25} for i in range(MAX_LINES + 1)
    ]
    data.update(fees=[], discount="0.00", vat=None, total=f"{MAX_LINES + 1}.00")
    data["payments"] = [{"method": "card", "amount": data["total"]}]


def _total_off(data: dict[str, Any]) -> None:
    # The payments follow the total: only the money rule is broken.
    data.update(total="119.01", payments=[{"method": "card", "amount": "119.01"}])


def _negative_sale(data: dict[str, Any]) -> None:
    data.update(fees=[], discount="79.95", vat=None, total="-5.00", payments=[{"method": "cash", "amount": "-5.00"}])


def _total_follows(mutation: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """``mutation``, then the total and a single payment as the money rule makes them of what it left.

    So the one rule the mutation broke is the only one broken: the money rule cannot refuse the
    receipt in its stead.
    """

    def mutate(data: dict[str, Any]) -> None:
        mutation(data)
        k = 1 if data.get("kind", "sale") == "sale" else -1
        number = lambda value: Decimal(str(value))  # noqa: E731
        total = sum(
            (
                amount(number(x["quantity"]), number(x["unit_price"]), number(x.get("discount", 0)))
                for x in data["lines"]
            ),
            Decimal(0),
        )
        total += sum((number(fee["amount"]) for fee in data.get("fees") or []), Decimal(0))
        total = money(total - k * number(data.get("discount", 0)) + number(data.get("rounding", 0)))
        data["total"] = str(total)
        data["payments"] = [{"method": "card", "amount": str(total)}]

    return mutate


def _both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(data)

    return mutate


SALE_MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown top-level key": _set(("totl",), "119.00"),
    "unknown line key": _set(("lines", 1, "vat"), 12),
    "unknown payment key": _set(("payments", 0, "currency"), "SEK"),
    "unknown fee key": _set(("fees", 0, "name"), "Frakt"),
    "unknown vat key": _set(("vat", 0, "net"), "67.01"),
    "surrogate field name": _set(("tot\udc80al",), "1"),
    "missing till_id": _drop("till_id"),
    "missing receipt_no": _drop("receipt_no"),
    "missing occurred_at": _drop("occurred_at"),
    "missing lines": _drop("lines"),
    "missing total": _drop("total"),
    "missing payments": _drop("payments"),
    "missing line sku": _drop("lines", 0, "sku"),
    "missing line quantity": _drop("lines", 1, "quantity"),
    "missing line unit_price": _drop("lines", 0, "unit_price"),
    "missing line vat_rate": _drop("lines", 0, "vat_rate"),
    "missing fee amount": _drop("fees", 0, "amount"),
    "missing fee role": _drop("fees", 0, "role"),
    "missing payment method": _drop("payments", 1, "method"),
    "missing payment amount": _drop("payments", 0, "amount"),
    "missing vat rate": _drop("vat", 1, "rate"),
    "receipt_no true": _set(("receipt_no",), True),
    "receipt_no string": _set(("receipt_no",), "100234"),
    "receipt_no fraction": _set(("receipt_no",), Decimal("100234.5")),
    "receipt_no 0": _set(("receipt_no",), 0),
    "receipt_no negative": _set(("receipt_no",), -1),
    "receipt_no 2**63": _set(("receipt_no",), 2**63),
    "quantity true": _set(("lines", 0, "quantity"), True),
    "unit_price true": _set(("lines", 0, "unit_price"), True),
    "vat_rate true": _set(("lines", 0, "vat_rate"), True),
    "total false": _set(("total",), False),
    "total NaN": _set(("total",), math.nan),
    "total Decimal NaN": _set(("total",), Decimal("NaN")),
    "total sNaN": _set(("total",), Decimal("sNaN")),
    "quantity infinity": _set(("lines", 0, "quantity"), math.inf),
    "payment amount None": _set(("payments", 0, "amount"), None),
    "lines a dict": _set(("lines",), {"0": BASE["lines"][0]}),
    "a line a list": _set(("lines", 0), list(BASE["lines"][0].items())),
    "payments a dict": _set(("payments",), BASE["payments"][0]),
    "fees a dict": _set(("fees",), BASE["fees"][0]),
    "vat a dict": _set(("vat",), BASE["vat"][0]),
    "lines empty": _set(("lines",), []),
    "payments empty": _set(("payments",), []),
    "unit_price three decimals": _set(("lines", 0, "unit_price"), "15.901"),
    "quantity four decimals": _set(("lines", 1, "quantity"), "0.5001"),
    "total three decimals": _set(("total",), "119.001"),
    "total as an exponent string": _set(("total",), "1.19e2"),
    "total 21 significant digits": _set(("total",), Decimal("119.000000000000000000")),
    "total 10**10": _set(("total",), Decimal("1E+10")),
    "unit_price negative": _set(("lines", 0, "unit_price"), "-15.90"),
    "quantity zero": _set(("lines", 0, "quantity"), 0),
    "quantity 0.000": _set(("lines", 1, "quantity"), "0.000"),
    "line discount over the line": _set(("lines", 0, "discount"), "31.81"),
    "line discount negative": _set(("lines", 0, "discount"), "-1.80"),
    "receipt discount negative": _set(("discount",), "-4.95"),
    "rounding 1.00": _set(("rounding",), "1.00"),
    "line discount over the line, total following": _total_follows(_set(("lines", 0, "discount"), "31.81")),
    "unit_price negative, total following": _total_follows(_set(("lines", 0, "unit_price"), "-15.90")),
    "unit_price three decimals, total following": _total_follows(_set(("lines", 0, "unit_price"), "15.905")),
    "quantity four decimals, total following": _total_follows(_set(("lines", 1, "quantity"), "0.5001")),
    "fee negative, total following": _total_follows(_set(("fees", 0, "amount"), "-49.00")),
    "receipt discount negative, total following": _total_follows(_set(("discount",), "-4.95")),
    "rounding 1.00, total following": _total_follows(_set(("rounding",), "1.00")),
    "rounding three decimals, total following": _total_follows(_set(("rounding",), "0.004")),
    "total off by 0.01": _total_off,
    "payments not adding up": _set(("payments", 1, "amount"), "19.01"),
    "a sale's total negative": _negative_sale,
    "duplicate vat rate": _set(("vat", 1, "rate"), 12),
    "vat at the rate 0 not zero": _set(("vat", 1), {"rate": 0, "amount": "0.01"}),
    "five vat entries": _set(("vat",), [{"rate": r, "amount": "0.00"} for r in (25, 12, 6, 0, 25)]),
    "vat_rate 25.5": _set(("lines", 0, "vat_rate"), "25.5"),
    "vat_rate 7": _set(("lines", 0, "vat_rate"), 7),
    "fee vat_rate 24.0": _set(("fees", 0, "vat_rate"), 24.0),
    "till_id with a space": _set(("till_id",), "kassa 1"),
    "till_id 65 characters": _set(("till_id",), "k" * 65),
    "till_id empty": _set(("till_id",), ""),
    "occurred_at without an offset": _set(("occurred_at",), "2026-11-26T14:59:01"),
    "occurred_at before year 1 in UTC": _set(("occurred_at",), "0001-01-01T00:00:00+14:00"),
    "occurred_at 1969": _set(("occurred_at",), "1969-12-31T23:59:59Z"),
    "occurred_at 30 February": _set(("occurred_at",), "2026-02-30T10:00:00+01:00"),
    "occurred_at a number": _set(("occurred_at",), 1764165541),
    "lone surrogate in sku": _set(("lines", 0, "sku"), "731\ud800"),
    "NUL in sku": _set(("lines", 0, "sku"), "731\x00"),
    "control character in name": _set(("lines", 0, "name"), "Mjölk\x07"),
    "line break in name": _set(("lines", 0, "name"), "Mjölk\n1,5%"),
    "lone surrogate in name": _set(("lines", 0, "name"), "\udfff"),
    "sku empty": _set(("lines", 0, "sku"), ""),
    "sku 65 characters": _set(("lines", 0, "sku"), "7" * 65),
    "sku a number": _set(("lines", 0, "sku"), 7310865004703),
    "name 201 characters": _set(("lines", 0, "name"), "M" * 201),
    "currency lower case": _set(("currency",), "sek"),
    "currency null": _set(("currency",), None),
    "kind Sale": _set(("kind",), "Sale"),
    "kind null": _set(("kind",), None),
    "fee role frakt": _set(("fees", 0, "role"), "frakt"),
    "payment method Card": _set(("payments", 0, "method"), "Card"),
    "more than 1000 lines": _many_lines,
    "51 payments": _set(("payments",), [{"method": "cash", "amount": "0.00"}] * 50 + BASE["payments"][:1]),
    "51 fees": _set(("fees",), [{"role": "handling", "amount": "0.00", "vat_rate": 25}] * 51),
    "discount null": _set(("discount",), None),
    "a broken line and a broken total": _both(_set(("lines", 1, "quantity"), "x"), _set(("total",), "1")),
}


@pytest.mark.parametrize("mutation", SALE_MUTATIONS.values(), ids=SALE_MUTATIONS.keys())
def test_a_broken_receipt_goes_to_pydantic_which_words_the_refusal(
    mutation: Callable[[dict[str, Any]], None],
) -> None:
    data = copy.deepcopy(BASE)
    mutation(data)
    details = refused("sale", data)
    assert details and all(d["loc"] is not None and d["msg"] for d in details)


@pytest.mark.parametrize(
    "mutation",
    [_set(("fees",), [{"role": "shipping", "amount": "0.00", "vat_rate": 25}]), _set(("total",), "44.90")],
    ids=["fees on a return", "a return's total positive"],
)
def test_a_broken_return_goes_to_pydantic(mutation: Callable[[dict[str, Any]], None]) -> None:
    data = copy.deepcopy(RETURN)
    mutation(data)
    refused("sale", data)


@pytest.mark.parametrize("data", [[BASE], "BASE", None, 5, math.nan], ids=["list", "string", "null", "int", "nan"])
def test_a_receipt_that_is_no_object_goes_to_pydantic(data: Any) -> None:
    assert refused("sale", data) == [{"loc": [], "msg": "a sale must be a JSON object"}]


@pytest.mark.parametrize("record_type", ["z_report", "Sale", "bogus", ""])
def test_only_sales_and_stock_movements_are_read_quickly(record_type: str) -> None:
    assert quick_record(record_type, copy.deepcopy(BASE)) is None
    with pytest.raises(RecordValidationError) as caught:
        read_record(record_type, copy.deepcopy(BASE))
    with pytest.raises(RecordValidationError) as slow:
        parse_record(record_type, copy.deepcopy(BASE))
    assert caught.value.details == slow.value.details


def test_a_dict_subclass_or_a_model_goes_the_slow_way_to_the_same_answer() -> None:
    class Body(dict[str, Any]):
        pass

    assert quick_record("sale", Body(BASE)) is None
    assert_same_record(read_record("sale", Body(BASE)), Sale.model_validate(BASE))
    validated = Sale.model_validate(BASE)
    assert quick_record("sale", validated) is None
    assert read_record("sale", validated) is validated


# ----------------------------------------------------------------------------- broken movements, by hand

MOVEMENT = make_movement(1, note="Leverans från Arla\nfölljesedel 4711")

MOVEMENT_MUTATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown key": _set(("reson",), "delivery"),
    "missing till_id": _drop("till_id"),
    "missing movement_id": _drop("movement_id"),
    "missing sku": _drop("sku"),
    "missing delta": _drop("delta"),
    "missing reason": _drop("reason"),
    "missing occurred_at": _drop("occurred_at"),
    "delta zero": _set(("delta",), "0.000"),
    "delta true": _set(("delta",), True),
    "delta four decimals": _set(("delta",), "1.0001"),
    "delta NaN": _set(("delta",), math.nan),
    "delta a list": _set(("delta",), [24]),
    "reason theft": _set(("reason",), "theft"),
    "reason Delivery": _set(("reason",), "Delivery"),
    "movement_id with a space": _set(("movement_id",), "d 1"),
    "movement_id 65 characters": _set(("movement_id",), "d" * 65),
    "till_id with a slash": _set(("till_id",), "kassa/1"),
    "note with NUL": _set(("note",), "a\x00b"),
    "note with a lone surrogate": _set(("note",), "a\ud800"),
    "note 501 characters": _set(("note",), "n" * 501),
    "note a number": _set(("note",), 5),
    "sku with a tab": _set(("sku",), "731\t"),
    "occurred_at without an offset": _set(("occurred_at",), "2026-11-26T07:30:00"),
    "occurred_at year 0001+14:00": _set(("occurred_at",), "0001-01-01T00:00:00+14:00"),
}


def test_the_hand_made_movement_is_valid_and_read_quickly() -> None:
    quick = quick_record("stock_movement", MOVEMENT)
    assert quick is not None
    assert_same_record(quick, StockMovement.model_validate(MOVEMENT))
    assert isinstance(quick, StockMovement) and quick.note == "Leverans från Arla\nfölljesedel 4711"


@pytest.mark.parametrize("mutation", MOVEMENT_MUTATIONS.values(), ids=MOVEMENT_MUTATIONS.keys())
def test_a_broken_movement_goes_to_pydantic_which_words_the_refusal(
    mutation: Callable[[dict[str, Any]], None],
) -> None:
    data = copy.deepcopy(MOVEMENT)
    mutation(data)
    assert refused("stock_movement", data)


# ----------------------------------------------------------------------------- random mutations

NASTY: list[Any] = [
    None, True, False, 0, 1, -1, 7, 25, 12, 6, 2**63 - 1, 2**63, -(2**63), 10**10, 7.0, 0.0, -0.0, 0.5, 1e-7, 1e300,
    math.nan, math.inf, -math.inf,
    Decimal("0"), Decimal("-0"), Decimal("0.001"), Decimal("0.005"), Decimal("1E+2"), Decimal("1e-400"),
    Decimal("9999999999.99"), Decimal("-9999999999.999"), Decimal("NaN"), Decimal("Infinity"), Decimal("25.00"),
    "", " ", "0", "-0", "0.00", "1.005", " 10 ", "+5", "1e5", "25", "25.0", "25.5", "12", "6", "0.0", "٣",
    "sale", "return", "Sale", "SEK", "sek", "card", "swish", "shipping", "handling", "delivery",
    "kassa 1", "k" * 65, "x" * 201, "\ud800", "\x00", "\x1f", "\n", "é", "🥐",
    "2026-11-26T14:59:01", "2026-11-26T14:59:01Z", "2026-11-26 14:59:01+01:00", "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00", "2026-11-26T14:59:01.1234567891+01:00",
    [], {}, [{}], [None], {"sku": "x"}, [{"method": "card", "amount": "0.00"}],
]  # fmt: skip
"""Replacement values: wrong types, edge numbers, near-miss spellings, forbidden characters, empty containers."""

_UNKNOWN_KEYS = ["totl", "Total", "vat_rates", "note", "name", "discount", "rate", "role", "\udc80", ""]


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path into ``value``'s dicts and lists, deepest last."""
    found: list[tuple[str | int, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        found.append((*prefix, key))
        found.extend(_paths(inner, (*prefix, key)))
    return found


def _containers(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of every dict in ``value``, itself included."""
    found = [prefix] if isinstance(value, dict) else []
    for path in _paths(value, prefix):
        target: Any = value
        for part in path[len(prefix) :]:
            target = target[part]
        if isinstance(target, dict):
            found.append(path)
    return found


def _at(data: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid record with one to three random changes: a value replaced, a key dropped, an unknown key added."""
    data = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["replace", "replace", "replace", "drop", "add"]))
        if action == "add":
            where = draw(st.sampled_from(_containers(data)))
            _at(data, where)[draw(st.sampled_from(_UNKNOWN_KEYS))] = draw(st.sampled_from(NASTY))
            continue
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _at(data, path[:-1])
        if action == "drop":
            del parent[path[-1]]
        else:  # a nasty value, or another field's value from the same record
            other = _at(data, draw(st.sampled_from(paths)))
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from([*NASTY, other])))
    return data


_DROP = object()
"""A key dropped (or a list item taken out) rather than a value replaced."""


def _every_single_change(data: dict[str, Any]) -> list[dict[str, Any]]:
    """``data`` with one change, every way: each value replaced by each of ``NASTY``, each key dropped or added."""
    changed: list[dict[str, Any]] = []
    for path in _paths(data):
        for value in [*NASTY, _DROP]:
            one = copy.deepcopy(data)
            parent = _at(one, path[:-1])
            if value is _DROP:
                if isinstance(parent, dict):
                    del parent[path[-1]]
                else:
                    parent.pop(path[-1])
            else:
                parent[path[-1]] = copy.deepcopy(value)
            changed.append(one)
    for where in _containers(data):
        for key in _UNKNOWN_KEYS:
            one = copy.deepcopy(data)
            _at(one, where)[key] = "0.00"
            changed.append(one)
    return changed


@pytest.mark.parametrize(("record_type", "data"), [("sale", BASE), ("sale", RETURN), ("stock_movement", MOVEMENT)])
def test_every_single_change_of_a_valid_record_is_read_as_pydantic_reads_it(
    record_type: str, data: dict[str, Any]
) -> None:
    results = [check(record_type, one) for one in _every_single_change(data)]
    # Both ways are exercised: many changes are refused, some (a name, a spelling, a payment method) stay valid.
    assert sum(r is None for r in results) > len(results) // 2
    assert sum(r is not None for r in results) > 10


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(receipts()))
def test_a_randomly_broken_receipt_is_read_as_pydantic_reads_it(data: dict[str, Any]) -> None:
    check("sale", data)


@settings(max_examples=100, deadline=None)
@given(mutated(movements()))
def test_a_randomly_broken_movement_is_read_as_pydantic_reads_it(data: dict[str, Any]) -> None:
    check("stock_movement", data)


@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(mutated(receipts()).map(lambda d: ("sale", d)), mutated(movements()).map(lambda d: ("stock_movement", d)))
)
def test_many_randomly_broken_records_are_read_as_pydantic_reads_them(typed: tuple[str, dict[str, Any]]) -> None:
    record_type, data = typed
    check(record_type, data)
    if _json_safe(data):  # and as ingest reads it off the wire
        check(record_type, json_numbers(data))


def _json_safe(data: Any) -> bool:
    try:
        json.dumps(data, default=float, allow_nan=False)
    except (ValueError, TypeError):
        return False
    return True


# ----------------------------------------------------------------------------- the reader knows the models


def test_the_quick_reader_knows_every_field_and_allowed_value_of_the_models() -> None:
    # A field or an allowed value the models gain and the reader lacks sends those records the slow
    # way (READS turns the reader off); an allowed value the models drop and the reader kept would
    # let it accept what pydantic refuses. Either way the lists below must be brought along.
    assert quickread.READS == {"sale": True, "stock_movement": True}
    assert {name for name, field in Line.model_fields.items() if field.is_required()} == quickread._LINE_REQUIRED
    for values, model, field in [
        (quickread._KINDS, Sale, "kind"),
        (quickread._FEE_ROLES, Fee, "role"),
        (quickread._METHODS, Payment, "method"),
        (quickread._REASONS, StockMovement, "reason"),
    ]:
        assert set(values) == set(typing.get_args(model.model_fields[field].annotation)), field


# ----------------------------------------------------------------------------- construct and normalize

_MOVEMENT = StockMovement.model_validate(MOVEMENT)
_MODELS: list[BaseModel] = [
    Line.model_validate(BASE["lines"][0]),
    Fee.model_validate(BASE["fees"][0]),
    Payment.model_validate(BASE["payments"][0]),
    RateAmount.model_validate(BASE["vat"][0]),
    Sale.model_validate(BASE),
    _MOVEMENT,
]


@pytest.mark.parametrize("validated", _MODELS, ids=[type(m).__name__ for m in _MODELS])
def test_construct_makes_what_model_construct_makes(validated: BaseModel) -> None:
    model = type(validated)
    values = dict(validated.__dict__)
    made = construct(model, dict(values))
    reference = model.model_construct(**values)
    assert type(made) is model
    assert made == reference == validated
    assert made.model_dump() == reference.model_dump()
    assert repr(made.model_dump(mode="json")) == repr(reference.model_dump(mode="json"))
    # Every slot pydantic's BaseModel has, set alike: a pydantic that adds or changes one fails here.
    for slot in BaseModel.__slots__:
        assert getattr(made, slot) == getattr(reference, slot), slot
    assert made.model_fields_set == set(model.model_fields)
    if model is Sale:  # lists are unhashable: a sale has no hash, either way
        with pytest.raises(TypeError):
            hash(made)
        with pytest.raises(TypeError):
            hash(reference)
    else:
        assert hash(made) == hash(reference) == hash(validated)
    field = next(iter(model.model_fields))
    for frozen in (made, reference):
        with pytest.raises(ValidationError, match="frozen"):
            setattr(frozen, field, getattr(frozen, field))
    assert made.__dict__ == values


def test_the_quick_reader_makes_records_frozen_and_hashable_as_pydantic_does() -> None:
    movement = quick_record("stock_movement", MOVEMENT)
    assert movement is not None
    assert hash(movement) == hash(_MOVEMENT)
    assert {movement, _MOVEMENT} == {movement}
    with pytest.raises(ValidationError, match="frozen"):
        movement.note = "ändrad"  # type: ignore[misc]
    sale = quick_record("sale", BASE)
    assert isinstance(sale, Sale)
    with pytest.raises(ValidationError, match="frozen"):
        sale.lines[0].quantity = Decimal(3)  # type: ignore[misc]
    with pytest.raises(ValidationError, match="frozen"):
        sale.total = Decimal(0)  # type: ignore[misc]


def test_normalize_of_derived_movements_is_their_json_dump() -> None:
    for data in (BASE, RETURN):
        sale = quick_record("sale", data)
        assert isinstance(sale, Sale)
        derived = derive_movements(sale)
        assert len(derived) == len(sale.lines)
        for movement in derived:
            assert normalize(movement) == movement.model_dump(mode="json")
            assert_same_record(movement, StockMovement.model_validate(normalize(movement)))
