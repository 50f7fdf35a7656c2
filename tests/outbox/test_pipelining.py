"""Freezing the next batch while one is on the wire, and envelopes sent as stored text.

The delivery loop asks ``claim_batch(..., after=batch_id)`` for the batch that
follows the one it is sending, so two normal batches can be open at once.
These tests hold the outbox to what that must not change: a crash resends both
in seq order with their ids and bytes; a retried or split batch goes before the
one frozen behind it; a replay of dead letters is not starved; and the body
built from the stored text is byte for byte the canonical JSON of the envelopes.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.backoff import RetryPolicy
from agent.delivery import DeliveryLoop
from agent.destinations._httpcommon import dumps
from agent.destinations.http import HttpDestination, HttpDestinationConfig
from agent.outbox.service import Outbox
from agent.outbox.store import OutboxError, OutboxStore
from agent.outbox.types import Batch
from agent.records import digest, normalize, parse_record
from agent.simulators import receiver
from agent.simulators._server import serve
from tests.helpers import STORE_ID
from tests.outbox.records import movement, raw_rows, sale, sale_json

NAME = "backend"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def store(path: Path) -> Iterator[OutboxStore]:
    box = OutboxStore.open(path, store_id=STORE_ID)
    box.register_destinations([(NAME, "http", ["sale"])])
    yield box
    box.close()


def fill(store: OutboxStore, count: int, first: int = 1) -> None:
    store.enqueue([sale(n) for n in range(first, first + count)])


def claim(store: OutboxStore, after: str | None = None) -> Batch:
    """The next batch of 10 (behind ``after``), which must exist."""
    batch = store.claim_batch(NAME, 10, after=after)
    assert batch is not None
    return batch


def seqs(batch: Batch | None) -> list[int]:
    assert batch is not None
    return [r["seq"] for r in batch.records]


def acked(store: OutboxStore) -> int:
    return int(store._destination(NAME)["acked_seq"])


def body(batch: Batch) -> bytes:
    return HttpDestination(HttpDestinationConfig(name=NAME, url="http://127.0.0.1:9/in"), store_id=STORE_ID).body(batch)


# ----------------------------------------------------------- the outbox
def test_the_batch_after_is_frozen_while_the_first_is_open(store: OutboxStore) -> None:
    fill(store, 25)
    first = claim(store)
    second = claim(store, after=first.batch_id)
    assert (seqs(first), seqs(second)) == (list(range(1, 11)), list(range(11, 21)))
    assert acked(store) == 0, "nothing is acknowledged before the first batch is answered"
    # Asked again, the same frozen batch comes back, not a third one.
    again = claim(store, after=first.batch_id)
    assert again is not None and again.batch_id == second.batch_id and again.encoded == second.encoded

    store.complete_batch(NAME, first.batch_id)
    assert acked(store) == 10, "acked stops before the batch still open"
    store.complete_batch(NAME, second.batch_id)
    assert acked(store) == 20
    third = store.claim_batch(NAME, 10)
    assert seqs(third) == list(range(21, 26))


def test_after_a_crash_both_open_batches_go_again_in_order_with_their_ids_and_bytes(path: Path) -> None:
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.register_destinations([(NAME, "http", ["sale"])])
    fill(store, 20)
    first = claim(store)
    second = claim(store, after=first.batch_id)
    store.conn.close()  # a power cut: no clean close

    reopened = OutboxStore.open(path, store_id=STORE_ID)
    try:
        again = reopened.claim_batch(NAME, 10)
        assert again is not None and again.batch_id == first.batch_id
        assert body(again) == body(first)
        following = reopened.claim_batch(NAME, 10, after=again.batch_id)
        assert following is not None and following.batch_id == second.batch_id
        assert body(following) == body(second)
        assert int(reopened._destination(NAME)["acked_seq"]) == 0
    finally:
        reopened.close()


def test_a_failed_batch_is_claimed_before_the_one_frozen_behind_it(store: OutboxStore) -> None:
    fill(store, 30)
    first = claim(store)
    second = claim(store, after=first.batch_id)
    store.record_failure(NAME, first.batch_id, "HTTP 503", None)

    retried = claim(store)
    assert retried is not None and retried.batch_id == first.batch_id and retried.attempts == 1
    behind = claim(store, after=retried.batch_id)
    assert behind is not None and behind.batch_id == second.batch_id, "the open one, not a newly frozen one"


def test_a_split_batch_goes_before_the_one_frozen_behind_it(store: OutboxStore) -> None:
    fill(store, 20)
    first = claim(store)
    second = claim(store, after=first.batch_id)
    store.split_batch(NAME, first.batch_id)

    order = []
    for _ in range(5):
        batch = store.claim_batch(NAME, 10)
        if batch is None:
            break
        # Nothing is frozen behind a split half: the halves settle first.
        assert batch.kind != "split" or store.claim_batch(NAME, 10, after=batch.batch_id) is None
        order.append((batch.kind, seqs(batch)))
        store.complete_batch(NAME, batch.batch_id)
    assert order == [
        ("split", [1, 2, 3, 4, 5]),
        ("split", [6, 7, 8, 9, 10]),
        ("normal", list(range(11, 21))),
    ]
    assert order[2][1] == seqs(second)
    assert acked(store) == 20


def test_nothing_is_frozen_behind_when_something_else_must_go_first(store: OutboxStore) -> None:
    fill(store, 40)
    first = claim(store)
    store.complete_batch(NAME, first.batch_id, {first.ids[0]: (422, "refused")})
    current = claim(store)

    # Dead letters queued for a retry: the replay is claimed once ``current`` is answered.
    store.retry_dead_letters(NAME)
    assert store.claim_batch(NAME, 10, after=current.batch_id) is None
    store.complete_batch(NAME, current.batch_id)
    replay = store.claim_batch(NAME, 10)
    assert replay is not None and replay.kind == "replay" and replay.ids == [first.ids[0]]
    assert store.claim_batch(NAME, 10, after=replay.batch_id) is None
    store.complete_batch(NAME, replay.batch_id)

    current = claim(store)
    following = claim(store, after=current.batch_id)
    # Asking behind a batch that is not the earliest open one, or not open at all, gives nothing.
    assert store.claim_batch(NAME, 10, after=following.batch_id) is None
    store.complete_batch(NAME, current.batch_id)
    assert store.claim_batch(NAME, 10, after=current.batch_id) is None
    # Paused: nothing at all.
    store.set_paused(NAME, True)
    assert store.claim_batch(NAME, 10, after=following.batch_id) is None


def test_the_body_from_stored_text_is_the_canonical_json_of_the_envelopes(store: OutboxStore, path: Path) -> None:
    names = sale_json(3)
    names["lines"][0]["name"] = 'Ägg "12-p" 🥚\\ tab\u2028'
    store.enqueue([sale(1), sale(2), parse_record("sale", names)])
    # A record stored by an earlier release: its text in the models' key order, not sorted.
    [(text,)] = raw_rows(path, "SELECT data FROM records WHERE seq = 2")
    unsorted = json.dumps(dict(reversed(list(json.loads(text).items()))), ensure_ascii=False, separators=(",", ":"))
    assert unsorted != text
    store.conn.execute("UPDATE records SET data = ? WHERE seq = 2", (unsorted,))

    batch = store.claim_batch(NAME, 10)
    assert batch is not None and len(batch.encoded) == 3
    envelopes = [store._envelope(row) for row in store.conn.execute("SELECT * FROM records ORDER BY seq")]
    expected = dumps({"store_id": STORE_ID, "batch_id": batch.batch_id, "records": envelopes})
    assert body(batch) == expected
    assert body(Batch(batch.batch_id, NAME, envelopes)) == expected  # a batch built in memory
    assert batch.records == envelopes and batch.ids == [e["id"] for e in envelopes] and batch.size == 3
    assert batch.first_seq == 1 and batch.last_seq == 3


def test_the_stored_text_is_canonical_and_its_hash_is_the_digest(store: OutboxStore, path: Path) -> None:
    records = [sale(7), movement("m1")]
    store.enqueue(records)
    rows = raw_rows(path, "SELECT data, digest FROM records ORDER BY seq")
    for record, (text, stored_digest) in zip(records, rows, strict=True):
        data = normalize(record)
        assert text == json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        assert stored_digest == digest(data)
    # A duplicate in another spelling is still recognised by its digest.
    assert store.enqueue([sale(7)])[0].duplicate


def test_completion_commits_are_relaxed_and_enqueue_stays_full(store: OutboxStore) -> None:
    """``synchronous`` is back to FULL (2) after every delivery outcome, whatever happened."""
    fill(store, 4)
    batch = store.claim_batch(NAME, 2)
    assert batch is not None
    store.record_failure(NAME, batch.batch_id, "HTTP 500", None)
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    store.split_batch(NAME, batch.batch_id)
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    half = store.claim_batch(NAME, 2)
    assert half is not None
    store.complete_batch(NAME, half.batch_id)
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    with pytest.raises(OutboxError, match="not open"):
        store.complete_batch(NAME, half.batch_id)  # no longer open
    assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2


# ------------------------------------------------------ the delivery loop
class Wire:
    """ASGI wrapper keeping every batch posted (its key and body) before the receiver sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.posts: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_"):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        data = b"".join(chunks)
        headers = dict(scope["headers"])
        self.posts.append((headers.get(b"idempotency-key", b"").decode(), data))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        await self.app(scope, replay, send)

    def first_seqs(self) -> list[int]:
        """The seq of each post's first record, in the order they reached the wire."""
        return [json.loads(data)["records"][0]["seq"] for _, data in self.posts]


@pytest.fixture
async def outbox(outbox: Outbox) -> Outbox:
    """The shared outbox with the ``NAME`` destination registered."""
    await outbox.call(lambda s: s.register_destinations([(NAME, "http", ["sale"])]))
    return outbox


async def knobs(url: str, **settings: Any) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{url}/_faults", json=settings)).raise_for_status()


async def drain(outbox: Outbox, url: str, count: int) -> list[str]:
    """Run a delivery loop (batches of 10) until ``count`` records are resolved; the ids in seq order."""
    ids = [r.id for r in await outbox.enqueue([sale(n) for n in range(1, count + 1)])]
    dest = HttpDestination(HttpDestinationConfig(name=NAME, url=f"{url}/ingest", timeout_s=2.0), store_id=STORE_ID)
    await dest.start()
    loop = DeliveryLoop(outbox, dest, policy=RetryPolicy(base_s=0.02, cap_s=0.1), batch_max=10)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while (await outbox.destination_stats())[0]["pending"] and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert (await outbox.destination_stats())[0]["pending"] == 0, "not drained in time"
    finally:
        await loop.stop()
        await dest.close()
    return ids


async def test_the_loop_sends_in_seq_order_and_resends_a_failed_batch_unchanged(outbox: Outbox) -> None:
    wire = Wire(receiver.create_app())
    async with serve(wire) as url:
        await knobs(url, fail_next=3)
        ids = await drain(outbox, url, 95)
        async with httpx.AsyncClient() as client:
            book = (await client.get(f"{url}/_ledger")).json()
    assert [r["id"] for r in book["records"]] == ids and book["duplicates"] == 0
    keys = [key for key, _ in wire.posts]
    assert keys[:4] == [keys[0]] * 4, "the failed batch goes again, before the one frozen behind it"
    assert len({data for _, data in wire.posts[:4]}) == 1, "byte for byte the same each time"
    assert wire.first_seqs()[3:] == list(range(1, 96, 10))
    assert len(set(keys)) == 10


async def test_a_refused_record_is_found_before_the_batch_frozen_behind_it(outbox: Outbox) -> None:
    wire = Wire(receiver.create_app())
    async with serve(wire) as url:
        await knobs(url, refuse_skus=["POISON"], refuse_mode="422")
        ids = [r.id for r in await outbox.enqueue([sale(n) for n in range(1, 14)])]
        ids += [r.id for r in await outbox.enqueue([parse_record("sale", {**sale_json(14), "lines": [
            {"sku": "POISON", "name": "x", "quantity": 1, "unit_price": "31.80", "vat_rate": 25}]})])]  # fmt: skip
        ids += [r.id for r in await outbox.enqueue([sale(n) for n in range(15, 31)])]
        dest = HttpDestination(HttpDestinationConfig(name=NAME, url=f"{url}/ingest", timeout_s=2.0), store_id=STORE_ID)
        loop = DeliveryLoop(outbox, dest, policy=RetryPolicy(base_s=0.02, cap_s=0.1), batch_max=10)
        loop.start()
        try:
            deadline = time.monotonic() + 30
            while (await outbox.destination_stats())[0]["pending"] and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            await loop.stop()
            await dest.close()
        async with httpx.AsyncClient() as client:
            book = (await client.get(f"{url}/_ledger")).json()
    assert [r["id"] for r in book["records"]] == [i for i in ids if i != ids[13]]
    assert [d.record_id for d in await outbox.list_dead_letters()] == [ids[13]]
    # Each record's first time on the wire is in seq order: the halves of the
    # refused batch 11-20 went before the batch 21-30 frozen behind it.
    first_sent: dict[int, int] = {}
    for position, (_, data) in enumerate(wire.posts):
        for record in json.loads(data)["records"]:
            first_sent.setdefault(record["seq"], position)
    assert sorted(first_sent, key=lambda seq: (first_sent[seq], seq)) == list(range(1, 31))
    assert max(first_sent[s] for s in range(11, 21)) < first_sent[21]


def test_stored_rows_are_untouched_by_claims(path: Path, store: OutboxStore) -> None:
    """Claiming reads the stored text; it never rewrites it (a resend must find the same bytes)."""
    fill(store, 3)
    before = raw_rows(path, "SELECT seq, data, digest FROM records ORDER BY seq")
    store.claim_batch(NAME, 10)
    assert raw_rows(path, "SELECT seq, data, digest FROM records ORDER BY seq") == before
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM batches WHERE state = 'open'").fetchone()[0] == 1
    finally:
        conn.close()
