"""A damaged outbox file: moved aside (never deleted), a fresh one started, the problem loud.

The till must keep selling even when the SD card mangled the file; the
damaged file is kept byte for byte for whoever rescues what is in it.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from agent.outbox.store import OutboxStore
from tests.helpers import STORE_ID
from tests.outbox.records import sale


def a_real_outbox(path: Path, receipts: int = 300) -> None:
    """A cleanly closed outbox of many pages (no WAL left over)."""
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.register_destinations([("backend", "http", ["sale", "stock_movement"])])
    for start in range(0, receipts, 100):
        store.enqueue([sale(start + n + 1, lines=3) for n in range(100)])
    store.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0


def garble_middle_pages(path: Path) -> None:
    """Write random bytes over a run of pages in the middle of the file."""
    page_size = int.from_bytes(path.read_bytes()[16:18], "big")  # the file's own page size (header bytes 16-17)
    pages = path.stat().st_size // page_size
    assert pages >= 20, "the outbox should span many pages for this test"
    rng = random.Random(20261126)
    with path.open("r+b") as handle:
        for page in range(pages // 2 - 3, pages // 2 + 3):
            handle.seek(page * page_size)
            handle.write(bytes(rng.randrange(256) for _ in range(page_size)))


def moved_aside(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm")))


def quick_check(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()


def test_a_file_failing_quick_check_is_moved_aside_and_a_fresh_outbox_started(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    a_real_outbox(path)
    garble_middle_pages(path)
    assert quick_check(path) != "ok"
    damaged = path.read_bytes()

    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        [aside] = moved_aside(tmp_path)
        assert aside.read_bytes() == damaged
        assert store.outbox_stats()["records"] == 0
        [result] = store.enqueue([sale(1)])  # the till keeps selling
        assert not result.duplicate
        assert any(str(aside) in problem for problem in store.problems)
        assert store.outbox_stats()["problems"] == store.problems
    finally:
        store.close()
    assert quick_check(path) == "ok"

    # The problem stays visible after a restart, and the fresh file is not moved again.
    again = OutboxStore.open(path, store_id=STORE_ID)
    try:
        assert any(str(aside) in problem for problem in again.problems)
        assert again.get_record("sale:kassa-1:1") is not None
    finally:
        again.close()
    assert moved_aside(tmp_path) == [aside]


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is a shopping list, not an outbox\n" * 200)
    original = path.read_bytes()

    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        [aside] = moved_aside(tmp_path)
        assert aside.read_bytes() == original
        assert store.enqueue([sale(1)])[0].seq == 1
        assert any(str(aside) in problem for problem in store.problems)
    finally:
        store.close()


def test_each_damaged_file_gets_its_own_name(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    contents = [b"first broken file " * 300, b"second broken file " * 300]
    for content in contents:
        path.write_bytes(content)
        OutboxStore.open(path, store_id=STORE_ID).close()

    assert sorted(p.read_bytes() for p in moved_aside(tmp_path)) == sorted(contents)


def test_a_healthy_file_is_kept_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    a_real_outbox(path, receipts=100)

    store = OutboxStore.open(path, store_id=STORE_ID)
    try:
        assert store.outbox_stats()["records"] == 100
        assert store.problems == []
    finally:
        store.close()
    assert moved_aside(tmp_path) == []
