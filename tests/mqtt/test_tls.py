"""TLS with a CA made in the test, client certificates, and username/password."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agent.config import ConfigError, build_config
from agent.destinations.base import RetryableError
from agent.destinations.mqtt import MqttDestination
from agent.mqtt import make_tls_context
from agent.outbox.types import Batch
from tests.mqtt.conftest import Mosquitto, Pki
from tests.mqtt.helpers import STORE_ID, collecting, config, envelopes

BASE = f"kassabro/{STORE_ID}"


def tls_config(port: int, pki: Pki, **keys: object):
    return config(
        port, tls=True, ca_file=pki.ca, cert_file=pki.client_cert, key_file=pki.client_key, publish_timeout_s=2, **keys
    )


async def test_connects_with_verification_and_a_client_certificate(tls_broker: Mosquitto, pki: Pki) -> None:
    reader_tls = make_tls_context(pki.ca, pki.client_cert, pki.client_key)
    destination = MqttDestination(tls_config(tls_broker.port, pki), store_id=STORE_ID)
    async with collecting(tls_broker.port, f"{BASE}/#", tls_context=reader_tls) as collector:
        await destination.start()
        try:
            records = envelopes(20)
            await destination.send(Batch("b1", "central", records))
            await collector.wait_for(lambda: len(collector.records) == 20, what="the records over TLS")
        finally:
            await destination.close()
    assert collector.records == records


async def test_refuses_a_broker_whose_certificate_another_ca_signed(impostor_broker: Mosquitto, pki: Pki) -> None:
    destination = MqttDestination(tls_config(impostor_broker.port, pki), store_id=STORE_ID)
    await destination.start()
    try:
        with pytest.raises(RetryableError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await destination.send(Batch("b1", "central", envelopes(1)))
        assert not destination.connected
    finally:
        await destination.close()


async def test_a_broker_requiring_a_client_certificate_refuses_us_without_one(tls_broker: Mosquitto, pki: Pki) -> None:
    cfg = config(tls_broker.port, tls=True, ca_file=pki.ca, publish_timeout_s=1)
    destination = MqttDestination(cfg, store_id=STORE_ID)
    await destination.start()
    try:
        with pytest.raises(RetryableError, match="not connected"):
            await destination.send(Batch("b1", "central", envelopes(1)))
    finally:
        await destination.close()


@pytest.fixture
def password_broker(tmp_path: Path) -> Mosquitto:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "store-1", "s3cret"], check=True, capture_output=True)
    server = Mosquitto(tmp_path / "pw-broker", password_file=passwd)
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


async def test_username_and_password_file(password_broker: Mosquitto, tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")  # surrounding whitespace is ignored
    bad.write_text("wrong")
    refused = MqttDestination(
        config(password_broker.port, username="store-1", password_file=bad, publish_timeout_s=1), store_id=STORE_ID
    )
    await refused.start()
    try:
        with pytest.raises(RetryableError, match="not connected"):
            await refused.send(Batch("b1", "central", envelopes(1)))
        assert refused.last_error and (
            "authori" in refused.last_error.lower() or "password" in refused.last_error.lower()
        )
    finally:
        await refused.close()
    accepted = MqttDestination(config(password_broker.port, username="store-1", password_file=good), store_id=STORE_ID)
    await accepted.start()
    try:
        await accepted.send(Batch("b1", "central", envelopes(1)))
    finally:
        await accepted.close()


def test_config_names_the_bad_key(tmp_path: Path) -> None:
    def problems(**keys: object) -> list[tuple[str, str]]:
        entry = {"name": "central", "kind": "mqtt", "host": "broker.example"} | keys
        with pytest.raises(ConfigError) as caught:
            build_config({"store_id": STORE_ID, "destinations": [entry]})
        return caught.value.problems

    assert problems(tls=True, ca_file=str(tmp_path / "missing.pem"))[0][0] == "destinations[0].ca_file"
    assert "tls" in problems(ca_file=__file__)[0][1]
    assert problems(topic_prefix="shop/#")[0][0] == "destinations[0].topic_prefix"
    assert problems(port=70000)[0][0] == "destinations[0].port"
    assert problems(username="u", password_file=str(tmp_path / "nope"))[0][0] == "destinations[0].password_file"
    assert problems(qos=2)[0][0] == "destinations[0].qos"
    plain = build_config({"store_id": STORE_ID, "destinations": [{"name": "c", "kind": "mqtt", "host": "h"}]})
    secure = build_config(
        {"store_id": STORE_ID, "destinations": [{"name": "c", "kind": "mqtt", "host": "h", "tls": True}]}
    )
    assert (plain.destinations[0].port, secure.destinations[0].port) == (1883, 8883)
    assert plain.destinations[0].topic_prefix == "kassabro" and plain.destinations[0].ingest is False
