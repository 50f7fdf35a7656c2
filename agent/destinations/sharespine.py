"""Destination kind ``sharespine``: stock as deltas per SKU, sales optionally as orders.

Sharespine's API is partner-only. Everything this adapter assumes about it
lives in this module and is listed in docs/destinations.md under "to confirm
with Sharespine"; paths and auth are configurable.

What it sends:

- the batch's ``stock_movement`` records as one ``POST {stock_changes_path}``:
  ``{"storeId", "changes": [{"sku", "delta", "refs": [record id, ...]}]}``,
  the deltas summed per SKU (in order of first appearance) with every
  record id kept in ``refs``, so Sharespine can refuse to apply a record
  twice. Never an absolute stock level (contract §3).
- with ``sales_as_orders = true``, each ``sale`` as an order
  (``POST {orders_path}``, ``externalId`` = the envelope id, ``affectsStock``
  false because the sale's stock already travels as derived movements).
  Otherwise (the default) sales are acknowledged without sending.

A refused stock request (any 4xx but 401/403, including 409 for a partial
overlap of refs) raises ``PermanentError``: the delivery loop splits the batch
until the refused record stands alone. A refused order in a batch of several
records is reported in ``SendResult.rejected``. 401/403 are retryable (a setup
problem, not a bad record).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, HttpUrl, model_validator

from agent.config import DestinationBase, read_secret
from agent.destinations._httpcommon import (
    AUTH_STATUSES,
    QTY,
    PooledAdapter,
    dumps,
    raise_for_status,
    send_request,
)
from agent.destinations.base import PermanentError, RetryableError, SendResult
from agent.outbox.types import Batch, Envelope


class SharespineDestinationConfig(DestinationBase):
    """The keys of a ``[[destinations]]`` table with ``kind = "sharespine"``.

    ``auth = "api_key"`` sends the key in ``api_key_header``; ``auth = "bearer"``
    sends ``Authorization: Bearer <key>``; both need ``api_key_file``.
    """

    kind: Literal["sharespine"] = "sharespine"
    base_url: HttpUrl
    auth: Literal["api_key", "bearer", "none"] = "api_key"
    api_key_file: Path | None = None
    api_key_header: str = "X-Api-Key"
    stock_changes_path: str = "/api/stock/changes"
    orders_path: str = "/api/orders"
    sales_as_orders: bool = False
    timeout_s: float = Field(default=10.0, gt=0, le=600)

    @model_validator(mode="after")
    def _auth_keys(self) -> SharespineDestinationConfig:
        if self.auth != "none" and self.api_key_file is None:
            raise ValueError(f"api_key_file is required when auth = {self.auth!r}")
        return self


def stock_changes(envelopes: list[Envelope]) -> list[dict[str, Any]]:
    """Sum the movements' deltas per SKU, keeping every record id in ``refs``."""
    summed: dict[str, tuple[Decimal, list[str]]] = {}
    for envelope in envelopes:
        data = envelope["data"]
        delta, refs = summed.get(data["sku"], (Decimal(0), []))
        summed[data["sku"]] = (delta + Decimal(str(data["delta"])), [*refs, envelope["id"]])
    return [{"sku": sku, "delta": str(delta.quantize(QTY)), "refs": refs} for sku, (delta, refs) in summed.items()]


def sale_to_order(envelope: Envelope) -> dict[str, Any]:
    """The Sharespine order for one sale envelope (informational: no stock effect)."""
    sale = envelope["data"]
    return {
        "externalId": envelope["id"],
        "orderNumber": f"{sale['till_id']}-{sale['receipt_no']}",
        "orderType": sale.get("kind") or "sale",
        "orderDate": sale["occurred_at"],
        "storeId": envelope["store_id"],
        "currency": sale.get("currency") or "SEK",
        "rows": [
            {
                "sku": line["sku"],
                "name": line.get("name"),
                "quantity": str(line["quantity"]),
                "unitPrice": str(line["unit_price"]),
                "discount": str(line.get("discount") or "0.00"),
                "vatRate": line["vat_rate"],
            }
            for line in sale["lines"]
        ],
        "fees": [
            {"type": fee["role"], "amount": str(fee["amount"]), "vatRate": fee["vat_rate"]}
            for fee in sale.get("fees") or []
        ],
        "discount": str(sale.get("discount") or "0.00"),
        "rounding": str(sale.get("rounding") or "0.00"),
        "total": str(sale["total"]),
        "payments": [{"method": p["method"], "amount": str(p["amount"])} for p in sale["payments"]],
        "affectsStock": False,
    }


class SharespineDestination(PooledAdapter):
    """Sends stock deltas (and optionally orders) to Sharespine.

    Args:
        name: the destination's name.
        base_url: the API's root.
        store_id: sent as ``storeId`` with the stock changes.
        auth: ``api_key``, ``bearer`` or ``none``.
        api_key_file: the key's secret file.
        api_key_header: the header carrying the key (``api_key``).
        stock_changes_path: where stock changes go.
        orders_path: where orders go.
        sales_as_orders: send sales as orders (default off: sales are skipped).
        timeout_s: per request.
        transport: an httpx transport, for tests only.
    """

    kind = "sharespine"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        store_id: str,
        auth: str = "api_key",
        api_key_file: str | Path | None = None,
        api_key_header: str = "X-Api-Key",
        stock_changes_path: str = "/api/stock/changes",
        orders_path: str = "/api/orders",
        sales_as_orders: bool = False,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if auth not in ("api_key", "bearer", "none"):
            raise ValueError(f"auth: {auth!r} is not api_key, bearer or none")
        self.name = name
        self.base_url = str(base_url).rstrip("/")
        self.store_id = store_id
        self.auth = auth
        self.api_key_file = api_key_file
        self.api_key_header = api_key_header
        self.stock_changes_url = self.base_url + stock_changes_path
        self.orders_url = self.base_url + orders_path
        self.sales_as_orders = sales_as_orders
        self.timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._headers: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: SharespineDestinationConfig, *, store_id: str) -> SharespineDestination:
        return cls(
            name=config.name,
            base_url=str(config.base_url),
            store_id=store_id,
            auth=config.auth,
            api_key_file=config.api_key_file,
            api_key_header=config.api_key_header,
            stock_changes_path=config.stock_changes_path,
            orders_path=config.orders_path,
            sales_as_orders=config.sales_as_orders,
            timeout_s=config.timeout_s,
        )

    async def start(self) -> None:
        """Read the key and open the connection pool."""
        if self.auth != "none":
            if self.api_key_file is None:
                raise ValueError(f"api_key_file: required when auth = {self.auth!r}")
            key = read_secret(self.api_key_file, "api_key_file")
            self._headers = {"Authorization": f"Bearer {key}"} if self.auth == "bearer" else {self.api_key_header: key}
        self._open_pool()

    async def send(self, batch: Batch) -> SendResult:
        """Send the batch's stock changes in one request, then its orders if enabled."""
        if self._client is None:
            await self.start()
        movements = [e for e in batch.records if e.get("type") == "stock_movement"]
        sales = [e for e in batch.records if e.get("type") == "sale"]
        others = [e for e in batch.records if e.get("type") not in ("sale", "stock_movement")]
        rejected = {e["id"]: f"sharespine does not take {e.get('type')!r} records" for e in others}
        if movements:
            try:
                changes = stock_changes(movements)
            except (KeyError, TypeError, ArithmeticError) as exc:
                raise PermanentError(f"cannot map stock movements for Sharespine: {exc!r}") from exc
            await self._post(self.stock_changes_url, {"storeId": self.store_id, "changes": changes})
        if self.sales_as_orders:
            for envelope in sales:
                try:
                    try:
                        order = sale_to_order(envelope)
                    except (KeyError, TypeError) as exc:
                        raise PermanentError(f"cannot map record {envelope.get('key')}: {exc!r}") from exc
                    await self._post(self.orders_url, order)
                except PermanentError as exc:
                    if len(batch.records) == 1:
                        raise
                    status = f"HTTP {exc.status}: " if exc.status else ""
                    rejected[envelope["id"]] = f"{status}{exc.body or exc}"[:1024]
        return SendResult(rejected=rejected)

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        assert self._client is not None
        what = f"POST {url}"
        response = await send_request(self._client, "POST", url, what=what, headers=self._headers, content=dumps(body))
        if response.status_code in AUTH_STATUSES:
            raise RetryableError(
                f"{what}: HTTP {response.status_code}: Sharespine refused our credentials; check the auth keys",
                status=response.status_code,
            )
        raise_for_status(response, what=what)
