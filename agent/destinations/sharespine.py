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
- with an article register (``agent.register``, read by the ``hogia`` kind),
  only movements of articles marked "Skicka till Webshop": the others are
  acknowledged unsent and counted as "skipped: not a webshop article".
- with ``sales_as_orders = true``, each ``sale`` as an order
  (``POST {orders_path}``, ``externalId`` = the envelope id, ``affectsStock``
  false because the sale's stock already travels as derived movements).
  Otherwise (the default) sales are acknowledged without sending.

A refused stock request (a permanent 4xx, including 409 for a partial overlap
of refs) raises ``PermanentError``: the delivery loop splits the batch until
the refused record stands alone. A refused order in a batch of several
records is reported in ``SendResult.rejected``. 401, 403, 404 and 407 are
retryable with a hint (a setup problem, not a bad record; the rule is
``agent.destinations._httpcommon``'s).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

import httpx
from pydantic import model_validator

from agent.configbase import read_secret
from agent.destinations._httpcommon import HeaderAuth, HttpAdapter, VendorApiKeys, dumps, vendor_url
from agent.destinations.base import PermanentError, SendResult
from agent.outbox.types import Batch, Envelope
from agent.records import MILLI
from agent.register import ArticleRegister


class SharespineDestinationConfig(VendorApiKeys):
    """The keys of a ``[[destinations]]`` table with ``kind = "sharespine"``.

    ``auth = "api_key"`` sends the key in ``api_key_header``; ``auth = "bearer"``
    sends ``Authorization: Bearer <key>``; both need ``api_key_file``.
    """

    kind: Literal["sharespine"] = "sharespine"
    auth: Literal["api_key", "bearer", "none"] = "api_key"
    stock_changes_path: str = "/api/stock/changes"
    orders_path: str = "/api/orders"
    sales_as_orders: bool = False

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
    return [{"sku": sku, "delta": str(delta.quantize(MILLI)), "refs": refs} for sku, (delta, refs) in summed.items()]


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


class SharespineDestination(HttpAdapter[SharespineDestinationConfig]):
    """Sends stock deltas (and optionally orders) to Sharespine; ``store_id`` goes with the stock changes.

    ``config`` and ``transport`` are the base's (``HttpAdapter``).
    """

    kind = "sharespine"
    receiver = "Sharespine"

    def __init__(
        self,
        config: SharespineDestinationConfig,
        *,
        store_id: str,
        transport: httpx.AsyncBaseTransport | None = None,
        register: ArticleRegister | None = None,
    ) -> None:
        super().__init__(config, transport=transport)
        self.register = register
        self.store_id = store_id
        self.stock_changes_url = vendor_url(config.base_url, config.stock_changes_path)
        self.orders_url = vendor_url(config.base_url, config.orders_path)

    def auth(self) -> httpx.Auth | None:
        """The key in ``api_key_header`` (``api_key``) or as a bearer token (``bearer``)."""
        if self.config.auth == "none":
            return None
        assert self.config.api_key_file is not None  # the config model requires it
        key = read_secret(self.config.api_key_file, "api_key_file")
        return HeaderAuth.bearer(key) if self.config.auth == "bearer" else HeaderAuth(self.config.api_key_header, key)

    async def send(self, batch: Batch) -> SendResult:
        """Send the batch's stock changes in one request, then its orders if enabled."""
        movements = [e for e in batch.records if e.get("type") == "stock_movement"]
        snapshot = self.register.snapshot() if self.register is not None else None
        if snapshot is not None and self.register is not None:
            # Only articles marked "Skicka till Webshop" exist in Sharespine: the
            # others' movements are acknowledged unsent, counted, never dead letters.
            sent = [e for e in movements if snapshot.is_webshop(str(e["data"].get("sku")))]
            self.register.skipped_not_webshop += len(movements) - len(sent)
            movements = sent
        sales = [e for e in batch.records if e.get("type") == "sale"]
        others = [e for e in batch.records if e.get("type") not in ("sale", "stock_movement")]
        rejected = {e["id"]: f"sharespine does not take {e.get('type')!r} records" for e in others}
        if movements:
            try:
                changes = stock_changes(movements)
            except (KeyError, TypeError, ArithmeticError) as exc:
                raise PermanentError(f"cannot map stock movements for Sharespine: {exc!r}") from exc
            await self.post(self.stock_changes_url, dumps({"storeId": self.store_id, "changes": changes}))
        if self.config.sales_as_orders:
            rejected |= await self.post_each(batch, sales, lambda sale: (self.orders_url, sale_to_order(sale)))
        return SendResult(rejected=rejected)
