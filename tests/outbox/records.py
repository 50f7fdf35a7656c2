"""Valid records for outbox, ingest and CLI tests, built through ``agent.records``.

Every helper returns either the raw JSON a till would send (``*_json``) or the
validated record the outbox stores, so a test never stores something the
ingest path would have refused.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from agent.records import Record, parse_record

TILL = "kassa-1"
WHEN = "2026-11-26T14:59:01+01:00"


def sale_json(receipt_no: int, *, price: str = "31.80", till_id: str = TILL, lines: int = 1) -> dict[str, Any]:
    """A sale of ``lines`` lines at ``price`` each (25 %), paid by card."""
    body_lines = [
        {"sku": f"SKU-{index}", "name": "Mjölk 1,5%", "quantity": 1, "unit_price": price, "vat_rate": 25}
        for index in range(lines)
    ]
    total = str(Decimal(price) * lines)
    return {
        "till_id": till_id,
        "receipt_no": receipt_no,
        "occurred_at": WHEN,
        "lines": body_lines,
        "total": total,
        "payments": [{"method": "card", "amount": total}],
    }


def movement_json(movement_id: str, *, delta: str = "24", till_id: str = TILL) -> dict[str, Any]:
    """A delivery of ``delta`` units of one SKU."""
    return {
        "till_id": till_id,
        "movement_id": movement_id,
        "sku": "7310865004703",
        "delta": delta,
        "reason": "delivery",
        "occurred_at": WHEN,
    }


def sale(receipt_no: int, **kwargs: Any) -> Record:
    """The validated sale of ``sale_json``."""
    return parse_record("sale", sale_json(receipt_no, **kwargs))


def movement(movement_id: str, **kwargs: Any) -> Record:
    """The validated stock movement of ``movement_json``."""
    return parse_record("stock_movement", movement_json(movement_id, **kwargs))


def raw_rows(path: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read through a fresh sqlite3 connection: what is on disk, not in a cache."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
