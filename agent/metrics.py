"""Prometheus metrics and the in-memory counters the status page shows.

Every agent owns one ``Metrics`` with its own ``CollectorRegistry`` (never the
process-global one), so several agents can live in one test process without
"Duplicated timeseries" errors.

Two kinds of figures live here:

- **Events** counted as they happen: ingest accepted / rejected, records
  delivered, failed attempts, dead letters, batch latency. The ingest side and
  the delivery loops call the methods below.
- **State** read at scrape time: pending and dead letters per destination, age
  of the oldest pending record, outbox size. These come from the outbox, which
  only its owner thread may read, and a scrape is synchronous, so the collector
  reads the latest *snapshot* instead of the database. ``observe_status`` stores
  that snapshot; the web app calls it with a fresh ``/api/status`` body right
  before every ``/metrics`` render, so the gauges are as fresh as the scrape.
  A different source can be plugged in with ``stats_source``.

The counters the contract's ``/api/status`` needs under ``"ingest"``
(``accepted_total``, ``rejected_total``, ``last_received_at``) are kept here
too, so the agent's ``status()`` reads them from ``Metrics`` and the two views
never disagree. They count since the agent started, like every Prometheus
counter. ``history()`` gives the status page's 24-hour chart from two small
in-memory ring buffers (one point per minute); it starts empty after a restart.

``render()`` keeps the last scrape's text and gives it again while nothing
counted or observed has changed since (every event and every
``observe_status`` bumps a version), so a burst of scrapers costs one render
and a scrape is never stale.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from agent.clock import iso_at

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, as ``/metrics`` answers it."""

REJECT_REASONS = frozenset(
    {
        "validation",
        "conflict",
        "storage_full",
        "unauthorized",
        "forbidden",
        "rate_limited",
        "too_large",
        "unsupported_media_type",
        "unavailable",
    }
)
"""Why ingest refused a record; the ``reason`` label of ``kassabro_ingest_rejected_total``."""

MAX_AUTH_CLIENTS = 256
"""Client addresses ``kassabro_ingest_auth_failures_total`` names; the rest count as ``other``."""

FAILURE_REASONS = frozenset({"retryable", "permanent"})
"""The ``reason`` label of ``kassabro_delivery_failures_total``."""

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Batch send latency buckets in seconds: a LAN webhook to a slow vendor API."""

HISTORY_MINUTES = 24 * 60


@dataclass
class StatsSnapshot:
    """The outbox state the gauges show: what ``/api/status`` says about it.

    Attributes:
        destinations: one dict per destination with at least ``name``,
            ``pending``, ``dead_letters`` and ``oldest_pending_age_s`` (None when
            nothing is pending), as in the ``/api/status`` body.
        outbox: ``{"records": int, "bytes": int}``.
        tills: ``/api/status`` ``tills`` (reconciliation, per till).
        problems: ``/api/status`` ``problems``.
    """

    destinations: list[Mapping[str, Any]] = field(default_factory=list)
    outbox: Mapping[str, Any] = field(default_factory=dict)
    tills: list[Mapping[str, Any]] = field(default_factory=list)
    problems: list[Any] = field(default_factory=list)


StatsSource = Callable[[], StatsSnapshot]


class _StateCollector(Collector):
    """Builds the outbox gauges from a ``StatsSnapshot`` at every scrape."""

    def __init__(self, source: Callable[[], StatsSnapshot]) -> None:
        self._source = source

    def describe(self) -> Iterable[Metric]:
        # Nothing at registration: the source may not be ready before the agent starts.
        return []

    def collect(self) -> Iterable[Metric]:
        snapshot = self._source()
        pending = GaugeMetricFamily(
            "kassabro_pending_records",
            "Records a destination has not acknowledged yet (batches in flight included).",
            labels=["destination"],
        )
        dead = GaugeMetricFamily(
            "kassabro_dead_letters",
            "Records a destination refused for good, kept for replay.",
            labels=["destination"],
        )
        oldest = GaugeMetricFamily(
            "kassabro_oldest_pending_age_seconds",
            "Age of the oldest record a destination has not acknowledged; 0 when none is pending.",
            labels=["destination"],
        )
        for dest in snapshot.destinations:
            name = str(dest.get("name", ""))
            pending.add_metric([name], float(dest.get("pending") or 0))
            dead.add_metric([name], float(dest.get("dead_letters") or 0))
            oldest.add_metric([name], float(dest.get("oldest_pending_age_s") or 0))
        records = GaugeMetricFamily("kassabro_outbox_records", "Records stored in the outbox.")
        records.add_metric([], float(snapshot.outbox.get("records") or 0))
        size = GaugeMetricFamily("kassabro_outbox_bytes", "Size of the outbox database on disk, in bytes.")
        size.add_metric([], float(snapshot.outbox.get("bytes") or 0))
        return [pending, dead, oldest, records, size, *_till_gauges(snapshot)]


def _till_gauges(snapshot: StatsSnapshot) -> list[Metric]:
    """Reconciliation per till: missing receipts, the last receipt and Z, whether that Z matches."""
    missing = GaugeMetricFamily(
        "kassabro_till_missing_receipts",
        "Receipt numbers of a till that never arrived (gaps, refused receipts, missing from a Z-report's range).",
        labels=["till_id"],
    )
    last_receipt = GaugeMetricFamily(
        "kassabro_till_last_receipt_no", "The highest receipt number received from a till.", labels=["till_id"]
    )
    last_z = GaugeMetricFamily("kassabro_till_last_z_no", "The newest Z-report number of a till.", labels=["till_id"])
    z_ok = GaugeMetricFamily(
        "kassabro_till_last_z_reconciled",
        "1 when a till's newest Z-report matches its receipts, 0 when it does not (or receipts are missing).",
        labels=["till_id"],
    )
    for till in snapshot.tills:
        till_id = str(till.get("till_id", ""))
        missing.add_metric([till_id], float(till.get("missing_receipts") or 0))
        if till.get("last_receipt_no") is not None:
            last_receipt.add_metric([till_id], float(till["last_receipt_no"]))
        z = till.get("last_z")
        if isinstance(z, Mapping):
            last_z.add_metric([till_id], float(z.get("z_no") or 0))
            z_ok.add_metric([till_id], 1.0 if z.get("state") == "ok" else 0.0)
    problems = GaugeMetricFamily("kassabro_problems", "Problems a person should act on, by code.", labels=["code"])
    codes: dict[str, int] = {}
    for problem in snapshot.problems:
        code = str(problem.get("code", "other")) if isinstance(problem, Mapping) else "other"
        codes[code] = codes.get(code, 0) + 1
    for code, count in sorted(codes.items()):
        problems.add_metric([code], float(count))
    return [missing, last_receipt, last_z, z_ok, problems]


class _MinuteSeries:
    """A ring of per-minute values for the last 24 hours, keyed by epoch minute."""

    def __init__(self, minutes: int = HISTORY_MINUTES) -> None:
        self._minutes = minutes
        self._values: OrderedDict[int, float] = OrderedDict()

    def add(self, minute: int, amount: float) -> None:
        self._values[minute] = self._values.get(minute, 0.0) + amount
        self._trim(minute)

    def set(self, minute: int, value: float) -> None:
        self._values[minute] = value
        self._values.move_to_end(minute)
        self._trim(minute)

    def _trim(self, newest: int) -> None:
        while self._values and next(iter(self._values)) <= newest - self._minutes:
            self._values.popitem(last=False)

    def items(self) -> Iterator[tuple[int, float]]:
        return iter(sorted(self._values.items()))

    def get(self, minute: int) -> float | None:
        return self._values.get(minute)


class Metrics:
    """The agent's metrics registry and the status page's ingest counters.

    Args:
        stats_source: returns the outbox state for the gauges at scrape time.
            Defaults to the last snapshot given to ``observe_status`` /
            ``observe_stats``. It must be quick and must not touch the database
            (it runs inside the scrape, on the event loop).
        clock: seconds since the epoch; tests pass their own.

    Thread-safe: the event counters may be bumped from any thread.
    """

    def __init__(
        self,
        stats_source: StatsSource | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = StatsSnapshot()
        self._stats_source: StatsSource = stats_source or (lambda: self._snapshot)
        self.accepted_total = 0
        self.rejected_total = 0
        self.last_received_at: str | None = None
        self._delivered_per_minute = _MinuteSeries()
        self._pending_per_minute = _MinuteSeries()
        self._version = 0
        self._rendered: tuple[int, bytes] | None = None
        self._cacheable = stats_source is None  # a plugged-in source may change without telling us

        self._ingest_accepted = Counter(
            "kassabro_ingest_accepted",
            "Records stored by ingest (duplicates not counted), by record type.",
            ["type"],
            registry=self.registry,
        )
        self._ingest_rejected = Counter(
            "kassabro_ingest_rejected",
            "Records or requests ingest refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._auth_failures = Counter(
            "kassabro_ingest_auth_failures",
            "Ingest requests with a missing or wrong token, by client address (the first 256 addresses; then 'other').",
            ["client"],
            registry=self.registry,
        )
        self._auth_clients: set[str] = set()
        self._delivered = Counter(
            "kassabro_delivered_records",
            "Records a destination acknowledged.",
            ["destination"],
            registry=self.registry,
        )
        self._failed = Counter(
            "kassabro_delivery_failures",
            "Failed send attempts, by destination and reason (retryable or permanent).",
            ["destination", "reason"],
            registry=self.registry,
        )
        self._dead_lettered = Counter(
            "kassabro_dead_lettered_records",
            "Records that became dead letters.",
            ["destination"],
            registry=self.registry,
        )
        self._batch_latency = Histogram(
            "kassabro_batch_latency_seconds",
            "Time to send one batch and get its answer.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(lambda: self._stats_source()))

    # -- events -------------------------------------------------------------

    def ingest_accepted(self, record_type: str, n: int = 1) -> None:
        """Count ``n`` newly stored records of ``record_type`` (not duplicates)."""
        self._ingest_accepted.labels(type=record_type).inc(n)
        with self._lock:
            self._version += 1
            self.accepted_total += n
            self.last_received_at = iso_at(self._clock())

    def auth_failed(self, client: str) -> None:
        """Count a missing or wrong ingest token from ``client`` (an address), bounded in label count."""
        with self._lock:
            if client not in self._auth_clients and len(self._auth_clients) < MAX_AUTH_CLIENTS:
                self._auth_clients.add(client)
            label = client if client in self._auth_clients else "other"
            self._version += 1
        self._auth_failures.labels(client=label).inc()

    def ingest_rejected(self, reason: str, n: int = 1) -> None:
        """Count a refused record or request.

        Args:
            reason: one of ``REJECT_REASONS``.
            n: how many (a refused batch counts once per request).

        Raises:
            ValueError: an unknown reason, so a typo cannot invent a new series.
        """
        if reason not in REJECT_REASONS:
            raise ValueError(f"reason: unknown ingest reject reason {reason!r}")
        self._ingest_rejected.labels(reason=reason).inc(n)
        with self._lock:
            self._version += 1
            self.rejected_total += n

    def delivered(self, destination: str, n: int) -> None:
        """Count ``n`` records ``destination`` acknowledged."""
        if n <= 0:
            return
        self._delivered.labels(destination=destination).inc(n)
        with self._lock:
            self._version += 1
            self._delivered_per_minute.add(self._minute(), n)

    def failed(self, destination: str, reason: str) -> None:
        """Count one failed send attempt; ``reason`` is ``retryable`` or ``permanent``."""
        if reason not in FAILURE_REASONS:
            raise ValueError(f"reason: must be 'retryable' or 'permanent', not {reason!r}")
        self._failed.labels(destination=destination, reason=reason).inc()
        self._changed()

    def dead_lettered(self, destination: str, n: int = 1) -> None:
        """Count ``n`` records that became dead letters at ``destination``."""
        if n > 0:
            self._dead_lettered.labels(destination=destination).inc(n)
            self._changed()

    def observe_batch_latency(self, destination: str, seconds: float) -> None:
        """Record how long one batch took to send and be answered."""
        self._batch_latency.labels(destination=destination).observe(max(0.0, seconds))
        self._changed()

    # -- state --------------------------------------------------------------

    def observe_stats(
        self,
        destinations: list[Mapping[str, Any]],
        outbox: Mapping[str, Any],
        tills: list[Mapping[str, Any]] | None = None,
        problems: list[Any] | None = None,
    ) -> None:
        """Store the latest outbox state for the gauges and the backlog chart."""
        with self._lock:
            self._version += 1
            self._snapshot = StatsSnapshot(list(destinations), dict(outbox), list(tills or []), list(problems or []))
            total = sum(int(d.get("pending") or 0) for d in destinations)
            self._pending_per_minute.set(self._minute(), total)

    def observe_status(self, status: Mapping[str, Any]) -> None:
        """``observe_stats`` from an ``/api/status`` body."""
        self.observe_stats(
            list(status.get("destinations") or []),
            status.get("outbox") or {},
            list(status.get("tills") or []),
            list(status.get("problems") or []),
        )

    def ingest_summary(self) -> dict[str, Any]:
        """The ``"ingest"`` object of ``/api/status``."""
        with self._lock:
            return {
                "accepted_total": self.accepted_total,
                "rejected_total": self.rejected_total,
                "last_received_at": self.last_received_at,
            }

    def history(self) -> list[dict[str, float]]:
        """Points for the last 24 hours, one per minute that saw any data.

        Each point is ``{"t": epoch seconds of the minute, "pending": total
        pending across destinations last observed in that minute (carried
        forward from the minute before when nothing was observed),
        "delivered": records delivered in that minute}``.
        """
        with self._lock:
            now_minute = self._minute()
            delivered = dict(self._delivered_per_minute.items())
            pending = dict(self._pending_per_minute.items())
        minutes = sorted(set(delivered) | set(pending))
        points: list[dict[str, float]] = []
        last_pending = 0.0
        for minute in minutes:
            if minute <= now_minute - HISTORY_MINUTES:
                continue
            if minute in pending:
                last_pending = pending[minute]
            points.append({"t": minute * 60, "pending": last_pending, "delivered": delivered.get(minute, 0.0)})
        return points

    def render(self) -> bytes:
        """The registry in the Prometheus text format (``CONTENT_TYPE``).

        The same bytes as the last call when nothing changed in between (see
        the module docstring); always drawn afresh with a custom ``stats_source``.
        """
        with self._lock:
            version, rendered = self._version, self._rendered
        if self._cacheable and rendered is not None and rendered[0] == version:
            return rendered[1]
        text = generate_latest(self.registry)
        if self._cacheable:
            with self._lock:
                # A change during the render bumped the version: this text is then kept
                # under the version read before it, so the next scrape draws again.
                self._rendered = (version, text)
        return text

    def _changed(self) -> None:
        with self._lock:
            self._version += 1

    def _minute(self) -> int:
        return int(self._clock() // 60)
