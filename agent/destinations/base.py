"""The destination protocol and its one error tree.

Every adapter (http, hogia, sharespine, mqtt, sie) implements ``Destination``.
The delivery loop (``agent.delivery``) is the only caller; it decides what an
error means for the outbox:

- ``RetryableError``: nothing was acknowledged; the same frozen batch is sent
  again later, after ``agent.backoff.RetryPolicy.delay``.
- ``PermanentError``: the receiver refused the batch for good; the loop splits
  it until the refused record(s) stand alone and dead-letters those.
- ``SendResult.rejected``: the receiver took the batch but refused some ids;
  those become dead letters, the rest are delivered.
"""

from __future__ import annotations

import abc
import email.utils
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from agent.outbox.types import Batch, Envelope

if TYPE_CHECKING:
    from agent.reconcile import Problem

RETRYABLE_STATUS = frozenset({408, 425, 429})
"""HTTP statuses that mean "later", besides every 5xx (contract §3)."""


class DeliveryError(Exception):
    """Base of the errors a destination may raise from ``send``."""


class RetryableError(DeliveryError):
    """A failure that may pass: connection errors, timeouts, 408, 425, 429, 5xx.

    Args:
        message: what went wrong, in words for the status page.
        retry_after_s: the receiver's ``Retry-After``, in seconds, when it gave one.
        status: the HTTP status, when there was one.
    """

    def __init__(self, message: str, *, retry_after_s: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status


class PermanentError(DeliveryError):
    """The receiver refused the batch for good (any 4xx that is not retryable).

    Args:
        message: what went wrong, in words.
        status: the HTTP status, when there was one.
        body: the receiver's answer; the first KiB is kept with a dead letter.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = ""):
        super().__init__(message)
        self.status = status
        self.body = body[:1024]


@dataclass
class SendResult:
    """What a destination says after a batch was accepted.

    ``rejected`` maps record id to the receiver's reason; every other record of
    the batch counts as delivered.
    """

    rejected: dict[str, str] = field(default_factory=dict)


class Destination(abc.ABC):
    """One place records go: all the delivery loop knows of an adapter.

    ``send`` is never called twice at once. The hooks (``start``, ``close``,
    ``accept``, ``next_due_at``, ``problems``) have defaults here; a kind overrides those
    it needs, so the loop calls them without asking whether they exist.
    """

    kind: ClassVar[str]
    name: str

    accept: Callable[[Envelope], bool] | None = None
    """Which records may go out now; a batch stops at the first one it refuses.

    None (the default) takes every record without looking; SIE takes the
    sales of business days that are due.
    """

    async def start(self) -> None:
        """Read secrets and open connections; called once, before the first ``send``."""
        return None

    @abc.abstractmethod
    async def send(self, batch: Batch) -> SendResult:
        """Deliver ``batch``; raise ``RetryableError`` or ``PermanentError`` when it was not."""

    async def close(self) -> None:
        """Release what ``start`` opened."""
        return None

    def next_due_at(self) -> datetime | None:
        """When records that ``accept`` holds back become due: the loop's wake-up while idle (None: never)."""
        return None

    def problems(self) -> list[Problem]:
        """What this destination asks a person to act on now, for the status page (SIE: a failed run)."""
        return []


def is_retryable_status(status: int) -> bool:
    """Whether an HTTP status means "try the same batch again later"."""
    return status in RETRYABLE_STATUS or 500 <= status <= 599


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns None when the header is missing or unreadable; never negative.
    """
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)
