"""Storing records: the group commit, duplicates, conflicts and the size limit.

A record is stored once under its natural key. The same content again is a
duplicate (answered with the stored id and seq); other content under a stored
key is a conflict: the original is kept, the new version is set aside in
``conflicts`` for a person to look at. The stored ``data`` is canonical JSON
whose SHA-256 is the record's ``digest`` (docs/architecture.md), so a batch
can splice it into a body unchanged.

The ingest hot path: one ``SELECT`` by key and one ``INSERT`` per record,
every concurrent request in one transaction (one fsync per group).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Sequence

from agent import clock
from agent.canonical import canonical_json
from agent.ids import uuid7
from agent.outbox.db import Database
from agent.outbox.errors import Conflict, OutboxError, StorageFull, Unstorable, is_disk_full, storage_error
from agent.outbox.types import EnqueueResult, Origin
from agent.records import Record, normalize

__all__ = ["Writer"]

log = logging.getLogger("agent.outbox.store")  # the logger operators know these lines under

SIZE_LIMIT = "the outbox has reached its size limit (outbox.max_bytes)"
"""The 507 wording for ``max_bytes`` (docs/ingest-api.md); the other is a full disk's."""


class _ConflictFound(Exception):
    """A request met a stored key with other content: its savepoint is undone, the version set aside."""

    def __init__(self, key: str, stored_id: str, digest: str, data: str):
        super().__init__(key)
        self.key = key
        self.stored_id = stored_id
        self.digest = digest
        self.data = data


class Writer:
    """The ``records`` and ``conflicts`` tables' one writer.

    Args:
        db: the owner's database.
        max_bytes: past this many bytes in use, new records are refused (``StorageFull``).
    """

    def __init__(self, db: Database, *, max_bytes: int):
        self._db = db
        self.max_bytes = max_bytes

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

        Each request runs in its own savepoint (a nested ``transaction()``), so
        one conflicting request does not cost the others their place; the one
        fsync at COMMIT is shared. Returns, per request, its results or the
        error that refused it.

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
                full = db.used_bytes() >= self.max_bytes
                synced = clock.clock_synced()
                for number, records in enumerate(requests):
                    texts = encoded[number]
                    if isinstance(texts, Unstorable):
                        answers.append(texts)
                        continue
                    origin = origins[number] if origins is not None else None
                    try:
                        with db.transaction():
                            answers.append(self._store(records, texts, full=full, synced=synced, origins=origin))
                    except _ConflictFound as found:
                        if full:  # a version kept aside takes room too: over max_bytes, it is not kept
                            answers.append(StorageFull(SIZE_LIMIT))
                            continue
                        conflicts.append((found.key, found.stored_id, found.digest, found.data))
                        answers.append(Conflict(found.key, found.stored_id))
                    except StorageFull as exc:
                        answers.append(exc)
                if conflicts:
                    now = clock.iso_now()
                    db.conn.executemany(
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

    def _store(
        self,
        records: Sequence[Record],
        texts: Sequence[tuple[str, str]],
        *,
        full: bool,
        synced: bool,
        origins: Sequence[Origin] | None = None,
    ) -> list[EnqueueResult]:
        conn = self._db.conn
        results: list[EnqueueResult] = []
        for number, record in enumerate(records):
            text, fingerprint = texts[number]
            key = record.key
            row = conn.execute("SELECT id, seq, digest FROM records WHERE key = ?", (key,)).fetchone()
            if row is not None:
                if row[2] == fingerprint:
                    results.append(EnqueueResult(row[0], key, row[1], True))
                    continue
                raise _ConflictFound(key, row[0], fingerprint, text)
            if full:
                raise StorageFull(SIZE_LIMIT)
            if origins is None:
                record_id, received_at, record_synced = uuid7(), clock.iso_now(), synced
            else:
                origin = origins[number]
                record_id, received_at, record_synced = origin.id, origin.received_at, origin.clock_synced
            cur = conn.execute(
                "INSERT INTO records(id, key, type, received_at, clock_synced, digest, data) VALUES (?,?,?,?,?,?,?)",
                (record_id, key, record.record_type, received_at, int(record_synced), fingerprint, text),
            )
            results.append(EnqueueResult(record_id, key, int(cur.lastrowid or 0), False))
        return results


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
