"""Dead letters: records a destination permanently refused, kept and replayable.

A dead letter is a row per (destination, seq) beside the cursor, never a
change to the record: the record stays stored (prune keeps it), visible on the
status page and in ``kassabro dead-letters``, until it is replayed and
delivered. Its ``state`` walks ``dead`` -> ``retrying`` (an operator asked for
a replay) -> ``replaying`` (in a frozen ``replay`` batch) -> deleted once
delivered, or back to ``dead`` if refused again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.outbox.cursors import Cursors
from agent.outbox.db import Database, marks
from agent.outbox.types import DeadLetter
from agent.redact import redact

__all__ = ["ERROR_KEPT", "DeadLetters"]

ERROR_KEPT = 1024
"""Characters of a refusal's error text kept (the first KiB of the body, contract §3)."""


class DeadLetters:
    """The ``dead_letters`` table."""

    def __init__(self, db: Database, cursors: Cursors):
        self._db = db
        self._cursors = cursors

    def bury(self, name: str, seq: int, record_id: str, status: int | None, error: str, now: str) -> None:
        """``name`` refused record ``seq`` for good (inside the completing transaction).

        ``error`` is the receiver's own text, which may quote a URL with
        credentials: it is stored redacted, so the page, ``/api/status`` and
        ``kassabro dead-letters`` never show a secret.
        """
        self._db.conn.execute(
            "INSERT INTO dead_letters(destination, seq, record_id, status, error, created_at, state, retries) "
            "VALUES (?,?,?,?,?,?,'dead',0) ON CONFLICT(destination, seq) DO UPDATE SET "
            "status = excluded.status, error = excluded.error, created_at = excluded.created_at, state = 'dead'",
            (name, seq, record_id, status, redact(error)[:ERROR_KEPT], now),
        )

    def delivered(self, name: str, seq: int) -> None:
        """A replayed dead letter was accepted: it is one no more (inside the completing transaction)."""
        self._db.conn.execute("DELETE FROM dead_letters WHERE destination = ? AND seq = ?", (name, seq))

    def take_for_replay(self, name: str, limit: int) -> list[int]:
        """Up to ``limit`` seqs queued for a retry, marked as on their way (inside the freezing transaction)."""
        conn = self._db.conn
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT d.seq FROM dead_letters d JOIN records r ON r.seq = d.seq "
                "WHERE d.destination = ? AND d.state = 'retrying' ORDER BY d.seq LIMIT ?",
                (name, limit),
            )
        ]
        if seqs:
            conn.execute(
                f"UPDATE dead_letters SET state = 'replaying' WHERE destination = ? AND seq IN ({marks(seqs)})",
                (name, *seqs),
            )
        return seqs

    def waiting(self, name: str) -> bool:
        """Whether dead letters of ``name`` are queued for a retry (they go before new records)."""
        row = self._db.conn.execute(
            "SELECT 1 FROM dead_letters WHERE destination = ? AND state = 'retrying' LIMIT 1", (name,)
        ).fetchone()
        return row is not None

    def retry(self, name: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Queue dead letters to be sent again (all, one destination's, or some ids); how many were queued.

        Raises:
            UnknownDestination: ``name`` is not a destination.
        """
        sql = "UPDATE dead_letters SET state = 'retrying', retries = retries + 1 WHERE state = 'dead'"
        args: list[Any] = []
        if name is not None:
            self._cursors.row(name)
            sql += " AND destination = ?"
            args.append(name)
        if ids:
            sql += f" AND record_id IN ({marks(ids)})"
            args.extend(ids)
        with self._db.transaction():
            return self._db.conn.execute(sql, args).rowcount

    def entries(self, name: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """Dead letters (of one destination, or all) in seq order, with their record's key."""
        sql = "SELECT d.*, r.key FROM dead_letters d LEFT JOIN records r ON r.seq = d.seq"
        args: list[Any] = []
        if name is not None:
            sql += " WHERE d.destination = ?"
            args.append(name)
        sql += " ORDER BY d.seq LIMIT ?"
        args.append(limit)
        return [
            DeadLetter(
                destination=r["destination"],
                seq=r["seq"],
                record_id=r["record_id"],
                key=r["key"] or "",
                status=r["status"],
                error=r["error"],
                created_at=r["created_at"],
                state=r["state"],
            )
            for r in self._db.conn.execute(sql, args)
        ]
