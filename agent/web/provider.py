"""What the status web app needs from the running agent: ``StatusProvider``.

The web app (``agent.web.app``) never touches the outbox, the config or the
delivery loops itself. It asks a provider, which the agent (``agent.app``)
implements; the tests implement it over data they set. Keeping this seam small
means the page can be tested on its own, and the agent decides how to read its
outbox safely (through the outbox's owner thread).

All coroutines run on the agent's event loop and must not block it. The web
app gives each call a few seconds (``agent.web.app.PROVIDER_TIMEOUT_S``); a
call that takes longer is answered 503 (the page shows "the agent does not
answer").

The ``/api/status`` body (``status()``), exactly contract §4::

    {"store_id": "store-001", "version": "0.1.0", "uptime_s": 3600.5,
     "outbox": {"records": 1234, "bytes": 4194304},
     "destinations": [
        {"name": "hogia", "kind": "hogia", "state": "offline", "pending": 3,
         "oldest_pending_age_s": 542.0, "dead_letters": 0,
         "last_success_at": "2026-11-26T13:02:11.000Z",
         "last_error": "connection refused", "next_attempt_at": "2026-11-26T13:12:40.000Z"}],
     "ingest": {"accepted_total": 812, "rejected_total": 2,
                "last_received_at": "2026-11-26T13:11:58.120Z"}}

- ``state`` is ``online``, ``offline``, ``degraded`` or ``paused`` (contract §4).
- Times are ISO 8601 strings in UTC (as the envelope's ``received_at``) or
  null; ``oldest_pending_age_s`` is null when nothing is pending.
- ``last_error`` is the destination's last error in words. It is shown on the
  page as is, so it must never contain a secret (no tokens, no passwords, no
  Authorization headers).

Optional extra keys the page uses when present (documented in
docs/operations.md; clients must ignore keys they do not know):

- top level ``"problems"`` (contract §4): ``[{"code", "text", "text_en",
  "since"}]``, shown as warnings at the top of the page in the page's language
  (``text`` is Swedish), e.g. "Kassa 1, Z 245: 3 kvitton saknas (1004, 1010,
  1011)" or an outbox moved aside. A plain string is shown as it is.
- top level ``"tills"`` (contract §4): reconciliation per till
  (``agent.reconcile.TillSummary``), listed in the page's "Kassor" panel.
- per destination ``"offline_since"``: ISO time of the first retryable failure
  after the last success (the outbox's ``failing_since``). Without it the page
  says "since" the last success.
- per destination ``"pending_by_type"``: ``{"sale": 3, "stock_movement": 7}``,
  so the headline can say "3 sales waiting" instead of "10 records waiting".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agent.metrics import Metrics
    from agent.outbox.types import DeadLetter


class Health(NamedTuple):
    """``/healthz``'s verdict: ``ok``, else ``reason`` in words (answered 503)."""

    ok: bool
    reason: str


@runtime_checkable
class StatusProvider(Protocol):
    """The running agent as the status web app sees it.

    Attributes:
        store_id: the shop's ``store_id``, shown in the page's title.
        admin_token: the admin token (``[status] admin_token_file``, stripped),
            or None when none is configured. None makes the page read-only:
            every action answers 403. The web app only ever compares it
            (``hmac.compare_digest``); it is never shown or logged.
        metrics: the agent's ``agent.metrics.Metrics``; ``/metrics`` renders it.
    """

    store_id: str
    admin_token: str | None
    metrics: Metrics

    async def status(self) -> dict[str, Any]:
        """The ``/api/status`` body (see the module docstring), read fresh."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of every destination, newest first, at most ``limit``."""
        ...

    async def recent_records(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest records, newest first, at most ``limit``.

        Each: ``{"key": "sale:kassa-1:100234", "type": "sale", "seq": 42,
        "received_at": ISO time, "deliveries": {destination: "delivered" |
        "pending" | "dead"}}``. Only destinations that take the record's type
        appear in ``deliveries``.
        """
        ...

    async def history(self) -> list[dict[str, float]]:
        """Chart points for the last 24 hours, oldest first.

        Each ``{"t": epoch seconds, "pending": total pending across
        destinations at that time, "delivered": records delivered in the
        interval that starts at t}``; one point per minute is plenty.
        ``Metrics.history()`` gives exactly this.
        """
        ...

    async def retry_dead_letters(self, destination: str | None, ids: list[str] | None) -> int:
        """Send dead letters again; returns how many were queued for replay.

        Args:
            destination: only this destination's, or None for every destination.
            ids: only these record ids, or None for all (of ``destination``).

        Raises:
            KeyError: ``destination`` is not a configured destination
                (answered 404).
        """
        ...

    async def set_paused(self, destination: str, paused: bool) -> None:
        """Pause (stop sending) or resume a destination; records keep queuing.

        Raises:
            KeyError: no such destination (answered 404).
        """
        ...

    async def health(self) -> Health:
        """``Health(True, "ok")`` when the outbox is writable and the loops make
        progress, else ``Health(False, reason in words)`` for ``/healthz``'s 503."""
        ...
