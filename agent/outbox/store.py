"""The outbox: one SQLite file that every record passes through.

``OutboxStore`` owns one sqlite3 connection and is used from one thread at a
time (the ``Outbox`` owner thread in the agent; the CLI and tests directly).
Durability comes from WAL with ``synchronous=FULL``: a commit that returned is
on the card, even through a power cut.

It is the outbox's one surface, and a thin one: each job is a role of its own
module, all sharing the one connection (``db.Database``), as Vector's disk
buffer is a ledger, a reader and a writer:

=================  ===============================================================
``writer``         enqueue (group commit), duplicates, conflicts, the size limit
``cursors``        the destinations and their ``claimed_seq`` / ``acked_seq`` cursors
``batches``        claim, freeze, complete, split, record a failure; replay batches
``deadletters``    refused records: kept, listed, queued for a retry
``stats``          read-only figures for the status page and the CLI, each a ``TypedDict``
``upkeep``         prune, the events log, the write probe
``integrity``      the check before opening, moving a bad file aside, the clean-close note
``envelopes``      stored rows -> envelopes, decoded or as canonical JSON bytes
``errors``         the error tree and the one SQLite -> ``OutboxError`` mapping
=================  ===============================================================
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from agent.canonical import canonical_json
from agent.outbox import integrity, schema
from agent.outbox.batches import Accept, Batches, Rejected
from agent.outbox.cursors import Cursors, DestinationSpec
from agent.outbox.db import Database, open_reader, open_writer
from agent.outbox.deadletters import DeadLetters
from agent.outbox.envelopes import envelope
from agent.outbox.errors import Conflict, OutboxError, OutboxUnavailable, StorageFull, UnknownDestination
from agent.outbox.stats import DestinationStats, OutboxStats, RecentRecord, RecordView, Stats, StoredConflict
from agent.outbox.types import Batch, DeadLetter, EnqueueResult, Envelope, Origin
from agent.outbox.upkeep import Upkeep
from agent.outbox.writer import Writer
from agent.records import Record

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

DEFAULT_MAX_BYTES = 2 * 1024**3


class OutboxStore:
    """The synchronous outbox: every role behind one object. See the module docstring.

    Attributes:
        conn: the sqlite3 connection (for inspection; roles go through ``db``).
        problems: what the status page shows about the file itself (a check that failed, ...).
        check_deferred: the file was not checked before opening; ``Outbox`` checks it in the background.
        suspect: a check failed while open: the next close leaves no clean-close note.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, store_id: str, max_bytes: int):
        self.db = db = Database(conn, path)
        self.conn = conn
        self.path = path
        self.store_id = store_id
        self.problems: list[str] = []
        self.check_deferred = False
        self.suspect = False
        self.writer = Writer(db, max_bytes=max_bytes)
        self.cursors = Cursors(db)
        self.dead_letters = DeadLetters(db, self.cursors)
        self.batches = Batches(db, self.cursors, self.dead_letters, store_id=store_id)
        self.stats = Stats(db, self.cursors, store_id=store_id)
        self.upkeep = Upkeep(db)

    @property
    def max_bytes(self) -> int:
        """The size limit: past it ``enqueue`` refuses new records (``StorageFull``). Settable while open."""
        return self.writer.max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.writer.max_bytes = value

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        store_id: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        check: bool = True,
        defer_check: bool = False,
    ) -> OutboxStore:
        """Open (or create) the outbox at ``path``, migrating it to this release.

        ``integrity.vet`` decides first whether the file can be used: one that
        fails ``PRAGMA quick_check`` (or is not a database at all) is moved
        aside, never deleted, and a fresh outbox is started: the till must keep
        selling. The problem is logged and kept in ``problems`` (and in the new
        file's ``events``) so the status page shows it.

        ``defer_check`` (the agent): no check before opening at all; the file
        is checked in the background after the ports open (``Outbox``), which
        salvages it if it fails.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        vetting = integrity.vet(path, check=check, defer=defer_check)
        conn = open_writer(path)
        schema.migrate(conn)
        store = cls(conn, path, store_id=store_id, max_bytes=max_bytes)
        store.check_deferred = vetting.check_deferred
        if vetting.event:
            store.upkeep.add_event("error", vetting.event)
        store.problems = store.upkeep.recent_problems()
        return store

    @classmethod
    def open_reader(cls, path: Path | str, *, store_id: str, max_bytes: int = DEFAULT_MAX_BYTES) -> OutboxStore:
        """A second connection for reads only (no check, no migrations)."""
        return cls(open_reader(Path(path)), Path(path), store_id=store_id, max_bytes=max_bytes)

    def close(self) -> None:
        """Checkpoint, close, and note the clean close so the next start can skip its check."""
        self.db.checkpoint_and_close()
        if not self.suspect:
            with contextlib.suppress(OSError):
                integrity.remember_clean_close(self.path)

    def quick_check(self) -> str | None:
        """Why the file fails ``PRAGMA quick_check``, or None when it passes."""
        return integrity.quick_check(self.conn)

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Atomic: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (a savepoint when nested); a rollback on any error."""
        return self.db.transaction()

    # ------------------------------------------------------------------ writer
    def enqueue(self, records: Sequence[Record]) -> list[EnqueueResult]:
        """Store ``records`` all or nothing; one result per record, in order.

        Raises:
            Conflict: a key is stored with different content (kept aside).
            StorageFull: the disk or ``max_bytes`` is full.
            OutboxUnavailable: any other write failure.
        """
        return self.writer.enqueue(records)

    def enqueue_many(
        self, requests: Sequence[Sequence[Record]], origins: Sequence[Sequence[Origin]] | None = None
    ) -> list[list[EnqueueResult] | OutboxError]:
        """Group commit: every request in one transaction, each all or nothing (see ``Writer.enqueue_many``).

        ``origins`` is for records carried over from another outbox file (``agent.outbox.carry``).
        """
        return self.writer.enqueue_many(requests, origins)

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages minus the free list)."""
        return self.db.used_bytes()

    def file_bytes(self) -> int:
        """Bytes the outbox takes on the card: the file and its WAL."""
        return self.db.file_bytes()

    # ------------------------------------------------------------ destinations
    def register_destinations(self, specs: Sequence[DestinationSpec]) -> None:
        """Make the configured destinations known; the others become inactive (see ``Cursors.register``)."""
        self.cursors.register(specs)

    def destination_names(self, active_only: bool = True) -> list[str]:
        return self.cursors.names(active_only)

    def set_paused(self, name: str, paused: bool) -> None:
        self.cursors.set_paused(name, paused)

    def is_paused(self, name: str) -> bool:
        """Whether ``name`` is paused (the page's button, ``kassabro pause``)."""
        return bool(self.cursors.row(name)["paused"])

    def _destination(self, name: str) -> sqlite3.Row:
        """The destination's row (its cursors), for tests that look at ``acked_seq``."""
        return self.cursors.row(name)

    # ------------------------------------------------------------------ batches
    def claim_batch(
        self, name: str, limit: int, accept: Accept | None = None, *, after: str | None = None
    ) -> Batch | None:
        """The next batch for ``name``: an open one again, else a newly frozen one (see ``Batches.claim``)."""
        return self.batches.claim(name, limit, accept, after=after)

    def load_batch(self, batch_id: str) -> Batch:
        return self.batches.load(batch_id)

    def complete_batch(self, name: str, batch_id: str, rejected: Rejected | None = None) -> None:
        """The destination answered: ``rejected`` ids become dead letters, the rest are delivered."""
        self.batches.complete(name, batch_id, rejected)

    def split_batch(self, name: str, batch_id: str) -> list[str]:
        """Replace a refused batch of two or more records by its two halves."""
        return self.batches.split(name, batch_id)

    def record_failure(self, name: str, batch_id: str | None, error: str, next_attempt_at: str | None) -> None:
        """A retryable failure: keep the batch, remember the error and the next try."""
        self.batches.record_failure(name, batch_id, error, next_attempt_at)

    # ------------------------------------------------------------- dead letters
    def retry_dead_letters(self, name: str | None = None, ids: Sequence[str] | None = None) -> int:
        """Queue dead letters to be sent again (all, one destination's, or some ids)."""
        return self.dead_letters.retry(name, ids)

    def list_dead_letters(self, name: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return self.dead_letters.entries(name, limit)

    # -------------------------------------------------------------------- reads
    def _envelope(self, row: sqlite3.Row) -> Envelope:
        """The decoded envelope of a ``records`` row, for tests and benchmarks that compare bodies."""
        return envelope(row, self.store_id)

    def get_record(self, key: str) -> RecordView | None:
        """The stored record and its delivery state per active destination."""
        return self.stats.record(key)

    def recent_records(self, limit: int = 20) -> list[RecentRecord]:
        return self.stats.recent(limit)

    def destination_stats(self) -> list[DestinationStats]:
        """Per active destination: the figures ``/api/status`` and ``kassabro status`` show."""
        return self.stats.destinations()

    def outbox_stats(self) -> OutboxStats:
        return self.stats.outbox(self.problems, self.max_bytes)

    def list_conflicts(self, limit: int = 100) -> list[StoredConflict]:
        return self.stats.conflicts(limit)

    # -------------------------------------------------------------- upkeep
    def add_event(self, level: str, message: str) -> None:
        self.upkeep.add_event(level, message)

    def prune(self, retention_s: float) -> int:
        """Delete records every destination has resolved and that are older than retention."""
        return self.upkeep.prune(retention_s)

    def probe_write(self) -> None:
        """A tiny real commit, for /healthz and the watchdog: proves the file takes writes."""
        self.upkeep.probe_write()
