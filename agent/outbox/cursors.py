"""The destinations the outbox knows, and each one's delivery cursor.

Delivery state per destination is a cursor, not a row per record and
destination, so a million-record backlog costs nothing extra per destination:

- ``claimed_seq``: every record of the destination's types up to here has been
  put into a frozen batch;
- ``acked_seq``: every record up to here is resolved (delivered or dead-lettered).

The same row keeps what the status page shows of the destination's health
(last success, last error, when the next attempt is due).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from agent.outbox.db import Database
from agent.outbox.errors import UnknownDestination
from agent.redact import redact

__all__ = ["Cursors", "DestinationSpec"]

DestinationSpec = tuple[str, str, Sequence[str]]
"""``(name, kind, record types)`` of a configured destination."""


class Cursors:
    """The ``destinations`` table: registration, cursors, pause, health."""

    def __init__(self, db: Database):
        self._db = db
        self._types_cache: dict[str, tuple[str, ...]] = {}

    def register(self, specs: Sequence[DestinationSpec]) -> None:
        """Make the configured destinations known; the others become inactive.

        A destination seen for the first time starts at the beginning of what is
        retained, so a newly added destination receives the retained history.
        Nothing is written when nothing changed, so an agent restarted on a
        full disk still starts (and answers 507) instead of failing here.
        """
        conn = self._db.conn
        wanted = {name: (kind, json.dumps(sorted(types)), 1) for name, kind, types in specs}
        current = {r[0]: (r[1], r[2], r[3]) for r in conn.execute("SELECT name, kind, types, active FROM destinations")}
        stale = [name for name, (_, _, active) in current.items() if active and name not in wanted]
        if not stale and all(current.get(name) == spec for name, spec in wanted.items()):
            self._types_cache.clear()
            return
        with self._db.transaction():
            conn.execute("UPDATE destinations SET active = 0")
            for name, kind, types in specs:
                conn.execute(
                    "INSERT INTO destinations(name, kind, types, active) VALUES (?,?,?,1) "
                    "ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, types = excluded.types, active = 1",
                    (name, kind, json.dumps(sorted(types))),
                )
        self._types_cache.clear()

    def row(self, name: str) -> sqlite3.Row:
        """The destination's row (cursors, pause, health).

        Raises:
            UnknownDestination: no destination of that name was ever registered.
        """
        row: sqlite3.Row | None = self._db.conn.execute("SELECT * FROM destinations WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownDestination(f"no destination named {name!r}")
        return row

    def active_rows(self) -> list[sqlite3.Row]:
        """The rows of the configured destinations, by name."""
        rows: list[sqlite3.Row] = self._db.conn.execute(
            "SELECT * FROM destinations WHERE active = 1 ORDER BY name"
        ).fetchall()
        return rows

    def types(self, name: str) -> tuple[str, ...]:
        """The record types ``name`` receives (cached until the next ``register``)."""
        if name not in self._types_cache:
            self._types_cache[name] = tuple(json.loads(self.row(name)["types"]))
        return self._types_cache[name]

    def names(self, active_only: bool = True) -> list[str]:
        sql = "SELECT name FROM destinations" + (" WHERE active = 1" if active_only else "") + " ORDER BY name"
        return [r[0] for r in self._db.conn.execute(sql)]

    def set_paused(self, name: str, paused: bool) -> None:
        self.row(name)
        with self._db.transaction():
            self._db.conn.execute("UPDATE destinations SET paused = ? WHERE name = ?", (int(paused), name))

    def claimed(self, name: str, last_seq: int) -> None:
        """Records up to ``last_seq`` are in frozen batches (inside the freezing transaction)."""
        self._db.conn.execute("UPDATE destinations SET claimed_seq = ? WHERE name = ?", (last_seq, name))

    def advance(self, name: str) -> None:
        """Move ``acked_seq`` up to just before the oldest open non-replay batch."""
        conn = self._db.conn
        dest = self.row(name)
        row = conn.execute(
            "SELECT MIN(first_seq) FROM batches WHERE destination = ? AND state = 'open' AND kind != 'replay'",
            (name,),
        ).fetchone()
        acked = dest["claimed_seq"] if row[0] is None else row[0] - 1
        conn.execute("UPDATE destinations SET acked_seq = MAX(acked_seq, ?) WHERE name = ?", (acked, name))

    def succeeded(self, name: str, now: str) -> None:
        """The destination answered: its failure, if any, is over."""
        self._db.conn.execute(
            "UPDATE destinations SET last_success_at = ?, last_error = NULL, last_error_at = NULL, "
            "failing_since = NULL, next_attempt_at = NULL WHERE name = ?",
            (now, name),
        )

    def failed(self, name: str, error: str, now: str, next_attempt_at: str | None) -> None:
        """A retryable failure: remember it, since when it has been failing, and the next try."""
        self._db.conn.execute(
            "UPDATE destinations SET last_error = ?, last_error_at = ?, next_attempt_at = ?, "
            "failing_since = COALESCE(failing_since, ?) WHERE name = ?",
            (redact(error), now, next_attempt_at, now, name),
        )
