"""Crash points at the flush itself: the agent killed inside an fsync, and a card whose fsyncs fail.

The random-moment crash test (``test_crash.py``) rarely lands *inside* a
flush, which is where an SD card spends its time and where a power cut is
most likely to find the agent. ``tools/faults`` (strace's fault injection)
puts the agent exactly there, with nothing in the agent changed:

- ``kill-at-fsync N``: SIGKILL at the agent's Nth fsync, before it returns,
  for a spread of N from the first migration to the middle of group commits
  under eight tills. After a plain restart every acknowledged sale is there
  with the id and seq it was given.
- ``eio-at-fsync N``: the Nth fsync and every later one fail (a dying card).
  From then on nothing may be acknowledged: every answer is 503 or 507 (or
  the connection fails), never a 201 for a record whose commit was not
  flushed. The agent keeps answering meanwhile, and after a plain restart it
  takes sales again with everything acknowledged before still there.

fsyncs are counted per thread; the outbox's owner thread makes all of them.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.chaos.conftest import AgentProcess
from tests.chaos.ledger import Ledger, check_file, till
from tests.helpers import make_sale

TILLS = 8
KILL_POINTS = (5, 40, 2, 17, 90)
"""fsync numbers to die at, one cycle each on the same data directory.

A fresh outbox makes about a dozen fsyncs while it is created and migrated,
so 5 dies inside the migrations. A reopened file makes none before the ports
open, so the others die inside group commits and claims while eight tills
post: 2 at the first commits after a start on a file left by a SIGKILL, 40
and 90 deep into ingest, 17 after a clean stop.
"""


def _plain_restart_answers_for(agent: AgentProcess, ledger: Ledger, rng: random.Random) -> None:
    """Restart without faults: the agent finds what it acknowledged and takes a new sale."""
    agent.start()
    agent.wait_ready()
    sample = rng.sample(sorted(ledger.acked), min(5, len(ledger.acked)))
    with httpx.Client(base_url=agent.base_url, timeout=10) as client:
        for key in sample:
            found = client.get(f"/v1/records/{key}")
            assert found.status_code == 200, (key, found.status_code, agent.log_tail())
            assert (found.json()["record"]["id"], found.json()["record"]["seq"]) == ledger.acked[key]
        receipt = ledger.new_receipt()
        fresh = client.post("/v1/sales", json=make_sale(receipt))
        assert fresh.status_code == 201, (fresh.status_code, fresh.text[:300], agent.log_tail())
        body = fresh.json()
        ledger.acknowledge(body["key"], body["id"], body["seq"], body["duplicate"])


def _wait_started_or_dead(agent: AgentProcess, timeout: float) -> bool:
    """True once the ingest port accepts; False when the process ended first."""
    assert agent.proc is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if agent.proc.poll() is not None:
            return False
        try:
            agent.wait_ready(timeout=0.2)
            return True
        except AssertionError:
            continue
    raise AssertionError(f"under faults the agent neither started nor died within {timeout} s:\n{agent.log_tail()}")


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_killed_inside_an_fsync_loses_nothing_acknowledged(agent_process):
    agent = agent_process()
    ledger = Ledger()
    rng = random.Random(20261201)
    died_serving = 0
    for point in KILL_POINTS:
        agent.start(faults=("kill-at-fsync", str(point)))
        if _wait_started_or_dead(agent, timeout=30):
            stop = threading.Event()
            tills = [
                threading.Thread(target=till, args=(agent.base_url, ledger, stop, rng.randrange(2**32)), daemon=True)
                for _ in range(TILLS)
            ]
            for thread in tills:
                thread.start()
            assert agent.proc is not None
            try:
                agent.proc.wait(timeout=60)
            except Exception:
                raise AssertionError(f"fsync {point} never came within 60 s of ingest:\n{agent.log_tail()}") from None
            stop.set()
            for thread in tills:
                thread.join(timeout=20)
            assert not any(t.is_alive() for t in tills), "a till hung after the kill"
            died_serving += 1
        assert agent.proc is not None
        # strace ends the way its command did: killed by SIGKILL (or exit status 137).
        assert agent.proc.returncode in (-9, 137), f"expected the kill at fsync {point}:\n{agent.log_tail()}"
        agent.kill()
        assert not ledger.problems, ledger.problems[:5]
        check_file(agent.db, ledger)
        _plain_restart_answers_for(agent, ledger, rng)
        # A clean stop now and then, so a faulted start also meets a file its last stop vouched for.
        if point % 2:
            assert agent.terminate() == 0
        else:
            agent.kill()
        check_file(agent.db, ledger)
    assert died_serving >= 3, "most kill points must land while tills post"
    assert len(ledger.acked) > 50, "the tills really got sales acknowledged between the kills"


@dataclass
class Answers:
    """Every answer of the EIO run: (sent, received, status), in monotonic seconds."""

    seen: list[tuple[float, float, int | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: float, received: float, status: int | None) -> None:
        with self.lock:
            self.seen.append((sent, received, status))

    def first_refusal(self) -> float | None:
        with self.lock:
            return min((r for _, r, s in self.seen if s != 201), default=None)


def _till_on_a_dying_card(base_url: str, ledger: Ledger, answers: Answers, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for _ in range(400):  # bounded; the test stops the tills long before
            if stop.is_set():
                return
            sent = time.monotonic()
            try:
                response = client.post("/v1/sales", json=make_sale(ledger.new_receipt()))
            except httpx.TransportError:
                answers.add(sent, time.monotonic(), None)
                time.sleep(0.05)
                continue
            answers.add(sent, time.monotonic(), response.status_code)
            if response.status_code == 201:
                body = response.json()
                ledger.acknowledge(body["key"], body["id"], body["seq"], body["duplicate"])
            elif response.status_code not in (503, 507):
                ledger.problems.append(f"a dying card answered {response.status_code}: {response.text[:200]}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_failing_fsyncs_acknowledge_nothing_and_a_restart_recovers(agent_process):
    agent = agent_process()
    # Create and migrate the outbox first, so the failures start inside ingest, not inside migrations.
    agent.start()
    agent.wait_ready()
    assert agent.terminate() == 0

    agent.start(faults=("eio-at-fsync", "30"))
    agent.wait_ready(timeout=30)
    ledger, answers, stop = Ledger(), Answers(), threading.Event()
    tills = [
        threading.Thread(target=_till_on_a_dying_card, args=(agent.base_url, ledger, answers, stop), daemon=True)
        for _ in range(TILLS)
    ]
    for thread in tills:
        thread.start()
    deadline = time.monotonic() + 30
    while answers.first_refusal() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    refused_at = answers.first_refusal()
    assert refused_at is not None, f"the fsyncs never failed within 30 s:\n{agent.log_tail()}"
    time.sleep(1.0)  # the tills keep posting on the dying card
    stop.set()
    for thread in tills:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in tills), "a till hung: the agent wedged on the failing card"

    assert not ledger.problems, ledger.problems[:5]
    assert ledger.acked, "nothing was acknowledged before the card started failing"
    after = [(s, r, status) for s, r, status in answers.seen if s > refused_at]
    assert len(after) >= TILLS, "the tills got few answers once the card failed: the agent stalled"
    late_acks = [a for a in after if a[2] == 201]
    assert not late_acks, f"{len(late_acks)} sale(s) got 201 after the flushes had started failing"
    assert any(status in (503, 507) for _, _, status in after), "no clear refusal (503/507) on the failing card"
    with httpx.Client(timeout=10) as client:
        health = client.get(f"http://127.0.0.1:{agent.status_port}/healthz")
    assert health.status_code == 503, (health.status_code, health.text)

    agent.kill()  # a dying card is a power cut away from a restart; strace and the agent go together
    check_file(agent.db, ledger)
    _plain_restart_answers_for(agent, ledger, random.Random(7))
    agent.kill()
    check_file(agent.db, ledger)
