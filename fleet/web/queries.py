"""What the fleet view reads from PostgreSQL, as plain typed rows.

Everything here is cheap at a thousand shops: the overview reads the
``shops`` and ``tills`` summary rows the consumer keeps, never the record
tables; only one shop's page looks at that shop's records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

__all__ = ["Destination", "ShopDetail", "ShopState", "shop_detail", "shops"]

PERSON_STATES = ("offline", "degraded", "paused")
"""Destination states (contract §4) that a person should look at."""


@dataclass(frozen=True)
class Destination:
    """One destination of a shop's agent, as its last status said."""

    name: str
    state: str | None
    pending: int
    dead_letters: int
    oldest_pending_age_s: float | None


@dataclass
class ShopState:
    """One shop in the overview."""

    store_id: str
    online: bool | None
    since: datetime | None
    status_at: datetime | None
    last_sale_at: datetime | None
    records: int
    missing_receipts: int
    version: str | None = None
    destinations: list[Destination] = field(default_factory=list)
    silent: bool = False

    @property
    def backlog(self) -> int:
        return sum(d.pending for d in self.destinations)

    @property
    def dead_letters(self) -> int:
        return sum(d.dead_letters for d in self.destinations)

    @property
    def troubled_destinations(self) -> list[Destination]:
        return [d for d in self.destinations if d.state in PERSON_STATES]

    @property
    def offline(self) -> bool:
        return self.online is False or self.silent

    @property
    def needs_person(self) -> bool:
        """Offline or silent, receipts missing, dead letters, or a destination not delivering."""
        return bool(self.offline or self.missing_receipts or self.dead_letters or self.troubled_destinations)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _destinations(status: dict[str, Any] | None) -> list[Destination]:
    entries = (status or {}).get("destinations")
    if not isinstance(entries, list):
        return []
    result = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        age = entry.get("oldest_pending_age_s")
        result.append(
            Destination(
                name=entry["name"],
                state=entry.get("state") if isinstance(entry.get("state"), str) else None,
                pending=_int(entry.get("pending")),
                dead_letters=_int(entry.get("dead_letters")),
                oldest_pending_age_s=float(age) if isinstance(age, int | float) else None,
            )
        )
    return result


_SHOPS = """
SELECT s.store_id, s.online, s.since, s.status, s.status_at, s.last_sale_at, s.records,
       COALESCE(t.missing, 0)::bigint
FROM shops s
LEFT JOIN (SELECT store_id, sum(last_receipt_no - first_receipt_no + 1 - receipts) AS missing
           FROM tills GROUP BY store_id) t USING (store_id)
"""


def _order(shop: ShopState) -> tuple[Any, ...]:
    """Needing a person first; among those, offline first and the longest offline first."""
    since = shop.since.timestamp() if shop.since else 0.0
    return (not shop.needs_person, not shop.offline, since if shop.offline else 0.0, shop.store_id)


async def shops(conn: psycopg.AsyncConnection[Any], now: datetime, stale_after: timedelta) -> list[ShopState]:
    """Every shop, the ones that need a person first."""
    cursor = await conn.execute(_SHOPS.encode())
    result = []
    for store_id, online, since, status, status_at, last_sale_at, records, missing in await cursor.fetchall():
        version = (status or {}).get("version")
        shop = ShopState(
            store_id=store_id,
            online=online,
            since=since,
            status_at=status_at,
            last_sale_at=last_sale_at,
            records=int(records),
            missing_receipts=int(missing),
            version=version if isinstance(version, str) else None,
            destinations=_destinations(status) if online else [],
        )
        shop.silent = bool(online and status_at is not None and now - status_at > stale_after)
        result.append(shop)
    result.sort(key=_order)
    return result


@dataclass(frozen=True)
class TillGaps:
    till_id: str
    first_receipt_no: int
    last_receipt_no: int
    receipts: int
    missing: list[int]

    @property
    def missing_count(self) -> int:
        return self.last_receipt_no - self.first_receipt_no + 1 - self.receipts


@dataclass(frozen=True)
class ZCheck:
    """One Z-report against the receipts the chain holds for its range."""

    till_id: str | None
    z_no: int | None
    first_receipt_no: int | None
    last_receipt_no: int | None
    receipt_count: int | None
    held: int
    grand_total: str | None


@dataclass
class ShopDetail:
    state: ShopState
    tills: list[TillGaps]
    z_reports: list[ZCheck]
    last_sales: list[tuple[str, int, datetime, str]]


_MISSING_SHOWN = 50


async def shop_detail(
    conn: psycopg.AsyncConnection[Any], store_id: str, now: datetime, stale_after: timedelta
) -> ShopDetail | None:
    """One shop's page: its state, the receipt numbers missing per till, its Z-reports, its last sales."""
    found = [s for s in await shops(conn, now, stale_after) if s.store_id == store_id]
    if not found:
        return None
    tills = []
    cursor = await conn.execute(
        b"SELECT till_id, first_receipt_no, last_receipt_no, receipts FROM tills WHERE store_id = %s ORDER BY 1",
        (store_id,),
    )
    for till_id, first, last, receipts in await cursor.fetchall():
        missing: list[int] = []
        if last - first + 1 > receipts:
            gaps = await conn.execute(
                b"SELECT n FROM generate_series(%s::bigint, %s::bigint) n"
                b" WHERE NOT EXISTS (SELECT 1 FROM sales WHERE store_id = %s AND till_id = %s AND receipt_no = n)"
                b" ORDER BY n LIMIT %s",
                (first, last, store_id, till_id, _MISSING_SHOWN),
            )
            missing = [int(row[0]) for row in await gaps.fetchall()]
        tills.append(TillGaps(till_id, int(first), int(last), int(receipts), missing))
    cursor = await conn.execute(
        b"SELECT z.till_id, z.z_no, z.first_receipt_no, z.last_receipt_no, z.receipt_count, z.grand_total::text,"
        b" (SELECT count(*) FROM sales s WHERE s.store_id = z.store_id AND s.till_id = z.till_id"
        b"   AND s.receipt_no BETWEEN z.first_receipt_no AND z.last_receipt_no)"
        b" FROM z_reports z WHERE z.store_id = %s ORDER BY z.closed_at DESC NULLS LAST, z.z_no DESC LIMIT 20",
        (store_id,),
    )
    zs = [ZCheck(t, z, f, last, c, int(h), g) for t, z, f, last, c, g, h in await cursor.fetchall()]
    cursor = await conn.execute(
        b"SELECT till_id, receipt_no, occurred_at, total::text FROM sales WHERE store_id = %s"
        b" ORDER BY occurred_at DESC, receipt_no DESC LIMIT 10",
        (store_id,),
    )
    last_sales = [(t, int(n), at, total) for t, n, at, total in await cursor.fetchall()]
    return ShopDetail(found[0], tills, zs, last_sales)
