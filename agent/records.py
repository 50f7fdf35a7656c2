"""The three record types a till hands over, their money rule, and their stored form.

This module is the single place where contract §1 ("Records") is enforced:

- ``Sale``, ``StockMovement`` and ``ZReport`` are frozen pydantic models; constructing one
  (``Sale.model_validate(...)``) applies *every* rule, cross-field ones included
  (the money rule, payments adding up, fees on sales only), so a record object
  that exists is a valid record.
- ``parse_record`` is what ingest calls: it turns a failure into
  ``RecordValidationError`` whose ``details`` are the contract's
  ``[{"loc": [...], "msg": "..."}]``, with ``loc`` the field path a till
  developer recognises (``["lines", 2, "vat_rate"]``) and ``msg`` short plain
  English that never echoes a large input back.
- ``normalize`` gives the stored JSON (``envelope["data"]``, see
  docs/architecture.md) and ``digest`` its hash, so "same natural key, same
  content" is decided on normalised data: ``10`` and ``"10.00"`` are the same.
- ``money``, ``line_amount`` and ``expected_total`` are the money rule, exported
  so the SIE and Hogia adapters book exactly what was validated.

Decisions where the contract is silent (also in the docstrings below):

- Decimals may be JSON numbers, decimal strings (``"12.50"``, optional sign, no
  exponent) or ``Decimal``; never booleans, NaN or Infinity. ``agent.ingest``
  reads JSON numbers as exact ``Decimal`` text, never through a binary float,
  and any number of more than 20 significant digits is refused naming its field. Trailing zeros
  beyond the scale are fine (``"10.000"`` as an amount is 10.00); significant
  digits beyond it are refused rather than rounded. Every decimal must be less
  than 10**10 in absolute value.
- ``vat_rate`` accepts 25, 25.0, "25" and "25.00"; anything not exactly one of
  25, 12, 6, 0 (say 25.5) is refused.
- ``receipt_no`` accepts a JSON integer (or an integral number such as 7.0,
  which JSON cannot tell apart); strings, booleans and fractions are refused.
- ``occurred_at`` must be an RFC 3339 string with an explicit offset (``Z`` or
  ``+01:00``); an aware ``datetime`` is accepted from Python callers.
- ``fees`` left out or ``null`` is stored as ``[]``; a return with fees is
  refused.
- Unknown fields are refused, naming the field, so a typo (``"totl"``) is not
  silently dropped.
- A sale's ``vat`` (what the till printed) is optional; left out, it is left
  out of the stored form too, so sales stored before the field existed keep
  their digest and a till resending one is a duplicate, not a conflict.
- A Z-report's own sums (gross, VAT, payments) are not checked against each
  other here: the agent stores what the till printed, and reconciliation
  (``agent.reconcile``) shows any difference instead of refusing the report.
"""

from __future__ import annotations

import decimal
import difflib
import hashlib
import math
import re
from collections.abc import Callable, Collection, Hashable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from agent.canonical import canonical_bytes

__all__ = [
    "MAGNITUDE_LIMIT",
    "MAX_DETAILS",
    "MAX_DIGITS",
    "MAX_FEES",
    "MAX_LINES",
    "RECORD_MODELS",
    "RECORD_TYPES",
    "VAT_RATES",
    "Fee",
    "Line",
    "Payment",
    "RateAmount",
    "Record",
    "RecordValidationError",
    "Sale",
    "StockMovement",
    "ZReport",
    "amount",
    "derive_movements",
    "digest",
    "expected_total",
    "gift_card_problems",
    "line_amount",
    "line_gross",
    "money",
    "normalize",
    "parse_record",
    "time_window",
    "window_problems",
]

RECORD_TYPES = ("sale", "stock_movement", "z_report")
"""The record types in the order the contract lists them."""

RecordType = Literal["sale", "stock_movement", "z_report"]

DEFAULT_DESTINATION_TYPES: tuple[RecordType, ...] = ("sale", "stock_movement")
"""What a destination takes when its ``types`` is not given (contract §3): Z-reports only when listed."""

VAT_RATES = (25, 12, 6, 0)
"""The Swedish VAT rates in percent (contract §1)."""

MAX_LINES = 1000
"""At most this many lines on one receipt (contract §1)."""

MAX_PAYMENTS = 50
"""At most this many payments on one receipt (contract §1)."""

MAGNITUDE_LIMIT = Decimal(10) ** 10
"""Every amount, quantity and delta is below this in absolute value.

No shop sells ten billion of anything; the cap keeps the money arithmetic far
inside ``Decimal``'s precision and turns a garbled number into a clear error.
"""

_MAGNITUDE_INT = 10**10
"""``MAGNITUDE_LIMIT`` as an int, for ``_to_decimal``'s quick path."""

CENT = Decimal("0.01")
MILLI = Decimal("0.001")

# Products of two capped decimals and sums of 1000 of them fit easily in 50 digits;
# the default context (28 digits) would already do, this makes it independent of
# whatever context a caller set.
_MONEY_CONTEXT = decimal.Context(prec=50, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation])

_DECIMAL_STRING = re.compile(r"[+-]?\d+(?:\.\d+)?")
_PLAIN_DECIMAL = {2: re.compile(r"-?[0-9]{1,10}(?:\.[0-9]{1,2})?"), 3: re.compile(r"-?[0-9]{1,10}(?:\.[0-9]{1,3})?")}
"""Decimal strings ``_to_decimal`` takes without its general checks: they cannot fail them."""
_INTEGRAL_STRING = re.compile(r"\d+(?:\.0+)?")
_TILL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MOVEMENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?")
_MAX_RECEIPT_NO = 2**63 - 1  # SQLite's INTEGER
MAX_DIGITS = 20
"""At most this many significant digits in any number (contract §1)."""
MAX_DETAILS = 100
"""At most this many error details in one answer: a huge invalid body gets a small answer."""
MAX_FEES = 50
"""At most this many fees on one receipt (the contract leaves fees unbounded; a receipt has a few)."""
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_FORBIDDEN_NOTE = re.compile(r"[\x00\ud800-\udfff]")
_SHORT = 40  # longest piece of input quoted back in a message


# --------------------------------------------------------------------------- errors


class RecordValidationError(ValueError):
    """A record broke a rule of contract §1.

    Attributes:
        record_type: ``"sale"`` or ``"stock_movement"`` (or what the caller asked for).
        details: ``[{"loc": [...], "msg": "..."}]``, the body of a 422 answer:
            ``loc`` is the field path (strings and list indexes), ``msg`` says
            what is wrong in plain English.
    """

    def __init__(self, record_type: str, details: list[dict[str, Any]]):
        self.record_type = record_type
        self.details = details
        first = "; ".join(f"{_path_text(d['loc']) or record_type}: {d['msg']}" for d in details[:3])
        more = f" (and {len(details) - 3} more)" if len(details) > 3 else ""
        super().__init__(f"invalid {record_type}: {first}{more}")


def _fail(message: str) -> PydanticCustomError:
    # The message goes in through the context so braces in quoted input cannot
    # break pydantic's template formatting.
    return PydanticCustomError("kassabro", "{reason}", {"reason": message})


def _short(value: object) -> str:
    """A quotable, bounded rendering of some input, for error messages."""
    text = repr(value)
    return text if len(text) <= _SHORT else text[: _SHORT - 3] + "..."


def _field(info: ValidationInfo | None, default: str = "value") -> str:
    return (info.field_name if info is not None else None) or default


def _path_text(loc: list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --------------------------------------------------------------------------- money


def money(value: Decimal | int | str) -> Decimal:
    """Round to the öre, half away from zero (``ROUND_HALF_UP``), as contract §1 says.

    Half away from zero (not banker's rounding) so a return mirrors its sale:
    ``0.125 -> 0.13`` and ``-0.125 -> -0.13``. A zero result is never negative.
    """
    result = Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP, context=_MONEY_CONTEXT)
    return result.copy_abs() if result.is_zero() else result


def _fmt(number: Decimal) -> str:
    """A decimal as plain text, never in exponent form."""
    return format(number, "f")


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def line_gross(line: Line) -> Decimal:
    """``round(quantity × unit_price)``: the line before its discount, to the öre."""
    return money(_MONEY_CONTEXT.multiply(line.quantity, line.unit_price))


def line_amount(line: Line) -> Decimal:
    """The line's amount: ``round(quantity × unit_price) − sign(quantity) × discount``.

    The discount always moves the amount toward zero, for a sold line
    (positive quantity) and for a returned one (negative quantity) alike.
    """
    return amount(line.quantity, line.unit_price, line.discount)


def amount(quantity: Decimal, unit_price: Decimal, discount: Decimal = Decimal(0)) -> Decimal:
    """``line_amount`` of plain decimals, for code that reads stored data (the Hogia adapter's rows)."""
    gross = money(_MONEY_CONTEXT.multiply(quantity, unit_price))
    return money(gross - _sign(quantity) * discount)


def _expected_total(kind: str, lines: list[Line], fees: list[Fee], discount: Decimal, rounding: Decimal) -> Decimal:
    k = 1 if kind == "sale" else -1
    total = sum((line_amount(line) for line in lines), Decimal(0))
    total += sum((fee.amount for fee in fees), Decimal(0))
    return money(total - k * discount + rounding)


def expected_total(sale: Sale) -> Decimal:
    """What ``sale.total`` must be: ``Σ lines + Σ fees − k × discount + rounding``.

    ``k`` is 1 for a sale and −1 for a return, so the receipt discount always
    moves the total toward zero.
    """
    return _expected_total(sale.kind, sale.lines, sale.fees, sale.discount, sale.rounding)


# --------------------------------------------------------------------------- field parsers


def _check_digits(number: Decimal, name: str) -> None:
    """Refuse more than ``MAX_DIGITS`` significant digits (the JSON text, read exactly by ``agent.ingest``)."""
    if len(number.as_tuple().digits) > MAX_DIGITS:
        raise _fail(f"{name} has more than {MAX_DIGITS} significant digits")


def _integral(value: object, name: str) -> object:
    """An integral ``Decimal`` (``7.0`` as JSON reads it exactly) as an int; anything else unchanged.

    The digit and size checks come first so a ``1e999999999`` never becomes a
    billion-digit int.
    """
    if isinstance(value, Decimal) and value.is_finite():
        _check_digits(value, name)
        if value.adjusted() < MAX_DIGITS and value == value.to_integral_value():
            return int(value)
    return value


def _to_decimal(value: object, name: str, places: int) -> Decimal:
    """Read a JSON number, decimal string or Decimal with at most ``places`` decimals."""
    unit = CENT if places == 2 else MILLI
    plain = _PLAIN_DECIMAL.get(places)
    if (type(value) is str and plain is not None and plain.fullmatch(value)) or (
        type(value) is int and -_MAGNITUDE_INT < value < _MAGNITUDE_INT
    ):
        # The common case (ASCII digits, at most 10 before the point and ``places``
        # after; a small int) passes every check below, so it goes straight to the
        # result: validation is a visible share of a sale's CPU on a Pi.
        exact = Decimal(value).quantize(unit, context=_MONEY_CONTEXT)
        return exact.copy_abs() if exact.is_zero() else exact
    if isinstance(value, bool):
        raise _fail(f"{name} must be a number, not {str(value).lower()}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise _fail(f"{name} must be a finite number")
        # repr() is the shortest text that reads back as the same float, which is
        # what the JSON said: 0.125 stays 0.125, 1.005 stays 1.005.
        number = Decimal(repr(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _fail(f"{name} must be a finite number")
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64 or not _DECIMAL_STRING.fullmatch(text):
            raise _fail(f'{name} must be a decimal number such as "12.50", got {_short(value)}')
        number = Decimal(text)
    else:
        raise _fail(f"{name} must be a number or a decimal string")
    # copy_abs and adjusted need no context: abs() would trap Overflow on 1e999999999.
    if number.copy_abs() >= MAGNITUDE_LIMIT:
        raise _fail(f"{name} is out of range: it must be less than 10000000000 in absolute value")
    _check_digits(number, name)
    if number.adjusted() < -MAX_DIGITS:  # 1e-400: quantize would leave the context's range
        raise _fail(f"{name} has more than {places} decimals: {str(value)[:_SHORT]}")
    scaled = number.quantize(unit, context=_MONEY_CONTEXT)
    if scaled != number:
        shown = value.strip() if isinstance(value, str) else str(value)
        raise _fail(f"{name} has more than {places} decimals: {shown[:_SHORT]}")
    return scaled.copy_abs() if scaled.is_zero() else scaled


def _amount(value: object, info: ValidationInfo | None) -> Decimal:
    return _to_decimal(value, _field(info, "amount"), 2)


def _non_negative_amount(value: object, info: ValidationInfo | None) -> Decimal:
    name = _field(info, "amount")
    number = _to_decimal(value, name, 2)
    if number < 0:
        raise _fail(f"{name} must not be negative, got {_fmt(number)}")
    return number


def _rounding(value: object, info: ValidationInfo | None) -> Decimal:
    name = _field(info, "rounding")
    number = _to_decimal(value, name, 2)
    if abs(number) >= 1:
        raise _fail(f"{name} must be less than 1.00 in absolute value, got {_fmt(number)}")
    return number


def _non_zero_quantity(value: object, info: ValidationInfo | None) -> Decimal:
    name = _field(info, "quantity")
    number = _to_decimal(value, name, 3)
    if number == 0:
        raise _fail(f"{name} must not be zero")
    return number


def _whole_number(value: object, name: str, minimum: int) -> int:
    """An integer from ``minimum`` to below 2**63: receipt numbers and counts are read alike.

    ``true`` is refused; a whole float or an integral ``Decimal`` (``7.0`` as JSON reads it) is taken as an int.
    """
    if isinstance(value, bool):
        raise _fail(f"{name} must be an integer, not {str(value).lower()}")
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    value = _integral(value, name)
    if not isinstance(value, int):
        raise _fail(f"{name} must be an integer, got {_short(value)}")
    if not minimum <= value <= _MAX_RECEIPT_NO:
        raise _fail(f"{name} must be at least {minimum} (and below 2**63), got {_short(value)}")
    return value


def _receipt_no(value: object, info: ValidationInfo | None) -> int:
    return _whole_number(value, _field(info, "receipt_no"), 1)


def _optional_receipt_no(value: object, info: ValidationInfo | None) -> int | None:
    return None if value is None else _receipt_no(value, info)


def _count(value: object, info: ValidationInfo | None) -> int:
    """A non-negative integer count (a Z-report's ``receipt_count``), read like ``receipt_no``."""
    return _whole_number(value, _field(info, "count"), 0)


def _vat_rate(value: object, info: ValidationInfo | None) -> int:
    name = _field(info, "vat_rate")
    rate: int | None = None
    value = _integral(value, name)
    if isinstance(value, bool):
        rate = None
    elif isinstance(value, int):
        rate = value
    elif (isinstance(value, float) and math.isfinite(value) and value.is_integer()) or (
        isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 3 and value == value.to_integral_value()
    ):
        rate = int(value)
    elif isinstance(value, str) and _INTEGRAL_STRING.fullmatch(value.strip()):
        rate = int(Decimal(value.strip()))
    if rate not in VAT_RATES:
        raise _fail(f"{name} must be one of 25, 12, 6 or 0 (percent), got {_short(value)}")
    return rate


def _occurred_at(value: object, info: ValidationInfo | None) -> datetime:
    name = _field(info, "occurred_at")
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _fail(f"{name} must have a UTC offset, such as +01:00 or Z")
        return _plausible(value, name)
    if not isinstance(value, str):
        raise _fail(f'{name} must be an RFC 3339 date-time string such as "2026-11-26T14:59:01+01:00"')
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        raise _fail(f'{name} must be an RFC 3339 date-time such as "2026-11-26T14:59:01+01:00", got {_short(value)}')
    if match.group("offset") is None:
        raise _fail(f"{name} must have a UTC offset, such as +01:00 or Z (the till's clock with its offset)")
    text = value.strip().upper()
    try:
        parsed = datetime.fromisoformat(text)  # Python 3.11 reads Z and truncates past microseconds
    except ValueError:
        raise _fail(f"{name} is not a real date and time: {_short(value)}") from None
    if parsed.utcoffset() is None:  # pragma: no cover - the regex demands an offset
        raise _fail(f"{name} must have a UTC offset")
    return _plausible(parsed, name)


def _plausible(moment: datetime, name: str) -> datetime:
    """Refuse an instant outside the years 1970..9998 in UTC, whatever the agent's clock says.

    ``0001-01-01T00:00:00+14:00`` is before year 1 in UTC: converting it (the
    books do) raised ``OverflowError`` and killed the SIE loop. Only the
    ``occurred_at`` window (``agent.ingest``) depends on the clock.
    """
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:
        raise _fail(f"{name} is out of range: {moment.isoformat()} is no real moment in UTC") from None
    if not 1970 <= utc.year <= 9998:
        raise _fail(f"{name} is out of range: it must lie between the years 1970 and 9998")
    return moment


def _text_check(
    *,
    max_length: int,
    pattern: re.Pattern[str] | None = None,
    rule: str = "",
    optional: bool = False,
    allow_control: bool = False,
) -> Callable[[object, ValidationInfo | None], str | None]:
    """The check of a string field: type, length in characters, pattern (``BeforeValidator`` of its type).

    An optional field takes ``null`` and may be empty; a required one needs at
    least one character. No string holds NUL or a lone surrogate (a lone
    surrogate cannot be stored as UTF-8, so it must be refused here, not fail
    the outbox's transaction); only ``allow_control`` (``note``) may hold other
    control characters such as a line break (contract §1).
    """
    min_length = 0 if optional else 1

    def check(value: object, info: ValidationInfo | None) -> str | None:
        name = _field(info, "value")
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise _fail(f"{name} must be a string")
        # Every forbidden character is unprintable (Cc, Cs): a printable string, most of them, needs no search.
        bad = None if value.isprintable() else (_FORBIDDEN_NOTE if allow_control else _FORBIDDEN_TEXT).search(value)
        if bad is not None:
            char = bad.group()
            what = "a lone UTF-16 surrogate" if "\ud800" <= char <= "\udfff" else "a control character"
            raise _fail(f"{name} holds {what} (U+{ord(char):04X} at character {bad.start()})")
        if pattern is not None:
            if not pattern.fullmatch(value):
                raise _fail(f"{name} must be {rule}, got {_short(value)}")
        elif len(value) > max_length:
            raise _fail(f"{name} must be at most {max_length} characters long, got {len(value)}")
        elif len(value) < min_length:
            raise _fail(f"{name} must not be empty")
        return value

    return check


def _iso(moment: datetime) -> str:
    return moment.isoformat()


_DecimalOut = PlainSerializer(_fmt, return_type=str, when_used="json")
Amount = Annotated[Decimal, BeforeValidator(_amount), _DecimalOut]
NonNegativeAmount = Annotated[Decimal, BeforeValidator(_non_negative_amount), _DecimalOut]
RoundingAmount = Annotated[Decimal, BeforeValidator(_rounding), _DecimalOut]
NonZeroQuantity = Annotated[Decimal, BeforeValidator(_non_zero_quantity), _DecimalOut]
VatRate = Annotated[int, BeforeValidator(_vat_rate)]
ReceiptNo = Annotated[int, BeforeValidator(_receipt_no)]
OptionalReceiptNo = Annotated[int | None, BeforeValidator(_optional_receipt_no)]
Count = Annotated[int, BeforeValidator(_count)]
OccurredAt = Annotated[
    datetime, BeforeValidator(_occurred_at), PlainSerializer(_iso, return_type=str, when_used="json")
]
_till_id = _text_check(max_length=64, pattern=_TILL_ID, rule="1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")
_movement_id = _text_check(
    max_length=64, pattern=_MOVEMENT_ID, rule="1 to 64 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-'"
)
_currency = _text_check(max_length=3, pattern=_CURRENCY, rule="an ISO 4217 code of 3 upper-case letters, such as SEK")
_sku = _text_check(max_length=64)
_name = _text_check(max_length=200, optional=True)
_note = _text_check(max_length=500, optional=True, allow_control=True)
TillId = Annotated[str, BeforeValidator(_till_id)]
MovementId = Annotated[str, BeforeValidator(_movement_id)]
Currency = Annotated[str, BeforeValidator(_currency)]
Sku = Annotated[str, BeforeValidator(_sku)]
Name = Annotated[str | None, BeforeValidator(_name)]
Note = Annotated[str | None, BeforeValidator(_note)]

_CONFIG = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# --------------------------------------------------------------------------- models


class Line(BaseModel):
    """One receipt line. ``quantity`` is negative for a returned item."""

    model_config = _CONFIG

    sku: Sku
    name: Name = None
    quantity: NonZeroQuantity
    unit_price: NonNegativeAmount
    vat_rate: VatRate
    discount: NonNegativeAmount = Decimal("0.00")

    @field_validator("discount")
    @classmethod
    def _discount_within_line(cls, discount: Decimal, info: ValidationInfo) -> Decimal:
        quantity, unit_price = info.data.get("quantity"), info.data.get("unit_price")
        if quantity is None or unit_price is None:
            return discount  # the bad quantity or price is reported on its own
        return discount_within_line(discount, quantity, unit_price)


def discount_within_line(discount: Decimal, quantity: Decimal, unit_price: Decimal) -> Decimal:
    """A line's discount, refused when it is more than the line's amount before it."""
    gross = money(_MONEY_CONTEXT.multiply(quantity, unit_price)).copy_abs()
    if discount > gross:
        raise _fail(f"discount {_fmt(discount)} exceeds the line's amount {_fmt(gross)}")
    return discount


class Fee(BaseModel):
    """An order-level cost on a sale (frakt, expeditionsavgift)."""

    model_config = _CONFIG

    role: Literal["shipping", "handling"]
    amount: NonNegativeAmount
    vat_rate: VatRate


class Payment(BaseModel):
    """One tender. Amounts may be negative (a refund on a return)."""

    model_config = _CONFIG

    method: Literal["card", "cash", "swish", "gift_card", "invoice", "other"]
    amount: Amount


class RateAmount(BaseModel):
    """An amount at one VAT rate: a receipt's or Z-report's printed VAT, a Z-report's gross."""

    model_config = _CONFIG

    rate: VatRate
    amount: Amount


def _fees_or_empty(value: object) -> object:
    return [] if value is None else value


def _bounded(minimum: int, maximum: int) -> Any:
    """A before-validator refusing a list outside ``minimum..maximum`` before its items are validated.

    pydantic checks ``max_length`` only after validating every item, so 345,000
    empty payments cost seconds and a 44 MB answer; this refuses them at once.
    """

    def check(value: object, info: ValidationInfo) -> object:
        if isinstance(value, list) and not minimum <= len(value) <= maximum:
            name = _field(info, "list")
            if len(value) > maximum:
                raise _fail(f"{name} must have at most {maximum} items, got {len(value)}")
            raise _fail(f"{name} must have at least {minimum} item{'' if minimum == 1 else 's'}")
        return value

    return BeforeValidator(check)


_H = TypeVar("_H", bound=Hashable)


def _one_per_rate(items: list[RateAmount], what: str) -> list[RateAmount]:
    """Refuse a rate listed twice (``_no_vat_at_zero`` refuses VAT at the rate 0)."""
    if (rate := _first_repeat(item.rate for item in items)) is not None:
        raise _fail(f"{what} lists the rate {rate} twice; give one amount per VAT rate")
    return items


def _first_repeat(values: Iterable[_H]) -> _H | None:
    """The first value that comes a second time, or None when each comes once."""
    seen: set[_H] = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def _no_vat_at_zero(items: list[RateAmount], what: str) -> list[RateAmount]:
    for item in items:
        if item.rate == 0 and not item.amount.is_zero():
            raise _fail(f"{what} at the rate 0 must be 0.00, got {_fmt(item.amount)}")
    return items


class Sale(BaseModel):
    """A till receipt (kvitto): a sale or a return. Natural key ``sale:{till_id}:{receipt_no}``.

    Field order is the stored key order. The cross-field rules are checked on
    the last field they depend on, so an error's ``loc`` names that field:
    ``fees`` (none on a return), ``total`` (the money rule and its sign) and
    ``payments`` (they add up to the total).
    """

    model_config = _CONFIG
    record_type: ClassVar[str] = "sale"

    till_id: TillId
    receipt_no: ReceiptNo
    occurred_at: OccurredAt
    kind: Literal["sale", "return"] = "sale"
    currency: Currency = "SEK"
    lines: Annotated[list[Line], _bounded(1, MAX_LINES)] = Field(min_length=1, max_length=MAX_LINES)
    fees: Annotated[list[Fee], _bounded(0, MAX_FEES), BeforeValidator(_fees_or_empty)] = Field(
        default_factory=list, max_length=MAX_FEES
    )
    discount: NonNegativeAmount = Decimal("0.00")
    rounding: RoundingAmount = Decimal("0.00")
    total: Amount
    payments: Annotated[list[Payment], _bounded(1, MAX_PAYMENTS)] = Field(min_length=1, max_length=MAX_PAYMENTS)
    vat: Annotated[list[RateAmount] | None, _bounded(0, len(VAT_RATES))] = Field(
        default=None, max_length=len(VAT_RATES)
    )

    @property
    def key(self) -> str:
        """The natural key: the same till and receipt number is the same receipt."""
        return f"sale:{self.till_id}:{self.receipt_no}"

    @field_validator("vat")
    @classmethod
    def _printed_vat(cls, vat: list[RateAmount] | None) -> list[RateAmount] | None:
        return printed_vat(vat)

    @field_validator("fees")
    @classmethod
    def _no_fees_on_returns(cls, fees: list[Fee], info: ValidationInfo) -> list[Fee]:
        return fees_for_kind(fees, info.data.get("kind"))

    @field_validator("total")
    @classmethod
    def _money_rule(cls, total: Decimal, info: ValidationInfo) -> Decimal:
        data = info.data
        if not all(name in data for name in ("kind", "lines", "fees", "discount", "rounding")):
            return total  # a part is invalid and reported on its own
        return money_rule(total, data["kind"], data["lines"], data["fees"], data["discount"], data["rounding"])

    @field_validator("payments")
    @classmethod
    def _payments_add_up(cls, payments: list[Payment], info: ValidationInfo) -> list[Payment]:
        total = info.data.get("total")
        if total is None:
            return payments
        return payments_add_up(payments, total)


# The sale's rules across fields, as plain functions: the model's validators call them with what
# pydantic validated, ``agent.quickread`` with what it read.


def printed_vat(vat: list[RateAmount] | None) -> list[RateAmount] | None:
    """A sale's printed VAT: one amount per rate, none at the rate 0."""
    if vat is None:
        return None
    return _no_vat_at_zero(_one_per_rate(vat, "vat"), "vat")


def fees_for_kind(fees: list[Fee], kind: object) -> list[Fee]:
    """Fees are for sales only: a return with fees is refused."""
    if fees and kind == "return":
        raise _fail("a return cannot have fees (fees are for sales only)")
    return fees


def money_rule(
    total: Decimal, kind: str, lines: list[Line], fees: list[Fee], discount: Decimal, rounding: Decimal
) -> Decimal:
    """The total as contract §1's money rule gives it, with the sign of its kind; else refused."""
    expected = _expected_total(kind, lines, fees, discount, rounding)
    if total != expected:
        raise _fail(f"total is {_fmt(total)} but lines, fees, discount and rounding add up to {_fmt(expected)}")
    if kind == "sale" and total < 0:
        raise _fail(f"a sale's total must not be negative, got {_fmt(total)}")
    if kind == "return" and total > 0:
        raise _fail(f"a return's total must not be positive, got {_fmt(total)}")
    return total


def payments_add_up(payments: list[Payment], total: Decimal) -> list[Payment]:
    """The payments, refused unless they add up to ``total``."""
    paid = money(sum((p.amount for p in payments), Decimal(0)))
    if paid != total:
        raise _fail(f"payments add up to {_fmt(paid)} but total is {_fmt(total)}")
    return payments


class StockMovement(BaseModel):
    """A change of stock that is not a sale. Natural key ``stock_movement:{till_id}:{movement_id}``."""

    model_config = _CONFIG
    record_type: ClassVar[str] = "stock_movement"

    till_id: TillId
    movement_id: MovementId
    sku: Sku
    delta: NonZeroQuantity
    reason: Literal["delivery", "stocktake", "shrinkage", "correction", "return", "sale"]
    occurred_at: OccurredAt
    note: Note = None

    @property
    def key(self) -> str:
        """The natural key: the same till and movement id is the same movement."""
        return f"stock_movement:{self.till_id}:{self.movement_id}"


class ZReport(BaseModel):
    """The till's day close (Z-dagrapport). Natural key ``z_report:{till_id}:{z_no}``.

    ``first_receipt_no`` and ``last_receipt_no`` are the receipts it covers,
    inclusive; a Z with no sales has neither (and a ``receipt_count`` of 0).
    The sums are what the till printed; ``agent.reconcile`` compares them with
    the receipts the agent holds.
    """

    model_config = _CONFIG
    record_type: ClassVar[str] = "z_report"

    till_id: TillId
    z_no: ReceiptNo
    opened_at: OccurredAt
    closed_at: OccurredAt
    first_receipt_no: OptionalReceiptNo = None
    # validate_default: "first without last" is refused even when last is left out.
    last_receipt_no: OptionalReceiptNo = Field(default=None, validate_default=True)
    receipt_count: Count
    gross: Annotated[list[RateAmount], _bounded(0, len(VAT_RATES))] = Field(max_length=len(VAT_RATES))
    vat: Annotated[list[RateAmount], _bounded(0, len(VAT_RATES))] = Field(max_length=len(VAT_RATES))
    payments: Annotated[list[Payment], _bounded(0, MAX_PAYMENTS)] = Field(max_length=MAX_PAYMENTS)
    rounding: Amount = Decimal("0.00")
    returns_total: Amount = Decimal("0.00")
    grand_total: Amount

    @property
    def key(self) -> str:
        """The natural key: the same till and Z number is the same day close."""
        return f"z_report:{self.till_id}:{self.z_no}"

    @field_validator("closed_at")
    @classmethod
    def _closed_after_opened(cls, closed_at: datetime, info: ValidationInfo) -> datetime:
        opened_at = info.data.get("opened_at")
        if opened_at is not None and closed_at < opened_at:
            raise _fail(f"closed_at {closed_at.isoformat()} is before opened_at {opened_at.isoformat()}")
        return closed_at

    @field_validator("last_receipt_no")
    @classmethod
    def _range(cls, last: int | None, info: ValidationInfo) -> int | None:
        if "first_receipt_no" not in info.data:
            return last  # the bad first_receipt_no is reported on its own
        first = info.data["first_receipt_no"]
        if (first is None) != (last is None):
            raise _fail("first_receipt_no and last_receipt_no come together (a Z with no sales has neither)")
        if first is not None and last is not None and last < first:
            raise _fail(f"last_receipt_no {last} is below first_receipt_no {first}")
        return last

    @field_validator("receipt_count")
    @classmethod
    def _count_fits_range(cls, count: int, info: ValidationInfo) -> int:
        if "first_receipt_no" not in info.data or "last_receipt_no" not in info.data:
            return count
        first, last = info.data["first_receipt_no"], info.data["last_receipt_no"]
        if first is None and count:
            raise _fail(f"receipt_count is {count} but the Z names no receipts (first_receipt_no, last_receipt_no)")
        if first is not None and last is not None and count > last - first + 1:
            raise _fail(f"receipt_count {count} is more than the {last - first + 1} numbers {first}..{last}")
        return count

    @field_validator("gross")
    @classmethod
    def _gross_per_rate(cls, gross: list[RateAmount]) -> list[RateAmount]:
        return _one_per_rate(gross, "gross")

    @field_validator("vat")
    @classmethod
    def _vat_per_rate(cls, vat: list[RateAmount]) -> list[RateAmount]:
        return _no_vat_at_zero(_one_per_rate(vat, "vat"), "vat")

    @field_validator("payments")
    @classmethod
    def _one_per_method(cls, payments: list[Payment]) -> list[Payment]:
        if (method := _first_repeat(payment.method for payment in payments)) is not None:
            raise _fail(f"payments lists the method {method} twice; give one amount per method")
        return payments

    @field_validator("returns_total")
    @classmethod
    def _returns_not_positive(cls, returns_total: Decimal) -> Decimal:
        if returns_total > 0:
            raise _fail(f"returns_total must not be positive (returns lower the day), got {_fmt(returns_total)}")
        return returns_total


Record = Sale | StockMovement | ZReport
"""Any record type; ``record.record_type`` says which."""

RECORD_MODELS: dict[str, type[Sale] | type[StockMovement] | type[ZReport]] = {
    "sale": Sale,
    "stock_movement": StockMovement,
    "z_report": ZReport,
}


# --------------------------------------------------------------------------- parsing


def parse_record(record_type: str, data: object) -> Record:
    """Validate one record of ``record_type`` from parsed JSON (or a model instance).

    Args:
        record_type: ``"sale"``, ``"stock_movement"`` or ``"z_report"``.
        data: the decoded JSON object.

    Raises:
        RecordValidationError: with ``details`` naming every field that is wrong.
    """
    model = RECORD_MODELS.get(record_type)
    if model is None:
        raise RecordValidationError(
            str(record_type)[:_SHORT],
            [
                {
                    "loc": ["record_type"],
                    "msg": f"unknown record type {_short(record_type)}; expected sale, stock_movement or z_report",
                }
            ],
        )
    if isinstance(data, model):
        return data
    if not isinstance(data, dict):
        raise RecordValidationError(record_type, [{"loc": [], "msg": f"a {record_type} must be a JSON object"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecordValidationError(record_type, _details(exc, model)) from None


def _field_names(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """The field names valid at the object where ``loc`` points, for "did you mean"."""
    current: type[BaseModel] = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        nested = _inner_model(field.annotation) if field is not None else None
        if nested is None:
            return []
        current = nested
    return list(current.model_fields)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside ``Line``, ``list[Line]`` or ``Annotated[list[Fee], ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _clean_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    # pydantic inserts schema tags such as "function-after[...]" or a union member
    # name into loc; field names never contain brackets, so those go.
    return [part for part in loc if isinstance(part, int) or ("[" not in part and "(" not in part)]


def _details(exc: ValidationError, model: type[BaseModel]) -> list[dict[str, Any]]:
    details: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_input=False)[:MAX_DETAILS]:
        loc = _clean_loc(error["loc"])
        details.append({"loc": loc, "msg": _message(error, loc, model)})
    return details


def _message(error: Any, loc: list[int | str], model: type[BaseModel]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    name = next((str(p) for p in reversed(loc) if isinstance(p, str)), model.record_type)  # type: ignore[attr-defined]
    where = _path_text(loc) or model.record_type  # type: ignore[attr-defined]
    if kind == "kassabro":
        return str(ctx.get("reason", error["msg"]))
    if kind == "missing":
        return f"{name} is required"
    if kind == "string_unicode":  # a field name with a lone surrogate: pydantic cannot read it
        return f"{where} holds a lone UTF-16 surrogate in a field name"
    if kind == "extra_forbidden":
        unknown = str(loc[-1]) if loc else "?"
        hint = difflib.get_close_matches(unknown, _field_names(model, loc[:-1]), n=1)
        suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"unknown field {_short(unknown)}{suffix}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{where} must be an object"
    if kind == "list_type":
        return f"{name} must be a list"
    if kind == "too_short":
        minimum = ctx.get("min_length", 1)
        return f"{name} must have at least {minimum} item{'' if minimum == 1 else 's'}"
    if kind == "too_long":
        return f"{name} must have at most {ctx.get('max_length')} items"
    if kind == "literal_error":
        return f"{name} must be {ctx.get('expected', 'one of the allowed values')}"
    message = str(error["msg"])
    return message.removeprefix("Value error, ")[:200]


# --------------------------------------------------------------------------- stored form


def normalize(record: Record) -> dict[str, Any]:
    """The stored JSON data of a record (``envelope["data"]``, docs/architecture.md).

    Decimals are strings with a fixed scale (amounts 2 decimals, quantities and
    deltas 3), ``vat_rate`` an int, ``occurred_at`` ``isoformat()`` with its
    offset, optional values not given are ``null``, ``fees`` not given is ``[]``.
    Keys come in the models' field order, so the output is stable.
    ``parse_record(t, normalize(r))`` normalises to the same dict again.
    A sale's ``vat`` is left out when the till did not give it (see the
    module docstring: stored sales keep their digest).

    A sale and a stock movement, every record of a till's day, are written out
    field by field: pydantic's ``model_dump`` calls a Python serializer per
    decimal and took twice as long, on the outbox thread of every sale.
    tests/test_quickread.py holds that both spell every record alike.
    """
    if type(record) is Sale:
        return _sale_data(record)
    if type(record) is StockMovement:
        return _movement_data(record)
    return record.model_dump(mode="json")  # a Z-report: once a day, its serializers cost nothing


def _sale_data(sale: Sale) -> dict[str, Any]:
    data: dict[str, Any] = {
        "till_id": sale.till_id,
        "receipt_no": sale.receipt_no,
        "occurred_at": sale.occurred_at.isoformat(),
        "kind": sale.kind,
        "currency": sale.currency,
        "lines": [
            {
                "sku": line.sku,
                "name": line.name,
                "quantity": _fmt(line.quantity),
                "unit_price": _fmt(line.unit_price),
                "vat_rate": line.vat_rate,
                "discount": _fmt(line.discount),
            }
            for line in sale.lines
        ],
        "fees": [{"role": fee.role, "amount": _fmt(fee.amount), "vat_rate": fee.vat_rate} for fee in sale.fees],
        "discount": _fmt(sale.discount),
        "rounding": _fmt(sale.rounding),
        "total": _fmt(sale.total),
        "payments": [{"method": payment.method, "amount": _fmt(payment.amount)} for payment in sale.payments],
    }
    if sale.vat is not None:
        data["vat"] = [{"rate": item.rate, "amount": _fmt(item.amount)} for item in sale.vat]
    return data


def _movement_data(movement: StockMovement) -> dict[str, Any]:
    return {
        "till_id": movement.till_id,
        "movement_id": movement.movement_id,
        "sku": movement.sku,
        "delta": _fmt(movement.delta),
        "reason": movement.reason,
        "occurred_at": movement.occurred_at.isoformat(),
        "note": movement.note,
    }


def gift_card_problems(sale: Sale, gift_card_skus: Collection[str]) -> list[dict[str, Any]]:
    """The 422 details for gift-card lines not at VAT rate 0 (contract §1).

    A gift card usable across VAT rates is a multi-purpose voucher: selling it
    is not revenue and carries no VAT, which arises when it is redeemed. The
    SKUs come from ``[skus] gift_card``, so this rule lives beside the model
    rather than in it.
    """
    return [
        {
            "loc": ["lines", index, "vat_rate"],
            "msg": f"the line sells a gift card (sku {_short(line.sku)}): its vat_rate must be 0, got {line.vat_rate}",
        }
        for index, line in enumerate(sale.lines)
        if line.sku in gift_card_skus and line.vat_rate != 0
    ]


def window_problems(record: Record, earliest: datetime, latest: datetime) -> list[dict[str, Any]]:
    """The 422 details for a record's times outside ``earliest..latest`` (contract §1's window).

    Applied by ingest only while the agent's clock is synchronised: the window
    comes from ``[ingest] max_age_days`` and ``max_future_hours``.
    """
    names = ("opened_at", "closed_at") if isinstance(record, ZReport) else ("occurred_at",)
    details: list[dict[str, Any]] = []
    for name in names:
        moment: datetime = getattr(record, name)
        if moment < earliest:
            details.append({"loc": [name], "msg": f"{name} {moment.isoformat()} is older than the agent accepts"
                            f" (before {earliest.isoformat(timespec='seconds')}, [ingest] max_age_days)"})  # fmt: skip
        elif moment > latest:
            details.append({"loc": [name], "msg": f"{name} {moment.isoformat()} is too far in the future"
                            f" (after {latest.isoformat(timespec='seconds')}, [ingest] max_future_hours)"})  # fmt: skip
    return details


def time_window(now: datetime, max_age_days: int, max_future_hours: int) -> tuple[datetime, datetime]:
    """``(earliest, latest)`` accepted around ``now`` (an aware UTC datetime)."""
    return now - timedelta(days=max_age_days), now + timedelta(hours=max_future_hours)


def digest(data: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of normalised data.

    Two submissions of one natural key are "identical content" exactly when
    their normalised data has the same digest, whatever the key order or number
    spelling they came in (``10`` and ``"10.00"`` are the same amount).
    """
    return hashlib.sha256(canonical_bytes(data)).hexdigest()


_M = TypeVar("_M", bound=BaseModel)
_set_slot = object.__setattr__


def construct(model: type[_M], values: dict[str, Any]) -> _M:
    """A model of ``values`` already validated, every field given: what ``model_construct`` makes, cheaper.

    ``model_construct`` walks all the model's fields for aliases and defaults on
    every call (about 5 µs a model here; a 3-line sale is five models and
    derives three more), so the hot path sets the four slots pydantic's
    ``BaseModel`` has, as ``model_construct`` does after that walk. Only for
    this module's models (no private attributes, extra fields forbidden);
    tests/test_quickread.py holds that the result equals ``model_construct``'s,
    so a pydantic upgrade that changes the slots fails there first.
    """
    made = model.__new__(model)
    _set_slot(made, "__dict__", values)
    _set_slot(made, "__pydantic_fields_set__", set(values))
    _set_slot(made, "__pydantic_extra__", None)
    _set_slot(made, "__pydantic_private__", None)
    return made


def derive_movements(sale: Sale) -> list[StockMovement]:
    """The stock movements a sale implies, one per line (contract §1).

    ``delta = -quantity`` (a sold item leaves stock, a returned one comes
    back), reason ``sale`` or ``return`` after ``sale.kind``, and
    ``movement_id = r{receipt_no}.{line_index}`` with ``line_index`` counted
    from 0 in the receipt's line order, so the ids are stable and a resent
    receipt derives the same keys. Till and time are the sale's.
    """
    reason: Literal["return", "sale"] = "return" if sale.kind == "return" else "sale"
    # construct, not validation: every value comes from the validated sale
    # (an id of at most 23 + 4 characters, a non-zero quantity negated), and
    # validating them again cost a fifth of the event loop's work per sale.
    # tests/test_records.py holds that they normalise exactly as validated ones.
    return [
        construct(
            StockMovement,
            {
                "till_id": sale.till_id,
                "movement_id": f"r{sale.receipt_no}.{index}",
                "sku": line.sku,
                "delta": -line.quantity,
                "reason": reason,
                "occurred_at": sale.occurred_at,
                "note": None,
            },
        )
        for index, line in enumerate(sale.lines)
    ]
