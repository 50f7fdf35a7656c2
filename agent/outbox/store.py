"""The outbox: one SQLite file that every record passes through.

``OutboxStore`` owns one sqlite3 connection and is used from one thread at a
time (the ``Outbox`` owner thread in the agent; the CLI and tests directly).
Durability comes from WAL with ``synchronous=FULL``: a commit that returned is
on the card, even through a power cut.

Delivery state per destination is a cursor, not a row per record and
destination, so a million-record backlog costs nothing extra per destination:

- ``claimed_seq``: every record of the destination's types up to here has been
  put into a frozen batch;
- ``acked_seq``: every record up to here is resolved (delivered or dead-lettered).

Frozen batches (``batches`` + ``batch_items``) are written before they are
sent, so a resend after a crash carries the same id and the same members.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from json.encoder import encode_basestring as _encode_str
from pathlib import Path
from typing import Any

from agent import clock
from agent.canonical import canonical_json
from agent.ids import uuid7
from agent.outbox import schema
from agent.outbox.errors import (
    Conflict,
    OutboxError,
    OutboxUnavailable,
    StorageFull,
    UnknownDestination,
    is_disk_full,
    storage_error,
)
from agent.outbox.types import Batch, DeadLetter, EnqueueResult, Envelope, Origin
from agent.records import Record, normalize

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Conflict",
    "OutboxError",
    "OutboxStore",
    "OutboxUnavailable",
    "StorageFull",
    "UnknownDestination",
    "canonical_json",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
PRUNE_CHUNK = 5000


class OutboxStore:
    """The synchronous outbox. See the module docstring for the model."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, store_id: str, max_bytes: int):
        self.conn = conn
        self.path = path
        self.store_id = store_id
        self.max_bytes = max_bytes
        self.problems: list[str] = []
        self.check_deferred = False
        self.suspect = False
        self._page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        self._types_cache: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        store_id: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        check: bool = True,
    ) -> OutboxStore:
        """Open (or create) the outbox at ``path``, migrating it to this release.

        A file that fails ``PRAGMA quick_check`` (or is not a database at all) is
        moved aside, never deleted, and a fresh outbox is started: the till must
        keep selling. The problem is logged and kept in ``problems`` (and in the
        new file's ``events``) so the status page shows it.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        moved: str | None = None
        verified_clean = _closed_cleanly(path)
        _forget_clean_close(path)
        if check and path.exists() and not verified_clean:
            reason = _health_problem(path)
            if reason:
                moved = _move_aside(path)
                log.error(
                    "outbox %s failed its check (%s); moved aside to %s, starting a fresh one", path, reason, moved
                )
        conn = _connect(path)
        schema.migrate(conn)
        store = cls(conn, path, store_id=store_id, max_bytes=max_bytes)
        store.check_deferred = check and verified_clean
        if moved:
            store.add_event("error", f"the outbox failed its integrity check and was moved aside to {moved}")
        store.problems = store._recent_problems()
        return store

    @classmethod
    def open_reader(cls, path: Path | str, *, store_id: str, max_bytes: int = DEFAULT_MAX_BYTES) -> OutboxStore:
        """A second connection for reads only (no check, no migrations)."""
        conn = _open_connection(Path(path))
        conn.execute("PRAGMA query_only = ON")
        return cls(conn, Path(path), store_id=store_id, max_bytes=max_bytes)

    def close(self) -> None:
        """Checkpoint, close, and note the clean close so the next start can skip its check."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()
        if not self.suspect:
            with contextlib.suppress(OSError):
                _remember_clean_close(self.path)

    def quick_check(self) -> str | None:
        """Why the file fails ``PRAGMA quick_check``, or None when it passes."""
        return _quick_check(self.conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; a rollback on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """Commit without waiting for the fsync (``synchronous = NORMAL``), then back to FULL.

        Only for delivery outcomes (``complete_batch``, ``split_batch``,
        ``record_failure``): losing one to a power cut only means the same
        frozen batch is sent again with the same id, which receivers
        deduplicate, or its halves are split again the same way. In WAL mode
        the commit is still atomic and ordered: the next FULL commit (an
        enqueue, a claim) makes it durable together with itself. Never for
        ``enqueue`` (a till's records are on the card before its 201) nor for
        a claim (a batch id must be on the card before it is on the wire).
        """
        self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self.conn.execute("PRAGMA synchronous = FULL")

    # ------------------------------------------------------------------ enqueue
    def enqueue(self, records: Sequence[Record]) -> list[EnqueueResult]:
        """Store ``records`` all or nothing; one result per record, in order.

        Raises:
            Conflict: a key is stored with different content (kept aside).
            StorageFull: the disk or ``max_bytes`` is full.
            OutboxUnavailable: any other write failure.
        """
        result = self.enqueue_many([records])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def enqueue_many(
        self, requests: Sequence[Sequence[Record]], origins: Sequence[Sequence[Origin]] | None = None
    ) -> list[list[EnqueueResult] | OutboxError]:
        """Group commit: every request in one transaction, each all or nothing.

        Each request runs in its own savepoint, so one conflicting request does
        not cost the others their place; the one fsync at COMMIT is shared.
        Returns, per request, its results or the error that refused it.

        ``origins`` (one per record, request by request) is for records carried
        over from another outbox file (``agent.outbox.carry``): they keep the
        id, reception time and clock flag they were first given, so a
        destination that already has one recognises it.
        """
        answers: list[list[EnqueueResult] | OutboxError] = []
        conflicts: list[tuple[str, str, str, str]] = []
        try:
            with self.transaction():
                full = self.used_bytes() >= self.max_bytes
                synced = clock.clock_synced()
                for number, records in enumerate(requests):
                    savepoint = f"req{number}"
                    self.conn.execute(f"SAVEPOINT {savepoint}")
                    try:
                        origin = origins[number] if origins is not None else None
                        answers.append(self._enqueue_unit(records, full=full, synced=synced, origins=origin))
                        self.conn.execute(f"RELEASE {savepoint}")
                    except _ConflictFound as found:
                        self.conn.execute(f"ROLLBACK TO {savepoint}")
                        self.conn.execute(f"RELEASE {savepoint}")
                        conflicts.append((found.key, found.stored_id, found.digest, found.data))
                        answers.append(Conflict(found.key, found.stored_id))
                    except StorageFull as exc:
                        self.conn.execute(f"ROLLBACK TO {savepoint}")
                        self.conn.execute(f"RELEASE {savepoint}")
                        answers.append(exc)
                if conflicts:
                    now = clock.iso_now()
                    self.conn.executemany(
                        "INSERT INTO conflicts(key, stored_id, received_at, digest, data) VALUES (?,?,?,?,?)",
                        [(k, i, now, d, data) for k, i, d, data in conflicts],
                    )
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                log.warning("outbox: disk full, %d request(s) refused: %s", len(requests), exc)
            else:
                log.error("outbox: write failed: %s", exc)
            error = storage_error(exc)
            return [error for _ in requests]
        return answers

    def _enqueue_unit(
        self, records: Sequence[Record], *, full: bool, synced: bool, origins: Sequence[Origin] | None = None
    ) -> list[EnqueueResult]:
        results: list[EnqueueResult] = []
        for number, record in enumerate(records):
            # The canonical text (what ``digest`` hashes) is what is stored: its
            # SHA-256 is the digest, and the http adapter splices it into the
            # body unchanged instead of decoding and encoding every record.
            text = canonical_json(normalize(record))
            fingerprint = hashlib.sha256(text.encode("utf-8")).hexdigest()
            key = record.key
            row = self.conn.execute("SELECT id, seq, digest FROM records WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row[2] == fingerprint:
                    results.append(EnqueueResult(row[0], key, row[1], True))
                    continue
                raise _ConflictFound(key, row[0], fingerprint, text)
            if full:
                raise StorageFull("the outbox has reached its size limit (outbox.max_bytes)")
            if origins is None:
                record_id, received_at, record_synced = uuid7(), clock.iso_now(), synced
            else:
                origin = origins[number]
                record_id, received_at, record_synced = origin.id, origin.received_at, origin.clock_synced
            cur = self.conn.execute(
                "INSERT INTO records(id, key, type, received_at, clock_synced, digest, data) VALUES (?,?,?,?,?,?,?)",
                (record_id, key, record.record_type, received_at, int(record_synced), fingerprint, text),
            )
            results.append(EnqueueResult(record_id, key, int(cur.lastrowid or 0), False))
        return results

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages minus the free list), plus the WAL."""
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return (pages - free) * self._page_size

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    # ------------------------------------------------------------ destinations
    def register_destinations(self, specs: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        """Make the configured destinations known; the others become inactive.

        A destination seen for the first time starts at the beginning of what is
        retained, so a newly added destination receives the retained history.
        Nothing is written when nothing changed, so an agent restarted on a
        full disk still starts (and answers 507) instead of failing here.
        """
        wanted = {name: (kind, json.dumps(sorted(types)), 1) for name, kind, types in specs}
        current = {
            r[0]: (r[1], r[2], r[3]) for r in self.conn.execute("SELECT name, kind, types, active FROM destinations")
        }
        stale = [name for name, (_, _, active) in current.items() if active and name not in wanted]
        if not stale and all(current.get(name) == spec for name, spec in wanted.items()):
            self._types_cache.clear()
            return
        with self.transaction():
            self.conn.execute("UPDATE destinations SET active = 0")
            for name, kind, types in specs:
                self.conn.execute(
                    "INSERT INTO destinations(name, kind, types, active) VALUES (?,?,?,1) "
                    "ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, types = excluded.types, active = 1",
                    (name, kind, json.dumps(sorted(types))),
                )
        self._types_cache.clear()

    def _destination(self, name: str) -> sqlite3.Row:
        row = self.conn.execute("SELECT * FROM destinations WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise UnknownDestination(f"no destination named {name!r}")
        return row

    def _types(self, name: str) -> tuple[str, ...]:
        if name not in self._types_cache:
            self._types_cache[name] = tuple(json.loads(self._destination(name)["types"]))
        return self._types_cache[name]

    def destination_names(self, active_only: bool = True) -> list[str]:
        sql = "SELECT name FROM destinations" + (" WHERE active = 1" if active_only else "") + " ORDER BY name"
        return [r[0] for r in self.conn.execute(sql)]

    def set_paused(self, name: str, paused: bool) -> None:
        self._destination(name)
        with self.transaction():
            self.conn.execute("UPDATE destinations SET paused = ? WHERE name = ?", (int(paused), name))

    # ------------------------------------------------------------------ batches
    def claim_batch(
        self,
        name: str,
        limit: int,
        accept: Callable[[Envelope], bool] | None = None,
        *,
        after: str | None = None,
    ) -> Batch | None:
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
        dest = self._destination(name)
        if dest["paused"]:
            return None
        if after is not None:
            return self._claim_after(dest, limit, accept, after)
        open_row = self.conn.execute(
            "SELECT batch_id FROM batches WHERE destination = ? AND state = 'open' "
            "ORDER BY (kind != 'replay'), first_seq, created_at LIMIT 1",
            (name,),
        ).fetchone()
        if open_row is not None:
            return self.load_batch(open_row[0])
        with self.transaction():
            replay = self.conn.execute(
                "SELECT d.seq FROM dead_letters d JOIN records r ON r.seq = d.seq "
                "WHERE d.destination = ? AND d.state = 'retrying' ORDER BY d.seq LIMIT ?",
                (name, limit),
            ).fetchall()
            if replay:
                seqs = [r[0] for r in replay]
                batch_id = self._freeze(name, "replay", seqs)
                self.conn.execute(
                    f"UPDATE dead_letters SET state = 'replaying' WHERE destination = ? AND seq IN ({_marks(seqs)})",
                    (name, *seqs),
                )
            else:
                return self._freeze_next(dest, limit, accept)
        return self.load_batch(batch_id)

    def _claim_after(
        self, dest: sqlite3.Row, limit: int, accept: Callable[[Envelope], bool] | None, after: str
    ) -> Batch | None:
        name = dest["name"]
        open_rows = self.conn.execute(
            "SELECT batch_id, kind, first_seq FROM batches WHERE destination = ? AND state = 'open' "
            "ORDER BY first_seq, created_at",
            (name,),
        ).fetchall()
        if not open_rows or open_rows[0]["batch_id"] != after:
            return None  # ``after`` is not the next to go (or not open at all)
        if any(row["kind"] != "normal" for row in open_rows):
            return None
        if len(open_rows) > 1:
            return self.load_batch(open_rows[1]["batch_id"])
        waiting = self.conn.execute(
            "SELECT 1 FROM dead_letters WHERE destination = ? AND state = 'retrying' LIMIT 1", (name,)
        ).fetchone()
        if waiting is not None:
            return None  # the replay goes first, claimed once ``after`` is answered
        with self.transaction():
            return self._freeze_next(dest, limit, accept)

    def _freeze_next(self, dest: sqlite3.Row, limit: int, accept: Callable[[Envelope], bool] | None) -> Batch | None:
        """Freeze the next records after ``claimed_seq`` (inside the caller's transaction).

        The batch is built from the rows just selected: no second read.
        """
        name = dest["name"]
        types = self._types(name)
        rows = self._member_rows(
            f"SELECT {_MEMBER} FROM records WHERE seq > ? AND type IN ({_marks(types)}) ORDER BY seq LIMIT ?",
            (dest["claimed_seq"], *types, limit),
        )
        if accept is not None:
            for index, row in enumerate(rows):
                if not accept(self._member_envelope(row)):
                    rows = rows[:index]
                    break
        if not rows:
            return None
        created_at = clock.iso_now()
        first, last = rows[0][0], rows[-1][0]
        batch_id = self._freeze(name, "normal", [first, last], created_at, size=len(rows))
        # The members are the rows just read (same transaction, same types, a
        # prefix in seq order): written by SQLite alone, no tuple per member.
        self.conn.execute(
            f"INSERT INTO batch_items(batch_id, seq) SELECT ?, seq FROM records "
            f"WHERE seq >= ? AND seq <= ? AND type IN ({_marks(types)})",
            (batch_id, first, last, *types),
        )
        self.conn.execute("UPDATE destinations SET claimed_seq = ? WHERE name = ?", (last, name))
        return self._batch(batch_id, name, rows, attempts=0, kind="normal", created_at=created_at)

    def _freeze(
        self, name: str, kind: str, seqs: Sequence[int], created_at: str | None = None, *, size: int | None = None
    ) -> str:
        """Write a batch of ``seqs``; with ``size``, ``seqs`` is only [first, last] and the caller writes the items."""
        batch_id = uuid7()
        self.conn.execute(
            "INSERT INTO batches(batch_id, destination, kind, state, first_seq, last_seq, size, created_at, attempts) "
            "VALUES (?,?,?,'open',?,?,?,?,0)",
            (
                batch_id,
                name,
                kind,
                seqs[0],
                seqs[-1],
                len(seqs) if size is None else size,
                created_at or clock.iso_now(),
            ),
        )
        if size is None:
            self.conn.executemany("INSERT INTO batch_items(batch_id, seq) VALUES (?,?)", [(batch_id, s) for s in seqs])
        return batch_id

    def load_batch(self, batch_id: str) -> Batch:
        meta = self.conn.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        if meta is None:
            raise OutboxError(f"no batch {batch_id}")
        rows = self._member_rows(
            f"SELECT {_MEMBER_R} FROM batch_items b JOIN records r ON r.seq = b.seq "
            "WHERE b.batch_id = ? ORDER BY r.seq",
            (batch_id,),
        )
        return self._batch(
            batch_id,
            meta["destination"],
            rows,
            attempts=meta["attempts"],
            kind=meta["kind"],
            created_at=meta["created_at"],
        )

    def _member_rows(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Rows of ``_MEMBER`` columns as plain tuples: ``sqlite3.Row`` costs more than the JSON here."""
        cursor = self.conn.cursor()
        cursor.row_factory = None
        try:
            return cursor.execute(sql, args).fetchall()
        finally:
            cursor.close()

    def _member_envelope(self, row: tuple[Any, ...]) -> Envelope:
        """The envelope (decoded) of a ``_MEMBER`` row, as ``_envelope`` gives it."""
        seq, record_id, key, record_type, received_at, synced, _, data = row
        return {
            "id": record_id,
            "key": key,
            "type": record_type,
            "store_id": self.store_id,
            "seq": seq,
            "received_at": received_at,
            "clock_synced": bool(synced),
            "data": json.loads(data),
        }

    def _batch(
        self, batch_id: str, name: str, rows: Sequence[tuple[Any, ...]], *, attempts: int, kind: str, created_at: str
    ) -> Batch:
        """A ``Batch`` whose envelopes are canonical JSON (UTF-8); ``records`` decodes them if read."""
        store_id = _encode_str(self.store_id)
        encoded: list[bytes] = []
        for start in range(0, len(rows), _YIELD_EVERY):
            if start:
                # Pure Python for a while: let the delivery loop's thread take the
                # GIL now (an answer to handle) instead of after the 5 ms switch interval.
                time.sleep(0)
            encoded.extend(_envelope_json(row, store_id) for row in rows[start : start + _YIELD_EVERY])
        return Batch(
            batch_id=batch_id,
            destination=name,
            attempts=attempts,
            kind=kind,
            created_at=created_at,
            encoded=tuple(encoded),
            record_ids=tuple(row[1] for row in rows),
        )

    def _open_batch(self, name: str, batch_id: str) -> sqlite3.Row:
        row = self.conn.execute(
            "SELECT * FROM batches WHERE batch_id = ? AND destination = ?", (batch_id, name)
        ).fetchone()
        if row is None or row["state"] != "open":
            raise OutboxError(f"batch {batch_id} of {name} is not open")
        return row

    def complete_batch(
        self,
        name: str,
        batch_id: str,
        rejected: dict[str, tuple[int | None, str]] | None = None,
    ) -> None:
        """The destination answered: ``rejected`` ids become dead letters, the rest are delivered."""
        rejected = rejected or {}
        with self._relaxed(), self.transaction():
            batch = self._open_batch(name, batch_id)
            now = clock.iso_now()
            if rejected or batch["kind"] == "replay":
                items = self.conn.execute(
                    "SELECT r.seq, r.id FROM batch_items b JOIN records r ON r.seq = b.seq WHERE b.batch_id = ?",
                    (batch_id,),
                ).fetchall()
            else:
                items = []  # every member delivered: closing the batch and advancing is all
            for seq, record_id in items:
                if record_id in rejected:
                    status, error = rejected[record_id]
                    self.conn.execute(
                        "INSERT INTO dead_letters(destination, seq, record_id, status, error, created_at, state, retries) "
                        "VALUES (?,?,?,?,?,?,'dead',0) ON CONFLICT(destination, seq) DO UPDATE SET "
                        "status = excluded.status, error = excluded.error, created_at = excluded.created_at, state = 'dead'",
                        (name, seq, record_id, status, error[:1024], now),
                    )
                elif batch["kind"] == "replay":
                    self.conn.execute("DELETE FROM dead_letters WHERE destination = ? AND seq = ?", (name, seq))
            self._close_batch(batch_id, "done")
            self._advance(name)
            self.conn.execute(
                "UPDATE destinations SET last_success_at = ?, last_error = NULL, last_error_at = NULL, "
                "failing_since = NULL, next_attempt_at = NULL WHERE name = ?",
                (now, name),
            )

    def split_batch(self, name: str, batch_id: str) -> list[str]:
        """Replace a refused batch of two or more records by its two halves."""
        with self._relaxed(), self.transaction():
            batch = self._open_batch(name, batch_id)
            seqs = [
                r[0]
                for r in self.conn.execute("SELECT seq FROM batch_items WHERE batch_id = ? ORDER BY seq", (batch_id,))
            ]
            if len(seqs) < 2:
                raise OutboxError("a batch of one record cannot be split; dead-letter it")
            half = len(seqs) // 2
            kind = "replay" if batch["kind"] == "replay" else "split"
            children = [self._freeze(name, kind, seqs[:half]), self._freeze(name, kind, seqs[half:])]
            self._close_batch(batch_id, "split")
        return children

    def record_failure(self, name: str, batch_id: str | None, error: str, next_attempt_at: str | None) -> None:
        """A retryable failure: keep the batch, remember the error and the next try."""
        now = clock.iso_now()
        with self._relaxed(), self.transaction():
            if batch_id is not None:
                self.conn.execute(
                    "UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE batch_id = ?",
                    (error[:1024], batch_id),
                )
            self.conn.execute(
                "UPDATE destinations SET last_error = ?, last_error_at = ?, next_attempt_at = ?, "
                "failing_since = COALESCE(failing_since, ?) WHERE name = ?",
                (error[:1024], now, next_attempt_at, now, name),
            )

    def _close_batch(self, batch_id: str, state: str) -> None:
        self.conn.execute("UPDATE batches SET state = ? WHERE batch_id = ?", (state, batch_id))
        self.conn.execute("DELETE FROM batch_items WHERE batch_id = ?", (batch_id,))
        self.conn.execute("DELETE FROM batches WHERE batch_id = ? AND state != 'open'", (batch_id,))

    def _advance(self, name: str) -> None:
        """Move ``acked_seq`` up to just before the oldest open non-replay batch."""
        dest = self._destination(name)
        row = self.conn.execute(
            "SELECT MIN(first_seq) FROM batches WHERE destination = ? AND state = 'open' AND kind != 'replay'",
            (name,),
        ).fetchone()
        acked = dest["claimed_seq"] if row[0] is None else row[0] - 1
        self.conn.execute("UPDATE destinations SET acked_seq = MAX(acked_seq, ?) WHERE name = ?", (acked, name))

    # ------------------------------------------------------------- dead letters
    def retry_dead_letters(self, name: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Queue dead letters to be sent again (all, one destination's, or some ids)."""
        sql = "UPDATE dead_letters SET state = 'retrying', retries = retries + 1 WHERE state = 'dead'"
        args: list[Any] = []
        if name is not None:
            self._destination(name)
            sql += " AND destination = ?"
            args.append(name)
        if ids:
            sql += f" AND record_id IN ({_marks(ids)})"
            args.extend(ids)
        with self.transaction():
            return self.conn.execute(sql, args).rowcount

    def list_dead_letters(self, name: str | None = None, limit: int = 100) -> list[DeadLetter]:
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
            for r in self.conn.execute(sql, args)
        ]

    # -------------------------------------------------------------------- reads
    def _envelope(self, row: sqlite3.Row) -> Envelope:
        return {
            "id": row["id"],
            "key": row["key"],
            "type": row["type"],
            "store_id": self.store_id,
            "seq": row["seq"],
            "received_at": row["received_at"],
            "clock_synced": bool(row["clock_synced"]),
            "data": json.loads(row["data"]),
        }

    def get_record(self, key: str) -> dict[str, Any] | None:
        """The stored record and its delivery state per active destination."""
        row = self.conn.execute("SELECT * FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        envelope = self._envelope(row)
        deliveries: dict[str, str] = {}
        for dest in self.conn.execute("SELECT * FROM destinations WHERE active = 1 ORDER BY name"):
            deliveries[dest["name"]] = self._delivery_state(dest, row["seq"], row["type"])
        conflicts = self.conn.execute("SELECT COUNT(*) FROM conflicts WHERE key = ?", (key,)).fetchone()[0]
        return {"record": envelope, "deliveries": deliveries, "conflicts": conflicts}

    def _delivery_state(self, dest: sqlite3.Row, seq: int, record_type: str) -> str:
        if record_type not in json.loads(dest["types"]):
            return "not_applicable"
        dead = self.conn.execute(
            "SELECT state FROM dead_letters WHERE destination = ? AND seq = ?", (dest["name"], seq)
        ).fetchone()
        if dead is not None:
            return "dead_letter" if dead[0] == "dead" else "retrying"
        if seq <= dest["acked_seq"]:
            return "delivered"
        if seq <= dest["claimed_seq"]:
            return "sending"
        return "pending"

    def recent_records(self, limit: int = 20) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT seq, key, type, received_at FROM records ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        dests = self.conn.execute("SELECT * FROM destinations WHERE active = 1 ORDER BY name").fetchall()
        return [
            {
                "seq": r["seq"],
                "key": r["key"],
                "type": r["type"],
                "received_at": r["received_at"],
                "deliveries": {d["name"]: self._delivery_state(d, r["seq"], r["type"]) for d in dests},
            }
            for r in rows
        ]

    def destination_stats(self) -> list[dict[str, Any]]:
        """Per active destination: the figures ``/api/status`` and ``kassabro status`` show."""
        now = clock.utcnow()
        out: list[dict[str, Any]] = []
        for dest in self.conn.execute("SELECT * FROM destinations WHERE active = 1 ORDER BY name").fetchall():
            types = json.loads(dest["types"])
            marks = _marks(types)
            by_type = {t: 0 for t in types}
            for record_type, count in self.conn.execute(
                f"SELECT type, COUNT(*) FROM records WHERE type IN ({marks}) AND seq > ? GROUP BY type",
                (*types, dest["acked_seq"]),
            ):
                by_type[record_type] = count
            for record_type, count in self.conn.execute(
                "SELECT r.type, COUNT(*) FROM dead_letters d JOIN records r ON r.seq = d.seq "
                "WHERE d.destination = ? AND d.state != 'dead' GROUP BY r.type",
                (dest["name"],),
            ):
                by_type[record_type] = by_type.get(record_type, 0) + count
            pending = sum(by_type.values())
            oldest = self.conn.execute(
                f"SELECT received_at FROM records WHERE type IN ({marks}) AND seq > ? ORDER BY seq LIMIT 1",
                (*types, dest["acked_seq"]),
            ).fetchone()
            retrying = self.conn.execute(
                "SELECT MIN(r.received_at) FROM dead_letters d JOIN records r ON r.seq = d.seq "
                "WHERE d.destination = ? AND d.state != 'dead'",
                (dest["name"],),
            ).fetchone()
            dead = self.conn.execute(
                "SELECT COUNT(*) FROM dead_letters WHERE destination = ? AND state = 'dead'", (dest["name"],)
            ).fetchone()[0]
            oldest_at = min(filter(None, [oldest[0] if oldest else None, retrying[0]]), default=None)
            out.append(
                {
                    "name": dest["name"],
                    "kind": dest["kind"],
                    "types": types,
                    "paused": bool(dest["paused"]),
                    "pending": pending,
                    "pending_by_type": by_type,
                    "oldest_pending_age_s": clock.age_s(oldest_at, now),
                    "oldest_pending_at": oldest_at,
                    "dead_letters": dead,
                    "last_success_at": dest["last_success_at"],
                    "last_error": dest["last_error"],
                    "last_error_at": dest["last_error_at"],
                    "failing_since": dest["failing_since"],
                    "next_attempt_at": dest["next_attempt_at"],
                    "acked_seq": dest["acked_seq"],
                }
            )
        return out

    def outbox_stats(self) -> dict[str, Any]:
        count = self.conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        max_seq = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        conflicts = self.conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0]
        return {
            "records": count,
            "bytes": self.file_bytes(),
            "used_bytes": self.used_bytes(),
            "max_bytes": self.max_bytes,
            "conflicts": conflicts,
            "max_seq": max_seq[0] if max_seq else 0,
            "problems": list(self.problems),
        }

    def list_conflicts(self, limit: int = 100) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM conflicts ORDER BY rowid_ DESC LIMIT ?", (limit,))]

    # -------------------------------------------------------------- upkeep
    def add_event(self, level: str, message: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO events(at, level, message) VALUES (?,?,?)", (clock.iso_now(), level, message)
            )

    def _recent_problems(self) -> list[str]:
        week_ago = clock.iso(clock.utcnow() - dt.timedelta(days=7))
        return [
            f"{r[0]}: {r[1]}"
            for r in self.conn.execute(
                "SELECT at, message FROM events WHERE level = 'error' AND at >= ? ORDER BY rowid_", (week_ago,)
            )
        ]

    def prune(self, retention_s: float) -> int:
        """Delete records every destination has resolved and that are older than retention.

        Deletes in chunks of ``PRUNE_CHUNK`` (short write locks, so ingest never
        waits long), keeps dead letters and anything still pending anywhere, then
        hands freed pages back with ``incremental_vacuum``: never a full VACUUM,
        which would rewrite the whole file on an SD card.
        """
        cutoff = clock.iso(clock.utcnow() - dt.timedelta(seconds=retention_s))
        dests = self.conn.execute("SELECT types, acked_seq FROM destinations WHERE active = 1").fetchall()
        types_seen = {t for (t,) in self.conn.execute("SELECT DISTINCT type FROM records")}
        removed = 0
        for record_type in sorted(types_seen):
            limits = [d["acked_seq"] for d in dests if record_type in json.loads(d["types"])]
            ceiling = min(limits) if limits else None
            while True:
                with self.transaction():
                    args: list[Any] = [record_type, cutoff]
                    sql = "SELECT seq FROM records WHERE type = ? AND received_at < ?"
                    if ceiling is not None:
                        sql += " AND seq <= ?"
                        args.append(ceiling)
                    sql += " AND seq NOT IN (SELECT seq FROM dead_letters) ORDER BY seq LIMIT ?"
                    args.append(PRUNE_CHUNK)
                    seqs = [r[0] for r in self.conn.execute(sql, args)]
                    if seqs:
                        self.conn.execute(f"DELETE FROM records WHERE seq IN ({_marks(seqs)})", seqs)
                removed += len(seqs)
                if len(seqs) < PRUNE_CHUNK:
                    break
        with self.transaction():
            self.conn.execute("DELETE FROM conflicts WHERE received_at < ?", (cutoff,))
            self.conn.execute("DELETE FROM events WHERE at < ?", (cutoff,))
        if removed:
            # executescript, not execute: the pragma frees one page per step and
            # reports each as a zero-column row, which sqlite3's execute() takes
            # for "done" after the first step, freeing a single page.
            self.conn.executescript("PRAGMA incremental_vacuum;")
            log.info("outbox: pruned %d delivered records older than %.0f days", removed, retention_s / 86400)
        return removed

    def probe_write(self) -> None:
        """A tiny real commit, for /healthz and the watchdog: proves the file takes writes."""
        with self.transaction():
            self.conn.execute("INSERT INTO events(at, level, message) VALUES (?, 'probe', '')", (clock.iso_now(),))
            self.conn.execute("DELETE FROM events WHERE level = 'probe'")


class _ConflictFound(Exception):
    def __init__(self, key: str, stored_id: str, digest: str, data: str):
        super().__init__(key)
        self.key = key
        self.stored_id = stored_id
        self.digest = digest
        self.data = data


_MEMBER = "seq, id, key, type, received_at, clock_synced, digest, data"
"""The columns ``_envelope_json`` and ``_member_envelope`` take, in this order."""
_MEMBER_R = ", ".join(f"r.{column}" for column in _MEMBER.split(", "))


_YIELD_EVERY = 64
"""Envelopes built between two offers of the GIL to other threads (about 0.3 ms)."""
_HEAD = {True: b'{"clock_synced":true,"data":', False: b'{"clock_synced":false,"data":'}


def _envelope_json(row: tuple[Any, ...], store_id_json: str) -> bytes:
    """The envelope of a ``_MEMBER`` row as canonical JSON (UTF-8, keys sorted, no spaces).

    Byte for byte what ``canonical_json(envelope).encode()`` gives, built from
    the stored ``data`` text without decoding it. The stored text is canonical
    when its SHA-256 is the record's digest (every record stored since the
    outbox keeps canonical text); an older record's text is canonicalised
    here, so a batch is the same bytes on every resend either way. The text
    columns are NOT NULL TEXT, so each is a ``str`` that ``encode_basestring``
    (what ``json.dumps(..., ensure_ascii=False)`` uses for strings) writes.
    Bytes, not str: the UTF-8 of ``data`` is needed for the check anyway, and
    the delivery loop then joins bytes instead of encoding a 330 KB body.

    Args:
        row: ``seq, id, key, type, received_at, clock_synced, digest, data``.
        store_id_json: the store id, already a JSON string.
    """
    seq, record_id, key, record_type, received_at, synced, stored_digest, data = row
    raw = data.encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != stored_digest:
        raw = canonical_json(json.loads(data)).encode("utf-8")
    tail = (
        f',"id":{_encode_str(record_id)},"key":{_encode_str(key)},"received_at":{_encode_str(received_at)},'
        f'"seq":{int(seq)},"store_id":{store_id_json},"type":{_encode_str(record_type)}}}'
    )
    return _HEAD[bool(synced)] + raw + tail.encode("utf-8")


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def _open_connection(path: Path) -> sqlite3.Connection:
    """A connection as every outbox user wants it: explicit transactions, rows by name, patient locks."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _quick_check(conn: sqlite3.Connection) -> str | None:
    rows = conn.execute("PRAGMA quick_check").fetchall()
    verdict = "; ".join(str(r[0]) for r in rows[:5])
    return None if verdict == "ok" else verdict


def _connect(path: Path) -> sqlite3.Connection:
    """The writer's connection: WAL, ``synchronous=FULL``."""
    fresh = not path.exists() or path.stat().st_size == 0
    conn = _open_connection(path)
    if fresh:
        # Must precede the first table: lets prune hand pages back without VACUUM.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


def _clean_marker(path: Path) -> Path:
    return path.with_name(f"{path.name}.clean")


def _file_identity(path: Path) -> dict[str, int] | None:
    """What changes whenever the database file is written: size, mtime, inode."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _remember_clean_close(path: Path) -> None:
    """After a clean close with an empty WAL, note the file's identity beside it.

    At the next start an unchanged file skips the full ``quick_check`` before the
    ports open (the check runs in the background instead): a 750 MB outbox costs
    seconds of start-up to check, and power cuts, the usual cause of damage,
    never leave this note behind.
    """
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        return
    identity = _file_identity(path)
    if identity is None:
        return
    marker = _clean_marker(path)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(identity), encoding="utf-8")
    os.replace(tmp, marker)


def _closed_cleanly(path: Path) -> bool:
    marker = _clean_marker(path)
    try:
        noted = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wal = Path(f"{path}-wal")
    wal_empty = not wal.exists() or wal.stat().st_size == 0
    return wal_empty and noted == _file_identity(path)


def _forget_clean_close(path: Path) -> None:
    """Once opened for writing, only the next clean close may vouch for the file."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_clean_marker(path))


def _health_problem(path: Path) -> str | None:
    """Why the file at ``path`` cannot be trusted, or None when it passes quick_check."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=10.0)
        try:
            return _quick_check(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)


def _move_aside(path: Path) -> str:
    stamp = clock.utcnow().strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{path}{suffix}")
        if src.exists():
            os.replace(src, f"{target}{suffix}")
    return str(target)
