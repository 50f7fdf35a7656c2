"""Transactions and a full disk, on real SQLite files.

``transaction()`` nests (a savepoint inside ``BEGIN IMMEDIATE``), which the
group commit relies on: one till's refused request must not cost the others
in the same commit their records, and a commit that fails must store none.
A disk that fills up mid-write is answered as ``StorageFull`` with the 507
wording of docs/ingest-api.md, by the store and by the ``Outbox`` alike.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.outbox.service import Outbox
from agent.outbox.store import OutboxStore, StorageFull
from tests.helpers import STORE_ID
from tests.outbox.records import raw_rows, sale

DISK_FULL = "the disk holding the outbox is full"


def note(store: OutboxStore, message: str) -> None:
    store.conn.execute(
        "INSERT INTO events(at, level, message) VALUES ('2026-11-26T13:00:00.000Z', 'info', ?)", (message,)
    )


def notes(path: Path) -> list[str]:
    return [r[0] for r in raw_rows(path, "SELECT message FROM events WHERE level = 'info' ORDER BY rowid_")]


def test_a_failed_inner_transaction_is_undone_alone(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    with store.transaction():
        note(store, "before")
        with pytest.raises(ValueError), store.transaction():
            note(store, "inner")
            raise ValueError("refused")
        with store.transaction():
            note(store, "after")
    store.close()
    assert notes(path) == ["before", "after"]


def test_a_failed_outer_transaction_undoes_the_inner_ones_too(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    with pytest.raises(ValueError), store.transaction():
        with store.transaction():
            note(store, "inner")
        raise ValueError("refused")
    assert not store.conn.in_transaction
    store.close()
    assert notes(path) == []


def fill_the_disk(store: OutboxStore) -> None:
    """The file may grow no further (SQLite answers SQLITE_FULL, as on a full card)."""
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_refuses_the_whole_group_and_stores_nothing(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(n) for n in range(1, 4)])
    fill_the_disk(store)
    answers = store.enqueue_many([[sale(n, lines=40)] for n in range(10, 60)])
    assert all(isinstance(a, StorageFull) and str(a) == DISK_FULL for a in answers)
    with pytest.raises(StorageFull, match=DISK_FULL):
        store.enqueue([sale(n, lines=40) for n in range(100, 150)])
    assert store.enqueue([sale(2)])[0].duplicate  # a till resending is still answered
    store.close()
    assert raw_rows(path, "SELECT COUNT(*) FROM records") == [(3,)]


async def test_a_full_disk_reaches_an_outbox_caller_as_storage_full(outbox: Outbox) -> None:
    def write_a_lot(store: OutboxStore) -> None:
        fill_the_disk(store)
        store.add_event("info", "x" * 200_000)

    with pytest.raises(StorageFull, match=DISK_FULL):
        await outbox.call(write_a_lot)
    assert notes(outbox.path) == []
