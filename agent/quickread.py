"""A plainly valid sale or stock movement, read without pydantic's per-field machinery.

Validating a 3-line sale through the pydantic models cost about 60 µs here,
the largest share of a sale's CPU on the event loop: pydantic calls some 35
Python before-validators, each with a ``ValidationInfo`` built for it, plus
the cross-field validators. This module calls the *same* functions of
``agent.records`` (the field checks and the cross-field rules) directly, in
plain loops, and builds the models from what they returned
(``agent.records.construct``): about a third of the cost.

It only ever answers "valid, and here is the record". At any doubt (a key
it does not know or that is missing, a type it did not expect, any rule
refusing) it returns None and the caller validates through pydantic, which
alone words the 422's details; so it can be stricter than the models, never
looser. ``tests/test_quickread.py`` holds that whatever it returns equals what
pydantic makes of the same input, stored form included, for random receipts
and for their mutations.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, get_args

from pydantic import BaseModel

from agent.records import (
    MAX_FEES,
    MAX_LINES,
    MAX_PAYMENTS,
    VAT_RATES,
    Fee,
    Line,
    Payment,
    RateAmount,
    Record,
    Sale,
    StockMovement,
    _amount,
    _currency,
    _movement_id,
    _name,
    _non_negative_amount,
    _non_zero_quantity,
    _note,
    _occurred_at,
    _receipt_no,
    _rounding,
    _sku,
    _till_id,
    _vat_rate,
    construct,
    discount_within_line,
    fees_for_kind,
    money_rule,
    parse_record,
    payments_add_up,
    printed_vat,
)

__all__ = ["quick_record", "read_record"]

_ZERO = Decimal("0.00")
"""The models' default for a discount or rounding left out."""

# The fields this reader reads, spelled out: a field added to a model and not here turns the reader
# off for that model (``READS``) rather than building records without it.
_SALE_KEYS = frozenset(
    {"till_id", "receipt_no", "occurred_at", "kind", "currency", "lines", "fees", "discount", "rounding", "total"}
    | {"payments", "vat"}
)
_LINE_KEYS = frozenset({"sku", "name", "quantity", "unit_price", "vat_rate", "discount"})
_LINE_REQUIRED = frozenset({"sku", "quantity", "unit_price", "vat_rate"})
_FEE_KEYS = frozenset({"role", "amount", "vat_rate"})
_PAYMENT_KEYS = frozenset({"method", "amount"})
_RATE_KEYS = frozenset({"rate", "amount"})
_MOVEMENT_KEYS = frozenset({"till_id", "movement_id", "sku", "delta", "reason", "occurred_at", "note"})

READS: dict[str, bool] = {
    "sale": all(
        keys == model.model_fields.keys()
        for keys, model in (
            (_SALE_KEYS, Sale),
            (_LINE_KEYS, Line),
            (_FEE_KEYS, Fee),
            (_PAYMENT_KEYS, Payment),
            (_RATE_KEYS, RateAmount),
        )
    ),
    "stock_movement": StockMovement.model_fields.keys() == _MOVEMENT_KEYS,
}
"""Per record type, whether this reader knows every field of its models (tests/test_quickread.py holds it does)."""


def _allowed(model: type[BaseModel], field: str) -> tuple[str, ...]:
    """The values of a ``Literal[...]`` field, read from the model so the two never differ."""
    return tuple(get_args(model.model_fields[field].annotation))


_KINDS = _allowed(Sale, "kind")
_FEE_ROLES = _allowed(Fee, "role")
_METHODS = _allowed(Payment, "method")
_REASONS = _allowed(StockMovement, "reason")


class _Doubt(Exception):
    """This reader is not sure: pydantic decides."""


_DOUBTS = (_Doubt, KeyError, TypeError, ValueError, ArithmeticError)
"""What sends a record to pydantic: a missing key, or any field check or rule refusing it (their
``PydanticCustomError`` is a ``ValueError``, ``decimal.InvalidOperation`` an ``ArithmeticError``)."""


def read_record(record_type: str, data: object) -> Record:
    """``quick_record`` when it is sure, else ``agent.records.parse_record`` (which words the refusal).

    Raises:
        RecordValidationError: as ``parse_record``.
    """
    return quick_record(record_type, data) or parse_record(record_type, data)


def quick_record(record_type: str, data: object) -> Record | None:
    """The record ``data`` validates to, or None when this reader is not sure it is valid."""
    if type(data) is not dict:
        return None
    try:
        if record_type == "sale" and data.keys() <= _SALE_KEYS and READS["sale"]:
            return _sale(data)
        if record_type == "stock_movement" and data.keys() <= _MOVEMENT_KEYS and READS["stock_movement"]:
            return _movement(data)
    except _DOUBTS:
        return None
    return None


def _literal(value: object, allowed: tuple[str, ...]) -> str:
    if type(value) is not str or value not in allowed:
        raise _Doubt
    return value


def _items(value: object, keys: frozenset[str], low: int, high: int, *, exact: bool = True) -> list[dict[str, Any]]:
    """A list of ``low..high`` plain objects whose keys are ``keys`` (``exact``) or among them."""
    if type(value) is not list or not low <= len(value) <= high:
        raise _Doubt
    for item in value:
        if type(item) is not dict or not (item.keys() == keys if exact else item.keys() <= keys):
            raise _Doubt
    return value


def _line(item: dict[str, Any]) -> Line:
    if not item.keys() >= _LINE_REQUIRED:
        raise _Doubt
    quantity = _non_zero_quantity(item["quantity"], None)
    unit_price = _non_negative_amount(item["unit_price"], None)
    discount = _ZERO
    if "discount" in item:
        discount = discount_within_line(_non_negative_amount(item["discount"], None), quantity, unit_price)
    return construct(
        Line,
        {
            "sku": _sku(item["sku"], None),
            "name": _name(item.get("name"), None),
            "quantity": quantity,
            "unit_price": unit_price,
            "vat_rate": _vat_rate(item["vat_rate"], None),
            "discount": discount,
        },
    )


def _fee(item: dict[str, Any]) -> Fee:
    return construct(
        Fee,
        {
            "role": _literal(item["role"], _FEE_ROLES),
            "amount": _non_negative_amount(item["amount"], None),
            "vat_rate": _vat_rate(item["vat_rate"], None),
        },
    )


def _payment(item: dict[str, Any]) -> Payment:
    return construct(Payment, {"method": _literal(item["method"], _METHODS), "amount": _amount(item["amount"], None)})


def _rate_amount(item: dict[str, Any]) -> RateAmount:
    return construct(RateAmount, {"rate": _vat_rate(item["rate"], None), "amount": _amount(item["amount"], None)})


def _sale(data: dict[str, Any]) -> Sale:
    # The fields in the model's order, each rule across fields on the field pydantic checks it on.
    till_id = _till_id(data["till_id"], None)
    receipt_no = _receipt_no(data["receipt_no"], None)
    occurred_at = _occurred_at(data["occurred_at"], None)
    kind = _literal(data.get("kind", "sale"), _KINDS)
    currency = _currency(data["currency"], None) if "currency" in data else "SEK"
    lines = [_line(item) for item in _items(data["lines"], _LINE_KEYS, 1, MAX_LINES, exact=False)]
    fees_in = data.get("fees")
    fees = [_fee(item) for item in _items(fees_in, _FEE_KEYS, 0, MAX_FEES)] if fees_in is not None else []
    fees_for_kind(fees, kind)
    discount = _non_negative_amount(data["discount"], None) if "discount" in data else _ZERO
    rounding = _rounding(data["rounding"], None) if "rounding" in data else _ZERO
    total = money_rule(_amount(data["total"], None), kind, lines, fees, discount, rounding)
    payments = [_payment(item) for item in _items(data["payments"], _PAYMENT_KEYS, 1, MAX_PAYMENTS)]
    payments_add_up(payments, total)
    vat_in = data.get("vat")
    vat = [_rate_amount(item) for item in _items(vat_in, _RATE_KEYS, 0, len(VAT_RATES))] if vat_in is not None else None
    printed_vat(vat)
    return construct(
        Sale,
        {
            "till_id": till_id,
            "receipt_no": receipt_no,
            "occurred_at": occurred_at,
            "kind": kind,
            "currency": currency,
            "lines": lines,
            "fees": fees,
            "discount": discount,
            "rounding": rounding,
            "total": total,
            "payments": payments,
            "vat": vat,
        },
    )


def _movement(data: dict[str, Any]) -> StockMovement:
    return construct(
        StockMovement,
        {
            "till_id": _till_id(data["till_id"], None),
            "movement_id": _movement_id(data["movement_id"], None),
            "sku": _sku(data["sku"], None),
            "delta": _non_zero_quantity(data["delta"], None),
            "reason": _literal(data["reason"], _REASONS),
            "occurred_at": _occurred_at(data["occurred_at"], None),
            "note": _note(data.get("note"), None),
        },
    )
