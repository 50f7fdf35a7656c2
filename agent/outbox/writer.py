"""Storing records: the group commit, duplicates, conflicts and the size limit.

A record is stored once under its natural key. The same content again is a
duplicate (answered with the stored id and seq); other content under a stored
key is a conflict: the original is kept, the new version is set aside in
``conflicts`` for a person to look at. The stored ``data`` is canonical JSON
whose SHA-256 is the record's ``digest`` (docs/architecture.md), so a batch
can splice it into a body unchanged.

The ingest hot path, per group of concurrent requests (one transaction, one
fsync): the size check, one ``SELECT ... WHERE key IN (...)`` for every key
of the group, a few multi-row ``INSERT`` of the records that are new. On a
Pi the sqlite3 module's cost per statement (and the GIL it lets go of around
each), not SQLite's work, was the larger part (docs/benchmarks.md, "Agent CPU per HTTP ingest request").
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
import time
from collections.abc import Sequence

from agent import clock
from agent.canonical import canonical_json
from agent.ids import uuid7_many
from agent.outbox.db import Database, marks
from agent.outbox.errors import Conflict, OutboxError, StorageFull, Unstorable, is_disk_full, storage_error
from agent.outbox.types import EnqueueResult, Origin
from agent.records import Record, normalize

__all__ = ["Writer"]

log = logging.getLogger("agent.outbox.store")  # the logger operators know these lines under

SIZE_LIMIT = "the outbox has reached its size limit (outbox.max_bytes)"
"""The 507 wording for ``max_bytes`` (docs/ingest-api.md); the other is a full disk's."""


_LOOKUP_CHUNK = 500
"""Keys per ``WHERE key IN (...)``: well under SQLite's oldest limit of 999 variables."""
_INSERT_ROWS = 64
"""Most rows per ``INSERT`` (8 values each: 512 variables, under that limit too)."""
USED_REREAD_S = 1.0
"""The bytes in use are read again at least this often (a prune frees pages, another process adds some)."""
USED_EXACT_FROM = 0.9
"""From this share of ``max_bytes`` on (by the estimate), the bytes in use are read at every commit."""


class Writer:
    """The ``records`` and ``conflicts`` tables' one writer.

    Args:
        db: the owner's database.
        max_bytes: past this many bytes in use, new records are refused (``StorageFull``).
    """

    def __init__(self, db: Database, *, max_bytes: int):
        self._db = db
        self.max_bytes = max_bytes
        self._used: int | None = None  # bytes in use when last read, plus an overestimate of what we added since
        self._used_read_at = 0.0
        self._next: tuple[int, int] | None = None  # (data_version, the next seq) after our own last commit
        self._version = 0  # data_version as _next_seq last read it, in this group's transaction

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

        The group is judged in Python against one lookup of all its keys, and
        only the requests that store are written (``_insert``), so one
        conflicting request does not cost the others their place and the one
        fsync at COMMIT is shared. A key stored by an earlier request of the
        same group counts as stored, exactly as if that request had committed
        first. Returns, per request, its results or the error that refused it.

        ``origins`` (one per record, request by request) is for records carried
        over from another outbox file (``agent.outbox.carry``): they keep the
        id, reception time and clock flag they were first given, so a
        destination that already has one recognises it.
        """
        answers: list[list[EnqueueResult] | OutboxError] = []
        conflicts: list[tuple[str, str, str, str]] = []
        # Every record is encoded before the transaction: one that cannot be
        # (validation should have refused it; this is defence in depth) is
        # refused alone, and the others of its group still commit.
        encoded = [_encode_all(records) for records in requests]
        db = self._db
        try:
            with db.transaction():
                full = self._full()
                synced = clock.clock_synced()
                received_at = clock.iso_now()  # the group commits at one moment: one reception time
                stored = self._lookup(
                    [
                        r.key
                        for records, texts in zip(requests, encoded, strict=True)
                        if not isinstance(texts, Unstorable)
                        for r in records
                    ]
                )
                fresh_ids = iter(uuid7_many(sum(len(r) for r in requests)) if origins is None else [])
                rows: list[tuple[int, str, str, str, str, int, str, str]] = []
                next_seq = -1  # read when the first record is new
                for number, records in enumerate(requests):
                    texts = encoded[number]
                    if isinstance(texts, Unstorable):
                        answers.append(texts)
                        continue
                    origin = origins[number] if origins is not None else None
                    results: list[EnqueueResult] = []
                    mine: dict[str, tuple[str, int, str]] = {}  # this request's new keys, kept only if it stores
                    added: list[tuple[int, str, str, str, str, int, str, str]] = []
                    refusal: OutboxError | None = None
                    for index, record in enumerate(records):
                        text, fingerprint = texts[index]
                        key = record.key
                        found = mine.get(key) or stored.get(key)
                        if found is not None:
                            if found[2] == fingerprint:
                                results.append(EnqueueResult(found[0], key, found[1], True))
                                continue
                            if full:  # a version kept aside takes room too: over max_bytes, it is not kept
                                refusal = StorageFull(SIZE_LIMIT)
                            else:
                                conflicts.append((key, found[0], fingerprint, text))
                                refusal = Conflict(key, found[0])
                            break
                        if full:
                            refusal = StorageFull(SIZE_LIMIT)
                            break
                        if next_seq < 0:
                            next_seq = self._next_seq()
                        seq = next_seq + len(rows) + len(added)
                        if origin is None:
                            record_id, record_received, record_synced = next(fresh_ids), received_at, synced
                        else:
                            carried = origin[index]
                            record_id, record_received, record_synced = (
                                carried.id,
                                carried.received_at,
                                carried.clock_synced,
                            )
                        added.append(
                            (
                                seq,
                                record_id,
                                key,
                                record.record_type,
                                record_received,
                                int(record_synced),
                                fingerprint,
                                text,
                            )
                        )
                        mine[key] = (record_id, seq, fingerprint)
                        results.append(EnqueueResult(record_id, key, seq, False))
                    if refusal is not None:
                        answers.append(refusal)  # none of its records is written: all or nothing
                        continue
                    rows.extend(added)
                    stored.update(mine)
                    answers.append(results)
                if rows:
                    self._insert(rows)
                if conflicts:
                    db.conn.executemany(
                        "INSERT INTO conflicts(key, stored_id, received_at, digest, data) VALUES (?,?,?,?,?)",
                        [(k, i, received_at, d, data) for k, i, d, data in conflicts],
                    )
        except sqlite3.Error as exc:
            self._next = None
            if is_disk_full(exc):
                log.warning("outbox: disk full, %d request(s) refused: %s", len(requests), exc)
            else:
                log.error("outbox: write failed: %s", exc)
            error = storage_error(exc)
            return [error for _ in requests]
        if rows:
            self._added(rows)  # committed: the estimate and the next seq may count on them
        return answers

    def _insert(self, rows: list[tuple[int, str, str, str, str, int, str, str]]) -> None:
        """The group's new rows in a few multi-row ``INSERT`` statements (64, 32, ... 1 rows each).

        Each statement is one step, and the sqlite3 module lets go of the GIL
        around every step: with ``executemany`` (a step per row) the outbox
        thread waited for the event loop to hand the GIL back once per record,
        up to the 5 ms switch interval each time while the loop was busy. The
        fixed sizes keep the distinct statements (and the statement cache) few.
        """
        conn = self._db.conn
        start = 0
        while start < len(rows):
            size = min(_INSERT_ROWS, 1 << ((len(rows) - start).bit_length() - 1))
            chunk = rows[start : start + size]
            conn.execute(_insert_sql(size), [value for row in chunk for value in row])
            start += size

    def _lookup(self, keys: list[str]) -> dict[str, tuple[str, int, str]]:
        """``key -> (id, seq, digest)`` of those of ``keys`` already stored: one query per 500 keys."""
        conn = self._db.conn
        unique = list(dict.fromkeys(keys))
        found: dict[str, tuple[str, int, str]] = {}
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            for key, record_id, seq, digest in conn.execute(
                f"SELECT key, id, seq, digest FROM records WHERE key IN ({marks(chunk)})", chunk
            ):
                found[key] = (record_id, seq, digest)
        return found

    def _full(self) -> bool:
        """Whether ``max_bytes`` is reached: read at most every ``USED_REREAD_S``, at every commit near the limit.

        Reading the page counts was a statement of its own in every group
        commit, a tenth of a small group's SQLite time. Between readings the
        figure only grows, by more than the records' text takes (``_added``), so
        the reading comes early rather than late, and near the limit it is
        exact at every commit.
        """
        now = time.monotonic()
        used = self._used
        if used is None or used >= self.max_bytes * USED_EXACT_FROM or now - self._used_read_at >= USED_REREAD_S:
            used = self._used = self._db.used_bytes()
            self._used_read_at = now
        return used >= self.max_bytes

    def _added(self, rows: list[tuple[int, str, str, str, str, int, str, str]]) -> None:
        """Count the rows just written into the estimate (twice their text: the table and its indexes)."""
        if self._used is not None:
            self._used += sum(2 * (len(row[7]) + len(row[2]) + 128) for row in rows)
        self._next = (self._version, rows[-1][0] + 1)

    def _next_seq(self) -> int:
        """The seq ``AUTOINCREMENT`` would give the next row: past the largest ever used, removed ones too.

        Assigned here rather than read back row by row (``lastrowid``), so a
        group's rows go in with one ``executemany``; the same numbers, and
        ``sqlite_sequence`` follows them as it does for any explicit seq.
        Remembered after our own insert, and trusted while no other
        connection has committed since (``PRAGMA data_version``).
        """
        # data_version: SQLite's count of commits by *other* connections (kassabro submit, a CLI's prune).
        self._version = int(self._db.conn.execute("PRAGMA data_version").fetchone()[0])
        remembered = self._next
        if remembered is not None and remembered[0] == self._version:
            return remembered[1]
        row = self._db.conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'records'), 0),"
            " coalesce((SELECT max(seq) FROM records), 0))"
        ).fetchone()
        return int(row[0]) + 1


@functools.lru_cache(maxsize=8)
def _insert_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * rows)
    return f"INSERT INTO records(seq, id, key, type, received_at, clock_synced, digest, data) VALUES {values}"


def _encode_all(records: Sequence[Record]) -> list[tuple[str, str]] | Unstorable:
    """Each record's stored text and digest, or ``Unstorable`` naming the first that has none.

    The canonical text (what ``digest`` hashes) is what is stored: its SHA-256
    is the digest, and the http adapter splices it into the body unchanged
    instead of decoding and encoding every record.
    """
    out: list[tuple[str, str]] = []
    for record in records:
        try:
            text = canonical_json(normalize(record))
            out.append((text, hashlib.sha256(text.encode("utf-8")).hexdigest()))
        except (ValueError, TypeError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
            log.warning("outbox: %s cannot be stored, refused alone: %s", record.key, type(exc).__name__)
            return Unstorable(record.key, "it has no UTF-8 JSON form (a lone surrogate, say)")
    return out
