"""MQTT ingest against a real Mosquitto, the real Ingestor and a real outbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from agent.ingest import Ingestor
from agent.outbox.service import Outbox
from agent.sources.mqtt import MqttIngestSource
from tests.helpers import make_movement, make_sale
from tests.mqtt.conftest import Mosquitto
from tests.mqtt.helpers import STORE_ID, Collector, collecting, config

BASE = f"kassabro/{STORE_ID}"


@contextlib.asynccontextmanager
async def ingesting(broker: Mosquitto, outbox: Outbox) -> AsyncIterator[tuple[MqttIngestSource, Collector]]:
    """The source running, and a collector on the rejected topic."""
    source = MqttIngestSource(config(broker.port, ingest=True), store_id=STORE_ID, ingestor=Ingestor(outbox))
    async with collecting(broker.port, f"{BASE}/ingest/rejected", client_id="till-watch") as rejected:
        await source.start()
        try:
            for _ in range(200):  # bounded: the source subscribes right after connecting
                if source.connected:
                    break
                await asyncio.sleep(0.02)
            yield source, rejected
        finally:
            await source.close()


async def publish(port: int, *messages: tuple[str, Any]) -> None:
    """A till publishing with QoS 1, one record per message."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="till") as till:
        for topic, body in messages:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            await till.publish(topic, payload, qos=1)


async def stored(outbox: Outbox, key: str, timeout_s: float = 10.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        record = await outbox.get_record(key)
        if record is not None:
            return record
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key} was never stored")


async def test_valid_records_are_stored_like_http_ingest(broker: Mosquitto, outbox: Outbox) -> None:
    async with ingesting(broker, outbox):
        await publish(
            broker.port, (f"{BASE}/ingest/sale", make_sale(1)), (f"{BASE}/ingest/stock_movement", make_movement(1))
        )
        record = await stored(outbox, "sale:kassa-1:1")
        assert record["record"]["data"]["total"] == "31.80"
        assert record["record"]["store_id"] == STORE_ID
        movement = await stored(outbox, "stock_movement:kassa-1:d-1")
        assert movement["record"]["data"]["delta"] == "24.000"
        # derived from the sale line, in the same transaction (contract §1)
        assert await outbox.get_record("stock_movement:kassa-1:r1.0") is not None


async def test_invalid_and_conflicting_records_are_answered_on_rejected(broker: Mosquitto, outbox: Outbox) -> None:
    bad = make_sale(2, total="99.00", payments=[{"method": "card", "amount": "99.00"}])  # the lines say 31.80
    async with ingesting(broker, outbox) as (_, rejected):
        await publish(
            broker.port,
            (f"{BASE}/ingest/sale", make_sale(3)),
            (f"{BASE}/ingest/sale", bad),
            (f"{BASE}/ingest/stock_movement", b"{not json"),
            (f"{BASE}/ingest/sale", make_sale(3, sku="x", price="40.00", quantity=1, vat_rate=25)),
        )
        await rejected.wait_for(lambda: len(rejected.messages) >= 3, what="three rejections")
        answers = [m.json() for m in rejected.messages]
    invalid, malformed, conflict = answers
    assert invalid["topic"] == f"{BASE}/ingest/sale"
    assert invalid["status"] == 422 and invalid["error"] == "validation"
    assert invalid["key"] == "sale:kassa-1:2"
    assert any("total" in str(d["loc"]) for d in invalid["details"])
    assert malformed["status"] == 422 and "key" not in malformed
    assert malformed["topic"] == f"{BASE}/ingest/stock_movement"
    assert conflict["status"] == 409 and conflict["error"] == "conflict" and conflict["key"] == "sale:kassa-1:3"
    assert await outbox.get_record("sale:kassa-1:2") is None
    kept = await outbox.get_record("sale:kassa-1:3")
    assert kept is not None and kept["record"]["data"]["total"] == "31.80" and kept["conflicts"] == 1


async def test_duplicates_are_harmless_and_other_topics_ignored(broker: Mosquitto, outbox: Outbox) -> None:
    async with ingesting(broker, outbox) as (_, rejected):
        await publish(
            broker.port,
            (f"{BASE}/ingest/sale", make_sale(4)),
            (f"{BASE}/ingest/sale", make_sale(4)),
            (f"{BASE}/ingest/refund", make_sale(5)),
            ("kassabro/store-2/ingest/sale", make_sale(6)),
            (f"{BASE}/sale", make_sale(7)),
            (f"{BASE}/ingest/sale", make_sale(8)),  # last: once it is stored, the others were seen
        )
        await stored(outbox, "sale:kassa-1:8")
        first = await outbox.get_record("sale:kassa-1:4")
        assert first is not None and first["conflicts"] == 0
        for receipt_no in (5, 6, 7):
            assert await outbox.get_record(f"sale:kassa-1:{receipt_no}") is None
        assert rejected.messages == []
        stats = await outbox.outbox_stats()
    assert stats["records"] == 4  # sales 4 and 8, each with its derived movement


async def test_storage_full_is_not_acknowledged_and_redelivered_later(broker: Mosquitto, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "full.db", store_id=STORE_ID, max_bytes=1)  # full from the start
    await box.start()
    try:
        async with ingesting(broker, box) as (_source, rejected):
            await publish(broker.port, (f"{BASE}/ingest/sale", make_sale(9)))
            await rejected.wait_for(lambda: rejected.messages, what="the storage_full answer")
            answer = rejected.messages[0].json()
            assert answer["status"] == 507 and answer["error"] == "storage_full"
            assert answer["key"] == "sale:kassa-1:9"
            assert await box.get_record("sale:kassa-1:9") is None
            # Space comes back; the broker still holds the unacknowledged message.
            await box.call(lambda store: setattr(store, "max_bytes", 2 * 1024**3))
            record = await stored(box, "sale:kassa-1:9")
            assert record["record"]["data"]["receipt_no"] == 9
    finally:
        await box.close()


async def test_z_reports_come_in_on_their_own_topic(broker: Mosquitto, outbox: Outbox) -> None:
    from tests.helpers import make_z_report

    async with ingesting(broker, outbox) as (_, rejected):
        await publish(
            broker.port,
            (f"{BASE}/ingest/z_report", make_z_report(245, 1001, 1012, receipt_count=13)),
            (f"{BASE}/ingest/z_report", make_z_report(245, 1001, 1012)),
        )
        record = await stored(outbox, "z_report:kassa-1:245")
        await rejected.wait_for(lambda: len(rejected.messages) >= 1, what="the refused Z-report")
        refused = rejected.messages[0].json()
    assert record["record"]["type"] == "z_report" and record["record"]["data"]["receipt_count"] == 12
    assert refused["topic"] == f"{BASE}/ingest/z_report" and refused["status"] == 422
    assert refused["key"] == "z_report:kassa-1:245"
    assert refused["details"][0]["loc"] == ["receipt_count"]


async def test_huge_numbers_and_lone_surrogates_are_rejected_and_never_block_the_next(
    broker: Mosquitto, outbox: Outbox
) -> None:
    # Before: int() of 5000 digits raised out of the message handler, the session ended and the
    # broker redelivered the message forever; a lone surrogate failed the store and was never acked.
    huge = json.dumps(make_sale(20, receipt_no="@@")).replace('"@@"', "9" * 5000).encode()
    lone = json.dumps(make_sale(21)).replace('"7310865004703"', '"\\ud800"').encode()
    async with ingesting(broker, outbox) as (_, rejected):
        await publish(broker.port, (f"{BASE}/ingest/sale", huge), (f"{BASE}/ingest/sale", lone))
        await publish(broker.port, (f"{BASE}/ingest/sale", make_sale(22)))
        await stored(outbox, "sale:kassa-1:22")
        await rejected.wait_for(lambda: len(rejected.messages) >= 2, what="two rejections")
        answers = [m.json() for m in rejected.messages]
    assert [a["status"] for a in answers] == [422, 422]
    assert answers[0]["details"] == [{"loc": ["receipt_no"], "msg": "receipt_no has more than 20 significant digits"}]
    assert answers[1]["key"] == "sale:kassa-1:21"
    assert answers[1]["details"][0]["loc"] == ["lines", 0, "sku"]
    assert await outbox.get_record("sale:kassa-1:21") is None
