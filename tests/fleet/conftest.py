"""The chain's side for real: a 3-node nats-server cluster (JetStream + MQTT gateway) and a PostgreSQL.

Both start once per session (``fleet.localcluster``, shared with the benchmark)
on free loopback ports. Every shop the tests use has its own user in the
cluster, fenced to its own topics. ``chain`` gives each test an empty stream
and a database of its own, so tests never see each other's records.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from fleet.consume import connect_nats
from fleet.localcluster import LocalPostgres, NatsCluster, shop_password
from fleet.stream import StreamSettings, ensure_consumer, ensure_stream
from tests.web.conftest import browser, chromium  # noqa: F401  (the shared headless Chromium)

SIMULATED_SHOPS = [f"shop-{i:03d}" for i in range(200)]
AGENT_SHOPS = ["agent-1", "agent-2"]
SHOPS = {store: shop_password(store) for store in [*SIMULATED_SHOPS, *AGENT_SHOPS]}
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path_factory.mktemp("nats"), SHOPS)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    server = LocalPostgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@dataclass
class ChainSide:
    """One test's view of the chain: the cluster, an empty stream, and a database of its own."""

    cluster: NatsCluster
    dsn: str
    settings: StreamSettings

    @property
    def mqtt_hosts(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.mqtt_port) for node in self.cluster.nodes]


async def _reset_stream(cluster: NatsCluster, settings: StreamSettings) -> None:
    """An empty stream with a fresh durable consumer: the last test's consumer and records are gone.

    The stream itself stays (the MQTT gateway holds on to it); its consumers
    are deleted and the chain's subjects purged.
    """
    nc = await connect_nats(cluster.urls, cluster.fleet_user, cluster.fleet_password, "tests")
    try:
        js = nc.jetstream(timeout=10)
        for attempt in range(100):  # right after start-up the cluster may still elect its leaders
            try:
                await ensure_stream(js, settings)
                for consumer in await js.consumers_info(settings.stream):
                    await js.delete_consumer(settings.stream, consumer.name)
                await js.purge_stream(settings.stream, subject=f"{settings.subject_prefix}.>")
                # The consumer must exist before any shop publishes: with interest
                # retention a message nobody is subscribed to is dropped at once.
                await ensure_consumer(js, settings)
                return
            except Exception:
                if attempt == 99:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


@pytest.fixture
async def chain(nats_cluster: NatsCluster, postgres: LocalPostgres) -> AsyncIterator[ChainSide]:
    settings = StreamSettings(ack_wait_s=5.0)
    await _reset_stream(nats_cluster, settings)
    name = f"fleet_{os.getpid()}_{next(_databases)}"
    async with await psycopg.AsyncConnection.connect(postgres.dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {name}".encode())
    yield ChainSide(nats_cluster, postgres.dsn.replace(f"dbname={postgres.database}", f"dbname={name}"), settings)


class ConsumerProcess:
    """``kassabro-fleet consume`` as a real subprocess (one worker), SIGKILLable."""

    def __init__(self, side: ChainSide, log_path: Path, *, batch: int = 200) -> None:
        self.side = side
        self.log_path = log_path
        self.batch = batch
        self.proc: subprocess.Popen[bytes] | None = None
        self.password_file = log_path.with_suffix(".password")
        self.password_file.write_text(side.cluster.fleet_password)

    def start(self) -> None:
        settings = self.side.settings
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "fleet.cli", "consume",
                    "--nats", ",".join(self.side.cluster.urls),
                    "--user", self.side.cluster.fleet_user,
                    "--password-file", str(self.password_file),
                    "--dsn", self.side.dsn,
                    "--batch", str(self.batch),
                    "--ack-wait", str(settings.ack_wait_s),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else "(no log)"
