"""The one rule for what an adapter's answer does to its batch (agent.outcome), used by the
delivery loop and ``kassabro sie export`` alike."""

from __future__ import annotations

from typing import Any

from agent.destinations.base import PermanentError, RetryableError, SendResult
from agent.outbox.types import Batch
from agent.outcome import Outcome, Step, outcome


def batch(size: int) -> Batch:
    records: list[dict[str, Any]] = [{"id": f"r{n}", "key": f"sale:kassa-1:{n}", "seq": n} for n in range(1, size + 1)]
    return Batch("b1", "hogia", records)


def test_an_accepted_batch_completes_with_only_its_own_rejections() -> None:
    answer = SendResult(rejected={"r2": "unknown sku", "elsewhere": "not in this batch"})
    assert outcome(batch(3), answer) == Outcome(Step.COMPLETE, rejected={"r2": (None, "unknown sku")})


def test_a_retryable_failure_keeps_the_batch_and_the_receivers_retry_after() -> None:
    assert outcome(batch(3), RetryableError("503 busy", retry_after_s=30)) == Outcome(
        Step.RETRY, error="503 busy", retry_after_s=30
    )


def test_a_refused_batch_of_several_is_split() -> None:
    assert outcome(batch(2), PermanentError("422 refused", status=422)) == Outcome(Step.SPLIT)


def test_a_refused_single_record_is_a_dead_letter_with_status_and_body() -> None:
    refused = PermanentError("refused", status=422, body='{"error":"bad vat"}' + "x" * 2000)
    result = outcome(batch(1), refused)
    assert result.step is Step.DEAD_LETTER
    [(record_id, (status, reason))] = result.rejected.items()
    assert (record_id, status) == ("r1", 422)
    assert reason.startswith('422 refused: {"error":"bad vat"}xx') and len(reason) == 1024


def test_an_adapter_bug_is_retried_and_named() -> None:
    assert outcome(batch(2), KeyError("x")) == Outcome(Step.RETRY, error="internal error: KeyError('x')")
