"""A real Mosquitto for the MQTT tests, plain and with TLS.

The broker runs as a subprocess on a free 127.0.0.1 port with persistence on
in ``tmp_path``, so it can be SIGKILLed and started again on the same port with
its sessions and retained messages. Certificates are made in the test with the
``openssl`` command-line tool (always there beside Mosquitto on Debian).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import free_port, port_accepts
from tests.mqtt.helpers import STORE_ID

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@pytest.fixture
def store_id() -> str:
    """The MQTT tests' topics and broker accounts are store-1's (the shared ``outbox`` uses it)."""
    return STORE_ID


@dataclass
class Tls:
    """Where a TLS listener's files are (the broker side)."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True


class Mosquitto:
    """One broker process; ``kill`` and ``start`` again keep port and data."""

    def __init__(self, workdir: Path, *, tls: Tls | None = None, password_file: Path | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        lines = [
            f"user {getpass.getuser()}",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous " + ("false" if password_file else "true"),
            "persistence true",
            f"persistence_location {workdir / 'data'}/",
            "autosave_interval 1",
            # Keep every QoS 1 message for a slow or absent subscriber, and hand
            # messages to subscribers at once instead of queueing them in memory.
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {workdir / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if password_file is not None:
            lines.append(f"password_file {password_file}")
        if tls is not None:
            lines += [
                f"cafile {tls.ca_file}",
                f"certfile {tls.cert_file}",
                f"keyfile {tls.key_file}",
                f"require_certificate {'true' if tls.require_certificate else 'false'}",
            ]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        with open(self.workdir / "stderr.log", "ab") as stderr:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: {self.log()}")
            if port_accepts(self.port):
                return
            time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log()}")

    def kill(self) -> None:
        """SIGKILL: no goodbye to anyone, nothing saved since the last autosave."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def save(self) -> None:
        """Make the broker write its persistence file now (SIGUSR1), and wait for it."""
        assert self.proc is not None
        db = self.workdir / "data" / "mosquitto.db"
        before = db.stat().st_mtime_ns if db.exists() else None
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if db.exists() and db.stat().st_mtime_ns != before:
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not save its database")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        parts = []
        for name in ("mosquitto.log", "stderr.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "broker")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- certificates ---------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _make_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, csr, cert, ext = (directory / f"{name}{suffix}" for suffix in (".key", ".csr", ".pem", ".ext"))
    ext.write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext),
        cwd=directory,
    )  # fmt: skip
    return cert, key


@dataclass
class Pki:
    """A CA with a server and a client certificate, and a second, foreign CA
    with a server certificate of its own."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_server_cert: Path
    other_server_key: Path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    client_ext = "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n"
    ca = _make_ca(directory, "chain-ca")
    server = _make_leaf(directory, "broker", ca, server_ext)
    client = _make_leaf(directory, "store-1", ca, client_ext)
    other_ca = _make_ca(directory, "other-ca")
    other_server = _make_leaf(directory, "impostor", other_ca, server_ext)
    return Pki(ca[0], server[0], server[1], client[0], client[1], other_ca[0], other_server[0], other_server[1])


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    server = Mosquitto(tmp_path / "tls-broker", tls=Tls(pki.ca, pki.server_cert, pki.server_key))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def impostor_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """A TLS broker whose certificate the chain's CA did not sign."""
    tls = Tls(pki.ca, pki.other_server_cert, pki.other_server_key, require_certificate=False)
    server = Mosquitto(tmp_path / "impostor", tls=tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()
