"""The connection flood and the memory bombs against ``kassabro run`` under the unit's limits (issue 11).

The agent runs as a real subprocess with ``LimitNOFILE=4096`` (``prlimit``),
as systemd starts it; ``MemoryMax=256M`` is watched as its resident memory,
sampled every 50 ms. Meanwhile a till sends a sale on a fresh connection with
its own token every half second: each must be stored (201) within 1 s.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import LOOPBACK, KassabroProcess, make_sale
from tests.sources.conftest import rss_watch

pytestmark = pytest.mark.slow

MEMORY_MAX = 256 * 1024 * 1024
"""The unit's ``MemoryMax=256M``."""
NOFILE = 4096
"""The unit's ``LimitNOFILE=4096``."""
FLOOD = 4000
"""Idle sockets opened against the agent, half to each port."""
TOKEN = "kassa-1-eget-token-0123456789abcdef"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KassabroProcess]:
    root = tmp_path_factory.mktemp("unit-limits")
    token_file = root / "kassa-1.token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    agent = KassabroProcess(
        root,
        f'[[ingest.tills]]\nid = "kassa-1"\ntoken_file = "{token_file}"\n'
        '[[destinations]]\nname = "backend"\nkind = "http"\nurl = "http://127.0.0.1:9/in"\n',
    )
    agent.start()
    assert agent.proc is not None
    subprocess.run(["prlimit", f"--pid={agent.proc.pid}", f"--nofile={NOFILE}:{NOFILE}"], check=True)
    limits = Path(f"/proc/{agent.proc.pid}/limits").read_text(encoding="ascii")
    assert any(line.startswith("Max open files") and f"{NOFILE}" in line for line in limits.splitlines()), limits
    try:
        yield agent
    finally:
        agent.terminate()


class Till:
    """A till: one sale at a time, each on a fresh connection with its token; every answer timed."""

    def __init__(self, agent: KassabroProcess, first_receipt: int) -> None:
        self.agent = agent
        self.receipt = first_receipt
        self.answers: list[tuple[int, float]] = []
        # No connection is kept: every request opens a fresh one, as a till after a restart.
        self.client = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))

    def sell(self) -> None:
        self.receipt += 1
        body = json.dumps(make_sale(self.receipt)).encode()
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        started = time.monotonic()
        response = self.client.post(f"{self.agent.ingest_url}/v1/sales", content=body, headers=headers)
        self.answers.append((response.status_code, time.monotonic() - started))

    def healthz(self) -> int:
        return self.client.get(f"http://{LOOPBACK}:{self.agent.status_port}/healthz").status_code

    def sell_for(self, sales: int, every_s: float = 0.5) -> None:
        """``sales`` sales, one every ``every_s``, each followed by ``/healthz`` (must stay 200)."""
        for _ in range(sales):
            self.sell()
            assert self.healthz() == 200, self.agent.log_tail()
            time.sleep(every_s)

    def check(self) -> None:
        """Every sale was stored, each answered within 1 s."""
        self.client.close()
        assert self.answers
        assert all(status == 201 for status, _ in self.answers), self.answers
        slowest = max(seconds for _, seconds in self.answers)
        assert slowest < 1.0, f"a sale took {slowest:.2f} s: {self.answers}"


def _raise_own_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, hard), max(needed, hard)))


def _open_idle(ports: list[int], count: int, sockets: list[socket.socket]) -> None:
    """Open ``count`` idle connections across ``ports`` (the kernel completes them; nothing is sent)."""
    for n in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((LOOPBACK, ports[n % len(ports)]))
        sockets.append(sock)
        if n % 200 == 199:
            time.sleep(0.05)  # bursts of 200, as fast as a 2-core box takes them


def _wait_connected(sockets: list[socket.socket], timeout: float = 30.0) -> None:
    """Wait until the kernel has completed (or the agent closed) every one of ``sockets``' connects.

    Beyond the listen queue a connect waits for a SYN retransmit (1 s, then
    3 s): the flood is all in before the till's sales are timed.
    """
    deadline = time.monotonic() + timeout
    pending = list(sockets)
    while pending:
        poller = select.poll()
        for sock in pending:
            poller.register(sock, select.POLLOUT)
        done = {fd for fd, _ in poller.poll(200)}
        pending = [sock for sock in pending if sock.fileno() not in done]
        assert time.monotonic() < deadline, f"{len(pending)} connects still pending"


def _log_size(agent: KassabroProcess) -> int:
    return agent.log_path.stat().st_size


def test_4000_idle_connections_never_keep_a_till_out_under_the_units_limits(agent: KassabroProcess) -> None:
    """3,000 idle sockets at once, then 100 more every half second while a till sells, on both ports.

    Every flood socket stays open (on the client side) until the end.
    """
    _raise_own_nofile(FLOOD + 512)
    till = Till(agent, 1000)
    till.sell()  # the delivery's first failure is logged now, before the log is measured
    time.sleep(0.5)
    log_before = _log_size(agent)
    ports = [agent.ingest_port, agent.status_port]
    sockets: list[socket.socket] = []
    try:
        with rss_watch(agent, MEMORY_MAX) as samples:
            flooded = time.monotonic()
            _open_idle(ports, FLOOD - 1000, sockets)
            _wait_connected(sockets)
            flooded = time.monotonic() - flooded
            for _ in range(10):  # ~5 s of sales while the flood's sockets are held and more come
                _open_idle(ports, 100, sockets)
                till.sell_for(1)
            assert len(sockets) == FLOOD
            # The agent holds at most 256 connections a port (768 for a moment), not the flood's 4,000.
            assert len(list(Path(f"/proc/{agent.proc.pid}/fd").iterdir())) < NOFILE // 2  # type: ignore[union-attr]
        till.check()
        slowest = max(s for _, s in till.answers)
        print(f"flood in {flooded:.1f} s; peak RSS {max(samples) / 2**20:.0f} MiB; slowest sale {slowest:.3f} s")
    finally:
        for sock in sockets:
            sock.close()
    grown = _log_size(agent) - log_before
    assert grown < 4096, f"the log grew {grown} bytes during the flood:\n{agent.log_tail()}"
    # After the flood: everything as before.
    after = Till(agent, 2000)
    after.sell_for(2, every_s=0)
    after.check()
    with httpx.Client(timeout=10) as client:
        assert client.get(f"http://{LOOPBACK}:{agent.status_port}/").status_code == 200


def _post(agent: KassabroProcess, path: str, body: bytes, answers: list[Any]) -> None:
    with httpx.Client(timeout=60) as client:
        response = client.post(
            f"{agent.ingest_url}{path}",
            content=body,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
    answers.append((response.status_code, len(response.content), response.json()))


def test_memory_bombs_get_small_422s_while_a_tills_sales_go_on_under_the_units_limits(agent: KassabroProcess) -> None:
    batch_bomb = b'{"sales":[' + b",".join([b"{}"] * 340_000) + b"]}"
    payments_bomb = (
        json.dumps(make_sale(3001, payments=[]))
        .replace('"payments": []', '"payments": [' + ",".join(["{}"] * 345_000) + "]")
        .encode()
    )
    assert len(batch_bomb) < 1024 * 1024 and len(payments_bomb) < 1024 * 1024
    till = Till(agent, 3000)
    answers: list[Any] = []
    with rss_watch(agent, MEMORY_MAX) as samples:
        bombs = [
            threading.Thread(target=_post, args=(agent, "/v1/batch", batch_bomb, answers)),
            threading.Thread(target=_post, args=(agent, "/v1/sales", payments_bomb, answers)),
            threading.Thread(target=_post, args=(agent, "/v1/batch", batch_bomb, answers)),
        ]
        for bomb in bombs:
            bomb.start()
        till.sell_for(6, every_s=0.3)
        for bomb in bombs:
            bomb.join(60)
    till.check()
    print(f"peak RSS {max(samples) / 2**20:.0f} MiB; slowest sale {max(s for _, s in till.answers):.3f} s")
    assert len(answers) == 3
    for status, size, body in answers:
        assert status == 422
        assert size < 10_000
        assert len(body["details"]) <= 100
    # and the agent still serves
    after = Till(agent, 4000)
    after.sell_for(1, every_s=0)
    after.check()
