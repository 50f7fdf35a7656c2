"""Carrying records over from another outbox file (the rollback of an upgrade): ids kept, nothing doubled.

The source files here are what a newer release leaves behind: the same
records table plus a migration this release does not know (a higher
``user_version``, an extra column and table), which ``OutboxStore.open``
would refuse.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.outbox import schema
from agent.outbox.carry import carry_over
from agent.outbox.store import OutboxStore
from tests.helpers import STORE_ID
from tests.outbox.records import movement, sale


def newer_release_file(path: Path) -> None:
    """What a later release's migration does to the file: a new column, a new table, a higher version."""
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE records ADD COLUMN shelf TEXT")
        conn.execute("CREATE TABLE later_things (x INTEGER)")
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")


@pytest.fixture
def upgraded(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """``(copy, newer)``: the copy taken before the upgrade holds sales 1-2; the newer file also 3-4 and a movement."""
    copy, newer = tmp_path / "copy.db", tmp_path / "newer.db"
    store = OutboxStore.open(copy, store_id=STORE_ID)
    store.enqueue([sale(1), sale(2)])
    store.close()
    shutil.copy(copy, newer)
    newer_release_file(newer)
    with sqlite3.connect(newer) as conn:  # the newer release took three more records
        store = OutboxStore(conn, newer, store_id=STORE_ID, max_bytes=1 << 30)
        conn.isolation_level = None
        results = store.enqueue([sale(3), sale(4), movement("d-1")])
    ids = {r.key: r.id for r in results}
    return copy, newer, ids


def keys_and_ids(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT key, id FROM records ORDER BY seq").fetchall()


def test_records_only_the_newer_file_holds_are_carried_with_their_ids(
    upgraded: tuple[Path, Path, dict[str, str]],
) -> None:
    copy, newer, ids = upgraded
    newer_before = newer.read_bytes()
    store = OutboxStore.open(copy, store_id=STORE_ID)
    report = carry_over(newer, store)
    store.close()

    assert (report.carried, report.present, report.conflicts, report.left) == (3, 2, 0, [])
    assert keys_and_ids(copy) == keys_and_ids(newer), "same keys, same ids, same order"
    assert {key: i for key, i in keys_and_ids(copy) if key in ids} == ids
    assert newer.read_bytes() == newer_before, "the source file is never changed"


def test_carrying_twice_adds_nothing(upgraded: tuple[Path, Path, dict[str, str]]) -> None:
    copy, newer, _ = upgraded
    store = OutboxStore.open(copy, store_id=STORE_ID)
    carry_over(newer, store)
    again = carry_over(newer, store)
    store.close()
    assert (again.carried, again.present) == (0, 5)


def test_a_key_stored_with_other_content_is_a_conflict_kept_aside(
    upgraded: tuple[Path, Path, dict[str, str]],
) -> None:
    copy, newer, ids = upgraded
    store = OutboxStore.open(copy, store_id=STORE_ID)
    store.enqueue([sale(3, price="99.00")])  # the old release took receipt 3 with other content meanwhile
    report = carry_over(newer, store)
    stored = store.get_record("sale:kassa-1:3")
    store.close()
    assert report.conflicts == 1 and report.carried == 2
    assert stored is not None and stored["record"]["id"] != ids["sale:kassa-1:3"]
    assert stored["conflicts"] == 1


def test_a_record_this_release_cannot_read_is_left_and_named(upgraded: tuple[Path, Path, dict[str, str]]) -> None:
    copy, newer, _ = upgraded
    with sqlite3.connect(newer) as conn:  # a record type only the newer release knows
        conn.execute(
            "INSERT INTO records(id, key, type, received_at, clock_synced, digest, data) "
            "VALUES ('0193-x', 'gift:kassa-1:1', 'gift', '2026-11-26T13:00:00.000Z', 1, 'x', '{}')"
        )
    store = OutboxStore.open(copy, store_id=STORE_ID)
    report = carry_over(newer, store)
    store.close()
    assert report.carried == 3
    assert [key for key, _ in report.left] == ["gift:kassa-1:1"]
    assert "left in the source file" in report.summary()


@pytest.mark.slow
def test_the_cli_carries_and_says_what_it_did(upgraded: tuple[Path, Path, dict[str, str]], tmp_path: Path) -> None:
    copy, newer, _ = upgraded
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(copy, data / "outbox.db")
    config = tmp_path / "kassabro.toml"
    config.write_text(f'store_id = "{STORE_ID}"\ndata_dir = "{data}"\n')
    command = [sys.executable, "-m", "agent.cli", "import-outbox", "--config", str(config)]

    result = subprocess.run([*command, str(newer)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "3 carried over, 2 already here" in result.stdout
    assert keys_and_ids(data / "outbox.db") == keys_and_ids(newer)

    itself = subprocess.run(
        [*command, str(data / "outbox.db")], capture_output=True, text=True, timeout=60, check=False
    )
    assert itself.returncode == 2 and "own outbox" in itself.stderr

    missing = subprocess.run(
        [*command, str(tmp_path / "nope.db")], capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode == 1 and "no such outbox file" in missing.stderr
