"""A shop's credentials reach only its own topics: the cluster refuses another shop's prefix."""

from __future__ import annotations

import json
from pathlib import Path

import aiomqtt
import pytest

from fleet.consume import connect_nats
from fleet.simulate import Chain, ShopPlan
from tests.fleet.conftest import SHOPS, ChainSide, ConsumerProcess
from tests.fleet.test_consume import POLL, rows, stored_ids
from tests.helpers import eventually

pytestmark = pytest.mark.slow


async def test_a_shop_cannot_publish_or_subscribe_under_another_shops_prefix(chain: ChainSide, tmp_path: Path) -> None:
    # A forged sale for shop-001, made by the simulator as shop-001 would send it.
    victim = Chain([ShopPlan("shop-001", SHOPS["shop-001"], receipts=1)], chain.mqtt_hosts)
    forged = next(victim.shops[0]._records())[0]
    worker = ConsumerProcess(chain, tmp_path / "worker.log")
    worker.start()
    host, port = chain.mqtt_hosts[0]
    try:
        async with aiomqtt.Client(
            host, port, username="shop-000", password=SHOPS["shop-000"], identifier="intruder"
        ) as client:
            await client.publish("kassabro/shop-001/sale", json.dumps(forged), qos=1)
            await client.publish("kassabro/shop-001/status", json.dumps({"online": False}), qos=1, retain=True)
            granted = await client.subscribe([("kassabro/shop-001/ingest/#", 1), ("kassabro/shop-000/ingest/#", 1)])
            # Then a legitimate record of its own, so "the forged one is not there" is not just "not yet".
            own = Chain([ShopPlan("shop-000", SHOPS["shop-000"], receipts=1)], chain.mqtt_hosts)
            marker = next(own.shops[0]._records())[0]
            await client.publish("kassabro/shop-000/sale", json.dumps(marker), qos=1)

        async def marker_stored() -> bool:
            return marker["id"] in await stored_ids(chain.dsn)

        await eventually(marker_stored, 30, lambda: f"the shop's own record stored\n{worker.log()}", **POLL)
        assert forged["id"] not in await stored_ids(chain.dsn)
        assert await rows(chain.dsn, "SELECT store_id FROM shops WHERE store_id = 'shop-001'") == []
        assert [int(code.value if hasattr(code, "value") else code) for code in granted] == [0x80, 1]

        nc = await connect_nats(chain.cluster.urls, "fleet", chain.cluster.fleet_password, "check")
        try:
            consumer = await nc.jetstream().consumer_info(chain.settings.stream, chain.settings.durable)
        finally:
            await nc.close()
        assert consumer.delivered.consumer_seq == 1, "the stream held only the shop's own record"
        assert 'Publish Violation - User "shop-000", Subject "kassabro.shop-001.sale"' in chain.cluster.nodes[
            0
        ].log_tail(20000)
    finally:
        worker.stop()
