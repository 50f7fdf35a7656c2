"""A generic HTTP receiver for destinations of kind ``http`` (contract §3).

It behaves the way we ask integrators' backends to behave, so the adapter and
the delivery loop can be tested end to end:

- ``POST {path}`` with ``{"store_id", "batch_id", "records": [envelope, ...]}``,
  header ``Idempotency-Key`` (must equal ``batch_id``), ``Authorization: Bearer``
  when a token is configured (401 otherwise).
- A repeated ``Idempotency-Key`` with the same body gets the same answer as
  the first time, without touching the ledger again; the same key with a
  different body gets 422.
- Records are deduplicated by envelope ``id``: a record seen before is counted
  as a duplicate and not appended again.
- ``GET /_ledger``: ``{"records": [...], "batches": n, "duplicates": n,
  "idempotent_replays": n, "rejected": [...]}``; ``records`` holds every accepted
  envelope once, in arrival order. ``DELETE /_ledger`` empties it.
- Fault knobs under ``/_faults`` (see ``agent.simulators.faults``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.simulators.faults import Faults, record_skus, simulator_app


@dataclass
class ReceiverLedger:
    """What the receiver accepted, for assertions."""

    records: list[dict[str, Any]] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    batches: int = 0
    duplicates: int = 0
    idempotent_replays: int = 0
    rejected: list[dict[str, str]] = field(default_factory=list)
    answers: dict[str, tuple[str, int, dict[str, Any]]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "batches": self.batches,
            "duplicates": self.duplicates,
            "idempotent_replays": self.idempotent_replays,
            "rejected": self.rejected,
        }


def _bad(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def create_app(*, token: str | None = None, path: str = "/ingest", faults: Faults | None = None) -> Starlette:
    """The receiver app.

    Args:
        token: the bearer token to require; None accepts any caller.
        path: where batches are posted.
        faults: shared fault state; a fresh one when None.
    """
    ledger = ReceiverLedger()
    faults = faults or Faults()

    async def receive_batch(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _bad(401, "missing or wrong bearer token")
        raw = await request.body()
        try:
            body = await request.json()
        except ValueError:
            return _bad(400, "body must be JSON")
        problem = _check_body(body)
        if problem:
            return _bad(400, problem)
        key = request.headers.get("idempotency-key")
        if not key:
            return _bad(400, "missing header Idempotency-Key")
        if key != body["batch_id"]:
            return _bad(400, "Idempotency-Key must equal batch_id")
        digest = hashlib.sha256(raw).hexdigest()
        if key in ledger.answers:
            first_digest, status, first_answer = ledger.answers[key]
            if first_digest != digest:
                return _bad(422, "Idempotency-Key reused with a different body", batch_id=key)
            ledger.idempotent_replays += 1
            ledger.duplicates += len(body["records"])
            return JSONResponse(first_answer, status_code=status)

        refusals = [
            {"id": r["id"], "error": why} for r in body["records"] if (why := faults.refusal(r["id"], record_skus(r)))
        ]
        if refusals and faults.settings.refuse_mode == "422":
            return _bad(422, "records refused", rejected=refusals)
        refused_ids = {r["id"] for r in refusals}
        for record in body["records"]:
            if record["id"] in refused_ids:
                continue
            if record["id"] in ledger.seen_ids:
                ledger.duplicates += 1
                continue
            ledger.seen_ids.add(record["id"])
            ledger.records.append(record)
        ledger.batches += 1
        ledger.rejected.extend(refusals)
        answer: dict[str, Any] = {"accepted": len(body["records"]) - len(refusals)}
        if refusals:
            answer["rejected"] = refusals
        ledger.answers[key] = (digest, 200, answer)
        return faults.lost_answer() or JSONResponse(answer, status_code=200)

    async def get_ledger(request: Request) -> Response:
        return JSONResponse(ledger.as_json())

    async def delete_ledger(request: Request) -> Response:
        fresh = ReceiverLedger()
        ledger.__dict__.update(fresh.__dict__)
        return JSONResponse(ledger.as_json())

    return simulator_app(
        [
            Route(path, receive_batch, methods=["POST"]),
            Route("/_ledger", get_ledger, methods=["GET"]),
            Route("/_ledger", delete_ledger, methods=["DELETE"]),
        ],
        faults=faults,
        ledger=ledger,
    )


def _check_body(body: Any) -> str | None:
    """Name the first thing wrong with a batch body, or None."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for name, kind in (("store_id", str), ("batch_id", str), ("records", list)):
        if not isinstance(body.get(name), kind):
            return f"field {name} missing or not a {kind.__name__}"
    for index, record in enumerate(body["records"]):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            return f"records[{index}].id missing"
    return None
