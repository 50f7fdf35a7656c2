"""Envelopes built by hand in the stored format (docs/architecture.md), for adapter tests.

The record data goes through ``agent.records`` (validate, normalise), so the
adapters see exactly what the outbox would hand them.
"""

from __future__ import annotations

import itertools
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from agent.outbox.types import Batch
from agent.records import normalize, parse_record
from agent.simulators.till import generate_receipt
from tests.helpers import STORE_ID, make_sale

WHEN = datetime(2026, 11, 26, 14, 59, 1, tzinfo=timezone(timedelta(hours=1)))
_seq = itertools.count(1)


def envelope(record_type: str, data: dict[str, Any], *, store_id: str = STORE_ID) -> dict[str, Any]:
    """Validate ``data`` as ``record_type`` and wrap it like the outbox does."""
    stored = normalize(parse_record(record_type, data))
    if record_type == "sale":
        key = f"sale:{stored['till_id']}:{stored['receipt_no']}"
    else:
        key = f"stock_movement:{stored['till_id']}:{stored['movement_id']}"
    return {
        "id": str(uuid.uuid4()),
        "key": key,
        "type": record_type,
        "store_id": store_id,
        "seq": next(_seq),
        "received_at": "2026-11-26T13:59:01.120Z",
        "clock_synced": True,
        "data": stored,
    }


def sale(receipt_no: int, **overrides: Any) -> dict[str, Any]:
    """A sale envelope: one line of milk unless ``overrides`` say otherwise."""
    return envelope("sale", make_sale(receipt_no, occurred_at=WHEN.isoformat(), **overrides))


def random_sale(rng: random.Random, receipt_no: int, kind: str | None = None) -> dict[str, Any]:
    """A sale envelope from the till simulator's receipts."""
    return envelope("sale", generate_receipt(rng, receipt_no=receipt_no, occurred_at=WHEN, kind=kind))


def movement(movement_id: str, sku: str, delta: str, reason: str = "delivery") -> dict[str, Any]:
    """A stock_movement envelope."""
    return envelope(
        "stock_movement",
        {
            "till_id": "kassa-1",
            "movement_id": movement_id,
            "sku": sku,
            "delta": delta,
            "reason": reason,
            "occurred_at": WHEN.isoformat(),
        },
    )


def batch(records: list[dict[str, Any]], destination: str = "dest") -> Batch:
    """A frozen batch of ``records`` with a fresh id."""
    return Batch(batch_id=str(uuid.uuid4()), destination=destination, records=records)


@asynccontextmanager
async def running(dest: Any) -> AsyncIterator[Any]:
    """An adapter started for the block and closed after it, whatever happens."""
    await dest.start()
    try:
        yield dest
    finally:
        await dest.close()
