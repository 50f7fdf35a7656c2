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
answer is deduplicated by Hogia. A record Hogia refuses (a permanent 4xx)
is reported in ``SendResult.rejected`` while the rest of the batch goes on; a
batch of one refused record raises ``PermanentError`` so its dead letter
keeps the status. 401, 403, 404 and 407 are retryable with a hint: a wrong
credential or path is a setup problem and must not turn every record into a
dead letter (``agent.destinations._httpcommon`` holds that rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl, model_validator

from agent.configbase import SkusConfig, read_secret
from agent.destinations._httpcommon import (
    HeaderAuth,
    HttpAdapter,
    OAuth2ClientCredentials,
    VendorApiKeys,
    raise_for_status,
    vendor_url,
)
from agent.destinations.base import PermanentError, SendResult
from agent.outbox.types import Batch, Envelope
from agent.reconcile import Problem
from agent.records import CENT, MILLI, amount, money
from agent.register import ArticleRegister, parse_articles

log = logging.getLogger(__name__)


class HogiaDestinationConfig(VendorApiKeys):
    """The keys of a ``[[destinations]]`` table with ``kind = "hogia"``.

    ``auth = "api_key"`` needs ``api_key_file``; ``auth = "oauth2"`` needs
    ``client_id`` and ``client_secret_file`` (``token_url`` defaults to
    ``{base_url}/oauth/token``).
    """

    kind: Literal["hogia"] = "hogia"
    auth: Literal["api_key", "oauth2", "none"] = "api_key"
    client_id: str | None = None
    client_secret_file: Path | None = None
    token_url: HttpUrl | None = None
    scope: str | None = None
    orders_path: str = "/api/v1/orders"
    stock_adjustments_path: str = "/api/v1/stock-adjustments"
    skip_stock_reasons: list[str] = Field(default_factory=lambda: ["sale", "return"])
    register_path: str = "/api/v1/articles"
    read_register: bool = True
    """Read Hogia Smart's article register into the outbox database (agent.register)."""
    register_refresh_s: float = Field(default=900, gt=0)
    """How often the register is read again: Sharespine's cadence in the seed article (15 min)."""
    send_records: bool = True
    """False: book nothing, only read the article register (setup a: the till reports to Hogia Smart itself)."""
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


def _row(
    sku: str, name: str | None, quantity: Decimal, unit_price: Decimal, discount: Decimal, vat_rate: int
) -> dict[str, Any]:
    """One order row; its amount by the money rule of ``agent.records``, VAT included."""
    row_amount = amount(quantity, unit_price, discount)
    rate = Decimal(vat_rate)
    return {
        "articleNumber": sku,
        "description": name or sku,
        "quantity": str(quantity.quantize(MILLI)),
        "unitPrice": str(unit_price.quantize(CENT)),
        "discount": str(discount.quantize(CENT)),
        "vatRate": vat_rate,
        "amount": str(row_amount),
        "vatAmount": str(money(row_amount * rate / (100 + rate))),
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
    parts = {rate: money(discount * weight / whole) for rate, weight in weights.items()}
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
        "quantity": str(_dec(movement["delta"]).quantize(MILLI)),
        "reason": movement["reason"],
        "date": movement["occurred_at"],
        "storeId": envelope["store_id"],
        "reference": envelope["key"],
        "note": movement.get("note"),
    }


class HogiaDestination(HttpAdapter[HogiaDestinationConfig]):
    """Books sales and stock movements in Hogia, one request per record.

    Args (besides the base's ``config`` and ``transport``):
        skus: ``[skus]``, the article numbers of fees and discounts (their defaults when None).
        clock: monotonic seconds for the OAuth2 token's expiry (tests pass their own).
    """

    kind = "hogia"
    receiver = "Hogia"

    def __init__(
        self,
        config: HogiaDestinationConfig,
        *,
        skus: SkusConfig | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        register: ArticleRegister | None = None,
    ) -> None:
        super().__init__(config, transport=transport)
        self.register = register if config.read_register else None
        self.register_url = vendor_url(config.base_url, config.register_path)
        self._register_task: asyncio.Task[None] | None = None
        skus = skus or SkusConfig()
        self.skus = {"shipping_sku": skus.shipping, "handling_sku": skus.handling, "discount_sku": skus.discount}
        self.orders_url = vendor_url(config.base_url, config.orders_path)
        self.stock_adjustments_url = vendor_url(config.base_url, config.stock_adjustments_path)
        self.token_url = str(config.token_url) if config.token_url else vendor_url(config.base_url, "/oauth/token")
        self.skip_stock_reasons = frozenset(config.skip_stock_reasons)
        self._clock = clock

    @property
    def reads_only(self) -> bool:
        """``send_records = false``: it reads the register and looks at sales for unknown articles, books nothing.

        The status page says so, instead of calling the sales it passed over "sent" to Hogia.
        """
        return not self.config.send_records

    async def start(self) -> None:
        """Open the pool; start reading the article register (its first read right away)."""
        await super().start()
        if self.register is not None and self._register_task is None:
            self._register_task = asyncio.create_task(self._refresh_register(), name=f"{self.name}-register")

    async def close(self) -> None:
        if self._register_task is not None:
            self._register_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._register_task
            self._register_task = None
        await super().close()

    async def fetch_register(self) -> int:
        """Read the register from Hogia and store it; returns the article count. Raises what the GET meant."""
        assert self.register is not None and self._client is not None
        response = await self._client.get(self.register_url)
        raise_for_status(response, what=f"GET {self.register_url}", receiver=self.receiver)
        articles = parse_articles(response.json())
        await asyncio.to_thread(self.register.save, articles, datetime.now(UTC))
        return len(articles)

    async def _refresh_register(self) -> None:
        assert self.register is not None
        while True:
            try:
                count = await self.fetch_register()
                log.info("%s: article register read, %d articles", self.name, count)
            except Exception as exc:  # any failure: the stored register stays in use
                self.register.last_error = str(exc) or repr(exc)
                log.warning("%s: cannot read the article register: %s", self.name, self.register.last_error)
            await asyncio.sleep(self.config.register_refresh_s)

    def problems(self) -> list[Problem]:
        """The article register's: unknown SKUs sold, missing cost articles, a stale register."""
        return self.register.problems() if self.register is not None else []

    def auth(self) -> httpx.Auth | None:
        """The API key in its header, or OAuth2 client credentials, as ``auth`` says."""
        config = self.config
        if config.auth == "api_key":
            assert config.api_key_file is not None  # the config model requires it
            return HeaderAuth(config.api_key_header, read_secret(config.api_key_file, "api_key_file"))
        if config.auth == "oauth2":
            assert config.client_id and config.client_secret_file is not None  # the config model requires them
            secret = read_secret(config.client_secret_file, "client_secret_file")
            return OAuth2ClientCredentials(self.token_url, config.client_id, secret, config.scope, clock=self._clock)
        return None

    async def send(self, batch: Batch) -> SendResult:
        """Send each record of the batch in seq order; see the module docstring."""
        return SendResult(rejected=await self.post_each(batch, batch.records, self._request))

    def _request(self, envelope: Envelope) -> tuple[str, dict[str, Any]] | None:
        """Where the record goes and what Hogia gets; None for what Hogia gets by another path."""
        if self.register is not None and envelope.get("type") == "sale":
            self.register.note_sale(envelope["data"], datetime.now(UTC))
        if not self.config.send_records:
            return None
        kind = envelope.get("type")
        if kind == "sale":
            return self.orders_url, sale_to_order(envelope, **self.skus)
        if kind == "stock_movement":
            if envelope["data"].get("reason") in self.skip_stock_reasons:
                return None
            return self.stock_adjustments_url, movement_to_adjustment(envelope)
        raise PermanentError(f"hogia takes sale and stock_movement records, not {kind!r}")
