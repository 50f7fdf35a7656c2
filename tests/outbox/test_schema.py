"""Schema versions and migrations: what a later release relies on when it upgrades a Pi.

``PRAGMA user_version`` is the version; a migration runs once and all or
nothing; a file from a newer release is refused, untouched.

The all-or-nothing tests also guard the sqlite-utils version: before 4.0 its
``create_index`` and friends ran inside ``with conn:``, which COMMITs the
migration's own transaction halfway (and then the migration cannot even
finish). sqlite-utils 4's ``atomic()`` uses savepoints inside a transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlite_utils

from agent.outbox import schema
from agent.outbox.schema import SchemaTooNew
from agent.outbox.store import OutboxStore
from tests.helpers import STORE_ID
from tests.outbox.records import raw_rows, sale


def user_version(path: Path) -> int:
    return int(raw_rows(path, "PRAGMA user_version")[0][0])


def tables(path: Path) -> set[str]:
    return {r[0] for r in raw_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_outbox_carries_the_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    OutboxStore.open(path, store_id=STORE_ID).close()

    assert user_version(path) == schema.SCHEMA_VERSION >= 1
    assert {"records", "conflicts", "destinations", "batches", "batch_items", "dead_letters"} <= tables(path)


def test_reopening_does_not_run_migrations_again(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    [stored] = store.enqueue([sale(1)])
    store.close()

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        found = schema.migrate(conn)
    finally:
        conn.close()
    reopened = OutboxStore.open(path, store_id=STORE_ID)
    try:
        assert reopened.get_record(stored.key)["record"]["id"] == stored.id  # type: ignore[index]
    finally:
        reopened.close()

    assert found == schema.SCHEMA_VERSION  # nothing left to run
    assert user_version(path) == schema.SCHEMA_VERSION


def test_a_file_from_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(1)])
    store.conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    store.close()
    before = path.read_bytes()

    with pytest.raises(SchemaTooNew, match=str(schema.SCHEMA_VERSION + 1)):
        OutboxStore.open(path, store_id=STORE_ID)

    assert path.read_bytes() == before  # not migrated, not moved aside
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []
    assert user_version(path) == schema.SCHEMA_VERSION + 1


def _next_migration_fails(db: sqlite_utils.Database) -> None:
    """Builds a table and an index the way the real migrations do, then dies."""
    db["parcels"].create({"id": int, "note": str}, pk="id")
    db["parcels"].create_index(["note"])
    db.execute("ALTER TABLE records ADD COLUMN parcel_id INTEGER")
    raise RuntimeError("the power went halfway through the upgrade")


def test_a_failing_migration_leaves_the_previous_schema_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(1)])
    store.close()
    before_tables = tables(path)

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _next_migration_fails])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    with pytest.raises(RuntimeError, match="halfway"):
        OutboxStore.open(path, store_id=STORE_ID)

    # sqlite-utils' create/create_index must not have committed inside the
    # migration's transaction: nothing of the half-done upgrade is left.
    assert tables(path) == before_tables
    assert "parcel_id" not in {r[1] for r in raw_rows(path, "PRAGMA table_info(records)")}
    assert raw_rows(path, "SELECT name FROM sqlite_master WHERE name LIKE '%parcels%'") == []
    assert user_version(path) == len(schema.MIGRATIONS) - 1
    assert raw_rows(path, "SELECT key FROM records") == [("sale:kassa-1:1",)]


def test_a_failing_first_migration_leaves_an_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def initial_then_fail(db: sqlite_utils.Database) -> None:
        schema._m1_initial(db)
        raise RuntimeError("killed during the first migration")

    path = tmp_path / "outbox.db"
    monkeypatch.setattr(schema, "MIGRATIONS", [initial_then_fail])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 1)
    with pytest.raises(RuntimeError, match="first migration"):
        OutboxStore.open(path, store_id=STORE_ID)

    assert tables(path) == set()
    assert user_version(path) == 0

    monkeypatch.undo()
    store = OutboxStore.open(path, store_id=STORE_ID)  # the next start completes it
    try:
        assert store.enqueue([sale(1)])[0].seq == 1
    finally:
        store.close()
    assert user_version(path) == schema.SCHEMA_VERSION


def test_a_later_migration_runs_once_on_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "outbox.db"
    store = OutboxStore.open(path, store_id=STORE_ID)
    store.enqueue([sale(1)])
    store.close()
    runs: list[str] = []

    def add_notes(db: sqlite_utils.Database) -> None:
        runs.append("add_notes")
        db["notes"].create({"id": int, "text": str}, pk="id")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, add_notes])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(schema.MIGRATIONS))
    for _ in range(2):
        OutboxStore.open(path, store_id=STORE_ID).close()

    assert runs == ["add_notes"]
    assert "notes" in tables(path)
    assert user_version(path) == len(schema.MIGRATIONS)
    assert raw_rows(path, "SELECT key FROM records") == [("sale:kassa-1:1",)]
