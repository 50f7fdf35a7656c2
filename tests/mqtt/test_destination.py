"""The mqtt destination against a real Mosquitto: topics, payloads, order, status."""

from __future__ import annotations

import signal

import pytest

from agent import __version__
from agent.destinations.base import Destination, PermanentError, RetryableError
from agent.destinations.mqtt import MqttDestination
from agent.outbox.types import Batch
from tests.mqtt.conftest import Mosquitto
from tests.mqtt.helpers import STORE_ID, collecting, config, envelopes


async def test_records_arrive_once_after_dedupe_in_seq_order(broker: Mosquitto) -> None:
    records = envelopes(600)
    destination = MqttDestination(config(broker.port), store_id=STORE_ID)
    assert isinstance(destination, Destination)
    base = f"kassabro/{STORE_ID}"
    async with collecting(broker.port, f"{base}/#") as collector:
        await destination.start()
        try:
            for number, start in enumerate(range(0, len(records), 50)):
                batch = Batch(f"b{number}", "central", records[start : start + 50])
                assert (await destination.send(batch)).rejected == {}
            # A batch resent after a lost acknowledgement: the consumer drops the repeats.
            assert (await destination.send(Batch("b0", "central", records[:50]))).rejected == {}
            await collector.wait_for(
                lambda: len(collector.on(f"{base}/sale")) + len(collector.on(f"{base}/stock_movement")) >= 650,
                what="every publish, repeats included",
            )
        finally:
            await destination.close()
    got = collector.records
    assert [e["seq"] for e in got] == list(range(1, 601))
    assert got == records  # the payload is the envelope, unchanged
    for message in collector.messages:
        if message.topic.endswith(("/sale", "/stock_movement")):
            assert message.topic == f"{base}/{message.json()['type']}"


PROBLEM = {
    "code": "z_missing_receipts",
    "text": "Kassa 1, Z 245: 1 kvitto saknas (1004)",
    "text_en": "Till 1, Z 245: 1 receipt missing (1004)",
    "since": "2026-11-26T19:05:02.000Z",
}
TILL = {"till_id": "kassa-1", "last_receipt_no": 1012, "last_received_at": None, "missing_receipts": 1,
        "missing": [1004], "last_z": None}  # fmt: skip


async def test_status_online_on_connect_and_offline_on_clean_close(broker: Mosquitto) -> None:
    async def status_source() -> dict:
        return {
            "store_id": STORE_ID,
            "version": __version__,
            "uptime_s": 12.5,
            "destinations": [
                {"name": "hogia", "kind": "hogia", "state": "offline", "pending": 7,
                 "oldest_pending_age_s": 42.0, "dead_letters": 1, "last_error": "boom"},
            ],
            "problems": [PROBLEM],
            "tills": [TILL],
        }  # fmt: skip

    status_topic = f"shop/{STORE_ID}/status"
    destination = MqttDestination(
        config(broker.port, topic_prefix="shop", status_interval_s=0.2), store_id=STORE_ID, status_source=status_source
    )
    async with collecting(broker.port, status_topic) as collector:
        await destination.start()
        await collector.wait_for(lambda: len(collector.on(status_topic)) >= 3, what="status, refreshed")
        online = collector.on(status_topic)[0].json()
        assert online["online"] is True
        assert online["store_id"] == STORE_ID and online["version"] == __version__
        assert online["destinations"] == [
            {"name": "hogia", "pending": 7, "oldest_pending_age_s": 42.0, "dead_letters": 1, "state": "offline"}
        ]
        assert online["problems"] == [PROBLEM] and online["tills"] == [TILL]  # incomplete books, seen centrally
        await destination.close()
        await collector.wait_for(lambda: collector.on(status_topic)[-1].json()["online"] is False, what="offline")
    # It is retained: a newcomer sees the last word at once.
    async with collecting(broker.port, status_topic, client_id="late-reader") as late:
        await late.wait_for(lambda: late.on(status_topic), what="the retained status")
        assert late.on(status_topic)[0].retain
        assert late.on(status_topic)[0].json()["online"] is False


async def test_send_without_a_broker_is_retryable_and_names_the_cause(broker: Mosquitto) -> None:
    broker.stop()
    destination = MqttDestination(config(broker.port, publish_timeout_s=0.5), store_id=STORE_ID)
    await destination.start()
    try:
        with pytest.raises(RetryableError, match="not connected"):
            await destination.send(Batch("b1", "central", envelopes(3)))
        assert destination.last_error
        assert not destination.connected
    finally:
        await destination.close()


async def test_a_broker_that_stops_answering_is_retryable_after_the_publish_timeout(broker: Mosquitto) -> None:
    destination = MqttDestination(config(broker.port, publish_timeout_s=0.5), store_id=STORE_ID)
    await destination.start()
    try:
        assert (await destination.send(Batch("b1", "central", envelopes(3)))).rejected == {}
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)  # the TCP connection stays up; no PUBACK comes
        try:
            with pytest.raises(RetryableError, match=r"^mqtt 'central': no PUBACK within 0.5s$"):
                await destination.send(Batch("b2", "central", envelopes(3, first_seq=4)))
        finally:
            broker.proc.send_signal(signal.SIGCONT)
    finally:
        await destination.close()


async def test_a_record_the_client_cannot_publish_is_refused_for_good(broker: Mosquitto) -> None:
    """A topic MQTT forbids (a wildcard from the record's type) can never be sent: permanent, so the
    delivery loop dead-letters that record instead of retrying the batch for ever."""
    [record] = envelopes(1)
    record["type"] = "sale/#"
    destination = MqttDestination(config(broker.port), store_id=STORE_ID)
    await destination.start()
    try:
        with pytest.raises(PermanentError, match=r"^mqtt 'central': record refused by the client: .*wildcard"):
            await destination.send(Batch("b1", "central", [record]))
    finally:
        await destination.close()
