"""Delivery bookkeeping that spares the SD card, without loosening a promise.

A normal batch is stored as its seq range and types (no member rows), and
the claims and completions the owner thread takes in one pass share one
transaction. What a receiver relies on stays: a batch once sent is resent
with the same id and exactly the same records, after a crash too, and a
file written by an older release (member rows) still drains. What a
delivery loop relies on stays: one failing call does not undo the others.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.outbox import schema, service
from agent.outbox.db import NEW_FILE_PAGE_SIZE
from agent.outbox.errors import OutboxError
from agent.outbox.service import Outbox
from agent.outbox.store import OutboxStore
from tests.helpers import STORE_ID
from tests.outbox.records import movement, raw_rows, sale
from tests.outbox.test_service import WAIT_S, Holder

REPO = Path(__file__).resolve().parents[2]
DESTINATIONS = [("sales", "http", ["sale"]), ("everything", "mqtt", ["sale", "stock_movement"])]


def mixed(first: int, count: int) -> list:
    """Sales interleaved with movements, so a sales-only range has gaps of the other type."""
    return [r for n in range(first, first + count) for r in (sale(n), movement(f"m{n}"))]


def test_a_normal_batch_is_its_range_and_types_without_member_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        store.register_destinations(DESTINATIONS)
        store.enqueue(mixed(1, 4))  # seq 1..8: sales on odd seqs
        batch = store.claim_batch("sales", 3)
        assert batch is not None
        store.enqueue(mixed(5, 2))  # after the claim: not members, though of the same type
        again = store.claim_batch("sales", 100)
    finally:
        store.close()

    assert [r["seq"] for r in batch.records] == [1, 3, 5]
    assert raw_rows(path, "SELECT first_seq, last_seq, size, types FROM batches") == [(1, 5, 3, '["sale"]')]
    assert raw_rows(path, "SELECT COUNT(*) FROM batch_items") == [(0,)]
    assert again is not None and (again.batch_id, again.records) == (batch.batch_id, batch.records)


@pytest.mark.slow
def test_a_crash_between_claim_and_completion_resends_the_same_batch(tmp_path: Path) -> None:
    """SIGKILL right after the claim's commit: the next start sends the same id and the same records."""
    path = tmp_path / "outbox.db"
    script = textwrap.dedent(
        f"""
        import json, os, signal
        from agent.outbox.store import OutboxStore
        from tests.outbox.test_wear import DESTINATIONS, mixed
        store = OutboxStore.open({str(path)!r}, store_id={STORE_ID!r})
        store.register_destinations(DESTINATIONS)
        store.enqueue(mixed(1, 5))
        batch = store.claim_batch("sales", 4)
        print(json.dumps([batch.batch_id, batch.ids, batch.records]), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    batch_id, ids, records = json.loads(done.stdout)

    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        store.enqueue(mixed(6, 3))  # new records after the restart never join the frozen batch
        again = store.claim_batch("sales", 100)
        assert again is not None
        store.complete_batch("sales", again.batch_id)
        following = store.claim_batch("sales", 100)
    finally:
        store.close()

    assert (again.batch_id, again.ids) == (batch_id, ids)
    assert json.loads(json.dumps(again.records)) == records
    assert following is not None and [r["seq"] for r in following.records] == [9, 11, 13, 15]


def test_an_older_file_with_member_rows_still_drains_after_the_migration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Open batches frozen by the previous release (``batch_items``) go out unchanged, then range batches follow."""
    path = tmp_path / "outbox.db"
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:2])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 2)
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.register_destinations(DESTINATIONS)
    store.enqueue(mixed(1, 6))  # seq 1..12
    old = "0190a1b2-0000-7000-8000-00000000000{}"
    with store.transaction():  # what the previous release wrote when it froze two batches
        for n, (name, first, last) in enumerate([("sales", 1, 5), ("everything", 1, 6)]):
            store.conn.execute(
                "INSERT INTO batches(batch_id, destination, kind, state, first_seq, last_seq, size, created_at,"
                " attempts) VALUES (?, ?, 'normal', 'open', ?, ?, 0, '2026-11-30T10:00:00.000Z', 1)",
                (old.format(n), name, first, last),
            )
            types = ("sale",) if name == "sales" else ("sale", "stock_movement")
            store.conn.execute(
                "INSERT INTO batch_items(batch_id, seq) SELECT ?, seq FROM records"
                f" WHERE seq BETWEEN ? AND ? AND type IN ({','.join('?' * len(types))})",
                (old.format(n), first, last, *types),
            )
            store.conn.execute("UPDATE batches SET size = (SELECT COUNT(*) FROM batch_items WHERE batch_id = ?)"
                               " WHERE batch_id = ?", (old.format(n), old.format(n)))  # fmt: skip
            store.conn.execute("UPDATE destinations SET claimed_seq = ? WHERE name = ?", (last, name))
    store.close()
    monkeypatch.undo()

    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        assert raw_rows(path, "PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
        sales = store.claim_batch("sales", 100)
        everything = store.claim_batch("everything", 100)
        assert sales is not None and everything is not None
        assert (sales.batch_id, [r["seq"] for r in sales.records]) == (old.format(0), [1, 3, 5])
        assert (everything.batch_id, [r["seq"] for r in everything.records]) == (old.format(1), [1, 2, 3, 4, 5, 6])
        store.complete_batch("sales", sales.batch_id)
        halves = store.split_batch("everything", everything.batch_id)  # an old batch splits as before
        seen = []
        for _ in halves:
            half = store.claim_batch("everything", 100)
            assert half is not None
            seen += [r["seq"] for r in half.records]
            store.complete_batch("everything", half.batch_id)
        rest = {name: store.claim_batch(name, 100) for name in ("sales", "everything")}
        stats = {d["name"]: d for d in store.destination_stats()}
    finally:
        store.close()

    assert seen == [1, 2, 3, 4, 5, 6]
    assert rest["sales"] is not None and [r["seq"] for r in rest["sales"].records] == [7, 9, 11]
    assert rest["everything"] is not None and [r["seq"] for r in rest["everything"].records] == list(range(7, 13))
    assert stats["sales"]["acked_seq"] == 5 and stats["everything"]["acked_seq"] == 6
    assert raw_rows(path, "SELECT COUNT(*) FROM batch_items") == [(0,)]  # the old rows went with their batches


def test_split_halves_and_rejections_of_a_range_batch_keep_its_members(tmp_path: Path) -> None:
    store = OutboxStore.open(tmp_path / "outbox.db", store_id=STORE_ID)
    try:
        store.register_destinations(DESTINATIONS)
        store.enqueue(mixed(1, 4))
        batch = store.claim_batch("sales", 100)
        assert batch is not None
        halves = [store.load_batch(b) for b in store.split_batch("sales", batch.batch_id)]
        refused = halves[1].ids[0]
        store.complete_batch("sales", halves[0].batch_id)
        store.complete_batch("sales", halves[1].batch_id, {refused: (422, "nope")})
        dead = store.list_dead_letters("sales")
    finally:
        store.close()

    assert [r["seq"] for h in halves for r in h.records] == [1, 3, 5, 7]
    assert [(d.record_id, d.status) for d in dead] == [(refused, 422)]


# ------------------------------------------------------------------ grouped calls
async def test_delivery_calls_taken_together_commit_once_and_a_failing_one_undoes_only_itself(
    outbox: Outbox,
) -> None:
    await outbox.call(lambda s: s.register_destinations(DESTINATIONS))
    await outbox.enqueue(mixed(1, 3))
    first = await outbox.claim_batch("sales", 100)
    assert first is not None
    statements: list[str] = []
    holder = Holder()
    held = await holder.hold(outbox)
    outbox.store.conn.set_trace_callback(statements.append)
    try:
        calls = [
            asyncio.create_task(outbox.complete_batch("sales", first.batch_id)),
            asyncio.create_task(outbox.complete_batch("sales", "no-such-batch")),
            asyncio.create_task(outbox.claim_batch("everything", 100)),
        ]
        await asyncio.sleep(0)  # every call is in the owner's queue before it is released
        holder.release.set()
        await held
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), WAIT_S)
    finally:
        outbox.store.conn.set_trace_callback(None)

    assert results[0] is None
    assert isinstance(results[1], OutboxError) and "no-such-batch" in str(results[1])
    assert results[2] is not None and [r["seq"] for r in results[2].records] == list(range(1, 7))  # type: ignore[union-attr]
    assert [s for s in statements if s in ("BEGIN IMMEDIATE", "COMMIT")] == ["BEGIN IMMEDIATE", "COMMIT"]
    # Committed: a fresh connection sees the completion and the claim.
    assert raw_rows(outbox.path, "SELECT acked_seq FROM destinations WHERE name = 'sales'") == [(5,)]
    assert raw_rows(outbox.path, "SELECT destination FROM batches") == [("everything",)]


async def test_a_group_that_loses_its_transaction_fails_every_call_in_it(outbox: Outbox) -> None:
    """A call that breaks the transaction (here: it ends it) takes the whole group with it; nothing half-done stays."""
    await outbox.call(lambda s: s.register_destinations(DESTINATIONS))
    await outbox.enqueue(mixed(1, 2))
    holder = Holder()
    held = await holder.hold(outbox)

    def breaks_the_transaction(store: OutboxStore) -> None:
        store.conn.execute("ROLLBACK")
        raise RuntimeError("the transaction was lost")

    calls = [
        asyncio.create_task(outbox.claim_batch("sales", 100)),
        asyncio.create_task(outbox._delivery(breaks_the_transaction)),
        asyncio.create_task(outbox.claim_batch("everything", 100)),
    ]
    await asyncio.sleep(0)
    holder.release.set()
    await held
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), WAIT_S)

    assert all(isinstance(r, OutboxError) for r in results), results
    assert raw_rows(outbox.path, "SELECT COUNT(*) FROM batches") == [(0,)]
    # The outbox goes on: the next claims commit.
    again = await outbox.claim_batch("sales", 100)
    assert again is not None and [r["seq"] for r in again.records] == [1, 3]


# ------------------------------------------------------------------ page size
def test_a_new_outbox_has_small_pages_and_an_existing_file_keeps_its_own(tmp_path: Path) -> None:
    fresh, older = tmp_path / "fresh.db", tmp_path / "older.db"
    conn = sqlite3.connect(older)  # as a release before the small pages created it
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    for path in (fresh, older):
        store = OutboxStore.open(path, store_id=STORE_ID)
        store.register_destinations(DESTINATIONS)
        store.enqueue(mixed(1, 30))
        store.close()

    assert raw_rows(fresh, "PRAGMA page_size") == [(NEW_FILE_PAGE_SIZE,)] and NEW_FILE_PAGE_SIZE < 4096
    assert raw_rows(fresh, "PRAGMA auto_vacuum") == [(2,)]  # still incremental: both precede the first table
    assert raw_rows(older, "PRAGMA page_size") == [(4096,)]
    assert raw_rows(older, "SELECT COUNT(*) FROM records") == [(60,)]


async def test_outcomes_a_moment_apart_share_one_commit(outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The destinations of a sale answer milliseconds apart; their outcomes wait for each other briefly."""
    monkeypatch.setattr(service, "OUTCOME_GATHER_S", 2.0)  # generous, so a loaded machine cannot miss it
    await outbox.call(lambda s: s.register_destinations(DESTINATIONS))
    await outbox.enqueue(mixed(1, 2))
    batches = [await outbox.claim_batch(name, 100) for name in ("sales", "everything")]
    statements: list[str] = []
    outbox.store.conn.set_trace_callback(statements.append)
    try:
        first = asyncio.create_task(outbox.complete_batch("sales", batches[0].batch_id))  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        assert not first.done()  # still waiting for the other destination's outcome
        second = asyncio.create_task(outbox.complete_batch("everything", batches[1].batch_id))  # type: ignore[union-attr]
        await asyncio.wait_for(asyncio.gather(first, second), WAIT_S)
    finally:
        outbox.store.conn.set_trace_callback(None)

    assert statements.count("COMMIT") == 1
    assert raw_rows(outbox.path, "SELECT name, acked_seq FROM destinations ORDER BY name") == [
        ("everything", 4),
        ("sales", 3),
    ]


async def test_a_sale_arriving_while_outcomes_wait_ends_the_wait(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "OUTCOME_GATHER_S", 5.0)
    await outbox.call(lambda s: s.register_destinations(DESTINATIONS))
    await outbox.enqueue(mixed(1, 1))
    batch = await outbox.claim_batch("sales", 100)
    assert batch is not None
    outcome = asyncio.create_task(outbox.complete_batch("sales", batch.batch_id))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    [stored] = await asyncio.wait_for(outbox.enqueue([sale(99)]), WAIT_S)
    await asyncio.wait_for(outcome, WAIT_S)

    assert time.monotonic() - started < 2.5  # not the 5 s the outcome would have waited alone
    assert raw_rows(outbox.path, "SELECT acked_seq FROM destinations WHERE name = 'sales'") == [(1,)]
    assert raw_rows(outbox.path, "SELECT key FROM records WHERE seq = ?", (stored.seq,)) == [(stored.key,)]
