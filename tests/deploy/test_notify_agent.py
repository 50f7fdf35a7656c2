"""The real agent (`kassabro run`) talking sd_notify to a socket the test listens on.

This is what systemd sees of the agent under ``Type=notify`` and ``WatchdogSec=``:
- READY=1 only once the ingest port accepts connections;
- WATCHDOG=1 again and again while the outbox takes writes (WATCHDOG_USEC set);
- no more WATCHDOG=1 once the outbox cannot be written, so systemd restarts it;
- a STATUS= line that changes when a destination goes down;
- STOPPING=1 on SIGTERM.

"The outbox cannot be written" is made real with RLIMIT_FSIZE set on the
running agent (prlimit): every write past the first byte of any file fails with
EFBIG, as a full SD card fails with ENOSPC. It works without root, and for
root too (chmod would not stop root, nor an already open file).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, make_sale, port_accepts

pytestmark = pytest.mark.slow

KASSABRO = Path(sys.executable).parent / "kassabro"
WATCHDOG_USEC = 1_000_000  # a ping every 0.5 s


SALE = make_sale(1, quantity=1)


class RunningAgent:
    """`kassabro run` as a subprocess, its notify datagrams and its log lines."""

    def __init__(self, tmp_path: Path):
        self.notify_path = tmp_path / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.notify_path))
        self.messages: list[str] = []
        self.log_lines: list[str] = []
        self.ingest_port = free_port()
        self.status_port = free_port()
        self.dead_port = free_port()  # nothing listens here: the destination is down
        config = tmp_path / "kassabro.toml"
        config.write_text(
            f"""
store_id = "store-001"
data_dir = "{tmp_path / "data"}"

[ingest]
listen = "127.0.0.1:{self.ingest_port}"

[status]
listen = "127.0.0.1:{self.status_port}"

[[destinations]]
name = "backend"
kind = "http"
url = "http://127.0.0.1:{self.dead_port}/records"
backoff_base_s = 0.1
backoff_cap_s = 0.5
""",
            encoding="utf-8",
        )
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(self.notify_path),
            "WATCHDOG_USEC": str(WATCHDOG_USEC),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("WATCHDOG_PID", None)
        env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(
            [str(KASSABRO), "run", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log_lines.append(line.rstrip("\n"))

    def wait_message(self, predicate: Callable[[str], bool], timeout: float, after: int = 0) -> str:
        """The first datagram from index ``after`` on that matches; reads more as needed."""
        deadline = time.monotonic() + timeout
        index = after
        while True:
            while index < len(self.messages):
                if predicate(self.messages[index]):
                    return self.messages[index]
                index += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching sd_notify message within {timeout} s; got {self.messages[after:][-20:]}\n"
                    f"agent log:\n" + "\n".join(self.log_lines[-30:])
                )
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n" + "\n".join(self.log_lines[-30:]))
            self.sock.settimeout(min(remaining, 0.5))
            try:
                self.messages.append(self.sock.recv(65536).decode("utf-8"))
            except TimeoutError:
                pass

    def drain(self) -> list[str]:
        """Read whatever datagrams are queued now."""
        got: list[str] = []
        self.sock.setblocking(False)
        try:
            for _ in range(10_000):
                got.append(self.sock.recv(65536).decode("utf-8"))
        except BlockingIOError:
            pass
        self.messages.extend(got)
        return got

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self.sock.close()


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[RunningAgent]:
    running = RunningAgent(tmp_path)
    try:
        yield running
    finally:
        running.close()


def is_ready(message: str) -> bool:
    return "READY=1" in message.splitlines()


def test_ready_only_when_ingest_accepts(agent: RunningAgent) -> None:
    ready = agent.wait_message(is_ready, timeout=60)
    # No retry: the ports must accept the moment READY=1 has been sent.
    assert port_accepts(agent.ingest_port)
    assert port_accepts(agent.status_port)
    assert agent.messages.count(ready) == 1 and sum(map(is_ready, agent.messages)) == 1


def test_watchdog_pings_repeat_while_healthy(agent: RunningAgent) -> None:
    first = agent.wait_message(is_ready, timeout=60)
    after = agent.messages.index(first) + 1
    for _ in range(3):
        ping = agent.wait_message(lambda m: m == "WATCHDOG=1\n", timeout=15, after=after)
        after = agent.messages.index(ping, after) + 1


def test_watchdog_stops_when_outbox_unwritable(agent: RunningAgent) -> None:
    agent.wait_message(is_ready, timeout=60)
    agent.wait_message(lambda m: m == "WATCHDOG=1\n", timeout=15)

    # Every write past byte 1 of any regular file now fails (EFBIG): the outbox
    # cannot commit; Python ignores SIGXFSZ, so the agent lives on.
    resource.prlimit(agent.proc.pid, resource.RLIMIT_FSIZE, (1, 1))
    # /healthz and the watchdog share one verdict: once it says 503, no ping may follow.
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10) as client:
        while client.get(f"http://127.0.0.1:{agent.status_port}/healthz").status_code != 503:
            assert time.monotonic() < deadline, "/healthz never noticed the unwritable outbox"
            time.sleep(0.2)
    agent.drain()  # pings sent before the first failed probe
    # Several watchdog intervals (bounded) must pass without a single ping.
    seen: list[str] = []
    deadline = time.monotonic() + 6 * WATCHDOG_USEC / 1_000_000
    while time.monotonic() < deadline:
        agent.sock.settimeout(0.2)
        try:
            seen.append(agent.sock.recv(65536).decode("utf-8"))
        except TimeoutError:
            pass
    assert "WATCHDOG=1\n" not in seen, seen
    assert agent.proc.poll() is None, "the agent stays up; systemd's watchdog decides"


def test_status_line_changes_when_destination_goes_down(agent: RunningAgent) -> None:
    ready = agent.wait_message(is_ready, timeout=60)
    first_status = next((line for line in ready.splitlines() if line.startswith("STATUS=")), "")
    assert "backend offline" not in first_status
    with httpx.Client(timeout=10) as client:
        answer = client.post(
            f"http://127.0.0.1:{agent.ingest_port}/v1/sales",
            content=json.dumps(SALE),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 201, answer.text
    status = agent.wait_message(
        lambda m: any(line.startswith("STATUS=") and "backend offline" in line for line in m.splitlines()),
        timeout=20,
    )
    assert "2 väntar" in status  # the sale and the stock movement derived from its one line


def test_sigterm_sends_stopping(agent: RunningAgent) -> None:
    agent.wait_message(is_ready, timeout=60)
    agent.proc.send_signal(signal.SIGTERM)
    agent.wait_message(lambda m: "STOPPING=1" in m.splitlines(), timeout=20)
    assert agent.proc.wait(timeout=20) == 0
