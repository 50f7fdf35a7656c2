"""``kassabro run`` with an mqtt destination, SIGKILLed mid-publish and restarted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt

from tests.helpers import free_port, make_sale, stored_keys, wait_for_port
from tests.mqtt.conftest import Mosquitto
from tests.mqtt.helpers import STORE_ID, collecting

BASE = f"kassabro/{STORE_ID}"
SALES = 1500  # each with one derived stock movement: 3000 records


def write_config(tmp_path: Path, broker_port: int, *, ingest: bool = False) -> tuple[Path, int]:
    ingest_port, status_port = free_port(), free_port()
    config = tmp_path / "kassabro.toml"
    config.write_text(
        f"""
store_id = "{STORE_ID}"
data_dir = "{tmp_path / 'data'}"

[ingest]
listen = "127.0.0.1:{ingest_port}"

[status]
listen = "127.0.0.1:{status_port}"

[[destinations]]
name = "central"
kind = "mqtt"
host = "127.0.0.1"
port = {broker_port}
batch_max = 50
backoff_base_s = 0.05
backoff_cap_s = 0.5
ingest = {'true' if ingest else 'false'}
"""
    )
    return config, ingest_port


def kassabro(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())", *args]


def start_agent(config: Path, ingest_port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as stderr:
        proc = subprocess.Popen(
            kassabro("run", "--config", str(config)),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if not wait_for_port(ingest_port):
        proc.kill()
        raise AssertionError(f"the agent did not start: {log.read_text()[-3000:]}")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_agent_sigkilled_mid_publish_publishes_the_unacknowledged_again(
    broker: Mosquitto, tmp_path: Path
) -> None:
    config, ingest_port = write_config(tmp_path, broker.port)
    batch = tmp_path / "sales.json"
    batch.write_text(json.dumps({"sales": [make_sale(n) for n in range(1, SALES + 1)]}))
    submitted = await asyncio.to_thread(
        subprocess.run, kassabro("submit", "--config", str(config), str(batch)), capture_output=True, timeout=60, check=False
    )
    assert submitted.returncode == 0, submitted.stderr.decode()
    expected = stored_keys(tmp_path / "data" / "outbox.db")
    assert len(expected) == 2 * SALES

    log = tmp_path / "agent.log"
    async with collecting(broker.port, f"{BASE}/#") as collector:
        agent = start_agent(config, ingest_port, log)
        try:
            await collector.wait_for(lambda: len(collector.records) >= 300, timeout_s=30, what="publishing to start")
            agent.send_signal(signal.SIGKILL)
            agent.wait(5)
            seen_at_kill = len(collector.records)
            agent = start_agent(config, ingest_port, log)
            await collector.wait_for(
                lambda: len(collector.records) >= len(expected), timeout_s=60, what="every record after the restart"
            )
        finally:
            stop(agent)
    assert seen_at_kill < len(expected), "the agent finished before it was killed; nothing was proved"
    got = {e["key"]: (e["id"], e["seq"]) for e in collector.records}
    assert got == expected  # every record, with the id and seq it was stored with
    seqs = [e["seq"] for e in collector.records]
    assert seqs == sorted(seqs)


async def test_mqtt_ingest_through_the_running_agent(broker: Mosquitto, tmp_path: Path) -> None:
    config, ingest_port = write_config(tmp_path, broker.port, ingest=True)
    log = tmp_path / "agent.log"

    def arrived() -> bool:
        return any(e["key"] == "sale:kassa-1:77" for e in collector.records)

    async with collecting(broker.port, f"{BASE}/#") as collector:
        agent = start_agent(config, ingest_port, log)
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="till") as till:
                # The agent subscribes a moment after it starts; until then a
                # message has no taker. Resending is harmless (a duplicate).
                for _ in range(40):
                    await till.publish(f"{BASE}/ingest/sale", json.dumps(make_sale(77)).encode(), qos=1)
                    with contextlib.suppress(AssertionError):
                        await collector.wait_for(arrived, timeout_s=0.5, what="the sale")
                    if arrived():
                        break
            assert arrived(), f"the sale published on MQTT never came out: {log.read_text()[-3000:]}"
        finally:
            stop(agent)
    envelope = next(e for e in collector.records if e["key"] == "sale:kassa-1:77")
    assert envelope["store_id"] == STORE_ID and envelope["data"]["receipt_no"] == 77
    assert [e["key"] for e in collector.records].count("sale:kassa-1:77") == 1
