"""A real chain side on one machine: a 3-node nats-server cluster and a PostgreSQL, on loopback.

For the tests, the benchmark and trying the fleet out: Debian's ``nats-server``
(2.9) and PostgreSQL 15 run as subprocesses on free 127.0.0.1 ports, each NATS
node with its own JetStream store directory, ``server_name`` and routes to the
others, and the MQTT gateway on. A node can be SIGKILLed and started again on
the same ports with its store. PostgreSQL gets a fresh ``initdb`` in a
temporary directory; as root both ``initdb`` and ``pg_ctl`` run as the
``postgres`` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fleet.natsconf import NodeAddresses, accounts_block, node_config

__all__ = ["LocalPostgres", "NatsCluster", "NatsNode", "free_port"]

LOOPBACK = "127.0.0.1"
NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.3):
            return True
    except OSError:
        return False


@dataclass
class NatsNode:
    """One nats-server process; ``kill`` then ``start`` keeps its ports and store."""

    addresses: NodeAddresses
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.addresses.name

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.addresses.client_port}"

    @property
    def mqtt_port(self) -> int:
        return self.addresses.mqtt_port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} already runs"
        with open(self.workdir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [NATS_SERVER, "-c", str(self.workdir / "nats.conf")], stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no goodbye to routes or clients, nothing flushed."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def healthy(self) -> bool:
        """The node's ``/healthz``: up, routed, and JetStream current."""
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self.addresses.monitor_port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


class NatsCluster:
    """Three (or ``size``) nats-server nodes with JetStream and MQTT, clustered over loopback routes.

    Args:
        root: a directory; each node gets ``root/{name}`` for its config, log and store.
        shops: store id -> MQTT password; each gets a user fenced to its own topics.
        fleet_password: the password of user ``fleet`` (full access to the chain's account).
        topic_prefix: the agents' ``topic_prefix``.
    """

    def __init__(
        self,
        root: Path,
        shops: dict[str, str],
        *,
        fleet_password: str = "fleet-secret",
        topic_prefix: str = "kassabro",
        size: int = 3,
    ) -> None:
        self.root = root
        self.shops = dict(shops)
        self.fleet_user = "fleet"
        self.fleet_password = fleet_password
        self.topic_prefix = topic_prefix
        addresses = [
            NodeAddresses(f"n{i + 1}", LOOPBACK, free_port(), free_port(), free_port(), free_port())
            for i in range(size)
        ]
        accounts = accounts_block(
            self.shops, fleet_password=fleet_password, system_password="sys-secret", topic_prefix=topic_prefix
        )
        self.nodes: list[NatsNode] = []
        for address in addresses:
            workdir = root / address.name
            (workdir / "store").mkdir(parents=True, exist_ok=True)
            config = node_config(address, addresses, store_dir=str(workdir / "store"), accounts=accounts)
            (workdir / "nats.conf").write_text(config, encoding="utf-8")
            self.nodes.append(NatsNode(address, workdir))

    @property
    def urls(self) -> list[str]:
        """Every node's NATS client URL (a client fails over between them)."""
        return [node.url for node in self.nodes]

    @property
    def mqtt_hosts(self) -> list[str]:
        """Every node's MQTT gateway as ``host:port``."""
        return [f"{LOOPBACK}:{node.mqtt_port}" for node in self.nodes]

    def start(self, timeout: float = 30.0) -> None:
        """Start every node and wait until all are healthy (routes up, a JetStream meta leader)."""
        for node in self.nodes:
            if not node.running:
                node.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0, nodes: list[NatsNode] | None = None) -> None:
        deadline = time.monotonic() + timeout
        for node in nodes or self.nodes:
            while not (_accepts(node.mqtt_port) and node.healthy()):
                if not node.running:
                    raise RuntimeError(f"nats-server {node.name} exited:\n{node.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nats-server {node.name} not healthy within {timeout} s:\n{node.log_tail()}")
                time.sleep(0.05)

    def restart(self, node: NatsNode, timeout: float = 30.0) -> None:
        """Start a killed node again on its ports and store; wait until it has caught up."""
        node.start()
        self.wait_healthy(timeout, [node])

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def logs(self) -> str:
        return "\n".join(f"---- {node.name}\n{node.log_tail()}" for node in self.nodes)


def shop_password(store_id: str, secret: str = "chain") -> str:
    """A deterministic test password per shop (a real chain generates random ones)."""
    return hashlib.sha256(f"{secret}:{store_id}".encode()).hexdigest()[:24]


class LocalPostgres:
    """A throwaway PostgreSQL 15 cluster: ``initdb`` in a temp dir, ``pg_ctl`` on a free loopback port.

    The socket directory is inside the temp dir, so nothing touches the
    system's ``/var/run/postgresql``. ``dsn`` connects as superuser
    ``postgres`` over TCP with trust auth (loopback only).
    """

    def __init__(self, *, database: str = "fleet") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kassabro-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.database = database
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"host={LOOPBACK} port={self.port} user=postgres dbname={self.database}"

    def _run(self, *args: str, timeout: float = 120) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions"
            )
        options = f"-p {self.port} -k {self.root} -c listen_addresses={LOOPBACK} -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"), "-w", "start")
        self._createdb()

    def _createdb(self) -> None:
        command = [str(PG_BIN / "createdb"), "-h", LOOPBACK, "-p", str(self.port), "-U", "postgres", self.database]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise RuntimeError(f"createdb failed: {result.stderr}")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def describe(cluster: NatsCluster, postgres: LocalPostgres | None = None) -> str:
    """The addresses of a local chain side, as JSON (for ``kassabro-fleet`` flags and people)."""
    return json.dumps(
        {
            "nats": cluster.urls,
            "mqtt": cluster.mqtt_hosts,
            "fleet_user": cluster.fleet_user,
            "postgres": None if postgres is None else postgres.dsn,
        },
        indent=2,
    )
