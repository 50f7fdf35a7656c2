"""A simulated Sharespine, for the demo and the tests.

Sharespine's API is partner-only; this is a plausible one we designed so the
adapter (``agent.destinations.sharespine``) has something real to talk to.
The assumptions are listed in docs/destinations.md.

Endpoints:

- ``POST /api/stock/changes``: ``{"storeId", "changes": [{"sku", "delta", "refs": [record id, ...]}]}``.
  Stock only ever moves by deltas. ``refs`` are the ids of the records whose
  deltas were summed into ``delta``; they make the change idempotent:

  - every ref new: the delta is applied and the refs remembered;
  - every ref seen before: nothing happens (a resend; counted as duplicate);
  - some seen, some new: 409 ``{"error": "partial_overlap"}`` for the whole
    request, because the share of the new refs in the sum is unknown. The
    agent's delivery loop then splits the batch until each record stands
    alone, and a lone record is never a partial overlap.

  A request is all or nothing: it is checked whole before any change is
  applied. Answers 200 ``{"applied", "duplicates", "stock": {sku: level}}``.
- ``POST /api/orders``: one sale as an order (optional in the adapter),
  ``{"externalId", "orderNumber", "orderType", "orderDate", "storeId", "currency",
  "rows": [{"sku", "name", "quantity", "unitPrice", "discount", "vatRate"}],
  "fees", "discount", "rounding", "total", "payments", "affectsStock": false}``;
  deduplicated by ``externalId``: 201 created, 200 ``"duplicate": true``.
  Orders do not move stock here: stock arrives only as changes.
- Auth: ``api_key`` (header ``X-Api-Key``), ``bearer`` (``Authorization: Bearer <key>``) or ``none``.
- ``GET /_ledger``: ``{"changes": [...], "stock": {sku: "level"}, "applied_refs",
  "duplicates", "orders": [...]}``; fault knobs under ``/_faults``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.simulators._auth import Authenticator, AuthMode, authorized_json
from agent.simulators.faults import Faults, simulator_app

QTY = Decimal("0.001")


@dataclass
class SharespineLedger:
    """What the simulated Sharespine holds, for assertions."""

    changes: list[dict[str, Any]] = field(default_factory=list)
    stock: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    applied_refs: set[str] = field(default_factory=set)
    duplicates: int = 0
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "stock": {sku: str(level.quantize(QTY)) for sku, level in sorted(self.stock.items())},
            "applied_refs": len(self.applied_refs),
            "duplicates": self.duplicates,
            "orders": list(self.orders.values()),
        }


def _invalid(field_name: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": "validation", "details": [{"field": field_name, "message": message}]}, status_code=422
    )


def _parse_changes(body: Any) -> tuple[list[tuple[str, Decimal, list[str]]], JSONResponse | None]:
    """The changes of a request, or the 4xx naming what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("changes"), list):
        return [], _invalid("changes", "required, a list")
    parsed: list[tuple[str, Decimal, list[str]]] = []
    seen_refs: set[str] = set()
    for i, change in enumerate(body["changes"]):
        where = f"changes[{i}]"
        if not isinstance(change, dict):
            return [], _invalid(where, "must be an object")
        sku, refs = change.get("sku"), change.get("refs")
        if not isinstance(sku, str) or not sku:
            return [], _invalid(where + ".sku", "required, a non-empty string")
        raw_delta = change.get("delta")
        try:
            if not isinstance(raw_delta, str):
                raise TypeError
            delta = Decimal(raw_delta)
        except (InvalidOperation, TypeError):
            return [], _invalid(where + ".delta", "must be a decimal string")
        if not delta.is_finite():
            return [], _invalid(where + ".delta", "must be finite")
        if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r for r in refs):
            return [], _invalid(where + ".refs", "required, a non-empty list of record ids")
        if seen_refs.intersection(refs) or len(set(refs)) != len(refs):
            return [], _invalid(where + ".refs", "a record id appears twice in this request")
        seen_refs.update(refs)
        parsed.append((sku, delta, refs))
    return parsed, None


def create_app(
    *,
    auth: AuthMode = "none",
    api_key: str | None = None,
    api_key_header: str = "X-Api-Key",
    faults: Faults | None = None,
) -> Starlette:
    """The simulated Sharespine.

    Args:
        auth: ``none``, ``api_key`` or ``bearer``.
        api_key: the key (``api_key`` and ``bearer`` modes).
        api_key_header: the header carrying the key in ``api_key`` mode.
        faults: shared fault state; a fresh one when None.
    """
    if auth not in ("none", "api_key", "bearer"):
        raise ValueError(f"auth: {auth!r} is not none, api_key or bearer")
    authn = Authenticator(mode=auth, api_key=api_key, api_key_header=api_key_header)
    ledger = SharespineLedger()
    faults = faults or Faults()

    async def post_changes(request: Request) -> Response:
        body, refused = await authorized_json(authn, request)
        if refused is not None:
            return refused
        changes, problem = _parse_changes(body)
        if problem is not None:
            return problem
        refusals = []
        for i, (sku, _delta, refs) in enumerate(changes):
            for ref in refs:
                why = faults.refusal(ref, [sku])
                if why:
                    refusals.append({"field": f"changes[{i}]", "sku": sku, "ref": ref, "message": why})
        if refusals:
            return JSONResponse({"error": "validation", "details": refusals}, status_code=422)
        for i, (sku, _delta, refs) in enumerate(changes):
            known = [ref for ref in refs if ref in ledger.applied_refs]
            if known and len(known) != len(refs):
                return JSONResponse(
                    {"error": "partial_overlap", "field": f"changes[{i}]", "sku": sku, "applied_refs": known},
                    status_code=409,
                )
        applied = duplicates = 0
        for sku, delta, refs in changes:
            if refs[0] in ledger.applied_refs:
                duplicates += 1
                continue
            ledger.applied_refs.update(refs)
            ledger.stock[sku] += delta
            ledger.changes.append({"sku": sku, "delta": str(delta), "refs": refs})
            applied += 1
        ledger.duplicates += duplicates
        stock = {sku: str(ledger.stock[sku].quantize(QTY)) for sku, _d, _r in changes}
        return faults.lost_answer() or JSONResponse(
            {"applied": applied, "duplicates": duplicates, "stock": stock}, status_code=200
        )

    async def post_order(request: Request) -> Response:
        body, refused = await authorized_json(authn, request)
        if refused is not None:
            return refused
        if not isinstance(body, dict):
            return _invalid("body", "must be a JSON object")
        for name in ("externalId", "orderNumber", "orderDate", "total"):
            if not isinstance(body.get(name), str) or not body[name]:
                return _invalid(name, "required, a non-empty string")
        rows = body.get("rows")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r.get("sku") for r in rows):
            return _invalid("rows", "required, a non-empty list of rows with sku")
        why = faults.refusal(body["externalId"], [str(r["sku"]) for r in rows])
        if why:
            return _invalid("rows", why)
        existing = ledger.orders.get(body["externalId"])
        if existing is not None:
            if existing != body:
                return JSONResponse({"error": "conflict", "externalId": body["externalId"]}, status_code=409)
            ledger.duplicates += 1
            return faults.lost_answer() or JSONResponse(
                {"externalId": body["externalId"], "duplicate": True}, status_code=200
            )
        ledger.orders[body["externalId"]] = body
        return faults.lost_answer() or JSONResponse(
            {"externalId": body["externalId"], "duplicate": False}, status_code=201
        )

    async def get_ledger(request: Request) -> Response:
        return JSONResponse(ledger.as_json())

    return simulator_app(
        [
            Route("/api/stock/changes", post_changes, methods=["POST"]),
            Route("/api/orders", post_order, methods=["POST"]),
            Route("/_ledger", get_ledger, methods=["GET"]),
        ],
        faults=faults,
        ledger=ledger,
        auth=authn,
    )
