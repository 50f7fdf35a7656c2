"""The outbox schema, as numbered migrations.

``PRAGMA user_version`` is the schema version. A migration runs once, inside a
transaction, so an upgrade that dies halfway leaves the previous schema intact.
A database from a *newer* release is refused rather than guessed at: a
downgrade must not silently misread delivery cursors.

sqlite-utils builds the tables (readable, and the same tool an operator uses to
inspect the file); the hot path elsewhere is plain SQL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils


class SchemaTooNew(RuntimeError):
    """The database was written by a newer Kassabro than this one."""


def _m1_initial(db: sqlite_utils.Database) -> None:
    db.execute(
        """CREATE TABLE records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            key TEXT NOT NULL UNIQUE,
            type TEXT NOT NULL,
            received_at TEXT NOT NULL,
            clock_synced INTEGER NOT NULL,
            digest TEXT NOT NULL,
            data TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX records_type_seq ON records(type, seq)")
    db.table("conflicts").create(
        {
            "rowid_": int,
            "key": str,
            "stored_id": str,
            "received_at": str,
            "digest": str,
            "data": str,
        },
        pk="rowid_",
    )
    db.table("conflicts").create_index(["key"])
    db.table("destinations").create(
        {
            "name": str,
            "kind": str,
            "types": str,
            "acked_seq": int,
            "claimed_seq": int,
            "paused": int,
            "active": int,
            "last_success_at": str,
            "last_error": str,
            "last_error_at": str,
            "failing_since": str,
            "next_attempt_at": str,
        },
        pk="name",
        not_null={"kind", "types", "acked_seq", "claimed_seq", "paused", "active"},
        defaults={"acked_seq": 0, "claimed_seq": 0, "paused": 0, "active": 1},
    )
    db.table("batches").create(
        {
            "batch_id": str,
            "destination": str,
            "kind": str,
            "state": str,
            "first_seq": int,
            "last_seq": int,
            "size": int,
            "created_at": str,
            "attempts": int,
            "last_error": str,
        },
        pk="batch_id",
        not_null={"destination", "kind", "state", "first_seq", "last_seq", "size", "attempts"},
        defaults={"attempts": 0},
    )
    db.execute("CREATE INDEX batches_open ON batches(destination, state, first_seq)")
    db.table("batch_items").create({"batch_id": str, "seq": int}, pk=("batch_id", "seq"))
    db.execute("CREATE INDEX batch_items_seq ON batch_items(seq)")
    db.table("dead_letters").create(
        {
            "destination": str,
            "seq": int,
            "record_id": str,
            "status": int,
            "error": str,
            "created_at": str,
            "state": str,
            "retries": int,
        },
        pk=("destination", "seq"),
        not_null={"record_id", "error", "created_at", "state", "retries"},
        defaults={"state": "dead", "retries": 0},
    )
    db.execute("CREATE INDEX dead_letters_seq ON dead_letters(seq)")
    db.table("events").create(
        {"rowid_": int, "at": str, "level": str, "message": str},
        pk="rowid_",
    )


def _m2_article_register(db: sqlite_utils.Database) -> None:
    """Hogia Smart's article register, kept for offline use (agent.register)."""
    db.table("articles").create(
        {"article_number": str, "name": str, "vat_rate": int, "price": str, "stock_level": str, "webshop": int},
        pk="article_number",
        not_null={"name", "vat_rate", "price", "stock_level", "webshop"},
    )
    db.table("article_register").create({"id": int, "fetched_at": str, "count": int}, pk="id", not_null={"fetched_at"})


def _m3_range_batches(db: sqlite_utils.Database) -> None:
    """Batches that cost one page per commit: a normal batch is its seq range and its types.

    Every commit writes each page it touched in full to the WAL, and on an SD
    card those bytes are the wear. A normal batch's members are exactly "the
    records of these types between first_seq and last_seq" (records are
    append-only, so that set never changes), so ``types`` stores the types and
    no ``batch_items`` row is written; split and replay batches (NULL
    ``types``) keep their member rows, as do the batches an older release
    froze. The table holds only open batches (a closed one is deleted), a
    handful per destination, so it is rebuilt WITHOUT ROWID (no separate
    primary-key index) and without the ``batches_open`` index: a scan of a
    few rows costs less than two more pages in every claim and completion.
    """
    db.execute(
        """CREATE TABLE batches_v3 (
            batch_id TEXT PRIMARY KEY,
            destination TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            first_seq INTEGER NOT NULL,
            last_seq INTEGER NOT NULL,
            size INTEGER NOT NULL,
            created_at TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            types TEXT
        ) WITHOUT ROWID"""
    )
    columns = "batch_id, destination, kind, state, first_seq, last_seq, size, created_at, attempts, last_error"
    db.execute(f"INSERT INTO batches_v3 ({columns}) SELECT {columns} FROM batches")
    db.execute("DROP TABLE batches")
    db.execute("ALTER TABLE batches_v3 RENAME TO batches")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1_initial, _m2_article_register, _m3_range_batches]
"""Append only. Position + 1 is the version the migration brings the file to."""

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to ``SCHEMA_VERSION``; returns the version it found.

    Raises:
        SchemaTooNew: the file was written by a newer release.
    """
    found: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(f"outbox schema version {found} is newer than this release's {SCHEMA_VERSION}")
    db = sqlite_utils.Database(conn)
    for version in range(found + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version - 1](db)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found
