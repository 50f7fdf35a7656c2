"""The outbox against a model, driven by hypothesis through random histories.

Rules: enqueue (new, duplicate, conflicting, several at once), claim for two
destinations with different types, complete with random refusals, split,
record a retryable failure, retry dead letters, and reopen after a crash
(the raw connection closed without the clean close path).

Invariants after every step:
- nothing acknowledged is lost: the file holds exactly the acknowledged
  records, with the id and seq they were acknowledged with;
- every destination's ``pending`` and ``dead_letters`` match the model;
- per destination, records are first sent in seq order, none skipped;
- a re-claimed open batch has the same id, members and attempt count.

The rules act like the delivery loop: they complete, split or fail only the
batch that ``claim_batch`` last returned for that destination.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.outbox.store import Conflict, OutboxStore
from agent.outbox.types import Batch
from agent.records import Record
from tests.helpers import STORE_ID, memory_tmpdir
from tests.outbox.records import movement, sale

pytestmark = pytest.mark.slow

DESTINATIONS = {"sales": ("http", ["sale"]), "all": ("mqtt", ["sale", "stock_movement"])}

# An item is (key, variant): the same key in another variant is a conflict.
sale_items = st.tuples(st.integers(1, 10).map(lambda n: f"sale:kassa-1:{n}"), st.sampled_from(["10.00", "20.00"]))
movement_items = st.tuples(
    st.integers(1, 6).map(lambda n: f"stock_movement:kassa-1:m{n}"), st.sampled_from(["1", "-2"])
)
requests = st.lists(st.one_of(sale_items, movement_items), min_size=1, max_size=3, unique_by=lambda item: item[0])


def build(key: str, variant: str) -> Record:
    record_type, _, rest = key.partition(":")
    ident = rest.split(":")[1]
    if record_type == "sale":
        return sale(int(ident), price=variant)
    return movement(ident, delta=variant)


@dataclass
class Stored:
    id: str
    seq: int
    variant: str
    type: str


@dataclass
class DestinationModel:
    types: list[str]
    claimed_seq: int = 0
    open_batches: dict[str, tuple[str, list[int], int]] = field(default_factory=dict)  # id -> kind, seqs, attempts
    current: str | None = None
    delivered: set[int] = field(default_factory=set)
    dead: dict[int, str] = field(default_factory=dict)  # seq -> dead | retrying | replaying
    first_sent: list[int] = field(default_factory=list)


class OutboxMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="kassabro-stateful-", dir=memory_tmpdir()))
        self.path = self.dir / "outbox.db"
        self.store = self._open()
        self.records: dict[str, Stored] = {}
        self.dests = {name: DestinationModel(types=types) for name, (_, types) in DESTINATIONS.items()}

    def _open(self) -> OutboxStore:
        store = OutboxStore.open(self.path, store_id=STORE_ID)
        store.register_destinations([(name, kind, types) for name, (kind, types) in DESTINATIONS.items()])
        return store

    def teardown(self) -> None:
        self.store.conn.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --------------------------------------------------------------- helpers
    def _by_seq(self) -> dict[int, Stored]:
        return {r.seq: r for r in self.records.values()}

    def _expect_same_batch(self, dest: DestinationModel, batch: Batch) -> None:
        kind, seqs, attempts = dest.open_batches[batch.batch_id]
        assert [r["seq"] for r in batch.records] == seqs
        assert batch.kind == kind
        assert batch.attempts == attempts

    # ----------------------------------------------------------------- rules
    @rule(items=requests)
    def enqueue(self, items: list[tuple[str, str]]) -> None:
        conflicting = [key for key, variant in items if key in self.records and self.records[key].variant != variant]
        highest = max((r.seq for r in self.records.values()), default=0)
        try:
            results = self.store.enqueue([build(key, variant) for key, variant in items])
        except Conflict as exc:
            assert conflicting, f"unexpected conflict on {exc.key}"
            assert exc.key == conflicting[0]
            assert exc.id == self.records[exc.key].id
            return
        assert not conflicting, f"{conflicting} should have conflicted"
        new_seqs: list[int] = []
        for (key, variant), result in zip(items, results, strict=True):
            assert result.key == key
            if key in self.records:
                assert result.duplicate
                assert (result.id, result.seq) == (self.records[key].id, self.records[key].seq)
            else:
                assert not result.duplicate
                new_seqs.append(result.seq)
                self.records[key] = Stored(result.id, result.seq, variant, key.partition(":")[0])
        assert new_seqs == sorted(new_seqs) and all(s > highest for s in new_seqs)

    @rule(name=st.sampled_from(sorted(DESTINATIONS)), limit=st.integers(1, 5))
    def claim(self, name: str, limit: int) -> None:
        dest = self.dests[name]
        batch = self.store.claim_batch(name, limit)
        if dest.open_batches:
            assert batch is not None and batch.batch_id in dest.open_batches, "an open batch must come back"
            self._expect_same_batch(dest, batch)
            replays = [b for b, (kind, _, _) in dest.open_batches.items() if kind == "replay"]
            if not replays:
                lowest = min(dest.open_batches.items(), key=lambda item: item[1][1][0])[0]
                assert batch.batch_id == lowest
            else:
                assert batch.kind == "replay"
        else:
            retrying = sorted(seq for seq, state in dest.dead.items() if state == "retrying")
            by_seq = self._by_seq()
            if retrying:
                assert batch is not None and batch.kind == "replay"
                assert [r["seq"] for r in batch.records] == retrying[:limit]
                for seq in retrying[:limit]:
                    dest.dead[seq] = "replaying"
            else:
                due = sorted(s for s, r in by_seq.items() if s > dest.claimed_seq and r.type in dest.types)[:limit]
                if not due:
                    assert batch is None
                    return
                assert batch is not None and batch.kind == "normal"
                assert [r["seq"] for r in batch.records] == due  # in seq order, none skipped
                dest.claimed_seq = due[-1]
            dest.open_batches[batch.batch_id] = (batch.kind, [r["seq"] for r in batch.records], batch.attempts)
        for envelope in batch.records:
            stored = self._by_seq()[envelope["seq"]]
            assert (envelope["id"], envelope["key"].partition(":")[0]) == (stored.id, stored.type)
            if envelope["seq"] not in dest.first_sent:
                assert not dest.first_sent or envelope["seq"] > dest.first_sent[-1], "first sends out of seq order"
                dest.first_sent.append(envelope["seq"])
        dest.current = batch.batch_id

    def _has_current(self) -> bool:
        return any(d.current is not None for d in self.dests.values())

    def _pick_current(self, data: st.DataObject) -> tuple[str, DestinationModel, str]:
        name = data.draw(st.sampled_from(sorted(n for n, d in self.dests.items() if d.current is not None)))
        dest = self.dests[name]
        assert dest.current is not None
        return name, dest, dest.current

    @precondition(_has_current)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        name, dest, batch_id = self._pick_current(data)
        _, seqs, _ = dest.open_batches.pop(batch_id)
        refused = data.draw(st.sets(st.sampled_from(seqs), max_size=len(seqs)), label="refused seqs")
        by_seq = self._by_seq()
        self.store.complete_batch(name, batch_id, {by_seq[s].id: (400, f"refused {s}") for s in refused})
        for seq in seqs:
            if seq in refused:
                dest.dead[seq] = "dead"
            else:
                dest.dead.pop(seq, None)
                dest.delivered.add(seq)
        dest.current = None

    @precondition(
        lambda self: any(d.current is not None and len(d.open_batches[d.current][1]) >= 2 for d in self.dests.values())
    )
    @rule(data=st.data())
    def split(self, data: st.DataObject) -> None:
        candidates = sorted(n for n, d in self.dests.items() if d.current and len(d.open_batches[d.current][1]) >= 2)
        name = data.draw(st.sampled_from(candidates))
        dest = self.dests[name]
        assert dest.current is not None
        kind, seqs, _ = dest.open_batches.pop(dest.current)
        left, right = self.store.split_batch(name, dest.current)
        half = len(seqs) // 2
        child_kind = "replay" if kind == "replay" else "split"
        dest.open_batches[left] = (child_kind, seqs[:half], 0)
        dest.open_batches[right] = (child_kind, seqs[half:], 0)
        dest.current = None

    @precondition(_has_current)
    @rule(data=st.data())
    def fail(self, data: st.DataObject) -> None:
        name, dest, batch_id = self._pick_current(data)
        self.store.record_failure(name, batch_id, "503 from the receiver", None)
        kind, seqs, attempts = dest.open_batches[batch_id]
        dest.open_batches[batch_id] = (kind, seqs, attempts + 1)
        dest.current = None  # the loop claims it again after its back-off

    @rule(name=st.one_of(st.none(), st.sampled_from(sorted(DESTINATIONS))))
    def retry_dead_letters(self, name: str | None) -> None:
        expected = 0
        for dest_name, dest in self.dests.items():
            if name in (None, dest_name):
                for seq, state in dest.dead.items():
                    if state == "dead":
                        dest.dead[seq] = "retrying"
                        expected += 1
        assert self.store.retry_dead_letters(name) == expected

    @rule()
    def crash_and_reopen(self) -> None:
        self.store.conn.close()  # no checkpoint, no clean close: what a power cut leaves
        self.store = self._open()
        for dest in self.dests.values():
            dest.current = None

    # ------------------------------------------------------------ invariants
    @invariant()
    def nothing_acknowledged_is_lost(self) -> None:
        rows = self.store.conn.execute("SELECT key, id, seq FROM records").fetchall()
        assert {r[0]: (r[1], r[2]) for r in rows} == {k: (v.id, v.seq) for k, v in self.records.items()}

    @invariant()
    def pending_and_dead_letters_match(self) -> None:
        figures = {d["name"]: d for d in self.store.destination_stats()}
        for name, dest in self.dests.items():
            applicable = {r.seq for r in self.records.values() if r.type in dest.types}
            unresolved = applicable - dest.delivered - set(dest.dead)
            in_flight = sum(1 for state in dest.dead.values() if state != "dead")
            assert figures[name]["pending"] == len(unresolved) + in_flight, name
            assert figures[name]["dead_letters"] == sum(1 for s in dest.dead.values() if s == "dead"), name

    @invariant()
    def dead_letters_are_listed(self) -> None:
        # "dead" until retried; after that the store may say "retrying" or, once in
        # a replay batch, "replaying": what matters is that it is no longer dead.
        listed = {
            (d.destination, d.seq): ("dead" if d.state == "dead" else "queued")
            for d in self.store.list_dead_letters(limit=1000)
        }
        expected = {
            (name, seq): ("dead" if state == "dead" else "queued")
            for name, dest in self.dests.items()
            for seq, state in dest.dead.items()
        }
        assert listed == expected
        states = {d.state for d in self.store.list_dead_letters(limit=1000)}
        assert states <= {"dead", "retrying", "replaying"}


OutboxMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestOutboxStateful = OutboxMachine.TestCase
