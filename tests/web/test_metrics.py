"""``agent.metrics.Metrics``: counters, scrape-time gauges, the status counters, history."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.metrics import Metrics


class Clock:
    """A settable clock, so per-minute history can be checked exactly."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def test_two_agents_in_one_process_keep_their_own_figures() -> None:
    first, second = Metrics(), Metrics()
    first.delivered("hogia", 5)
    second.delivered("hogia", 2)
    assert value(first, "kassabro_delivered_records_total", destination="hogia") == 5
    assert value(second, "kassabro_delivered_records_total", destination="hogia") == 2


def test_ingest_counters_feed_both_prometheus_and_the_status_body() -> None:
    clock = Clock(1_795_700_000.25)
    metrics = Metrics(clock=clock)
    assert metrics.ingest_summary() == {"accepted_total": 0, "rejected_total": 0, "last_received_at": None}
    metrics.ingest_accepted("sale", 3)
    metrics.ingest_accepted("stock_movement")
    metrics.ingest_rejected("conflict")
    metrics.ingest_rejected("too_large")
    assert metrics.ingest_summary() == {
        "accepted_total": 4,
        "rejected_total": 2,
        "last_received_at": "2026-11-26T13:33:20.250Z",
    }
    assert value(metrics, "kassabro_ingest_accepted_total", type="sale") == 3
    assert value(metrics, "kassabro_ingest_rejected_total", reason="too_large") == 1


def test_unknown_reasons_are_refused_by_name() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="reason: unknown ingest reject reason 'typo'"):
        metrics.ingest_rejected("typo")
    with pytest.raises(ValueError, match="reason: must be 'retryable' or 'permanent'"):
        metrics.failed("hogia", "sometimes")


def test_gauges_come_from_the_stats_source_at_scrape_time() -> None:
    state = {"pending": 3}
    from agent.metrics import StatsSnapshot

    metrics = Metrics(
        stats_source=lambda: StatsSnapshot(
            [{"name": "hogia", "pending": state["pending"], "dead_letters": 1, "oldest_pending_age_s": 12.5}],
            {"records": 10, "bytes": 4096},
        )
    )
    assert value(metrics, "kassabro_pending_records", destination="hogia") == 3
    state["pending"] = 0
    assert value(metrics, "kassabro_pending_records", destination="hogia") == 0
    assert value(metrics, "kassabro_oldest_pending_age_seconds", destination="hogia") == 12.5
    assert value(metrics, "kassabro_outbox_bytes") == 4096


def test_history_has_one_point_per_minute_and_forgets_after_a_day() -> None:
    clock = Clock(1_795_700_000.0)  # 13:33:20 UTC
    metrics = Metrics(clock=clock)
    metrics.observe_stats([{"name": "hogia", "pending": 2}, {"name": "sie", "pending": 1}], {})
    metrics.delivered("hogia", 4)
    clock.now += 60
    metrics.delivered("hogia", 1)
    clock.now += 120
    metrics.observe_stats([{"name": "hogia", "pending": 0}], {})
    minute = 1_795_700_000 // 60 * 60
    assert metrics.history() == [
        {"t": minute, "pending": 3, "delivered": 4},
        {"t": minute + 60, "pending": 3, "delivered": 1},
        {"t": minute + 180, "pending": 0, "delivered": 0},
    ]
    clock.now += 24 * 3600
    metrics.delivered("hogia", 7)
    assert [p["delivered"] for p in metrics.history()] == [7]


def test_a_scrape_right_after_any_change_shows_it() -> None:
    """``render`` keeps its text between changes; no change may be missed by the next scrape."""
    metrics = Metrics()
    steps = [
        (lambda: metrics.ingest_accepted("sale", 2), "kassabro_ingest_accepted_total", {"type": "sale"}, 2),
        (lambda: metrics.ingest_rejected("validation"), "kassabro_ingest_rejected_total", {"reason": "validation"}, 1),
        (lambda: metrics.delivered("hogia", 5), "kassabro_delivered_records_total", {"destination": "hogia"}, 5),
        (lambda: metrics.failed("hogia", "retryable"), "kassabro_delivery_failures_total",
         {"destination": "hogia", "reason": "retryable"}, 1),
        (lambda: metrics.dead_lettered("hogia", 1), "kassabro_dead_lettered_records_total", {"destination": "hogia"}, 1),
        (lambda: metrics.observe_batch_latency("hogia", 0.2), "kassabro_batch_latency_seconds_count",
         {"destination": "hogia"}, 1),
        (lambda: metrics.observe_stats([{"name": "hogia", "pending": 9}], {"records": 4, "bytes": 8192}),
         "kassabro_pending_records", {"destination": "hogia"}, 9),
    ]  # fmt: skip
    for change, name, labels, expected in steps:
        before = metrics.render()
        assert metrics.render() == before  # nothing changed: the same text
        change()
        assert value(metrics, name, **labels) == expected, name
