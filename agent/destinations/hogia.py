"""Destination kind ``hogia``: sales as orders, stock movements as stock adjustments.

Hogia's API (Hogia Smart) is partner-only. Everything this adapter assumes
about it lives in this module and is listed in docs/destinations.md under
"to confirm with Hogia": the paths, the field names, the auth, and that the
API deduplicates on ``externalId``. The paths and the auth are configurable.

What it sends:

- a ``sale`` becomes one order (``POST {orders_path}``): a row per line, a row
  per fee on the configured SKUs (``[skus] shipping``/``handling``, defaults
  ``fraktavg``/``expavg``), the receipt discount as rows on ``[skus] discount``
  (``rabatt``), one per VAT rate, shared out in proportion to the line
  amounts of each rate, so VAT stays right; the öresavrundning as
  ``rounding``; the payments. Amounts include VAT; each row has its VAT.
- a ``stock_movement`` becomes a stock adjustment (``POST {stock_adjustments_path}``),
  except for the reasons in ``skip_stock_reasons`` (default ``sale`` and
  ``return``): Hogia books the stock of an order itself, so the movements the
  agent derives from sales would count twice. Skipped records count as delivered.

The API takes one order per request, so a batch is sent record by record,
each carrying the envelope ``id`` as ``externalId``: a resend after a lost
answer is deduplicated by Hogia. A record Hogia refuses (any 4xx but 401/403)
is reported in ``SendResult.rejected`` while the rest of the batch goes on; a
batch of one refused record raises ``PermanentError`` so its dead letter
keeps the status. 401/403 are retryable: a wrong credential is a setup
problem and must not turn every record into a dead letter.
"""

from __future__ import annotations

import time
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl, model_validator

from agent.config import DestinationBase, read_secret
from agent.destinations._httpcommon import (
    AUTH_STATUSES,
    CENT,
    QTY,
    PooledAdapter,
    dumps,
    json_or_empty,
    raise_for_status,
    send_request,
)
from agent.destinations.base import PermanentError, RetryableError, SendResult
from agent.outbox.types import Batch, Envelope


class HogiaDestinationConfig(DestinationBase):
    """The keys of a ``[[destinations]]`` table with ``kind = "hogia"``.

    ``auth = "api_key"`` needs ``api_key_file``; ``auth = "oauth2"`` needs
    ``client_id`` and ``client_secret_file`` (``token_url`` defaults to
    ``{base_url}/oauth/token``).
    """

    kind: Literal["hogia"] = "hogia"
    base_url: HttpUrl
    auth: Literal["api_key", "oauth2", "none"] = "api_key"
    api_key_file: Path | None = None
    api_key_header: str = "X-Api-Key"
    client_id: str | None = None
    client_secret_file: Path | None = None
    token_url: HttpUrl | None = None
    scope: str | None = None
    orders_path: str = "/api/v1/orders"
    stock_adjustments_path: str = "/api/v1/stock-adjustments"
    skip_stock_reasons: list[str] = Field(default_factory=lambda: ["sale", "return"])
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    batch_max: int = Field(default=20, ge=1, le=1000)

    @model_validator(mode="after")
    def _auth_keys(self) -> HogiaDestinationConfig:
        if self.auth == "api_key" and self.api_key_file is None:
            raise ValueError("api_key_file is required when auth = 'api_key'")
        if self.auth == "oauth2" and (not self.client_id or self.client_secret_file is None):
            raise ValueError("client_id and client_secret_file are required when auth = 'oauth2'")
        return self


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _sign(value: Decimal) -> int:
    return (value > 0) - (value < 0)


def _row(
    sku: str, name: str | None, quantity: Decimal, unit_price: Decimal, discount: Decimal, vat_rate: int
) -> dict[str, Any]:
    amount = _round(quantity * unit_price) - _sign(quantity) * discount
    rate = Decimal(vat_rate)
    return {
        "articleNumber": sku,
        "description": name or sku,
        "quantity": str(quantity.quantize(QTY)),
        "unitPrice": str(unit_price.quantize(CENT)),
        "discount": str(discount.quantize(CENT)),
        "vatRate": vat_rate,
        "amount": str(amount),
        "vatAmount": str(_round(amount * rate / (100 + rate))),
    }


def share_discount(discount: Decimal, bases: dict[int, Decimal]) -> dict[int, Decimal]:
    """Share a receipt discount across VAT rates in proportion to their amounts.

    The parts are rounded to the öre and always sum to ``discount`` exactly
    (the remainder goes to the biggest base). With no base at all the whole
    discount falls on 25 %.
    """
    weights = {rate: abs(base) for rate, base in bases.items() if base != 0}
    if discount == 0:
        return {}
    if not weights:
        return {25: discount}
    whole = sum(weights.values())
    parts = {rate: _round(discount * weight / whole) for rate, weight in weights.items()}
    biggest = max(weights, key=lambda rate: (weights[rate], rate))
    parts[biggest] += discount - sum(parts.values())
    return {rate: part for rate, part in parts.items() if part != 0}


def sale_to_order(envelope: Envelope, *, shipping_sku: str, handling_sku: str, discount_sku: str) -> dict[str, Any]:
    """The Hogia order for one sale envelope (see the module docstring)."""
    sale = envelope["data"]
    is_return = sale.get("kind", "sale") == "return"
    rows: list[dict[str, Any]] = []
    bases: dict[int, Decimal] = defaultdict(Decimal)
    for line in sale["lines"]:
        row = _row(
            line["sku"],
            line.get("name"),
            _dec(line["quantity"]),
            _dec(line["unit_price"]),
            _dec(line.get("discount") or 0),
            int(line["vat_rate"]),
        )
        rows.append(row)
        bases[row["vatRate"]] += _dec(row["amount"])
    fee_skus = {"shipping": (shipping_sku, "Frakt"), "handling": (handling_sku, "Expeditionsavgift")}
    for fee in sale.get("fees") or []:
        sku, label = fee_skus[fee["role"]]
        rows.append(_row(sku, label, Decimal(1), _dec(fee["amount"]), Decimal(0), int(fee["vat_rate"])))
    discount = _dec(sale.get("discount") or 0)
    # A discount always moves the total toward zero: a negative row on a sale,
    # a positive one on a return.
    quantity = Decimal(1) if is_return else Decimal(-1)
    for rate, part in sorted(share_discount(discount, bases).items(), reverse=True):
        rows.append(_row(discount_sku, "Rabatt", quantity, part, Decimal(0), rate))
    return {
        "externalId": envelope["id"],
        "orderNumber": f"{sale['till_id']}-{sale['receipt_no']}",
        "orderType": "return" if is_return else "sale",
        "orderDate": sale["occurred_at"],
        "storeId": envelope["store_id"],
        "tillId": sale["till_id"],
        "receiptNumber": sale["receipt_no"],
        "currency": sale.get("currency") or "SEK",
        "rows": rows,
        "rounding": str(_dec(sale.get("rounding") or 0).quantize(CENT)),
        "total": str(_dec(sale["total"]).quantize(CENT)),
        "payments": [
            {"method": p["method"], "amount": str(_dec(p["amount"]).quantize(CENT))} for p in sale["payments"]
        ],
    }


def movement_to_adjustment(envelope: Envelope) -> dict[str, Any]:
    """The Hogia stock adjustment for one stock_movement envelope."""
    movement = envelope["data"]
    return {
        "externalId": envelope["id"],
        "articleNumber": movement["sku"],
        "quantity": str(_dec(movement["delta"]).quantize(QTY)),
        "reason": movement["reason"],
        "date": movement["occurred_at"],
        "storeId": envelope["store_id"],
        "reference": envelope["key"],
        "note": movement.get("note"),
    }


class HogiaDestination(PooledAdapter):
    """Books sales and stock movements in Hogia, one request per record.

    Args:
        name: the destination's name.
        base_url: the API's root, e.g. ``https://hogia.example/``.
        auth: ``api_key``, ``oauth2`` or ``none``.
        api_key_file: the API key's secret file (``api_key``).
        api_key_header: the header carrying the key.
        client_id: the OAuth2 client (``oauth2``), with ``client_secret_file``.
        token_url: the token endpoint; default ``{base_url}/oauth/token``.
        scope: an OAuth2 scope to ask for, if Hogia wants one.
        orders_path: where orders go.
        stock_adjustments_path: where stock adjustments go.
        shipping_sku: ``[skus] shipping``; ``handling_sku`` and ``discount_sku`` alike.
        skip_stock_reasons: movement reasons acknowledged without sending.
        timeout_s: per request.
        transport: an httpx transport, for tests only.
    """

    kind = "hogia"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        auth: str = "api_key",
        api_key_file: str | Path | None = None,
        api_key_header: str = "X-Api-Key",
        client_id: str | None = None,
        client_secret_file: str | Path | None = None,
        token_url: str | None = None,
        scope: str | None = None,
        orders_path: str = "/api/v1/orders",
        stock_adjustments_path: str = "/api/v1/stock-adjustments",
        shipping_sku: str = "fraktavg",
        handling_sku: str = "expavg",
        discount_sku: str = "rabatt",
        skip_stock_reasons: list[str] | tuple[str, ...] = ("sale", "return"),
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if auth not in ("api_key", "oauth2", "none"):
            raise ValueError(f"auth: {auth!r} is not api_key, oauth2 or none")
        self.name = name
        self.base_url = str(base_url).rstrip("/")
        self.auth = auth
        self.api_key_file = api_key_file
        self.api_key_header = api_key_header
        self.client_id = client_id
        self.client_secret_file = client_secret_file
        self.token_url = str(token_url) if token_url else f"{self.base_url}/oauth/token"
        self.scope = scope
        self.orders_url = self.base_url + orders_path
        self.stock_adjustments_url = self.base_url + stock_adjustments_path
        self.skus = {"shipping_sku": shipping_sku, "handling_sku": handling_sku, "discount_sku": discount_sku}
        self.skip_stock_reasons = frozenset(skip_stock_reasons)
        self.timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._api_key: str | None = None
        self._client_secret: str | None = None
        self._token: str | None = None
        self._token_expires_at = 0.0
        self.tokens_fetched = 0

    @classmethod
    def from_config(cls, config: HogiaDestinationConfig, *, skus: Any = None) -> HogiaDestination:
        """Build from the validated config; ``skus`` is the ``[skus]`` table (defaults when None)."""
        return cls(
            name=config.name,
            base_url=str(config.base_url),
            auth=config.auth,
            api_key_file=config.api_key_file,
            api_key_header=config.api_key_header,
            client_id=config.client_id,
            client_secret_file=config.client_secret_file,
            token_url=str(config.token_url) if config.token_url else None,
            scope=config.scope,
            orders_path=config.orders_path,
            stock_adjustments_path=config.stock_adjustments_path,
            shipping_sku=getattr(skus, "shipping", "fraktavg"),
            handling_sku=getattr(skus, "handling", "expavg"),
            discount_sku=getattr(skus, "discount", "rabatt"),
            skip_stock_reasons=config.skip_stock_reasons,
            timeout_s=config.timeout_s,
        )

    async def start(self) -> None:
        """Read the secrets and open the connection pool."""
        if self.auth == "api_key":
            if self.api_key_file is None:
                raise ValueError("api_key_file: required when auth = 'api_key'")
            self._api_key = read_secret(self.api_key_file, "api_key_file")
        elif self.auth == "oauth2":
            if not self.client_id or self.client_secret_file is None:
                raise ValueError("client_id, client_secret_file: required when auth = 'oauth2'")
            self._client_secret = read_secret(self.client_secret_file, "client_secret_file")
        self._open_pool()

    async def send(self, batch: Batch) -> SendResult:
        """Send each record of the batch in seq order; see the module docstring."""
        if self._client is None:
            await self.start()
        rejected: dict[str, str] = {}
        for envelope in batch.records:
            try:
                await self._send_one(envelope)
            except PermanentError as exc:
                if len(batch.records) == 1:
                    raise
                status = f"HTTP {exc.status}: " if exc.status else ""
                rejected[envelope["id"]] = f"{status}{exc.body or exc}"[:1024]
        return SendResult(rejected=rejected)

    async def _send_one(self, envelope: Envelope) -> None:
        kind = envelope.get("type")
        try:
            if kind == "sale":
                url, body = self.orders_url, sale_to_order(envelope, **self.skus)
            elif kind == "stock_movement":
                if envelope["data"].get("reason") in self.skip_stock_reasons:
                    return
                url, body = self.stock_adjustments_url, movement_to_adjustment(envelope)
            else:
                raise PermanentError(f"hogia takes sale and stock_movement records, not {kind!r}")
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise PermanentError(f"cannot map record {envelope.get('key')} for Hogia: {exc!r}") from exc
        await self._post(url, body)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        """POST one JSON body; with OAuth2, on a 401 fetch a new token and try once more."""
        assert self._client is not None
        what = f"POST {url}"
        content = dumps(body)
        for attempt in (1, 2):
            headers = await self._auth_headers()
            response = await send_request(self._client, "POST", url, what=what, headers=headers, content=content)
            if response.status_code == 401 and self.auth == "oauth2" and attempt == 1:
                self._token = None  # the server no longer knows it: expired early or rotated
                continue
            break
        if response.status_code in AUTH_STATUSES:
            raise RetryableError(
                f"{what}: HTTP {response.status_code}: Hogia refused our credentials; check the auth keys",
                status=response.status_code,
            )
        raise_for_status(response, what=what)

    async def _auth_headers(self) -> dict[str, str]:
        if self.auth == "api_key":
            assert self._api_key is not None
            return {self.api_key_header: self._api_key}
        if self.auth == "oauth2":
            return {"Authorization": f"Bearer {await self._access_token()}"}
        return {}

    async def _access_token(self) -> str:
        """The cached OAuth2 token, fetched anew when missing or about to expire."""
        if self._token is not None and time.monotonic() < self._token_expires_at:
            return self._token
        assert self._client is not None and self.client_id and self._client_secret is not None
        what = f"POST {self.token_url}"
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        try:
            response = await self._client.post(
                self.token_url, data=form, auth=httpx.BasicAuth(self.client_id, self._client_secret)
            )
        except httpx.TimeoutException as exc:
            raise RetryableError(f"{what}: timed out") from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{what}: connection failed: {exc or type(exc).__name__}") from exc
        if 400 <= response.status_code <= 499 and response.status_code not in (408, 425, 429):
            # A refused client is a setup problem: keep the records, show the error.
            raise RetryableError(
                f"{what}: HTTP {response.status_code}: token request refused: {response.text[:200]}",
                status=response.status_code,
            )
        raise_for_status(response, what=what)
        answer = json_or_empty(response)
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise RetryableError(f"{what}: the answer has no access_token")
        try:
            expires_in = float(answer.get("expires_in", 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0
        # Renew a little early so a token does not expire between check and use.
        margin = min(30.0, expires_in / 10)
        self._token = token
        self._token_expires_at = time.monotonic() + max(0.0, expires_in - margin)
        self.tokens_fetched += 1
        return token
