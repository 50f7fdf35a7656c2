"""The pipelined claim (``claim_batch(after=...)``) through random histories, driven by hypothesis.

The rules act like the delivery loop: send the current batch while the one
behind it is frozen, then succeed (the one behind becomes current), fail
(back to a plain claim), split, refuse a lone record, queue the dead letters
for a retry, or crash (the raw connection closed, no clean close).

Invariants after every step:
- every record is first sent in seq order, none skipped (replays aside);
- a batch sent again carries the same id and the same bytes;
- ``acked_seq`` never passes an open normal batch, and every record at or
  below it is delivered or a dead letter;
- at most two normal batches are open.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.outbox.store import OutboxStore
from agent.outbox.types import Batch
from tests.helpers import STORE_ID, memory_tmpdir
from tests.outbox.records import sale

pytestmark = pytest.mark.slow

NAME = "backend"


class PipelinedLoop(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kassabro-pipelined-", dir=memory_tmpdir()))
        self.path = self.dir / "outbox.db"
        self.store = self._open()
        self.count = 0
        self.limit = 3
        self.current: Batch | None = None
        self.behind: Batch | None = None
        self.sent: dict[str, bytes] = {}  # batch id -> the bytes of its members, as first sent
        self.first_sent: list[int] = []
        self.resolved: set[int] = set()  # delivered or dead
        self.dead: set[int] = set()  # dead letters not queued for a retry
        self.retrying: set[int] = set()

    def _open(self) -> OutboxStore:
        store = OutboxStore.open(self.path, store_id=STORE_ID)
        store.register_destinations([(NAME, "http", ["sale"])])
        return store

    def teardown(self) -> None:
        self.store.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --------------------------------------------------------------- helpers
    def _send(self, batch: Batch) -> None:
        """Note ``batch`` going on the wire (as the loop would, with ``behind`` frozen meanwhile)."""
        body = b"\n".join(batch.encoded)
        if batch.batch_id in self.sent:
            assert self.sent[batch.batch_id] == body, "a resend is byte for byte the first send"
        self.sent[batch.batch_id] = body
        if batch.kind == "replay":
            return
        for seq in (r["seq"] for r in batch.records):
            if seq not in self.first_sent:
                assert seq == (self.first_sent[-1] + 1 if self.first_sent else 1), (
                    f"{seq} first sent after {self.first_sent[-1:]}: out of order or skipped"
                )
                self.first_sent.append(seq)

    def _current(self) -> Batch | None:
        """The batch on the wire: the one frozen behind the last, else a plain claim; and the next frozen behind it."""
        if self.current is None:
            self.current = self.store.claim_batch(NAME, self.limit)
        if self.current is not None and self.behind is None:
            self.behind = self.store.claim_batch(NAME, self.limit, after=self.current.batch_id)
            if self.behind is not None:
                assert self.behind.first_seq > self.current.last_seq
        return self.current

    # ----------------------------------------------------------------- rules
    @rule(n=st.integers(1, 6))
    def enqueue(self, n: int) -> None:
        self.store.enqueue([sale(self.count + i) for i in range(1, n + 1)])
        self.count += n

    @rule(limit=st.integers(1, 4))
    def set_limit(self, limit: int) -> None:
        self.limit = limit

    @rule()
    def succeed(self) -> None:
        batch = self._current()
        if batch is None:
            return
        self._send(batch)
        self.store.complete_batch(NAME, batch.batch_id)
        self.resolved.update(r["seq"] for r in batch.records)
        self.retrying.difference_update(r["seq"] for r in batch.records)
        self.current, self.behind = self.behind, None

    @rule()
    def fail(self) -> None:
        batch = self._current()
        if batch is None:
            return
        self._send(batch)
        self.store.record_failure(NAME, batch.batch_id, "HTTP 503", None)
        self.current = self.behind = None  # the loop goes back to a plain claim

    @rule()
    def refuse(self) -> None:
        batch = self._current()
        if batch is None:
            return
        self._send(batch)
        if batch.size > 1:
            self.store.split_batch(NAME, batch.batch_id)
            self.current = self.behind = None
            return
        self.store.complete_batch(NAME, batch.batch_id, {batch.ids[0]: (422, "refused")})
        seq = batch.records[0]["seq"]
        self.resolved.add(seq)
        self.dead.add(seq)
        self.retrying.discard(seq)
        self.current, self.behind = self.behind, None

    @precondition(lambda self: bool(self.dead))
    @rule()
    def retry_dead_letters(self) -> None:
        assert self.store.retry_dead_letters(NAME) == len(self.dead)
        self.retrying |= self.dead
        self.dead = set()

    @rule()
    def crash(self) -> None:
        self.store.conn.close()
        self.store = self._open()
        self.current = self.behind = None

    # ------------------------------------------------------------ invariants
    @invariant()
    def acked_never_passes_an_open_batch(self) -> None:
        acked = self.store._destination(NAME)["acked_seq"]
        open_normal = self.store.conn.execute(
            "SELECT first_seq FROM batches WHERE destination = ? AND state = 'open' AND kind != 'replay'", (NAME,)
        ).fetchall()
        assert all(acked < row[0] for row in open_normal)
        assert all(seq in self.resolved for seq in range(1, acked + 1))
        normal = self.store.conn.execute(
            "SELECT COUNT(*) FROM batches WHERE destination = ? AND state = 'open' AND kind = 'normal'", (NAME,)
        ).fetchone()[0]
        assert normal <= 2


PipelinedLoop.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPipelinedLoop = PipelinedLoop.TestCase
