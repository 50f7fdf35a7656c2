"""Writing one fetched batch into PostgreSQL in one transaction, idempotently by record id.

Every record table has the envelope's ``id`` as its primary key, so
``INSERT ... ON CONFLICT DO NOTHING`` makes a resend (the agent after a lost
PUBACK) or a redelivery (JetStream after a worker died before its ack) a no-op.
``(store_id, key)`` is unique as well, so a receipt is never counted twice even
when it comes again under a new id; that is the conflict the same statement
skips. Only the rows actually inserted move the per-shop and per-till
summaries the fleet view reads, so they stay exact under redelivery.

Several workers write at once: summary rows are upserted in a fixed order
(sorted by key), so two transactions never wait on each other in a cycle.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from agent.records import Sale, StockMovement, ZReport
from fleet.messages import Message, RecordRow, StatusRow, Unreadable

__all__ = ["BatchOutcome", "write_batch"]


@dataclass
class BatchOutcome:
    """What one batch did: rows inserted, records already there, messages set aside."""

    inserted: int = 0
    duplicates: int = 0
    statuses: int = 0
    unreadable: int = 0
    inserted_ids: list[str] = field(default_factory=list)


_COMMON = "id, key, store_id, seq, received_at, clock_synced, data, stream_seq"


def _values(columns: str) -> str:
    return "VALUES (" + ", ".join(["%s"] * len(columns.split(","))) + ")"


_INSERT_SALE = f"""
INSERT INTO sales ({_COMMON}, till_id, receipt_no, kind, occurred_at, total)
{_values(_COMMON + ", till_id, receipt_no, kind, occurred_at, total")}
ON CONFLICT DO NOTHING
RETURNING id, store_id, till_id, receipt_no, occurred_at
"""

_INSERT_MOVEMENT = f"""
INSERT INTO stock_movements ({_COMMON}, till_id, movement_id, sku, delta, reason, occurred_at)
{_values(_COMMON + ", till_id, movement_id, sku, delta, reason, occurred_at")}
ON CONFLICT DO NOTHING
RETURNING id, store_id
"""

_INSERT_Z = f"""
INSERT INTO z_reports ({_COMMON}, till_id, z_no, opened_at, closed_at, first_receipt_no, last_receipt_no,
                       receipt_count, grand_total)
{_values(_COMMON + ", 1, 2, 3, 4, 5, 6, 7, 8")}
ON CONFLICT DO NOTHING
RETURNING id, store_id
"""

_INSERT_OTHER = f"""
INSERT INTO other_records ({_COMMON}, type)
{_values(_COMMON + ", type")}
ON CONFLICT DO NOTHING
RETURNING id, store_id
"""

_INSERT_UNREADABLE = """
INSERT INTO unreadable_messages (stream_seq, subject, payload, error) VALUES (%s, %s, %s, %s)
ON CONFLICT DO NOTHING
"""

_UPSERT_STATUS = """
INSERT INTO shops AS s (store_id, online, since, status, status_at, status_seq)
VALUES (%(store_id)s, %(online)s, %(at)s, %(status)s, %(at)s, %(seq)s)
ON CONFLICT (store_id) DO UPDATE SET
    since = CASE WHEN s.online IS DISTINCT FROM EXCLUDED.online THEN EXCLUDED.since ELSE s.since END,
    online = EXCLUDED.online, status = EXCLUDED.status, status_at = EXCLUDED.status_at,
    status_seq = EXCLUDED.status_seq
WHERE s.status_seq < EXCLUDED.status_seq
"""

_UPSERT_SHOP_RECORDS = """
INSERT INTO shops AS s (store_id, last_record_at, last_sale_at, records)
VALUES (%(store_id)s, now(), %(last_sale_at)s, %(records)s)
ON CONFLICT (store_id) DO UPDATE SET
    last_record_at = now(),
    last_sale_at = GREATEST(s.last_sale_at, EXCLUDED.last_sale_at),
    records = s.records + EXCLUDED.records
"""

_UPSERT_TILL = """
INSERT INTO tills AS t (store_id, till_id, first_receipt_no, last_receipt_no, receipts, last_sale_at)
VALUES (%(store_id)s, %(till_id)s, %(first)s, %(last)s, %(count)s, %(last_sale_at)s)
ON CONFLICT (store_id, till_id) DO UPDATE SET
    first_receipt_no = LEAST(t.first_receipt_no, EXCLUDED.first_receipt_no),
    last_receipt_no = GREATEST(t.last_receipt_no, EXCLUDED.last_receipt_no),
    receipts = t.receipts + EXCLUDED.receipts,
    last_sale_at = GREATEST(t.last_sale_at, EXCLUDED.last_sale_at)
"""


def _common(row: RecordRow) -> list[Any]:
    return [row.id, row.key, row.store_id, row.seq, row.received_at, row.clock_synced, Jsonb(row.data), row.stream_seq]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _z_values(data: dict[str, Any]) -> list[Any]:
    """A Z-report's typed columns, read tolerantly (NULL for what is absent or of another shape)."""
    total = data.get("grand_total")
    return [
        _text(data.get("till_id")),
        _int(data.get("z_no")),
        _text(data.get("opened_at")),
        _text(data.get("closed_at")),
        _int(data.get("first_receipt_no")),
        _int(data.get("last_receipt_no")),
        _int(data.get("receipt_count")),
        str(total) if isinstance(total, str | int) and not isinstance(total, bool) else None,
    ]


async def _insert(cursor: psycopg.AsyncCursor[Any], sql: str, params: list[list[Any]]) -> list[tuple[Any, ...]]:
    """``executemany`` with ``RETURNING``: the rows actually inserted."""
    if not params:
        return []
    await cursor.executemany(sql, params, returning=True)
    inserted: list[tuple[Any, ...]] = []
    while True:
        row = await cursor.fetchone()
        if row is not None:
            inserted.append(row)
        if not cursor.nextset():
            break
    return inserted


async def write_batch(conn: psycopg.AsyncConnection[Any], messages: list[Message]) -> BatchOutcome:
    """Store ``messages`` in one transaction; return what was new.

    The caller acknowledges the messages only after this returns (the commit is
    done); if it raises, nothing of the batch is stored and nothing is acknowledged.
    """
    sales: list[list[Any]] = []
    movements: list[list[Any]] = []
    zs: list[list[Any]] = []
    others: list[list[Any]] = []
    unreadable: list[list[Any]] = []
    statuses: list[StatusRow] = []
    records = 0
    for message in messages:
        if isinstance(message, StatusRow):
            statuses.append(message)
        elif isinstance(message, Unreadable):
            unreadable.append([message.stream_seq, message.subject, message.payload, message.error])
        else:
            records += 1
            record = message.record
            if isinstance(record, Sale):
                sales.append(
                    [
                        *_common(message),
                        record.till_id,
                        record.receipt_no,
                        record.kind,
                        record.occurred_at,
                        record.total,
                    ]
                )
            elif isinstance(record, StockMovement):
                movements.append(
                    [
                        *_common(message),
                        record.till_id,
                        record.movement_id,
                        record.sku,
                        record.delta,
                        record.reason,
                        record.occurred_at,
                    ]
                )
            elif isinstance(record, ZReport):
                zs.append(
                    [
                        *_common(message),
                        record.till_id,
                        record.z_no,
                        record.opened_at,
                        record.closed_at,
                        record.first_receipt_no,
                        record.last_receipt_no,
                        record.receipt_count,
                        record.grand_total,
                    ]
                )
            elif message.type == "z_report":  # a shape this agent.records does not know: kept tolerantly
                zs.append([*_common(message), *_z_values(message.data)])
            else:
                others.append([*_common(message), message.type])
    outcome = BatchOutcome(statuses=len(statuses), unreadable=len(unreadable))
    async with conn.transaction(), conn.cursor() as cursor:
        new_sales = await _insert(cursor, _INSERT_SALE, sales)
        new_rest = [
            *await _insert(cursor, _INSERT_MOVEMENT, movements),
            *await _insert(cursor, _INSERT_Z, zs),
            *await _insert(cursor, _INSERT_OTHER, others),
        ]
        if unreadable:
            await cursor.executemany(_INSERT_UNREADABLE, unreadable)
        outcome.inserted = len(new_sales) + len(new_rest)
        outcome.duplicates = records - outcome.inserted
        outcome.inserted_ids = [str(row[0]) for row in (*new_sales, *new_rest)]
        await _summaries(cursor, new_sales, new_rest, statuses)
    return outcome


async def _summaries(
    cursor: psycopg.AsyncCursor[Any],
    new_sales: list[tuple[Any, ...]],
    new_rest: list[tuple[Any, ...]],
    statuses: list[StatusRow],
) -> None:
    """Move the per-till and per-shop rows by what this batch inserted and the statuses it carried.

    Tills first, then shops, each in key order: every transaction locks summary
    rows in the same order, so concurrent workers never deadlock on them.
    """
    shops: dict[str, dict[str, Any]] = defaultdict(lambda: {"records": 0, "last_sale_at": None})
    tills: dict[tuple[str, str], dict[str, Any]] = {}
    for _id, store_id, till_id, receipt_no, occurred_at in new_sales:
        shop = shops[store_id]
        shop["records"] += 1
        shop["last_sale_at"] = _later(shop["last_sale_at"], occurred_at)
        till = tills.setdefault(
            (store_id, till_id), {"first": receipt_no, "last": receipt_no, "count": 0, "last_sale_at": occurred_at}
        )
        till["first"] = min(till["first"], receipt_no)
        till["last"] = max(till["last"], receipt_no)
        till["count"] += 1
        till["last_sale_at"] = _later(till["last_sale_at"], occurred_at)
    for _id, store_id in new_rest:
        shops[store_id]["records"] += 1
    for (store_id, till_id), till in sorted(tills.items()):
        await cursor.execute(_UPSERT_TILL, {"store_id": store_id, "till_id": till_id, **till})
    by_shop: dict[str, list[StatusRow]] = defaultdict(list)
    for status in statuses:
        by_shop[status.store_id].append(status)
    for store_id in sorted(set(shops) | set(by_shop)):
        if store_id in shops:
            await cursor.execute(_UPSERT_SHOP_RECORDS, {"store_id": store_id, **shops[store_id]})
        for status in sorted(by_shop.get(store_id, ()), key=lambda s: s.stream_seq):
            await cursor.execute(
                _UPSERT_STATUS,
                {
                    "store_id": store_id,
                    "online": status.online,
                    "at": status.stream_time,
                    "status": Jsonb(status.payload),
                    "seq": status.stream_seq,
                },
            )


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
