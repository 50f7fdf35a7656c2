"""What an adapter's answer means for the frozen batch it was given: the one rule.

The delivery loop (``agent.delivery``) and ``kassabro sie export``
(``agent.destinations.sie.export_day``) both send a batch and then do one of
four things to it in the outbox; ``outcome`` decides which:

- ``COMPLETE``: the batch was taken; every record is delivered except those
  the receiver listed in ``SendResult.rejected``, which become dead letters.
- ``SPLIT``: the batch was refused for good (``PermanentError``) and holds
  several records: it is split in halves until the refused record stands alone.
- ``DEAD_LETTER``: a refused batch of one record: that record becomes a dead
  letter with the status and the receiver's words.
- ``RETRY``: nothing was taken (``RetryableError``, or an adapter's bug): the
  failure is recorded and the same batch is sent again later. An answer about
  *us* rather than a record (a wrong token, URL or proxy: HTTP 401, 403, 404,
  407) is one of those: the HTTP adapters' base
  (``agent.destinations._httpcommon``) raises it as a ``RetryableError`` with
  a hint, so a config typo never turns the backlog into dead letters.

The callers differ only in how they carry it out: the loop asynchronously,
with backoff, metrics and the status page; the CLI synchronously, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from agent.destinations.base import PermanentError, RetryableError, SendResult
from agent.outbox.types import Batch

Rejected = dict[str, tuple[int | None, str]]
"""Record id -> (HTTP status or None, reason): ``OutboxStore.complete_batch``'s dead letters."""


class Step(StrEnum):
    """What is done to the batch in the outbox."""

    COMPLETE = "complete"
    SPLIT = "split"
    DEAD_LETTER = "dead_letter"
    RETRY = "retry"


@dataclass(frozen=True)
class Outcome:
    """The decision for one batch.

    Args:
        step: what to do with the batch.
        rejected: for ``COMPLETE`` and ``DEAD_LETTER``, the records that become
            dead letters (``complete_batch``'s argument).
        error: for ``RETRY``, the words for the status page and ``record_failure``.
        retry_after_s: for ``RETRY``, the receiver's ``Retry-After``.
    """

    step: Step
    rejected: Rejected = field(default_factory=dict)
    error: str = ""
    retry_after_s: float | None = None


def dead_letter_reason(exc: PermanentError) -> str:
    """``"<status> <message>: <body>"``, at most 1 KiB: what a dead letter keeps of a refusal."""
    status = f"{exc.status} " if exc.status else ""
    reason = f"{status}{exc}".strip()
    if exc.body and exc.body not in reason:
        reason = f"{reason}: {exc.body}"
    return reason[:1024]


def outcome(batch: Batch, answer: SendResult | BaseException) -> Outcome:
    """Decide what ``answer`` (what ``send`` returned, or what it raised) means for ``batch``."""
    if isinstance(answer, SendResult):
        ids = set(batch.ids)
        rejected: Rejected = {rid: (None, reason) for rid, reason in answer.rejected.items() if rid in ids}
        return Outcome(Step.COMPLETE, rejected=rejected)
    if isinstance(answer, RetryableError):
        return Outcome(Step.RETRY, error=str(answer), retry_after_s=answer.retry_after_s)
    if isinstance(answer, PermanentError):
        if batch.size > 1:
            return Outcome(Step.SPLIT)
        return Outcome(Step.DEAD_LETTER, rejected={batch.ids[0]: (answer.status, dead_letter_reason(answer))})
    return Outcome(Step.RETRY, error=f"internal error: {answer!r}")
