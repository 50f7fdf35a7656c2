"""Carry records over from another outbox file into this one, by natural key.

Why: an upgrade that fails its health check is rolled back to the old release
and the outbox copy taken before the upgrade (``install.sh upgrade``). Records
the new release acknowledged meanwhile exist only in the newer file, whose
schema the old release cannot open. This module reads just the ``records``
table of that file (every schema version keeps ``id``, ``key``, ``type``,
``received_at``, ``clock_synced``, ``digest`` and ``data``) and puts each
record through the normal enqueue: validated by this release's rules, the same
natural key with the same content is a no-op, with other content a conflict
kept aside. A carried record keeps its id (destinations dedupe on it) and its
reception time. The same serves a file the agent moved aside as damaged.

The source file is opened read-only and never changed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent.outbox.store import Conflict, OutboxError, OutboxStore
from agent.outbox.types import Origin
from agent.records import Record, RecordValidationError, parse_record

CHUNK = 500
"""Records per transaction: one fsync each, and a bounded amount held in memory."""


@dataclass
class CarryReport:
    """What happened to each record of the source file."""

    carried: int = 0
    present: int = 0
    conflicts: int = 0
    left: list[tuple[str, str]] = field(default_factory=list)
    """``(key, why)`` of records this release could not take; they stay in the source file."""

    def summary(self) -> str:
        text = f"{self.carried} carried over, {self.present} already here, {self.conflicts} conflict(s) kept aside"
        if self.left:
            text += f", {len(self.left)} left in the source file (this release cannot take them)"
        return text


def _source_rows(source: Path) -> Iterator[sqlite3.Row]:
    """Every stored record of ``source`` in seq order, read-only."""
    if not source.is_file():
        raise OutboxError(f"{source}: no such outbox file")
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None, timeout=10.0)
    conn.row_factory = sqlite3.Row
    try:
        yield from conn.execute(
            "SELECT id, key, type, received_at, clock_synced, digest, data FROM records ORDER BY seq"
        )
    except sqlite3.DatabaseError as exc:
        raise OutboxError(f"{source}: cannot read its records: {exc}") from exc
    finally:
        conn.close()


def carry_over(source: Path, store: OutboxStore) -> CarryReport:
    """Enqueue into ``store`` every record of ``source`` it does not hold yet, in ``source``'s order.

    Raises:
        OutboxError: the source cannot be read, or the store refused a write
            (full, unavailable); what was carried before that stays carried.
    """
    report = CarryReport()
    pending: list[tuple[Record, Origin]] = []
    for row in _source_rows(source):
        here = store.conn.execute("SELECT digest FROM records WHERE key = ?", (row["key"],)).fetchone()
        if here is not None and here[0] == row["digest"]:
            report.present += 1  # the usual case: the copy taken before the upgrade has it
            continue
        try:
            record = parse_record(row["type"], json.loads(row["data"]))
        except (RecordValidationError, ValueError) as exc:
            report.left.append((row["key"], str(exc)))
            continue
        pending.append((record, Origin(row["id"], row["received_at"], bool(row["clock_synced"]))))
        if len(pending) >= CHUNK:
            _enqueue(store, pending, report)
            pending = []
    if pending:
        _enqueue(store, pending, report)
    return report


def _enqueue(store: OutboxStore, pending: list[tuple[Record, Origin]], report: CarryReport) -> None:
    """One transaction; each record its own request, so a conflict refuses only itself."""
    answers = store.enqueue_many([[record] for record, _ in pending], [[origin] for _, origin in pending])
    for answer in answers:
        if isinstance(answer, Conflict):
            report.conflicts += 1
        elif isinstance(answer, OutboxError):
            raise answer
        elif answer[0].duplicate:
            report.present += 1
        else:
            report.carried += 1
