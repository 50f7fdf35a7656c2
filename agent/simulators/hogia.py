"""A simulated Hogia API (Hogia Smart), for the demo and the tests.

Hogia's API is partner-only; this is a plausible REST API we designed so the
adapter (``agent.destinations.hogia``) has something real to talk to. Every
assumption is listed in docs/destinations.md and must be confirmed with Hogia.

Endpoints:

- ``POST /oauth/token``: OAuth2 client credentials -> ``{"access_token", "token_type", "expires_in"}``.
- ``POST /api/v1/orders``: one order (a sale, or a return as a credit order)::

      {"externalId", "orderNumber", "orderType": "sale" | "return", "orderDate",
       "storeId", "tillId", "receiptNumber", "currency",
       "rows": [{"articleNumber", "description", "quantity", "unitPrice", "discount",
                 "vatRate", "amount", "vatAmount"}],
       "rounding", "total", "payments": [{"method", "amount"}]}

  Prices and amounts include VAT. Checked to the öre: every row's
  ``amount = round(quantity * unitPrice) - sign(quantity) * discount`` and
  ``vatAmount = round(amount * vatRate / (100 + vatRate))``;
  ``sum(rows.amount) + rounding = total = sum(payments.amount)``.
- ``POST /api/v1/stock-adjustments``: ``{"externalId", "articleNumber", "quantity"
  (a signed change), "reason", "date", "storeId", "reference", "note"}``.
- Both answer 201 ``{"id", "externalId", "duplicate": false}`` when created, 200
  with ``"duplicate": true`` when that ``externalId`` exists with the same
  content, 409 when it exists with different content, 422 ``{"error":
  "validation", "details": [{"field", "message"}]}`` for bad input or a
  refused article.
- Auth: ``api_key`` (header ``X-Api-Key``), ``oauth2`` (``Authorization: Bearer``
  from ``/oauth/token``) or ``none``.
- ``GET /_ledger``: ``{"orders": [...], "stock_adjustments": [...], "duplicates",
  "tokens_issued", "unauthorized"}``; ``POST /_tokens/revoke`` forgets every
  issued token (the next call gets 401); fault knobs under ``/_faults``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.simulators._auth import Authenticator, AuthMode, authorized_json
from agent.simulators.faults import Faults, simulator_app

CENT = Decimal("0.01")
VAT_RATES = {25, 12, 6, 0}
ORDER_TYPES = {"sale", "return"}
PAYMENT_METHODS = {"card", "cash", "swish", "gift_card", "invoice", "other"}


class Invalid(Exception):
    """A validation problem, naming the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


@dataclass
class HogiaLedger:
    """What the simulated Hogia booked, for assertions."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    stock_adjustments: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0

    def as_json(self, auth: Authenticator) -> dict[str, Any]:
        return {
            "orders": list(self.orders.values()),
            "stock_adjustments": list(self.stock_adjustments.values()),
            "duplicates": self.duplicates,
            "tokens_issued": auth.tokens_issued,
            "unauthorized": auth.unauthorized,
        }


def _money(value: Any, name: str) -> Decimal:
    if not isinstance(value, str):
        raise Invalid(name, "must be a decimal string")
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise Invalid(name, f"not a decimal: {value!r}") from None
    if not number.is_finite():
        raise Invalid(name, "must be finite")
    return number


def _text(body: dict[str, Any], name: str, prefix: str = "") -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise Invalid(prefix + name, "required, a non-empty string")
    return value


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def check_order(order: Any) -> None:
    """Raise ``Invalid`` naming the first problem with an order."""
    if not isinstance(order, dict):
        raise Invalid("body", "must be a JSON object")
    for name in ("externalId", "orderNumber", "orderDate", "storeId", "currency"):
        _text(order, name)
    if order.get("orderType") not in ORDER_TYPES:
        raise Invalid("orderType", "must be sale or return")
    rows = order.get("rows")
    if not isinstance(rows, list) or not rows:
        raise Invalid("rows", "at least one row")
    row_sum = Decimal(0)
    for i, row in enumerate(rows):
        where = f"rows[{i}]."
        if not isinstance(row, dict):
            raise Invalid(f"rows[{i}]", "must be an object")
        _text(row, "articleNumber", where)
        quantity = _money(row.get("quantity"), where + "quantity")
        unit_price = _money(row.get("unitPrice"), where + "unitPrice")
        discount = _money(row.get("discount"), where + "discount")
        amount = _money(row.get("amount"), where + "amount")
        vat_amount = _money(row.get("vatAmount"), where + "vatAmount")
        if quantity == 0:
            raise Invalid(where + "quantity", "must not be 0")
        if unit_price < 0 or discount < 0:
            raise Invalid(where + "unitPrice", "unitPrice and discount must be >= 0")
        if row.get("vatRate") not in VAT_RATES:
            raise Invalid(where + "vatRate", "must be 25, 12, 6 or 0")
        expected = _round(quantity * unit_price) - _sign(quantity) * discount
        if amount != expected:
            raise Invalid(where + "amount", f"is {amount}, quantity x unitPrice - discount gives {expected}")
        rate = Decimal(row["vatRate"])
        expected_vat = _round(amount * rate / (100 + rate))
        if vat_amount != expected_vat:
            raise Invalid(where + "vatAmount", f"is {vat_amount}, expected {expected_vat}")
        row_sum += amount
    rounding = _money(order.get("rounding"), "rounding")
    total = _money(order.get("total"), "total")
    if row_sum + rounding != total:
        raise Invalid("total", f"is {total}, rows + rounding give {row_sum + rounding}")
    payments = order.get("payments")
    if not isinstance(payments, list) or not payments:
        raise Invalid("payments", "at least one payment")
    paid = Decimal(0)
    for i, payment in enumerate(payments):
        if not isinstance(payment, dict) or payment.get("method") not in PAYMENT_METHODS:
            raise Invalid(f"payments[{i}].method", f"must be one of {sorted(PAYMENT_METHODS)}")
        paid += _money(payment.get("amount"), f"payments[{i}].amount")
    if paid != total:
        raise Invalid("payments", f"sum to {paid}, total is {total}")


def check_adjustment(adjustment: Any) -> None:
    """Raise ``Invalid`` naming the first problem with a stock adjustment."""
    if not isinstance(adjustment, dict):
        raise Invalid("body", "must be a JSON object")
    for name in ("externalId", "articleNumber", "reason", "date", "storeId"):
        _text(adjustment, name)
    if _money(adjustment.get("quantity"), "quantity") == 0:
        raise Invalid("quantity", "must not be 0")


DEFAULT_ARTICLES: list[dict[str, Any]] = [
    {"articleNumber": "7310865004703", "name": "Kaffe 500 g", "vatRate": 12, "price": "15.90",
     "stockLevel": "40", "sendToWebshop": True},
    {"articleNumber": "7310865071507", "name": "Te 100 g", "vatRate": 12, "price": "32.00",
     "stockLevel": "12", "sendToWebshop": False},
    {"articleNumber": "presentkort", "name": "Presentkort", "vatRate": 0, "price": "0.00",
     "stockLevel": "0", "sendToWebshop": False},
    {"articleNumber": "fraktavg", "name": "Fraktavgift", "vatRate": 25, "price": "0.00",
     "stockLevel": "0", "sendToWebshop": False},
    {"articleNumber": "expavg", "name": "Expeditionsavgift", "vatRate": 25, "price": "0.00",
     "stockLevel": "0", "sendToWebshop": False},
    {"articleNumber": "rabatt", "name": "Rabatt", "vatRate": 25, "price": "0.00",
     "stockLevel": "0", "sendToWebshop": False},
]  # fmt: skip
"""The simulated article register: a webshop article, a store-only one, and the three cost articles."""


def create_app(
    *,
    auth: AuthMode = "none",
    api_key: str | None = None,
    api_key_header: str = "X-Api-Key",
    client_id: str | None = None,
    client_secret: str | None = None,
    token_ttl_s: int = 3600,
    faults: Faults | None = None,
    articles: list[dict[str, Any]] | None = None,
) -> Starlette:
    """The simulated Hogia API.

    Args:
        auth: ``none``, ``api_key`` or ``oauth2``.
        api_key: the key required in ``api_key_header`` (``api_key`` mode).
        client_id: the OAuth2 client (``oauth2`` mode), with ``client_secret``.
        token_ttl_s: the ``expires_in`` of issued tokens.
        faults: shared fault state; a fresh one when None.
        articles: the article register ``GET /api/v1/articles`` serves (a copy of
            ``DEFAULT_ARTICLES`` when None); the list is served as it is at each request.
    """
    if auth not in ("none", "api_key", "oauth2"):
        raise ValueError(f"auth: {auth!r} is not none, api_key or oauth2")
    authn = Authenticator(
        mode=auth,
        api_key=api_key,
        api_key_header=api_key_header,
        client_id=client_id,
        client_secret=client_secret,
        token_ttl_s=token_ttl_s,
    )
    ledger = HogiaLedger()
    faults = faults or Faults()

    async def book(request: Request, store: dict[str, dict[str, Any]], kind: str) -> Response:
        body, refused = await authorized_json(authn, request)
        if refused is not None:
            return refused
        try:
            if kind == "order":
                check_order(body)
                skus = [row["articleNumber"] for row in body["rows"]]
            else:
                check_adjustment(body)
                skus = [body["articleNumber"]]
            why = faults.refusal(body["externalId"], skus)
            if why:
                raise Invalid("articleNumber", why)
        except Invalid as exc:
            details = [{"field": exc.field, "message": exc.message}]
            return JSONResponse({"error": "validation", "details": details}, status_code=422)
        external_id = body["externalId"]
        existing = store.get(external_id)
        if existing is not None:
            if existing["body"] != body:
                return JSONResponse(
                    {"error": "conflict", "message": f"externalId {external_id} exists with other content"},
                    status_code=409,
                )
            ledger.duplicates += 1
            return faults.lost_answer() or JSONResponse(
                {"id": existing["id"], "externalId": external_id, "duplicate": True}, status_code=200
            )
        hogia_id = f"{'O' if kind == 'order' else 'S'}{len(store) + 1:07d}"
        store[external_id] = {"id": hogia_id, "body": body}
        return faults.lost_answer() or JSONResponse(
            {"id": hogia_id, "externalId": external_id, "duplicate": False}, status_code=201
        )

    async def post_order(request: Request) -> Response:
        return await book(request, ledger.orders, "order")

    async def post_adjustment(request: Request) -> Response:
        return await book(request, ledger.stock_adjustments, "adjustment")

    register = articles if articles is not None else [dict(a) for a in DEFAULT_ARTICLES]

    async def get_articles(request: Request) -> Response:
        refused = authn.check(request)
        if refused is not None:
            return refused
        return JSONResponse({"articles": register})

    async def get_ledger(request: Request) -> Response:
        view = ledger.as_json(authn)
        view["orders"] = [entry["body"] | {"id": entry["id"]} for entry in view["orders"]]
        view["stock_adjustments"] = [entry["body"] | {"id": entry["id"]} for entry in view["stock_adjustments"]]
        return JSONResponse(view)

    async def revoke(request: Request) -> Response:
        authn.revoke_tokens()
        return JSONResponse({"revoked": True})

    return simulator_app(
        [
            Route("/oauth/token", authn.token_endpoint, methods=["POST"]),
            Route("/api/v1/orders", post_order, methods=["POST"]),
            Route("/api/v1/stock-adjustments", post_adjustment, methods=["POST"]),
            Route("/api/v1/articles", get_articles, methods=["GET"]),
            Route("/_ledger", get_ledger, methods=["GET"]),
            Route("/_tokens/revoke", revoke, methods=["POST"]),
        ],
        faults=faults,
        ledger=ledger,
        auth=authn,
    )
