"""Keeping the outbox small and its problems visible: retention, events, the write probe.

Records every destination has resolved are pruned after the retention time
(in short chunks, never a full VACUUM, which would rewrite the whole file on
an SD card). The ``events`` table is the outbox's own short log of problems
(a file moved aside, ...), shown on the status page for a week.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from agent import clock
from agent.outbox.db import Database, marks

__all__ = ["PRUNE_CHUNK", "Upkeep"]

log = logging.getLogger("agent.outbox.store")  # the logger operators know these lines under

PRUNE_CHUNK = 5000
PROBLEMS_SHOWN_S = 7 * 86400.0
"""How long an error event stays among the status page's problems."""


class Upkeep:
    """Prune, events and the write probe."""

    def __init__(self, db: Database):
        self._db = db

    def add_event(self, level: str, message: str) -> None:
        """Keep ``message`` in the file (``error`` events are shown as problems for a week)."""
        with self._db.transaction():
            self._db.conn.execute(
                "INSERT INTO events(at, level, message) VALUES (?,?,?)", (clock.iso_now(), level, message)
            )

    def recent_problems(self) -> list[str]:
        """The error events of the last week, oldest first, as ``"<time>: <message>"``."""
        week_ago = clock.iso(clock.utcnow() - dt.timedelta(seconds=PROBLEMS_SHOWN_S))
        return [
            f"{r[0]}: {r[1]}"
            for r in self._db.conn.execute(
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
        conn = self._db.conn
        cutoff = clock.iso(clock.utcnow() - dt.timedelta(seconds=retention_s))
        dests = conn.execute("SELECT types, acked_seq FROM destinations WHERE active = 1").fetchall()
        types_seen = {t for (t,) in conn.execute("SELECT DISTINCT type FROM records")}
        removed = 0
        for record_type in sorted(types_seen):
            limits = [d["acked_seq"] for d in dests if record_type in json.loads(d["types"])]
            ceiling = min(limits) if limits else None
            while True:
                with self._db.transaction():
                    args: list[Any] = [record_type, cutoff]
                    sql = "SELECT seq FROM records WHERE type = ? AND received_at < ?"
                    if ceiling is not None:
                        sql += " AND seq <= ?"
                        args.append(ceiling)
                    sql += " AND seq NOT IN (SELECT seq FROM dead_letters) ORDER BY seq LIMIT ?"
                    args.append(PRUNE_CHUNK)
                    seqs = [r[0] for r in conn.execute(sql, args)]
                    if seqs:
                        conn.execute(f"DELETE FROM records WHERE seq IN ({marks(seqs)})", seqs)
                removed += len(seqs)
                if len(seqs) < PRUNE_CHUNK:
                    break
        with self._db.transaction():
            conn.execute("DELETE FROM conflicts WHERE received_at < ?", (cutoff,))
            conn.execute("DELETE FROM events WHERE at < ?", (cutoff,))
        if removed:
            # executescript, not execute: the pragma frees one page per step and
            # reports each as a zero-column row, which sqlite3's execute() takes
            # for "done" after the first step, freeing a single page.
            conn.executescript("PRAGMA incremental_vacuum;")
            log.info("outbox: pruned %d delivered records older than %.0f days", removed, retention_s / 86400)
        return removed

    def probe_write(self) -> None:
        """A tiny real commit, for /healthz and the watchdog: proves the file takes writes."""
        with self._db.transaction():
            self._db.conn.execute("INSERT INTO events(at, level, message) VALUES (?, 'probe', '')", (clock.iso_now(),))
            self._db.conn.execute("DELETE FROM events WHERE level = 'probe'")
