"""``kassabro-fleet consume`` against the real cluster and PostgreSQL: every record once, by id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiomqtt
import psycopg
import pytest

from fleet.schema import migrate, migrations
from fleet.simulate import Chain, ShopPlan
from tests.fleet.conftest import SHOPS, ChainSide, ConsumerProcess
from tests.helpers import eventually

pytestmark = pytest.mark.slow


POLL: dict[str, Any] = {"interval": 0.2, "ignoring": (psycopg.errors.UndefinedTable,)}
"""How the tests poll PostgreSQL: every 0.2 s, "no table yet" (the worker has not migrated) is "not yet"."""


async def rows(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(sql.encode(), params or None)
        return await cursor.fetchall()


async def stored_ids(dsn: str) -> list[str]:
    """Every record id in every record table (a duplicate would appear twice)."""
    result = await rows(
        dsn,
        "SELECT id::text FROM sales UNION ALL SELECT id::text FROM stock_movements"
        " UNION ALL SELECT id::text FROM z_reports UNION ALL SELECT id::text FROM other_records",
    )
    return [row[0] for row in result]


async def test_every_record_once_resends_change_nothing(chain: ChainSide, tmp_path: Path) -> None:
    plans = [ShopPlan(store, SHOPS[store], receipts=12, z_every=5) for store in ("shop-000", "shop-001", "shop-002")]
    simulated = Chain(plans, chain.mqtt_hosts, ramp_s=0)
    worker = ConsumerProcess(chain, tmp_path / "worker.log")
    worker.start()
    try:
        await simulated.start()
        assert await simulated.wait_done(60), "the shops did not get every record acknowledged"
        acked = simulated.acked_ids
        # 12 receipts x (1 sale + 2 movements) + 3 Z-reports, per shop
        assert len(acked) == 3 * (12 * 3 + 3)

        async def all_stored() -> bool:
            return set(await stored_ids(chain.dsn)) >= acked

        await eventually(all_stored, 60, lambda: f"every acknowledged record in PostgreSQL\n{worker.log()}", **POLL)
        ids = await stored_ids(chain.dsn)
        assert len(ids) == len(set(ids)) == len(acked)
        z = await rows(
            chain.dsn, "SELECT store_id, z_no, first_receipt_no, last_receipt_no FROM z_reports ORDER BY 1, 2"
        )
        assert z[:3] == [("shop-000", 1, 1, 5), ("shop-000", 2, 6, 10), ("shop-000", 3, 11, 12)]
        tills = await rows(
            chain.dsn, "SELECT store_id, first_receipt_no, last_receipt_no, receipts FROM tills ORDER BY 1"
        )
        assert tills == [(store, 1, 12, 12) for store in ("shop-000", "shop-001", "shop-002")]

        # The same envelopes again, as an agent resends a batch whose PUBACKs it lost.
        resent = await rows(
            chain.dsn, "SELECT store_id, key, id::text, seq, data FROM sales WHERE store_id = 'shop-001'"
        )
        host, port = chain.mqtt_hosts[1]
        async with aiomqtt.Client(
            host, port, username="shop-001", password=SHOPS["shop-001"], identifier="resender"
        ) as client:
            for store_id, key, record_id, seq, data in resent:
                envelope = {"id": record_id, "key": key, "type": "sale", "store_id": store_id, "seq": seq,
                            "received_at": "2026-11-26T13:59:01.120Z", "clock_synced": True, "data": data}  # fmt: skip
                await client.publish("kassabro/shop-001/sale", json.dumps(envelope), qos=1)
            await client.publish("kassabro/shop-001/sale", b"{not json", qos=1)

        async def garbage_kept() -> bool:
            return bool(await rows(chain.dsn, "SELECT 1 FROM unreadable_messages"))

        await eventually(garbage_kept, 30, "the unreadable message set aside", **POLL)
        ids = await stored_ids(chain.dsn)
        assert len(ids) == len(set(ids)) == len(acked)
        assert await rows(chain.dsn, "SELECT receipts FROM tills WHERE store_id = 'shop-001'") == [(12,)]
        status = await rows(chain.dsn, "SELECT store_id, online FROM shops ORDER BY 1")
        assert status == [("shop-000", True), ("shop-001", True), ("shop-002", True)]
    finally:
        await simulated.stop()
        worker.stop()


async def test_migrations_apply_once(chain: ChainSide) -> None:
    async with await psycopg.AsyncConnection.connect(chain.dsn, autocommit=True) as conn:
        first, again = await migrate(conn), await migrate(conn)
        assert first == [m.version for m in migrations()] and again == []
        cursor = await conn.execute(b"SELECT version FROM schema_migrations")
        assert [row[0] for row in await cursor.fetchall()] == first
