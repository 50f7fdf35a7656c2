"""Frozen batches: claim, freeze, complete, split, replay.

A batch's id and members are committed before it is first sent, so a resend
after a crash or a retryable failure carries the same id and exactly the
same records, and a receiver can deduplicate on ``Idempotency-Key``. Normal
batches are cut from the records after the destination's ``claimed_seq``
and stored as their range: ``first_seq``..``last_seq`` and the types the
destination took when it was frozen (``batches.types``); the records of
those types in that range are its members, a set that never changes because
records are only ever appended (and pruning never reaches past an open
batch). That is one small row per claim instead of a row per member, which
matters on an SD card: every commit writes each page it touched in full. A
refused batch is split into two ``split`` halves and dead letters queued for
a retry go out as ``replay`` batches; their members are not a range, so
they are listed in ``batch_items`` (as are the batches an older release
froze). Completing a batch moves the destination's ``acked_seq`` up to just
before its oldest open batch.

This is the delivery loop's hot path: plain SQL, a batch built from the rows
just read (no second read), and members written by SQLite alone.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from agent import clock
from agent.ids import uuid7
from agent.outbox.cursors import Cursors
from agent.outbox.db import Database, marks
from agent.outbox.deadletters import ERROR_KEPT, DeadLetters
from agent.outbox.envelopes import MEMBER, MEMBER_R, MemberRow, batch_from_rows, member_envelope, member_rows
from agent.outbox.errors import OutboxError
from agent.outbox.types import Batch, BatchKind, Envelope
from agent.redact import redact

__all__ = ["Accept", "Batches", "Rejected"]

Accept = Callable[[Envelope], bool]
"""``accept(envelope)``: False stops a new batch at that record (the SIE destination waits for a day's end)."""

Rejected = dict[str, tuple[int | None, str]]
"""Refused members of an answered batch: ``{record id: (HTTP status or None, error text)}``."""


class Batches:
    """The ``batches`` and ``batch_items`` tables, and the cursor moves they imply."""

    def __init__(self, db: Database, cursors: Cursors, dead_letters: DeadLetters, *, store_id: str):
        self._db = db
        self._cursors = cursors
        self._dead_letters = dead_letters
        self._store_id = store_id

    # ------------------------------------------------------------------ claim
    def claim(self, name: str, limit: int, accept: Accept | None = None, *, after: str | None = None) -> Batch | None:
        """The next batch for ``name``: an open one again, else a newly frozen one.

        Open batches go first (replays of dead letters, then split halves, in seq
        order), so a batch once sent is resent unchanged until answered. A new
        batch takes the next records of the destination's types in seq order, at
        most ``limit``; ``accept`` may stop it early at the first record it
        refuses (the SIE destination waits for a business day to end). Returns
        None when the destination is paused or has nothing to send.

        With ``after`` (the id of the open normal batch being sent), the batch
        to send next *if that one succeeds*, so the delivery loop can freeze it
        while the other is on the wire: the earliest open normal batch after it,
        else a newly frozen one. None whenever anything else must come first
        (an open split or replay batch, an open batch before ``after``, dead
        letters queued for a retry, ``after`` no longer open): the loop then
        claims without ``after`` once ``after`` is answered. Two open normal
        batches are safe: ``acked_seq`` stays below the earliest, a crash
        resends both in seq order with their ids, and a failed or split
        ``after`` is claimed (or its halves are) before the later one.
        """
        dest = self._cursors.row(name)
        if dest["paused"]:
            return None
        if after is not None:
            return self._claim_after(dest, limit, accept, after)
        open_row = self._db.conn.execute(
            "SELECT batch_id FROM batches WHERE destination = ? AND state = 'open' "
            "ORDER BY (kind != 'replay'), first_seq, created_at LIMIT 1",
            (name,),
        ).fetchone()
        if open_row is not None:
            return self.load(open_row[0])
        with self._db.transaction():
            seqs = self._dead_letters.take_for_replay(name, limit)
            if not seqs:
                return self._freeze_next(dest, limit, accept)
            batch_id = self._freeze(name, BatchKind.REPLAY, seqs)
        return self.load(batch_id)

    def _claim_after(self, dest: sqlite3.Row, limit: int, accept: Accept | None, after: str) -> Batch | None:
        name = dest["name"]
        open_rows = self._db.conn.execute(
            "SELECT batch_id, kind, first_seq FROM batches WHERE destination = ? AND state = 'open' "
            "ORDER BY first_seq, created_at",
            (name,),
        ).fetchall()
        if not open_rows or open_rows[0]["batch_id"] != after:
            return None  # ``after`` is not the next to go (or not open at all)
        if any(row["kind"] != BatchKind.NORMAL for row in open_rows):
            return None
        if len(open_rows) > 1:
            return self.load(open_rows[1]["batch_id"])
        if self._dead_letters.waiting(name):
            return None  # the replay goes first, claimed once ``after`` is answered
        with self._db.transaction():
            return self._freeze_next(dest, limit, accept)

    def _freeze_next(self, dest: sqlite3.Row, limit: int, accept: Accept | None) -> Batch | None:
        """Freeze the next records after ``claimed_seq`` (inside the caller's transaction).

        The batch is built from the rows just selected: no second read.
        """
        conn = self._db.conn
        name = dest["name"]
        types = self._cursors.types(name)
        rows = member_rows(
            conn,
            f"SELECT {MEMBER} FROM records WHERE seq > ? AND type IN ({marks(types)}) ORDER BY seq LIMIT ?",
            (dest["claimed_seq"], *types, limit),
        )
        if accept is not None:
            for index, row in enumerate(rows):
                if not accept(member_envelope(row, self._store_id)):
                    rows = rows[:index]
                    break
        if not rows:
            return None
        created_at = clock.iso_now()
        first, last = rows[0][0], rows[-1][0]
        # The members are the rows just read (same transaction, same types, a
        # prefix in seq order): exactly the records of ``types`` in first..last.
        batch_id = self._freeze(
            name, BatchKind.NORMAL, [first, last], created_at, size=len(rows), types=json.dumps(types)
        )
        self._cursors.claimed(name, last)
        return self._batch(batch_id, name, rows, attempts=0, kind=BatchKind.NORMAL, created_at=created_at)

    def _freeze(
        self,
        name: str,
        kind: BatchKind,
        seqs: Sequence[int],
        created_at: str | None = None,
        *,
        size: int | None = None,
        types: str | None = None,
    ) -> str:
        """Write a batch of ``seqs``; with ``types``, a range batch: ``seqs`` is only [first, last], of ``size``."""
        batch_id = uuid7()
        self._db.conn.execute(
            "INSERT INTO batches(batch_id, destination, kind, state, first_seq, last_seq, size, created_at, attempts, "
            "types) VALUES (?,?,?,'open',?,?,?,?,0,?)",
            (
                batch_id,
                name,
                kind,
                seqs[0],
                seqs[-1],
                len(seqs) if size is None else size,
                created_at or clock.iso_now(),
                types,
            ),
        )
        if types is None:
            self._db.conn.executemany(
                "INSERT INTO batch_items(batch_id, seq) VALUES (?,?)", [(batch_id, s) for s in seqs]
            )
        return batch_id

    def load(self, batch_id: str) -> Batch:
        """A frozen batch as it was first sent (same id, same members, same bytes)."""
        conn = self._db.conn
        meta = conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if meta is None:
            raise OutboxError(f"no batch {batch_id}")
        sql, args = self._members(meta, MEMBER_R)
        rows = member_rows(conn, sql + " ORDER BY r.seq", args)
        return self._batch(
            batch_id,
            meta["destination"],
            rows,
            attempts=meta["attempts"],
            kind=BatchKind(meta["kind"]),
            created_at=meta["created_at"],
        )

    def _members(self, meta: sqlite3.Row, columns: str) -> tuple[str, tuple[Any, ...]]:
        """SQL (records aliased ``r``) and its arguments selecting ``columns`` of a batch's members."""
        if meta["types"] is not None:
            types = json.loads(meta["types"])
            return (
                f"SELECT {columns} FROM records r WHERE r.seq >= ? AND r.seq <= ? AND r.type IN ({marks(types)})",
                (meta["first_seq"], meta["last_seq"], *types),
            )
        return (
            f"SELECT {columns} FROM batch_items b JOIN records r ON r.seq = b.seq WHERE b.batch_id = ?",
            (meta["batch_id"],),
        )

    def _batch(
        self, batch_id: str, name: str, rows: Sequence[MemberRow], *, attempts: int, kind: BatchKind, created_at: str
    ) -> Batch:
        return batch_from_rows(
            batch_id, name, rows, store_id=self._store_id, attempts=attempts, kind=kind, created_at=created_at
        )

    # ---------------------------------------------------------------- answers
    def _open_batch(self, name: str, batch_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.conn.execute(
            "SELECT * FROM batches WHERE batch_id = ? AND destination = ?", (batch_id, name)
        ).fetchone()
        if row is None or row["state"] != "open":
            raise OutboxError(f"batch {batch_id} of {name} is not open")
        return row

    def complete(self, name: str, batch_id: str, rejected: Rejected | None = None) -> None:
        """The destination answered: ``rejected`` ids become dead letters, the rest are delivered."""
        rejected = rejected or {}
        conn = self._db.conn
        with self._db.relaxed(), self._db.transaction():
            batch = self._open_batch(name, batch_id)
            now = clock.iso_now()
            if rejected or batch["kind"] == BatchKind.REPLAY:
                items = conn.execute(*self._members(batch, "r.seq, r.id")).fetchall()
            else:
                items = []  # every member delivered: closing the batch and advancing is all
            for seq, record_id in items:
                if record_id in rejected:
                    status, error = rejected[record_id]
                    self._dead_letters.bury(name, seq, record_id, status, error, now)
                elif batch["kind"] == BatchKind.REPLAY:
                    self._dead_letters.delivered(name, seq)
            self._close(batch)
            self._cursors.advance(name)
            self._cursors.succeeded(name, now)

    def split(self, name: str, batch_id: str) -> list[str]:
        """Replace a refused batch of two or more records by its two halves."""
        with self._db.relaxed(), self._db.transaction():
            batch = self._open_batch(name, batch_id)
            sql, args = self._members(batch, "r.seq")
            seqs = [r[0] for r in self._db.conn.execute(sql + " ORDER BY r.seq", args)]
            if len(seqs) < 2:
                raise OutboxError("a batch of one record cannot be split; dead-letter it")
            half = len(seqs) // 2
            kind = BatchKind.REPLAY if batch["kind"] == BatchKind.REPLAY else BatchKind.SPLIT
            children = [self._freeze(name, kind, seqs[:half]), self._freeze(name, kind, seqs[half:])]
            self._close(batch)
        return children

    def record_failure(self, name: str, batch_id: str | None, error: str, next_attempt_at: str | None) -> None:
        """A retryable failure: keep the batch, remember the error and the next try."""
        now = clock.iso_now()
        with self._db.relaxed(), self._db.transaction():
            if batch_id is not None:
                self._db.conn.execute(
                    "UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE batch_id = ?",
                    (redact(error)[:ERROR_KEPT], batch_id),
                )
            self._cursors.failed(name, error[:ERROR_KEPT], now, next_attempt_at)

    def _close(self, batch: sqlite3.Row) -> None:
        """A closed batch (done, or split into halves) is deleted: the table holds open batches only."""
        conn = self._db.conn
        if batch["types"] is None:
            conn.execute("DELETE FROM batch_items WHERE batch_id = ?", (batch["batch_id"],))
        conn.execute("DELETE FROM batches WHERE batch_id = ?", (batch["batch_id"],))
