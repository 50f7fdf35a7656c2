"""MQTT destination throughput against a bare aiomqtt QoS 1 publish loop.

``python -m bench.bench_mqtt [--records 100000] [--batch 500]`` starts a local
Mosquitto on a free loopback port and, in the same run and on the same broker,
publishes the same envelopes three ways:

- bare aiomqtt, one at a time: ``await client.publish(..., qos=1)`` in a loop;
- bare aiomqtt, windowed: each batch's publishes gathered at once, aiomqtt's
  ``max_concurrent_outgoing_calls`` holding them to the same in-flight limit
  the destination uses (the fair comparison);
- ``MqttDestination.send`` per batch (envelope encoding included; the bare
  loops get pre-encoded payloads).

It prints records per second and the destination's ratio to each loop, on a
broker with Mosquitto's defaults and again with ``set_tcp_nodelay true``
(see ``mosquitto``). The targets: >= 70 % of the windowed loop, >= 2x the
one-at-a-time loop (issue 16).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt

from agent.destinations.mqtt import MqttDestination, encode_envelope
from agent.mqtt import MqttDestinationConfig
from agent.outbox.types import Batch

STORE_ID = "bench-store"
TARGET = 0.70


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BROKER_PID: list[int] = []
"""The running broker's pid, for its CPU per message."""


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def mosquitto(nodelay: bool = False) -> Iterator[int]:
    """A throwaway broker on 127.0.0.1; yields its port.

    ``nodelay``: Mosquitto's ``set_tcp_nodelay true``. By default Mosquitto
    leaves Nagle's algorithm on its clients' sockets, so with many publishes
    in flight each small PUBACK waits for the ACK of the one before: the
    broker's own latency caps any pipelined publisher, while a one-at-a-time
    loop (one PUBACK outstanding) never meets it. Measured both ways.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="kassabro-bench-mqtt-") as workdir:
        port = _free_port()
        conf = Path(workdir) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
            + ("set_tcp_nodelay true\n" if nodelay else "")
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        BROKER_PID[:] = [proc.pid]
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.02)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


def make_envelopes(count: int) -> list[dict[str, Any]]:
    """Envelopes shaped like a real sale's (about 450 bytes of JSON each)."""
    data = {
        "till_id": "kassa-1", "occurred_at": "2026-11-26T14:59:01+01:00", "kind": "sale", "currency": "SEK",
        "lines": [{"sku": "7310865004703", "name": "Mjölk 1,5%", "quantity": "2.000", "unit_price": "15.90",
                   "vat_rate": 12, "discount": "0.00"}],
        "fees": [], "discount": "0.00", "rounding": "0.00", "total": "31.80",
        "payments": [{"method": "card", "amount": "31.80"}],
    }  # fmt: skip
    return [
        {"id": str(uuid.uuid4()), "key": f"sale:kassa-1:{seq}", "type": "sale", "store_id": STORE_ID, "seq": seq,
         "received_at": "2026-11-26T13:59:01.120Z", "clock_synced": True, "data": {**data, "receipt_no": seq}}
        for seq in range(1, count + 1)
    ]  # fmt: skip


def _config(port: int, batch: int) -> MqttDestinationConfig:
    return MqttDestinationConfig(
        name="bench", host="127.0.0.1", port=port, batch_max=batch, publish_timeout_s=60,
        backoff_base_s=1.0, backoff_cap_s=300.0,
    )  # fmt: skip


def _bare_client(port: int, config: MqttDestinationConfig, identifier: str) -> aiomqtt.Client:
    # aiomqtt's own window (a semaphore over outgoing calls) keeps as many
    # publishes in flight as the destination does.
    client = aiomqtt.Client(
        "127.0.0.1", port, identifier=identifier, timeout=60, max_inflight_messages=config.max_inflight,
        max_concurrent_outgoing_calls=config.max_inflight,
    )  # fmt: skip
    client.pending_calls_threshold = config.max_inflight + 10  # no warning per call for the window we chose
    return client


async def bare_sequential(port: int, envelopes: list[dict[str, Any]], config: MqttDestinationConfig) -> None:
    topic = f"kassabro/{STORE_ID}/sale"
    payloads = [encode_envelope(e) for e in envelopes]
    async with _bare_client(port, config, "bench-bare-seq") as client:
        for payload in payloads:
            await client.publish(topic, payload, qos=1)


async def bare_windowed(port: int, envelopes: list[dict[str, Any]], config: MqttDestinationConfig) -> None:
    topic = f"kassabro/{STORE_ID}/sale"
    payloads = [encode_envelope(e) for e in envelopes]
    size = config.batch_max
    async with _bare_client(port, config, "bench-bare-window") as client:
        for start in range(0, len(payloads), size):
            await asyncio.gather(*(client.publish(topic, p, qos=1) for p in payloads[start : start + size]))


async def destination(port: int, envelopes: list[dict[str, Any]], config: MqttDestinationConfig) -> None:
    dest = MqttDestination(config, store_id=STORE_ID)
    await dest.start()
    try:
        await dest.send(Batch("warm-up", "bench", envelopes[:1]))  # waits for the connection
        size = config.batch_max
        for number, start in enumerate(range(0, len(envelopes), size)):
            await dest.send(Batch(f"b{number}", "bench", envelopes[start : start + size]))
    finally:
        await dest.close()


Runner = Callable[[int, list[dict[str, Any]], MqttDestinationConfig], Awaitable[None]]


BROKER_US: dict[str, float] = {}
"""Mosquitto's CPU per message during each publisher's run (µs): one thread, so about 1e6 / this
messages a second is all the broker can take, whichever publisher."""
CPU_US: dict[str, float] = {}
"""The publishing process's CPU per message of each publisher (µs): on a shared machine the
wall-clock rates swing with the neighbours' load, the CPU a message costs much less."""


async def _timed(runner: Runner, port: int, envelopes: list[dict[str, Any]], config: MqttDestinationConfig) -> float:
    started, cpu, broker = time.perf_counter(), time.process_time(), _cpu_of(BROKER_PID[0])
    await runner(port, envelopes, config)
    CPU_US[runner.__name__] = (time.process_time() - cpu) / len(envelopes) * 1e6
    BROKER_US[runner.__name__] = (_cpu_of(BROKER_PID[0]) - broker) / len(envelopes) * 1e6
    return time.perf_counter() - started


async def run(records: int, batch: int, sequential_records: int, nodelay: bool = False) -> dict[str, float]:
    envelopes = make_envelopes(records)
    rates: dict[str, float] = {}
    with mosquitto(nodelay) as port:
        config = _config(port, batch)
        await _timed(bare_windowed, port, envelopes[: min(2000, records)], config)  # warm the broker up
        seq_part = envelopes[:sequential_records]
        rates["bare aiomqtt, one at a time"] = len(seq_part) / await _timed(bare_sequential, port, seq_part, config)
        rates[f"bare aiomqtt, {batch} gathered"] = records / await _timed(bare_windowed, port, envelopes, config)
        rates["MqttDestination.send"] = records / await _timed(destination, port, envelopes, config)
    return rates


def print_table(rates: dict[str, float], records: int, batch: int, max_inflight: int, broker: str) -> None:
    windowed = next(v for k, v in rates.items() if "gathered" in k)
    sequential = rates["bare aiomqtt, one at a time"]
    ours = rates["MqttDestination.send"]
    print(
        f"MQTT QoS 1 to a local Mosquitto ({broker}): {records} records, batches of {batch}, {max_inflight} in flight"
    )
    print(
        f"{'publisher':<32} {'records/s':>10} {'destination / this':>20} {'CPU µs per message':>20}"
        f" {'broker CPU µs per message':>26}"
    )
    runners = ("bare_sequential", "bare_windowed", "destination")
    cpu = dict(zip(rates, (CPU_US.get(n, float("nan")) for n in runners), strict=True))
    at_broker = dict(zip(rates, (BROKER_US.get(n, float("nan")) for n in runners), strict=True))
    for name, rate in rates.items():
        print(f"{name:<32} {rate:>10,.0f} {ours / rate:>19.0%} {cpu[name]:>20.0f} {at_broker[name]:>26.0f}")
    verdict = "meets" if ours >= TARGET * windowed else "MISSES"
    print(f"destination vs windowed loop: {ours / windowed:.0%} ({verdict} the {TARGET:.0%} target); "
          f"vs one-at-a-time loop: {ours / sequential:.1f}x (target >= 2x: "
          f"{'met' if ours >= 2 * sequential else 'NOT met'})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_mqtt", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="records per send() (the default batch_max)")
    parser.add_argument("--sequential-records", type=int, default=20_000,
                        help="records for the slow one-at-a-time loop (its rate does not depend on the count)")  # fmt: skip
    args = parser.parse_args(argv if argv is not None else [])
    for nodelay, broker in ((False, "its defaults"), (True, "set_tcp_nodelay true")):
        rates = asyncio.run(run(args.records, args.batch, min(args.sequential_records, args.records), nodelay))
        print_table(rates, args.records, args.batch, _config(1883, args.batch).max_inflight, broker)
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
