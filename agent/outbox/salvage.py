"""Salvage: every record that can still be read from a damaged outbox file, into the live one.

Why in-process: the ``sqlite3`` shell's ``.recover`` needs the ``sqlite_dbpage``
table, which Debian's and Raspberry Pi OS's builds of the shell leave out, so
the agent cannot count on it. SQLite itself still reads every record whose
pages are intact: a damaged page makes the reads that touch it fail, not the
others. So the records table is read by ``seq`` range, and a range that fails
is halved until the failing rows are pinned down; every other row is read.

A row that reads but whose content no longer matches its stored digest (or no
longer validates) is left in the damaged file, not carried: the agent never
forwards a record it cannot vouch for. What is carried keeps its id, reception
time and clock flag (``Origin``), so destinations that already have it
recognise it by id (contract §3: destinations dedupe on ``id``). The damaged
file is only read (read-only connection), never changed.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.outbox.types import Origin
from agent.records import Record, RecordValidationError, digest, normalize, parse_record

log = logging.getLogger(__name__)

RANGE = 2000
"""Rows read per query while the file reads well."""

MAX_FAILED_READS = 20_000
"""Reads that may fail before salvage gives up: a table whose every read fails (its root page
destroyed) would otherwise be halved down to every possible seq."""

Salvaged = tuple[Record, Origin]


@dataclass
class SalvageReport:
    """What came out of the damaged file."""

    source: str
    read: int = 0
    carried: int = 0
    present: int = 0
    conflicts: int = 0
    unreadable_ranges: list[tuple[int, int]] = field(default_factory=list)
    """``(first seq, last seq)`` of rows SQLite could not read."""
    left: list[tuple[str, str]] = field(default_factory=list)
    """``(key, why)`` of rows read but not carried (content damaged or invalid)."""
    error: str | None = None
    """Why salvage stopped early (the file could not be opened at all), if it did."""

    @property
    def unreadable(self) -> int:
        return sum(last - first + 1 for first, last in self.unreadable_ranges)

    def summary(self) -> str:
        """One line for the log and the status page (English; `agent.reconcile.outbox_problem` says it in Swedish first)."""
        if self.error is not None and not self.read:
            return f"nothing could be read from {self.source}: {self.error}"
        text = (
            f"{self.carried} record(s) salvaged from {self.source} into a fresh outbox"
            f" ({self.present} were already there, {self.conflicts} conflict(s) kept aside)"
        )
        if self.unreadable_ranges:
            text += f"; rows in {len(self.unreadable_ranges)} range(s) of seq could not be read"
        if self.left:
            text += f"; {len(self.left)} damaged record(s) left in the file"
        return text


def _open(path: Path) -> sqlite3.Connection:
    # Read from whichever worker thread asks for the next chunk, one at a time.
    conn = sqlite3.connect(
        f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10.0, check_same_thread=False
    )
    conn.execute("PRAGMA query_only = ON")
    return conn


def _bounds(conn: sqlite3.Connection) -> tuple[int, int]:
    """The lowest and highest seq to look for: from the table when it says, else generous bounds."""
    lowest, highest = 1, 2**40  # halving finds the readable rows in about 40 steps per damaged spot
    for sql in ("SELECT MIN(seq), MAX(seq) FROM records", "SELECT 1, seq FROM sqlite_sequence WHERE name = 'records'"):
        try:
            row = conn.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            continue
        if row is not None and row[1] is not None:
            return int(row[0]), int(row[1])
    return lowest, highest


_COLUMNS = "seq, id, key, type, received_at, clock_synced, digest, data"


def readable_rows(path: Path, report: SalvageReport) -> Iterator[tuple[object, ...]]:
    """Every row of ``records`` SQLite can read, in seq order; the seqs it cannot go into ``report``.

    A read that fails part-way resumes after the last row it gave; the rest of
    its range is halved until the failing seqs are pinned down.
    """
    conn = _open(path)
    try:
        conn.execute("SELECT seq FROM records LIMIT 0").fetchall()  # the schema at least must read
        stack = [_bounds(conn)]
        failed = 0
        while stack:
            if failed > MAX_FAILED_READS:
                raise sqlite3.DatabaseError(f"gave up after {failed} failed reads; the records table is too damaged")
            first, last = stack.pop()
            try:
                # One seq by equality: SQLite seeks straight to it and does not step on
                # to the next row, which may lie on the damaged page.
                single = first == last
                cursor = conn.execute(
                    f"SELECT {_COLUMNS} FROM records WHERE seq = ?"
                    if single
                    else f"SELECT {_COLUMNS} FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq",
                    (first,) if single else (first, last),
                )
                while rows := cursor.fetchmany(RANGE):
                    report.read += len(rows)
                    yield from rows
                    first = int(rows[-1][0]) + 1
            except sqlite3.DatabaseError:
                failed += 1
                if first > last:
                    continue
                if first == last:
                    _note_unreadable(report, first)
                    continue
                middle = (first + last) // 2
                stack += [(middle + 1, last), (first, middle)]  # the lower half is read first
    finally:
        conn.close()


def _note_unreadable(report: SalvageReport, seq: int) -> None:
    ranges = report.unreadable_ranges
    if ranges and ranges[-1][1] == seq - 1:
        ranges[-1] = (ranges[-1][0], seq)
    else:
        ranges.append((seq, seq))


def vouched(row: tuple[object, ...], report: SalvageReport) -> Salvaged | None:
    """The record of a read row and its origin, or None (noted in ``report``) when it cannot be trusted."""
    _seq, record_id, key, record_type, received_at, clock_synced, stored_digest, data = row
    try:
        record = parse_record(str(record_type), json.loads(str(data)))
    except (RecordValidationError, ValueError, TypeError) as exc:
        report.left.append((str(key), f"does not validate any more: {exc}"[:300]))
        return None
    if digest(normalize(record)) != stored_digest or record.key != key:
        report.left.append((str(key), "its content no longer matches its digest"))
        return None
    return record, Origin(str(record_id), str(received_at), bool(clock_synced))


def salvage_rows(path: Path, report: SalvageReport, chunk: int = 500) -> Iterator[list[Salvaged]]:
    """The trustworthy records of ``path`` in chunks of ``chunk``, in seq order."""
    pending: list[Salvaged] = []
    try:
        for row in readable_rows(path, report):
            found = vouched(row, report)
            if found is not None:
                pending.append(found)
            if len(pending) >= chunk:
                yield pending
                pending = []
    except sqlite3.DatabaseError as exc:  # not even the schema could be read
        report.error = str(exc)
        log.error("salvage of %s stopped: %s", path, exc)
    if pending:
        yield pending
