"""Small helpers shared by tests: loopback ports, valid records, outbox dumps.

Kept generic on purpose: any test may import these without pulling in a
fixture tree.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 15.0) -> bool:
    """Wait (bounded by ``timeout``) until ``host:port`` accepts; True when it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_accepts(port, host):
            return True
        time.sleep(0.02)
    return False


def make_sale(n: int, *, till_id: str = "kassa-1", price: str = "15.90", quantity: int = 2, **fields: Any) -> dict[str, Any]:
    """A valid sale (receipt ``n`` of ``till_id``) whose total and payment add up.

    ``fields`` replace top-level fields as given (no recomputation), so a test
    can break exactly one rule: ``make_sale(1, total="31.81")``.
    """
    from decimal import Decimal

    total = str((Decimal(price) * quantity).quantize(Decimal("0.01")))
    sale: dict[str, Any] = {
        "till_id": till_id,
        "receipt_no": n,
        "occurred_at": "2026-11-26T14:59:01+01:00",
        "lines": [{"sku": "7310865004703", "name": "Mjölk 1,5%", "quantity": quantity, "unit_price": price, "vat_rate": 12}],
        "total": total,
        "payments": [{"method": "card", "amount": total}],
    }
    sale.update(fields)
    return sale


def make_movement(n: int, *, till_id: str = "kassa-1", **fields: Any) -> dict[str, Any]:
    """A valid stock movement (a delivery of 24 units), id ``d-{n}``."""
    movement: dict[str, Any] = {
        "till_id": till_id,
        "movement_id": f"d-{n}",
        "sku": "7310865004703",
        "delta": 24,
        "reason": "delivery",
        "occurred_at": "2026-11-26T07:30:00+01:00",
    }
    movement.update(fields)
    return movement


def dump_tables(db_path: Path | str, *, exclude: tuple[str, ...] = ()) -> list[str]:
    """Every row of every table (SQL text, ``iterdump``), read on a fresh connection.

    Compares what is *stored*, not the file's bytes, which WAL checkpoints
    change without changing any row. ``exclude`` drops the INSERTs of the
    named tables (e.g. ``conflicts`` after a 409, where keeping the
    conflicting version aside is the specified behaviour).
    """
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        lines = list(conn.iterdump())
    finally:
        conn.close()
    skipped = tuple(f'INSERT INTO "{name}"' for name in exclude)
    return [line for line in lines if not line.startswith(skipped)] if skipped else lines


def stored_keys(db_path: Path | str) -> dict[str, tuple[str, int]]:
    """``{key: (id, seq)}`` of every stored record, on a fresh connection."""
    conn = sqlite3.connect(db_path)
    try:
        return {key: (rid, seq) for key, rid, seq in conn.execute("SELECT key, id, seq FROM records")}
    finally:
        conn.close()
