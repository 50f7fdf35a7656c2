"""A ``StatusProvider`` over values the test sets: the page is the unit under test.

``ShopState`` answers like the agent would, from plain attributes, so a test
can put the page in any state (all fine, internet down with a backlog, dead
letters) and change it while a browser watches. The real agent is exercised
by ``test_agent_page.py``.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.metrics import Metrics
from agent.outbox.types import DeadLetter
from agent.web.provider import Health

NOW = datetime(2026, 11, 26, 13, 20, 0, tzinfo=UTC)
"""The tests' "now": 14:20 in Stockholm (UTC+1 in November)."""


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def destination(name: str, kind: str, **values: Any) -> dict[str, Any]:
    """One ``/api/status`` destination, online and empty unless ``values`` say otherwise."""
    base: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "state": "online",
        "pending": 0,
        "oldest_pending_age_s": None,
        "dead_letters": 0,
        "last_success_at": iso(NOW - timedelta(minutes=1)),
        "last_error": None,
        "next_attempt_at": None,
    }
    base.update(values)
    return base


@dataclass
class Action:
    """One action the page asked the agent to do."""

    name: str
    destination: str | None
    ids: list[str] | None = None
    paused: bool | None = None


@dataclass
class ShopState:
    """The agent as the status page sees it, with every answer set by the test."""

    store_id: str = "butik-17"
    admin_token: str | None = "s3cret-admin-token"
    metrics: Metrics = field(default_factory=Metrics)
    destinations: list[dict[str, Any]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, float]] = field(default_factory=list)
    outbox: dict[str, int] = field(default_factory=lambda: {"records": 0, "bytes": 0})
    problems: list[str] = field(default_factory=list)
    healthy: tuple[bool, str] = (True, "ok")
    actions: list[Action] = field(default_factory=list)
    uptime_s: float = 3 * 3600 + 12 * 60

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    async def status(self) -> dict[str, Any]:
        with self._lock:
            body: dict[str, Any] = {
                "store_id": self.store_id,
                "version": "0.1.0",
                "uptime_s": self.uptime_s,
                "outbox": dict(self.outbox),
                "destinations": copy.deepcopy(self.destinations),
                "ingest": self.metrics.ingest_summary(),
            }
            if self.problems:
                body["problems"] = list(self.problems)
            return body

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            return list(self.letters[:limit])

    async def recent_records(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self.records[:limit])

    async def history(self) -> list[dict[str, float]]:
        with self._lock:
            return list(self.points)

    async def retry_dead_letters(self, destination: str | None, ids: list[str] | None) -> int:
        with self._lock:
            if destination is not None and destination not in {d["name"] for d in self.destinations}:
                raise KeyError(destination)
            chosen = [
                d for d in self.letters if destination in (None, d.destination) and (ids is None or d.record_id in ids)
            ]
            self.letters = [d for d in self.letters if d not in chosen]
            for dest in self.destinations:
                dest["dead_letters"] = sum(1 for d in self.letters if d.destination == dest["name"])
            self.actions.append(Action("retry", destination, ids))
            return len(chosen)

    async def set_paused(self, destination: str, paused: bool) -> None:
        with self._lock:
            for dest in self.destinations:
                if dest["name"] == destination:
                    dest["state"] = "paused" if paused else "online"
                    self.actions.append(Action("pause", destination, paused=paused))
                    return
            raise KeyError(destination)

    async def health(self) -> Health:
        return Health(*self.healthy)

    def update(self, name: str, **values: Any) -> None:
        """Change one destination's figures while the page is being watched."""
        with self._lock:
            for dest in self.destinations:
                if dest["name"] == name:
                    dest.update(values)
                    return
            raise KeyError(name)


def all_fine() -> ShopState:
    """Two destinations, everything delivered, a day of history."""
    shop = ShopState(
        destinations=[
            destination("hogia", "hogia", last_success_at=iso(NOW - timedelta(seconds=40))),
            destination("sharespine", "sharespine", last_success_at=iso(NOW - timedelta(seconds=40))),
        ],
        outbox={"records": 1843, "bytes": 3_450_000},
        records=_recent({"hogia": "delivered", "sharespine": "delivered"}),
        points=_day_of_history(backlog_from=None),
    )
    for _ in range(812):
        shop.metrics.ingest_accepted("sale")
    shop.metrics.ingest_rejected("validation")
    shop.metrics.last_received_at = iso(NOW - timedelta(seconds=40))
    return shop


def offline() -> ShopState:
    """Both network destinations unreachable since 14:02 with 3 sales waiting."""
    shop = all_fine()
    down_since = NOW - timedelta(minutes=18)
    for name in ("hogia", "sharespine"):
        shop.update(
            name,
            state="offline",
            pending=3 if name == "hogia" else 7,
            pending_by_type={"sale": 3, "stock_movement": 0} if name == "hogia" else {"sale": 0, "stock_movement": 7},
            oldest_pending_age_s=18 * 60,
            last_success_at=iso(down_since - timedelta(seconds=30)),
            offline_since=iso(down_since),
            last_error="Could not connect (connection refused)",
            next_attempt_at=iso(NOW + timedelta(seconds=95)),
        )
    shop.records = _recent({"hogia": "pending", "sharespine": "pending"}, n=3) + _recent(
        {"hogia": "delivered", "sharespine": "delivered"}, start=100231, n=5
    )
    shop.points = _day_of_history(backlog_from=NOW - timedelta(minutes=18))
    return shop


def with_dead_letters() -> ShopState:
    """Hogia refused two receipts (unknown article), everything else delivered."""
    shop = all_fine()
    shop.update("hogia", state="degraded", dead_letters=2, last_error="422: article 7310865000000 does not exist")
    shop.letters = [
        DeadLetter(
            destination="hogia",
            seq=4101,
            record_id="0193a1b2-0000-7000-8000-000000004101",
            key="sale:kassa-1:100240",
            status=422,
            error='{"error": "article 7310865000000 does not exist"}',
            created_at=iso(NOW - timedelta(minutes=6)),
        ),
        DeadLetter(
            destination="hogia",
            seq=4090,
            record_id="0193a1b2-0000-7000-8000-000000004090",
            key="sale:kassa-2:55012",
            status=422,
            error='{"error": "VAT rate 6 is not allowed on article 1001"}',
            created_at=iso(NOW - timedelta(minutes=31)),
        ),
    ]
    shop.records = _recent({"hogia": "dead", "sharespine": "delivered"}, start=100240, n=1) + _recent(
        {"hogia": "delivered", "sharespine": "delivered"}, start=100235, n=5
    )
    return shop


def _recent(deliveries: dict[str, str], *, start: int = 100234, n: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "key": f"sale:kassa-1:{start - i}",
            "type": "sale",
            "seq": 4200 - (100234 - start) - i,
            "received_at": iso(NOW - timedelta(minutes=2 * i + 1)),
            "deliveries": dict(deliveries),
        }
        for i in range(n)
    ]


def _day_of_history(backlog_from: datetime | None) -> list[dict[str, float]]:
    """A shop day: quiet night, sales from 09:00 to now, a backlog since ``backlog_from``."""
    points = []
    start = NOW - timedelta(hours=24)
    for minute in range(0, 24 * 60, 5):
        moment = start + timedelta(minutes=minute)
        local_hour = (moment.hour + 1) % 24
        busy = 9 <= local_hour < 19
        delivered = (6 + (minute * 7) % 11) if busy else 0
        pending = 0.0
        if backlog_from is not None and moment >= backlog_from:
            pending = float((moment - backlog_from).total_seconds() // 360 + 1)
            delivered = 0
        points.append({"t": moment.timestamp(), "pending": pending, "delivered": float(delivered)})
    return points
