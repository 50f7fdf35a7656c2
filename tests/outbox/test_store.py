"""The synchronous outbox (``OutboxStore``) on real SQLite files.

What a till and an integrator rely on: an acknowledged record is stored once
under its natural key, a different version never overwrites it, ``seq`` only
grows, a batch once frozen is resent unchanged, a refused record is kept as a
dead letter and can be replayed, and the file neither fills the card nor
forgets anything still owed to a destination.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.outbox.store import (
    Conflict,
    OutboxError,
    OutboxStore,
    StorageFull,
    UnknownDestination,
)
from tests.helpers import STORE_ID
from tests.outbox.records import movement, raw_rows, sale

OLD = "2020-01-01T00:00:00.000Z"
DAY = 86400.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "outbox.db"


@pytest.fixture
def store(path: Path) -> Iterator[OutboxStore]:
    opened = OutboxStore.open(path, store_id=STORE_ID)
    yield opened
    opened.conn.close()


def two_destinations(store: OutboxStore) -> None:
    """``sales`` takes only sales; ``everything`` takes both types."""
    store.register_destinations([("sales", "http", ["sale"]), ("everything", "mqtt", ["sale", "stock_movement"])])


def stats(store: OutboxStore) -> dict[str, dict]:
    return {d["name"]: d for d in store.destination_stats()}


def age_everything(store: OutboxStore) -> None:
    """Pretend every record arrived long ago, so retention no longer protects it."""
    with store.transaction():
        store.conn.execute("UPDATE records SET received_at = ?", (OLD,))


def deliver_all(store: OutboxStore, name: str) -> None:
    """Claim and complete batches until ``name`` has nothing left (bounded)."""
    for _ in range(1000):
        batch = store.claim_batch(name, 100)
        if batch is None:
            return
        store.complete_batch(name, batch.batch_id)
    raise AssertionError(f"{name} never ran dry")


# ------------------------------------------------------------------ enqueue
def test_a_new_record_gets_an_id_and_seq_and_is_on_disk(store: OutboxStore, path: Path) -> None:
    [result] = store.enqueue([sale(1)])

    assert not result.duplicate
    assert result.key == "sale:kassa-1:1"
    assert result.seq == 1
    assert len(result.id) == 36 and result.id[14] == "7"  # a UUIDv7
    assert raw_rows(path, "SELECT id, key, seq FROM records") == [(result.id, result.key, 1)]


def test_an_identical_duplicate_answers_the_stored_record(store: OutboxStore) -> None:
    [first] = store.enqueue([sale(1)])
    [again] = store.enqueue([sale(1)])

    assert again.duplicate
    assert (again.id, again.seq, again.key) == (first.id, first.seq, first.key)
    assert store.outbox_stats()["records"] == 1


def test_a_duplicate_in_another_spelling_is_still_a_duplicate(store: OutboxStore) -> None:
    from agent.records import parse_record

    [first] = store.enqueue([sale(1, price="20")])
    spelled = parse_record(
        "sale",
        {
            "till_id": "kassa-1",
            "receipt_no": 1,
            "occurred_at": "2026-11-26T14:59:01+01:00",
            "lines": [
                {"sku": "SKU-0", "name": "Mjölk 1,5%", "quantity": "1.000", "unit_price": 20.0, "vat_rate": "25"}
            ],
            "total": 20,
            "payments": [{"method": "card", "amount": "20.00"}],
        },
    )
    [again] = store.enqueue([spelled])
    assert again.duplicate and again.id == first.id


def test_a_conflict_keeps_the_original_and_puts_the_other_version_aside(store: OutboxStore, path: Path) -> None:
    [original] = store.enqueue([sale(1, price="10.00")])

    with pytest.raises(Conflict) as caught:
        store.enqueue([sale(1, price="99.00")])

    assert caught.value.key == "sale:kassa-1:1"
    assert caught.value.id == original.id
    stored = store.get_record("sale:kassa-1:1")
    assert stored is not None
    assert stored["record"]["data"]["total"] == "10.00"
    assert stored["conflicts"] == 1
    [(key, stored_id, data)] = raw_rows(path, "SELECT key, stored_id, data FROM conflicts")
    assert (key, stored_id) == ("sale:kassa-1:1", original.id)
    assert '"total":"99.00"' in data
    assert store.outbox_stats()["conflicts"] == 1


def test_a_multi_record_enqueue_is_all_or_nothing(store: OutboxStore) -> None:
    store.enqueue([sale(1, price="10.00")])

    with pytest.raises(Conflict):
        store.enqueue([sale(2), movement("m-1"), sale(1, price="11.00")])

    assert store.get_record("sale:kassa-1:2") is None
    assert store.get_record("stock_movement:kassa-1:m-1") is None
    assert store.outbox_stats()["records"] == 1
    # The refused request did not burn seq numbers either way: the next one follows on.
    [next_one] = store.enqueue([sale(3)])
    assert next_one.seq > 1


def test_results_come_back_in_request_order_with_increasing_seq(store: OutboxStore) -> None:
    results = store.enqueue([sale(5), movement("a"), sale(4), movement("b")])

    assert [r.key for r in results] == [
        "sale:kassa-1:5",
        "stock_movement:kassa-1:a",
        "sale:kassa-1:4",
        "stock_movement:kassa-1:b",
    ]
    assert [r.seq for r in results] == [1, 2, 3, 4]


def test_a_group_judges_each_request_against_the_ones_before_it(store: OutboxStore, path: Path) -> None:
    # One transaction, as when these tills' requests arrive during the same commit.
    first, clash, again, later = store.enqueue_many(
        [
            [sale(1, price="10.00")],
            [movement("x"), sale(1, price="99.00")],  # a new record, then a key the first request stored
            [sale(1, price="10.00")],
            [movement("y")],
        ]
    )

    assert isinstance(first, list) and not first[0].duplicate
    assert isinstance(clash, Conflict) and clash.key == "sale:kassa-1:1" and clash.id == first[0].id
    assert isinstance(again, list) and again[0].duplicate
    assert (again[0].id, again[0].seq) == (first[0].id, first[0].seq)
    # The refused request stored none of its records and left no gap in seq.
    assert isinstance(later, list) and later[0].seq == first[0].seq + 1
    assert raw_rows(path, "SELECT key, seq FROM records ORDER BY seq") == [
        ("sale:kassa-1:1", first[0].seq),
        ("stock_movement:kassa-1:y", first[0].seq + 1),
    ]
    assert raw_rows(path, "SELECT key, stored_id FROM conflicts") == [("sale:kassa-1:1", first[0].id)]


def test_a_resend_or_a_conflict_among_new_sales_is_judged_against_what_is_stored(
    store: OutboxStore, path: Path
) -> None:
    """The writer inserts first and looks keys up only when an insert meets a stored one: same answers."""
    [stored] = store.enqueue([sale(1, price="10.00")])
    before = raw_rows(path, "SELECT seq, id, key, digest, data FROM records")
    new, resend, clash, other = store.enqueue_many(
        [[sale(2)], [sale(1, price="10.00")], [movement("z"), sale(1, price="99.00")], [sale(3)]]
    )
    assert isinstance(resend, list) and resend[0].duplicate and (resend[0].id, resend[0].seq) == (stored.id, stored.seq)
    assert isinstance(clash, Conflict) and clash.id == stored.id
    assert isinstance(new, list) and isinstance(other, list)
    assert [new[0].seq, other[0].seq] == [stored.seq + 1, stored.seq + 2]  # no gap, nothing of the refused one
    rows = raw_rows(path, "SELECT seq, id, key, digest, data FROM records ORDER BY seq")
    assert rows[:1] == before and [r[2] for r in rows] == ["sale:kassa-1:1", "sale:kassa-1:2", "sale:kassa-1:3"]
    assert raw_rows(path, "SELECT key FROM conflicts") == [("sale:kassa-1:1",)]
    # And the groups after it, all new, are stored as before.
    [later] = store.enqueue([sale(4)])
    assert not later.duplicate and later.seq == stored.seq + 3


def test_a_large_group_stores_every_record_under_the_seq_it_was_answered_with(store: OutboxStore, path: Path) -> None:
    answers = store.enqueue_many([[sale(n), movement(f"m{n}")] for n in range(1, 100)])  # 198 new records

    results = [r for answer in answers if isinstance(answer, list) for r in answer]
    assert [r.seq for r in results] == list(range(1, 199))
    assert raw_rows(path, "SELECT seq, id, key FROM records ORDER BY seq") == [(r.seq, r.id, r.key) for r in results]


def test_seq_is_never_reused_after_pruning(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(n) for n in range(1, 6)])
    deliver_all(store, "sales")
    deliver_all(store, "everything")
    age_everything(store)

    assert store.prune(14 * DAY) == 5
    assert store.outbox_stats()["records"] == 0

    [after] = store.enqueue([sale(6)])
    assert after.seq == 6
    assert store.outbox_stats()["max_seq"] == 6


def test_records_another_process_stores_between_our_commits_never_collide_on_seq(
    store: OutboxStore, path: Path
) -> None:
    """``kassabro submit`` writes the file from a process of its own while the agent's writer runs."""
    [first] = store.enqueue([sale(1)])
    other = OutboxStore.open(path, store_id=STORE_ID)  # another connection, as another process has
    try:
        [between] = other.enqueue([sale(2)])
        store.enqueue([movement("m1")])
        other.enqueue([movement("m3")])
    finally:
        other.close()
    [last] = store.enqueue([sale(3)])
    seqs = [seq for (seq,) in raw_rows(path, "SELECT seq FROM records ORDER BY seq")]
    assert seqs == [1, 2, 3, 4, 5] and (first.seq, between.seq, last.seq) == (1, 2, 5)


# ------------------------------------------------------------------ batches
def test_a_claimed_batch_is_frozen_and_claimed_again_unchanged(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(n) for n in range(1, 4)])
    first = store.claim_batch("sales", 10)
    assert first is not None
    store.enqueue([sale(4)])  # arrives while the batch is out

    again = store.claim_batch("sales", 10)

    assert again is not None
    assert again.batch_id == first.batch_id
    assert again.records == first.records
    assert [r["seq"] for r in again.records] == [1, 2, 3]


def test_a_frozen_batch_survives_close_and_reopen(path: Path) -> None:
    store = OutboxStore.open(path, store_id=STORE_ID)
    two_destinations(store)
    store.enqueue([sale(n) for n in range(1, 6)])
    first = store.claim_batch("everything", 3)
    store.close()

    reopened = OutboxStore.open(path, store_id=STORE_ID)
    try:
        again = reopened.claim_batch("everything", 100)
    finally:
        reopened.close()

    assert first is not None and again is not None
    assert again.batch_id == first.batch_id
    assert again.ids == first.ids
    assert again.records == first.records


def test_a_frozen_batch_survives_a_crash_without_clean_close(path: Path) -> None:
    store = OutboxStore.open(path, store_id=STORE_ID)
    two_destinations(store)
    store.enqueue([sale(n) for n in range(1, 6)])
    first = store.claim_batch("sales", 2)
    store.conn.close()  # no checkpoint: the WAL is all there is

    reopened = OutboxStore.open(path, store_id=STORE_ID)
    try:
        again = reopened.claim_batch("sales", 100)
    finally:
        reopened.close()
    assert first is not None and again is not None
    assert (again.batch_id, again.ids) == (first.batch_id, first.ids)


def test_batches_follow_seq_and_respect_the_limit(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(n) for n in range(1, 8)])

    seen: list[int] = []
    for _ in range(10):
        batch = store.claim_batch("sales", 3)
        if batch is None:
            break
        assert len(batch.records) <= 3
        seen.extend(r["seq"] for r in batch.records)
        store.complete_batch("sales", batch.batch_id)
    assert seen == list(range(1, 8))
    assert stats(store)["sales"]["pending"] == 0


def test_the_envelope_is_the_contract_envelope(store: OutboxStore) -> None:
    two_destinations(store)
    [result] = store.enqueue([sale(1)])
    batch = store.claim_batch("sales", 1)
    assert batch is not None
    [envelope] = batch.records
    assert set(envelope) == {"id", "key", "type", "store_id", "seq", "received_at", "clock_synced", "data"}
    assert envelope["id"] == result.id
    assert envelope["store_id"] == STORE_ID
    assert envelope["type"] == "sale"
    assert isinstance(envelope["clock_synced"], bool)
    assert envelope["received_at"].endswith("Z")
    assert envelope["data"]["total"] == "31.80"


def test_rejected_records_become_dead_letters_and_the_rest_are_delivered(store: OutboxStore) -> None:
    two_destinations(store)
    results = store.enqueue([sale(n) for n in range(1, 5)])
    batch = store.claim_batch("sales", 10)
    assert batch is not None
    refused = results[1].id

    store.complete_batch("sales", batch.batch_id, {refused: (400, "unknown sku")})

    [letter] = store.list_dead_letters("sales")
    assert (letter.record_id, letter.key, letter.status, letter.error, letter.state) == (
        refused,
        "sale:kassa-1:2",
        400,
        "unknown sku",
        "dead",
    )
    figures = stats(store)["sales"]
    assert figures["pending"] == 0
    assert figures["dead_letters"] == 1
    assert figures["last_success_at"] is not None
    assert store.get_record("sale:kassa-1:2")["deliveries"]["sales"] == "dead_letter"  # type: ignore[index]
    assert store.get_record("sale:kassa-1:1")["deliveries"]["sales"] == "delivered"  # type: ignore[index]
    # The other destination is not affected by this one's refusal.
    assert stats(store)["everything"]["pending"] == 4
    assert store.list_dead_letters("everything") == []


def test_completing_a_batch_twice_is_refused(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1)])
    batch = store.claim_batch("sales", 10)
    assert batch is not None
    store.complete_batch("sales", batch.batch_id)
    with pytest.raises(OutboxError):
        store.complete_batch("sales", batch.batch_id)


def test_split_batch_gives_two_halves_in_seq_order(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(n) for n in range(1, 6)])
    batch = store.claim_batch("sales", 10)
    assert batch is not None

    children = store.split_batch("sales", batch.batch_id)

    assert len(children) == 2
    first = store.claim_batch("sales", 10)
    assert first is not None and first.batch_id == children[0]
    assert first.kind == "split"
    assert [r["seq"] for r in first.records] == [1, 2]
    store.complete_batch("sales", first.batch_id)
    assert stats(store)["sales"]["pending"] == 3  # acked only up to the open half
    second = store.claim_batch("sales", 10)
    assert second is not None and second.batch_id == children[1]
    assert [r["seq"] for r in second.records] == [3, 4, 5]
    store.complete_batch("sales", second.batch_id)
    assert stats(store)["sales"]["pending"] == 0
    assert store.claim_batch("sales", 10) is None


def test_a_single_record_batch_cannot_be_split(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1)])
    batch = store.claim_batch("sales", 10)
    assert batch is not None
    with pytest.raises(OutboxError):
        store.split_batch("sales", batch.batch_id)
    again = store.claim_batch("sales", 10)
    assert again is not None and again.batch_id == batch.batch_id


def test_record_failure_keeps_the_batch_and_counts_attempts(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1), sale(2)])
    batch = store.claim_batch("sales", 10)
    assert batch is not None

    store.record_failure("sales", batch.batch_id, "connection refused", "2026-11-26T15:00:00.000Z")
    store.record_failure("sales", batch.batch_id, "timeout", "2026-11-26T15:00:02.000Z")

    again = store.claim_batch("sales", 10)
    assert again is not None
    assert (again.batch_id, again.ids, again.attempts) == (batch.batch_id, batch.ids, 2)
    figures = stats(store)["sales"]
    assert figures["last_error"] == "timeout"
    assert figures["next_attempt_at"] == "2026-11-26T15:00:02.000Z"
    assert figures["failing_since"] is not None
    assert figures["pending"] == 2

    store.complete_batch("sales", batch.batch_id)
    figures = stats(store)["sales"]
    assert (figures["last_error"], figures["failing_since"], figures["next_attempt_at"]) == (None, None, None)


def test_retried_dead_letters_are_replayed_and_leave_on_success(store: OutboxStore) -> None:
    two_destinations(store)
    results = store.enqueue([sale(n) for n in range(1, 4)])
    batch = store.claim_batch("sales", 10)
    assert batch is not None
    store.complete_batch("sales", batch.batch_id, {results[0].id: (422, "no"), results[2].id: (422, "no")})
    store.enqueue([sale(4)])

    assert store.retry_dead_letters("sales", [results[2].id]) == 1
    assert stats(store)["sales"]["pending"] == 2  # sale 4 and the one being retried
    assert stats(store)["sales"]["dead_letters"] == 1

    replay = store.claim_batch("sales", 10)
    assert replay is not None and replay.kind == "replay"
    assert replay.ids == [results[2].id]
    assert store.claim_batch("sales", 10).batch_id == replay.batch_id  # type: ignore[union-attr]
    store.complete_batch("sales", replay.batch_id)

    assert [d.record_id for d in store.list_dead_letters("sales")] == [results[0].id]
    normal = store.claim_batch("sales", 10)
    assert normal is not None and [r["seq"] for r in normal.records] == [4]


def test_a_replay_refused_again_is_a_dead_letter_again(store: OutboxStore) -> None:
    two_destinations(store)
    [result] = store.enqueue([sale(1)])
    batch = store.claim_batch("sales", 10)
    store.complete_batch("sales", batch.batch_id, {result.id: (400, "first")})  # type: ignore[union-attr]
    assert store.retry_dead_letters() == 1
    replay = store.claim_batch("sales", 10)
    assert replay is not None

    store.complete_batch("sales", replay.batch_id, {result.id: (400, "second")})

    [letter] = store.list_dead_letters("sales")
    assert (letter.state, letter.error) == ("dead", "second")
    assert stats(store)["sales"]["pending"] == 0


def test_retry_dead_letters_by_destination_and_all(store: OutboxStore) -> None:
    two_destinations(store)
    [result] = store.enqueue([sale(1)])
    for name in ("sales", "everything"):
        batch = store.claim_batch(name, 10)
        store.complete_batch(name, batch.batch_id, {result.id: (400, "no")})  # type: ignore[union-attr]

    assert store.retry_dead_letters("everything") == 1
    assert {d.destination: d.state for d in store.list_dead_letters()} == {"everything": "retrying", "sales": "dead"}
    assert store.retry_dead_letters() == 1  # only the one still dead
    assert store.retry_dead_letters(ids=["no-such-id"]) == 0
    with pytest.raises(UnknownDestination):
        store.retry_dead_letters("nobody")


def test_destination_stats_count_pending_oldest_and_dead(store: OutboxStore) -> None:
    two_destinations(store)
    results = store.enqueue([sale(1), movement("m1"), sale(2)])
    with store.transaction():
        store.conn.execute("UPDATE records SET received_at = ? WHERE seq = 1", (OLD,))

    figures = stats(store)
    assert figures["sales"]["pending"] == 2
    assert figures["everything"]["pending"] == 3
    assert figures["sales"]["oldest_pending_at"] == OLD
    assert figures["sales"]["oldest_pending_age_s"] > 365 * DAY

    batch = store.claim_batch("sales", 1)
    assert batch is not None
    assert stats(store)["sales"]["pending"] == 2  # a batch being sent still counts
    store.complete_batch("sales", batch.batch_id, {results[0].id: (400, "bad")})

    figures = stats(store)
    assert figures["sales"]["pending"] == 1
    assert figures["sales"]["dead_letters"] == 1
    assert figures["sales"]["oldest_pending_at"] != OLD
    assert figures["sales"]["oldest_pending_age_s"] < DAY
    assert figures["everything"]["pending"] == 3


def test_each_destination_gets_only_its_types(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1), movement("m1"), sale(2), movement("m2")])

    only_sales = store.claim_batch("sales", 10)
    both = store.claim_batch("everything", 10)

    assert only_sales is not None and both is not None
    assert [r["type"] for r in only_sales.records] == ["sale", "sale"]
    assert [r["seq"] for r in both.records] == [1, 2, 3, 4]
    assert store.get_record("stock_movement:kassa-1:m1")["deliveries"]["sales"] == "not_applicable"  # type: ignore[index]


def test_a_paused_destination_claims_nothing_until_resumed(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1)])
    store.set_paused("sales", True)

    assert store.claim_batch("sales", 10) is None
    assert stats(store)["sales"]["paused"] is True
    assert stats(store)["sales"]["pending"] == 1
    assert store.claim_batch("everything", 10) is not None  # others keep going

    store.set_paused("sales", False)
    assert store.claim_batch("sales", 10) is not None
    with pytest.raises(UnknownDestination):
        store.set_paused("nobody", True)


def test_unknown_destinations_are_refused_by_name(store: OutboxStore) -> None:
    two_destinations(store)
    with pytest.raises(UnknownDestination, match="nobody"):
        store.claim_batch("nobody", 10)


def test_a_new_destination_receives_the_retained_history(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1), sale(2), movement("m1")])
    deliver_all(store, "sales")

    store.register_destinations(
        [("sales", "http", ["sale"]), ("everything", "mqtt", ["sale", "stock_movement"]), ("late", "http", ["sale"])]
    )

    assert stats(store)["late"]["pending"] == 2
    batch = store.claim_batch("late", 10)
    assert batch is not None and [r["seq"] for r in batch.records] == [1, 2]
    assert stats(store)["sales"]["pending"] == 0  # an existing cursor is kept


def test_a_removed_destination_is_inactive_and_does_not_hold_pruning_back(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1), sale(2)])
    deliver_all(store, "sales")
    age_everything(store)
    assert store.prune(DAY) == 0  # "everything" still owes them

    store.register_destinations([("sales", "http", ["sale"])])

    assert [d["name"] for d in store.destination_stats()] == ["sales"]
    assert store.destination_names() == ["sales"]
    assert "everything" not in store.get_record("sale:kassa-1:1")["deliveries"]  # type: ignore[index]
    assert store.prune(DAY) == 2


# ------------------------------------------------------------------ pruning
def test_prune_removes_only_records_resolved_everywhere_and_older_than_retention(store: OutboxStore) -> None:
    two_destinations(store)
    results = store.enqueue([sale(1), sale(2), movement("m1"), sale(3)])
    # "sales" resolves 1 (delivered) and 2 (dead letter); 3 stays pending for it.
    batch = store.claim_batch("sales", 2)
    store.complete_batch("sales", batch.batch_id, {results[1].id: (400, "refused")})  # type: ignore[union-attr]
    # "everything" resolves 1, 2 and m1.
    batch = store.claim_batch("everything", 3)
    store.complete_batch("everything", batch.batch_id)  # type: ignore[union-attr]

    assert store.prune(DAY) == 0  # all of them are younger than retention
    age_everything(store)
    removed = store.prune(DAY)

    assert removed == 2  # sale 1 and m1; sale 2 is a dead letter, sale 3 pending
    keys = {r["key"] for r in store.recent_records(100)}
    assert keys == {"sale:kassa-1:2", "sale:kassa-1:3"}
    assert [d.record_id for d in store.list_dead_letters()] == [results[1].id]


def test_prune_does_not_remove_what_sits_in_an_open_batch(store: OutboxStore) -> None:
    two_destinations(store)
    store.enqueue([sale(1), sale(2)])
    deliver_all(store, "everything")
    batch = store.claim_batch("sales", 10)
    assert batch is not None
    age_everything(store)

    assert store.prune(DAY) == 0
    again = store.claim_batch("sales", 10)
    assert again is not None and (again.batch_id, again.ids) == (batch.batch_id, batch.ids)


def test_prune_hands_pages_back_so_the_file_does_not_grow(path: Path) -> None:
    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        store.register_destinations([("only", "http", ["sale"])])
        page_counts: list[int] = []
        for round_no in range(4):
            base = round_no * 1000
            for start in range(0, 400, 100):
                store.enqueue([sale(base + start + n + 1, lines=5) for n in range(100)])
            deliver_all(store, "only")
            age_everything(store)
            assert store.prune(DAY) == 400
            assert store.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
            page_counts.append(store.conn.execute("PRAGMA page_count").fetchone()[0])
        assert store.conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        store.close()
    # Each round fills and empties the same space: later rounds reuse it.
    assert max(page_counts[1:]) <= page_counts[0]
    assert path.stat().st_size <= page_counts[0] * store.db.page_size * 2


# ------------------------------------------------------------------ size limit
def test_the_size_limit_refuses_new_records_with_nothing_stored(path: Path) -> None:
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(n) for n in range(1, 51)])
    limit = store.used_bytes()
    store.close()

    full = OutboxStore.open(path, store_id=STORE_ID, max_bytes=limit)
    try:
        with pytest.raises(StorageFull):
            full.enqueue([sale(51)])
        with pytest.raises(StorageFull):
            full.enqueue([sale(1), sale(52)])  # all or nothing: the duplicate does not sneak 52 in
        assert full.outbox_stats()["records"] == 50
        assert full.get_record("sale:kassa-1:51") is None

        [again] = full.enqueue([sale(7)])  # a till resending is still answered
        assert again.duplicate and again.seq == 7
        with pytest.raises(StorageFull):  # a version kept aside takes room too (issue 11)
            full.enqueue([sale(7, price="1.00")])
        assert full.list_conflicts() == []
    finally:
        full.close()

    roomy = OutboxStore.open(path, store_id=STORE_ID, max_bytes=limit * 4)
    try:
        [stored] = roomy.enqueue([sale(51)])
        assert not stored.duplicate and stored.seq == 51
    finally:
        roomy.close()


def test_the_size_limit_is_met_while_a_writer_keeps_storing(path: Path) -> None:
    """The writer reads the bytes in use only now and then, exactly near the limit: it still stops there."""
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(n) for n in range(1, 51)])
    start = store.used_bytes()
    store.close()

    limit = start + 40 * 4096
    writer = OutboxStore.open(path, store_id=STORE_ID, max_bytes=limit)
    try:
        stored = 50
        for n in range(51, 5000):
            try:
                writer.enqueue([sale(n)])
            except StorageFull:
                break
            stored += 1
        else:
            raise AssertionError("never refused")
        assert writer.used_bytes() >= limit  # refused only once the limit was reached...
        assert writer.used_bytes() < limit + 8 * writer.db.page_size  # ...and not long after
        assert writer.outbox_stats()["records"] == stored
    finally:
        writer.close()


def test_used_bytes_and_outbox_stats(store: OutboxStore) -> None:
    store.enqueue([sale(n) for n in range(1, 11)])
    figures = store.outbox_stats()
    assert figures["records"] == 10
    assert figures["max_seq"] == 10
    assert figures["bytes"] > 0
    assert 0 < figures["used_bytes"] <= figures["bytes"] + 4096
    assert figures["problems"] == []


def test_the_file_is_wal_with_full_sync(store: OutboxStore, path: Path) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert path.exists()


# ------------------------------------------------------------------ reads and upkeep
def test_get_record_follows_a_record_through_its_delivery_states(store: OutboxStore) -> None:
    two_destinations(store)
    [result] = store.enqueue([sale(1)])
    store.enqueue([movement("m1")])

    def states() -> dict[str, str]:
        found = store.get_record("sale:kassa-1:1")
        assert found is not None and found["record"]["id"] == result.id
        return found["deliveries"]

    assert states() == {"everything": "pending", "sales": "pending"}
    batch = store.claim_batch("sales", 1)
    assert batch is not None
    assert states() == {"everything": "pending", "sales": "sending"}
    store.complete_batch("sales", batch.batch_id, {result.id: (400, "no")})
    assert states()["sales"] == "dead_letter"
    store.retry_dead_letters("sales")
    assert states()["sales"] == "retrying"
    replay = store.claim_batch("sales", 1)
    store.complete_batch("sales", replay.batch_id)  # type: ignore[union-attr]
    assert states()["sales"] == "delivered"
    assert store.get_record("stock_movement:kassa-1:m1")["deliveries"]["sales"] == "not_applicable"  # type: ignore[index]
    assert store.get_record("sale:kassa-1:999") is None


def test_the_reader_connection_cannot_write(store: OutboxStore, path: Path) -> None:
    import sqlite3

    store.enqueue([sale(1)])
    reader = OutboxStore.open_reader(path, store_id=STORE_ID)
    try:
        assert reader.outbox_stats()["records"] == 1
        with pytest.raises(sqlite3.OperationalError):
            reader.conn.execute("DELETE FROM records")
    finally:
        reader.conn.close()
    assert store.outbox_stats()["records"] == 1


def test_probe_write_commits_and_leaves_nothing_behind(store: OutboxStore, path: Path) -> None:
    store.probe_write()
    assert raw_rows(path, "SELECT COUNT(*) FROM events WHERE level = 'probe'") == [(0,)]
    assert store.outbox_stats()["records"] == 0
