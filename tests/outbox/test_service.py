"""The asyncio outbox (``Outbox``): one owner thread, group commit, answers after commit.

The till is answered only once its record is on the card, and many tills (or
one fast one) share each fsync. These tests use the real owner thread and real
files; to make grouping deterministic they hold the owner thread busy with a
``call`` that waits on a ``threading.Event``, so the queue fills up behind it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.outbox.service import Outbox
from agent.outbox.store import Conflict, OutboxStore, OutboxUnavailable, StorageFull
from tests.helpers import STORE_ID
from tests.outbox.records import movement, raw_rows, sale

WAIT_S = 10.0


class Holder:
    """Keeps the owner thread busy inside ``fn`` until released (bounded by WAIT_S)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, store: OutboxStore) -> None:
        self.started.set()
        assert self.release.wait(WAIT_S), "the test never released the owner thread"

    async def hold(self, outbox: Outbox) -> asyncio.Task[None]:
        task = asyncio.create_task(outbox.call(self))
        assert await asyncio.to_thread(self.started.wait, WAIT_S)
        return task


async def test_two_hundred_concurrent_enqueues_share_commits(outbox: Outbox) -> None:
    before = outbox.commits
    results = await asyncio.wait_for(asyncio.gather(*(outbox.enqueue([sale(n)]) for n in range(1, 201))), WAIT_S)

    assert sorted(r[0].seq for r in results) == list(range(1, 201))
    assert all(not r[0].duplicate for r in results)
    assert outbox.commits - before < 200
    assert raw_rows(outbox.path, "SELECT COUNT(*) FROM records") == [(200,)]


async def test_requests_queued_behind_a_busy_owner_go_in_one_commit(outbox: Outbox) -> None:
    holder = Holder()
    held = await holder.hold(outbox)
    before = outbox.commits

    tasks = [asyncio.create_task(outbox.enqueue([sale(n), movement(f"m{n}")])) for n in range(1, 101)]
    await asyncio.sleep(0)  # let every task put its request in the queue
    holder.release.set()
    await held
    results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)

    assert outbox.commits - before == 1
    assert len({r[0].seq for r in results}) == 100


async def test_each_caller_is_answered_only_after_its_commit(outbox: Outbox) -> None:
    async def enqueue_then_look(receipt_no: int) -> list[tuple[str]]:
        [result] = await outbox.enqueue([sale(receipt_no)])
        # A fresh connection sees only what was committed.
        return raw_rows(outbox.path, "SELECT id FROM records WHERE key = ?", (result.key,))  # type: ignore[return-value]

    seen = await asyncio.wait_for(asyncio.gather(*(enqueue_then_look(n) for n in range(1, 41))), WAIT_S)

    assert all(len(rows) == 1 for rows in seen)


async def test_a_conflict_in_a_group_does_not_fail_the_others(outbox: Outbox) -> None:
    [original] = await outbox.enqueue([sale(1, price="10.00")])
    holder = Holder()
    held = await holder.hold(outbox)
    before = outbox.commits

    good = [asyncio.create_task(outbox.enqueue([sale(n)])) for n in range(2, 12)]
    bad = asyncio.create_task(outbox.enqueue([sale(1, price="99.00")]))
    duplicate = asyncio.create_task(outbox.enqueue([sale(1, price="10.00")]))
    await asyncio.sleep(0)
    holder.release.set()
    await held

    results = await asyncio.wait_for(asyncio.gather(*good), WAIT_S)
    with pytest.raises(Conflict) as caught:
        await bad
    [again] = await duplicate

    assert outbox.commits - before == 1
    assert all(not r[0].duplicate for r in results)
    assert caught.value.id == original.id
    assert again.duplicate and again.id == original.id
    assert raw_rows(outbox.path, "SELECT COUNT(*) FROM records") == [(11,)]
    assert raw_rows(outbox.path, "SELECT COUNT(*) FROM conflicts") == [(1,)]


async def test_a_request_refused_for_size_does_not_fail_a_duplicate_in_the_same_group(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(n) for n in range(1, 21)])
    limit = store.used_bytes()
    store.close()

    box = Outbox(path, store_id=STORE_ID, max_bytes=limit)
    await box.start()
    try:
        new, old = await asyncio.gather(box.enqueue([sale(99)]), box.enqueue([sale(3)]), return_exceptions=True)
        assert isinstance(new, StorageFull)
        assert isinstance(old, list) and old[0].duplicate
    finally:
        await box.close()
    assert raw_rows(path, "SELECT COUNT(*) FROM records") == [(20,)]


async def test_requests_submitted_in_the_same_loop_turn_as_close_are_still_stored(tmp_path: Path) -> None:
    # Jobs of one loop turn reach the owner thread together after it (one wake-up); a stop
    # in that same turn must hand them over first, not leave their tills waiting forever.
    box = Outbox(tmp_path / "outbox.db", store_id=STORE_ID)
    await box.start()
    if box._deferred_check is not None:
        await box._deferred_check  # else close() waits for it, and the loop turn ends before the stop
    tasks = [asyncio.create_task(box.enqueue([sale(n)])) for n in range(1, 21)]
    await asyncio.sleep(0)  # every task has submitted its job; none is on the owner's queue yet
    await box.close()  # awaited directly: in this same loop turn (the owner thread stops by itself)

    results = await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)
    assert [r[0].seq for r in results] == list(range(1, 21))
    assert raw_rows(box.path, "SELECT COUNT(*) FROM records") == [(20,)]


async def test_close_finishes_queued_work_then_refuses(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", store_id=STORE_ID)
    await box.start()
    holder = Holder()
    held = await holder.hold(box)
    tasks = [asyncio.create_task(box.enqueue([sale(n)])) for n in range(1, 51)]
    await asyncio.sleep(0)

    closing = asyncio.create_task(box.close())
    await asyncio.sleep(0)
    holder.release.set()
    await held
    await asyncio.wait_for(closing, WAIT_S)

    results = await asyncio.gather(*tasks)
    assert len(results) == 50
    assert raw_rows(box.path, "SELECT COUNT(*) FROM records") == [(50,)]
    assert raw_rows(box.path, "PRAGMA integrity_check") == [("ok",)]
    with pytest.raises(OutboxUnavailable):
        await box.enqueue([sale(51)])


async def test_subscribe_fires_on_new_records_only(outbox: Outbox) -> None:
    event = outbox.subscribe()
    await outbox.enqueue([sale(1)])
    await asyncio.wait_for(event.wait(), WAIT_S)

    event.clear()
    await outbox.enqueue([sale(1)])  # a duplicate stores nothing new
    with pytest.raises(Conflict):
        await outbox.enqueue([sale(1, price="2.00")])
    await outbox.call(lambda store: None)  # any wake-up would have been delivered by now
    assert not event.is_set()

    await outbox.enqueue([sale(2)])
    await asyncio.wait_for(event.wait(), WAIT_S)


async def test_retrying_dead_letters_and_resuming_wake_the_delivery_loops(outbox: Outbox) -> None:
    await outbox.call(lambda s: s.register_destinations([("backend", "http", ["sale"])]))
    [result] = await outbox.enqueue([sale(1)])
    batch = await outbox.claim_batch("backend", 10)
    assert batch is not None
    await outbox.complete_batch("backend", batch.batch_id, {result.id: (400, "no")})
    event = outbox.subscribe()

    assert await outbox.retry_dead_letters("backend") == 1
    assert event.is_set()
    event.clear()
    await outbox.set_paused("backend", True)
    assert not event.is_set()
    await outbox.set_paused("backend", False)
    assert event.is_set()


async def test_reads_do_not_wait_for_the_writer(outbox: Outbox) -> None:
    await outbox.enqueue([sale(1)])
    started, release = threading.Event(), threading.Event()

    def write_slowly(store: OutboxStore) -> None:
        with store.transaction():  # holds the write lock, uncommitted row inside
            store.conn.execute(
                "INSERT INTO events(at, level, message) VALUES ('2026-11-26T00:00:00.000Z', 'info', 'slow')"
            )
            started.set()
            assert release.wait(WAIT_S)

    writer = asyncio.create_task(outbox.call(write_slowly))
    assert await asyncio.to_thread(started.wait, WAIT_S)
    try:
        figures = await asyncio.wait_for(outbox.outbox_stats(), WAIT_S)
        record = await asyncio.wait_for(outbox.get_record("sale:kassa-1:1"), WAIT_S)
    finally:
        release.set()
        await writer
    assert figures["records"] == 1
    assert record is not None


async def test_reads_run_alongside_many_writes(outbox: Outbox) -> None:
    await outbox.call(lambda s: s.register_destinations([("backend", "http", ["sale", "stock_movement"])]))

    async def writer(n: int) -> None:
        await outbox.enqueue([sale(n), movement(f"m{n}")])

    async def reader() -> int:
        stats = await outbox.destination_stats()
        return int(stats[0]["pending"])

    jobs: list[Callable[[], object]] = []
    for n in range(1, 61):
        jobs.append(lambda n=n: writer(n))
        jobs.append(reader)
    answers = await asyncio.wait_for(asyncio.gather(*(job() for job in jobs)), WAIT_S)  # type: ignore[misc]

    counts = [a for a in answers if isinstance(a, int)]
    assert len(counts) == 60
    assert all(0 <= c <= 120 and c % 2 == 0 for c in counts)  # a record and its movement commit together
    assert (await outbox.destination_stats())[0]["pending"] == 120


async def test_the_store_methods_are_reachable_as_coroutines(outbox: Outbox) -> None:
    await outbox.call(lambda s: s.register_destinations([("backend", "http", ["sale"])]))
    results = await outbox.enqueue([sale(1), sale(2), sale(3)])
    batch = await outbox.claim_batch("backend", 10)
    assert batch is not None
    [left, right] = await outbox.split_batch("backend", batch.batch_id)
    first = await outbox.claim_batch("backend", 10)
    assert first is not None and first.batch_id == left
    await outbox.record_failure("backend", first.batch_id, "timeout", None)
    await outbox.complete_batch("backend", first.batch_id, {results[0].id: (400, "refused")})
    [letter] = await outbox.list_dead_letters("backend")
    assert letter.record_id == results[0].id
    second = await outbox.claim_batch("backend", 10)
    assert second is not None and second.batch_id == right


async def test_an_unopenable_outbox_fails_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    box = Outbox(blocker / "outbox.db", store_id=STORE_ID)
    with pytest.raises(OSError):
        await box.start()
    with pytest.raises(OutboxUnavailable):
        await box.enqueue([sale(1)])


async def test_a_damaged_file_is_moved_aside_at_start_and_the_problem_kept(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"the card ate this file " * 500)

    box = Outbox(path, store_id=STORE_ID)
    await box.start()
    try:
        [result] = await box.enqueue([sale(1)])
        figures = await box.outbox_stats()
    finally:
        await box.close()

    assert result.seq == 1
    [aside] = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert any(str(aside) in problem for problem in box.problems)
    assert any(str(aside) in problem for problem in figures["problems"])


async def test_the_wal_is_folded_in_between_commits_not_inside_a_tills_commit(outbox: Outbox) -> None:
    """SQLite's automatic checkpoint would run inside a till's commit; the owner runs it after answering."""
    owner_setting = await outbox.call(lambda s: s.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
    assert owner_setting == 0
    wal = Path(f"{outbox.path}-wal")
    for n in range(1, 1201):  # one commit each: far more WAL than the 1,000 pages of one checkpoint
        await outbox.enqueue([sale(n), movement(f"m{n}")])
    assert outbox.checkpoints >= 2
    assert await outbox.read(lambda s: s.outbox_stats()["records"]) == 2400
    page = await outbox.call(lambda s: s.db.page_size)
    # The WAL file is restarted after each fold: it stays near one checkpoint's worth, not all 1,200 commits.
    assert wal.stat().st_size < 6 * 1000 * (page + 24)
    checkpointed = raw_rows(outbox.path, "SELECT COUNT(*) FROM records")
    assert checkpointed == [(2400,)]
