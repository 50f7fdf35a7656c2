"""The outbox's SQLite connection: how it is opened, its transactions, its size.

Every role of the outbox (writer, cursors, batches, dead letters, stats,
upkeep) works through one ``Database``, so there is one place that says how
durable a commit is: WAL with ``synchronous=FULL`` (a commit that returned is
on the card, even through a power cut), relaxed to NORMAL only around
delivery outcomes (see ``relaxed``).

``transaction()`` nests like sqlite-utils' ``atomic()``: the outermost is
``BEGIN IMMEDIATE`` ... ``COMMIT``, an inner one a savepoint that rolls back
alone, so a role's method is atomic whether it is called on its own or
inside a larger unit (the delivery calls taken in one pass, each in its own
savepoint, are exactly such inner transactions).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sized
from pathlib import Path

__all__ = ["Database", "marks", "open_connection", "open_reader", "open_writer"]


def open_connection(path: Path) -> sqlite3.Connection:
    """A connection as every outbox user wants it: explicit transactions, rows by name, patient locks."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


NEW_FILE_PAGE_SIZE = 2048
"""Bytes per page of a new outbox file; an existing file keeps the size it was created with.

Every commit writes each page it touched in full to the WAL, and a sale's
commit touches about ten (the records leaf, three index leaves, one of them
at a random key, the sequence): on the SD card those bytes are the wear.
2 KiB instead of SQLite's 4 KiB took a sale delivered to three destinations
from 74 to 53 KiB written. 1 KiB wrote 40 KiB, but a 3-line sale's row (about
750 bytes) then takes a page of its own: the file grew 45 % and reads of a
large outbox took 1.6x as long; at 2 KiB the file is the size it was and
those reads cost about the same (docs/benchmarks.md, "SD-card wear").
"""


def open_writer(path: Path) -> sqlite3.Connection:
    """The owner's connection: WAL, ``synchronous=FULL``; on a new file small pages and incremental auto-vacuum."""
    fresh = not path.exists() or path.stat().st_size == 0
    conn = open_connection(path)
    if fresh:
        # Both must precede the first table (and the page size the switch to WAL).
        conn.execute(f"PRAGMA page_size = {NEW_FILE_PAGE_SIZE}")
        # Lets prune hand pages back without VACUUM.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = OFF")
    return conn


def open_reader(path: Path) -> sqlite3.Connection:
    """A second connection that cannot write (the status page's, beside the owner's)."""
    conn = open_connection(path)
    conn.execute("PRAGMA query_only = ON")
    return conn


class Database:
    """One sqlite3 connection and the file it holds, used from one thread at a time.

    Args:
        conn: an open connection (``open_writer``, ``open_reader``).
        path: the database file, for its size on disk and the clean-close note.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path
        self.page_size: int = conn.execute("PRAGMA page_size").fetchone()[0]
        self._savepoints = 0
        self._grouped = False
        self.broken = False
        """A savepoint could not be rolled back: the enclosing transaction must be abandoned whole."""

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Atomic: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or a savepoint inside one; rolled back on any error."""
        if self.conn.in_transaction:
            with self._savepoint():
                yield
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        self._commit()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    def _commit(self) -> None:
        """COMMIT; when it fails (a full disk, a failed flush) nothing of the transaction stays."""
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        self._savepoints += 1
        name = f"sp{self._savepoints}"
        self.conn.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException as exc:
            try:
                self.conn.execute(f"ROLLBACK TO {name}")
                self.conn.execute(f"RELEASE {name}")
            except sqlite3.Error:
                self.broken = True
                if isinstance(exc, sqlite3.Error):
                    raise exc from None  # the first failure says why (a full disk); the outer rollback undoes all
                raise  # the savepoint could not be undone: the enclosing transaction must not go on
            raise
        else:
            self.conn.execute(f"RELEASE {name}")
        finally:
            self._savepoints -= 1

    @contextlib.contextmanager
    def relaxed(self) -> Iterator[None]:
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
        if self._grouped:
            yield  # the group's COMMIT decides (``group``): the level cannot change inside a transaction
            return
        self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self.conn.execute("PRAGMA synchronous = FULL")

    @contextlib.contextmanager
    def group(self, *, durable: bool) -> Iterator[Callable[[], contextlib.AbstractContextManager[None]]]:
        """One transaction for several callers' units of work, each in a savepoint of its own.

        Every commit writes each page it touched in full to the WAL (the SD
        card's wear) and pays a flush: the claims and completions of several
        destinations, woken by the same sale, touch the same few pages, so in
        one transaction those pages and the flush are paid once. Yields
        ``unit()``: a savepoint that rolls back alone, so one failing unit
        leaves the others in the group. ``durable``: the COMMIT waits for the
        card (``synchronous = FULL``; a claim's batch id must be on the card
        before it is on the wire); without it the group is only outcomes,
        committed as ``relaxed`` would. SQLite refuses to change the level
        inside a transaction, so the caller says it up front. When a unit
        leaves the transaction unusable (``broken``, or SQLite rolled it all
        back on a full disk), the block must raise: everything is rolled back.
        """
        if not durable:
            self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self._grouped, self.broken = True, False
            try:
                yield self._savepoint
            except BaseException:
                self._rollback()
                raise
            finally:
                self._grouped = False
            self._commit()
        finally:
            if not durable:
                self.conn.execute("PRAGMA synchronous = FULL")

    def used_bytes(self) -> int:
        """Bytes of the database in use (pages minus the free list)."""
        # One statement, not two PRAGMAs: it runs at every group commit, and each statement lets go of the GIL.
        used: int = self.conn.execute(
            "SELECT page_count - freelist_count FROM pragma_page_count, pragma_freelist_count"
        ).fetchone()[0]
        return used * self.page_size

    def file_bytes(self) -> int:
        """Bytes the outbox takes on the card: the file and its WAL."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def checkpoint_and_close(self) -> None:
        """Fold the WAL into the file (so it is empty for the clean-close note), then close."""
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


def marks(values: Sized) -> str:
    """``?,?,?``: one placeholder per value, for ``IN (...)``."""
    return ",".join("?" * len(values))
