"""What the outbox holds, read for people: the status page, ``/api/status``, the CLI.

Read-only and never on a till's path: the agent runs these on its second
(reader) connection, so counting a million pending records never holds up a
commit. Each answer is a ``TypedDict`` so its keys are stated once, here.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Literal, TypedDict

from agent import clock
from agent.outbox.cursors import Cursors
from agent.outbox.db import Database, marks
from agent.outbox.envelopes import envelope
from agent.outbox.types import Envelope

__all__ = [
    "DeliveryState",
    "DestinationStats",
    "OutboxStats",
    "RecentRecord",
    "RecordView",
    "Stats",
    "StoredConflict",
]

DeliveryState = Literal["not_applicable", "dead_letter", "retrying", "delivered", "sending", "pending"]
"""Where one record stands with one destination (``GET /v1/records/{key}``'s ``deliveries``)."""


class DestinationStats(TypedDict):
    """One active destination's figures, as ``/api/status`` and ``kassabro status`` show them."""

    name: str
    kind: str
    types: list[str]
    paused: bool
    pending: int
    """Records of its types not yet resolved, plus dead letters queued for a retry."""
    pending_by_type: dict[str, int]
    oldest_pending_age_s: float | None
    oldest_pending_at: str | None
    dead_letters: int
    last_success_at: str | None
    last_error: str | None
    last_error_at: str | None
    failing_since: str | None
    next_attempt_at: str | None
    acked_seq: int


class OutboxStats(TypedDict):
    """The outbox file as a whole."""

    records: int
    bytes: int
    """On the card: the file and its WAL."""
    used_bytes: int
    """In use inside the file (what ``max_bytes`` limits)."""
    max_bytes: int
    conflicts: int
    max_seq: int
    problems: list[str]


class RecordView(TypedDict):
    """One stored record and where it stands with each active destination."""

    record: Envelope
    deliveries: dict[str, DeliveryState]
    conflicts: int
    """Conflicting versions kept aside under its key."""


class RecentRecord(TypedDict):
    """A line of the status page's latest records."""

    seq: int
    key: str
    type: str
    received_at: str
    deliveries: dict[str, DeliveryState]


class StoredConflict(TypedDict):
    """A conflicting version kept aside (the stored record was not changed)."""

    rowid_: int
    key: str
    stored_id: str
    received_at: str
    digest: str
    data: str


class Stats:
    """Read-only views of every table."""

    def __init__(self, db: Database, cursors: Cursors, *, store_id: str):
        self._db = db
        self._cursors = cursors
        self._store_id = store_id

    def destinations(self) -> list[DestinationStats]:
        """Per active destination: the figures ``/api/status`` and ``kassabro status`` show."""
        conn = self._db.conn
        now = clock.utcnow()
        out: list[DestinationStats] = []
        for dest in self._cursors.active_rows():
            types: list[str] = json.loads(dest["types"])
            type_marks = marks(types)
            by_type = {t: 0 for t in types}
            for record_type, count in conn.execute(
                f"SELECT type, COUNT(*) FROM records WHERE type IN ({type_marks}) AND seq > ? GROUP BY type",
                (*types, dest["acked_seq"]),
            ):
                by_type[record_type] = count
            for record_type, count in conn.execute(
                "SELECT r.type, COUNT(*) FROM dead_letters d JOIN records r ON r.seq = d.seq "
                "WHERE d.destination = ? AND d.state != 'dead' GROUP BY r.type",
                (dest["name"],),
            ):
                by_type[record_type] = by_type.get(record_type, 0) + count
            pending = sum(by_type.values())
            oldest = conn.execute(
                f"SELECT received_at FROM records WHERE type IN ({type_marks}) AND seq > ? ORDER BY seq LIMIT 1",
                (*types, dest["acked_seq"]),
            ).fetchone()
            retrying = conn.execute(
                "SELECT MIN(r.received_at) FROM dead_letters d JOIN records r ON r.seq = d.seq "
                "WHERE d.destination = ? AND d.state != 'dead'",
                (dest["name"],),
            ).fetchone()
            dead = conn.execute(
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

    def outbox(self, problems: list[str], max_bytes: int) -> OutboxStats:
        """The file's figures; ``problems`` and ``max_bytes`` are the store's."""
        conn = self._db.conn
        count = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
        max_seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        conflicts = conn.execute("SELECT COUNT(*) FROM conflicts").fetchone()[0]
        return {
            "records": count,
            "bytes": self._db.file_bytes(),
            "used_bytes": self._db.used_bytes(),
            "max_bytes": max_bytes,
            "conflicts": conflicts,
            "max_seq": max_seq[0] if max_seq else 0,
            "problems": list(problems),
        }

    def record(self, key: str) -> RecordView | None:
        """The stored record and its delivery state per active destination."""
        conn = self._db.conn
        row = conn.execute("SELECT * FROM records WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        deliveries = {
            dest["name"]: self.delivery_state(dest, row["seq"], row["type"]) for dest in self._cursors.active_rows()
        }
        conflicts = conn.execute("SELECT COUNT(*) FROM conflicts WHERE key = ?", (key,)).fetchone()[0]
        return {"record": envelope(row, self._store_id), "deliveries": deliveries, "conflicts": conflicts}

    def delivery_state(self, dest: sqlite3.Row, seq: int, record_type: str) -> DeliveryState:
        """Where record ``seq`` stands with the destination of row ``dest``."""
        if record_type not in json.loads(dest["types"]):
            return "not_applicable"
        dead = self._db.conn.execute(
            "SELECT state FROM dead_letters WHERE destination = ? AND seq = ?", (dest["name"], seq)
        ).fetchone()
        if dead is not None:
            return "dead_letter" if dead[0] == "dead" else "retrying"
        if seq <= dest["acked_seq"]:
            return "delivered"
        if seq <= dest["claimed_seq"]:
            return "sending"
        return "pending"

    def recent(self, limit: int = 20) -> list[RecentRecord]:
        """The latest ``limit`` records, newest first, with their delivery states."""
        rows = self._db.conn.execute(
            "SELECT seq, key, type, received_at FROM records ORDER BY seq DESC LIMIT ?", (limit,)
        ).fetchall()
        dests = self._cursors.active_rows()
        return [
            {
                "seq": r["seq"],
                "key": r["key"],
                "type": r["type"],
                "received_at": r["received_at"],
                "deliveries": {d["name"]: self.delivery_state(d, r["seq"], r["type"]) for d in dests},
            }
            for r in rows
        ]

    def conflicts(self, limit: int = 100) -> list[StoredConflict]:
        """The latest conflicting versions kept aside, newest first."""
        rows = self._db.conn.execute("SELECT * FROM conflicts ORDER BY rowid_ DESC LIMIT ?", (limit,))
        return [
            {
                "rowid_": r["rowid_"],
                "key": r["key"],
                "stored_id": r["stored_id"],
                "received_at": r["received_at"],
                "digest": r["digest"],
                "data": r["data"],
            }
            for r in rows
        ]
