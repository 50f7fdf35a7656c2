"""One forwarder loop per destination: claim a frozen batch, send, ack, back off.

Each destination has its own loop and its own cursor, so Hogia being down never
delays Sharespine. A loop never polls: it sleeps on the outbox's "new records"
event, on its backoff timer, or on shutdown. After a retryable failure it waits
``RetryPolicy.delay`` and sends *the same* batch again (same id, same members);
after the first success it drains at full speed.

A permanently refused batch is split in halves until the refused record stands
alone; that record becomes a dead letter with the status and the first KiB of
the answer, and the others are delivered. One poison record among 500 costs
about 2·log2(500) ≈ 18 extra requests, not 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, assert_never

from agent import clock
from agent.backoff import RetryPolicy
from agent.destinations.base import DeliveryError, Destination, SendResult
from agent.outbox.service import Outbox
from agent.outbox.store import OutboxError
from agent.outbox.types import Batch, BatchKind, Envelope
from agent.outcome import Outcome, Rejected, Step, outcome
from agent.redact import redact
from agent.states import DestinationState

log = logging.getLogger(__name__)

IDLE_RECHECK_S = 60.0
"""When idle, look again this often anyway: ``kassabro submit`` and the CLI write
the outbox from another process, which no in-process event announces."""

DEGRADED_WINDOW_S = 300.0
SHUTDOWN_GRACE_S = 5.0


def state_at_rest(stats: Mapping[str, Any]) -> DestinationState:
    """A destination's state from the outbox alone (no loop running: the CLI, a
    destination without a loop): paused, offline while failures are on record, else online."""
    if stats["paused"]:
        return DestinationState.PAUSED
    return DestinationState.OFFLINE if stats["failing_since"] else DestinationState.ONLINE


@dataclass(frozen=True)
class Delivered:
    """What ``DeliveryLoop._deliver`` did with one batch.

    Args:
        previous_recorded: whether the batch sent before it was written down.
        done: the batch is finished (taken, or its one record dead-lettered);
            False when it is open again (a retryable failure, waited out) or split.
        recording: for a taken batch, the task writing its outcome down
            (``complete_batch``) while the next batch is already on the wire.
    """

    previous_recorded: bool
    done: bool
    recording: asyncio.Task[bool] | None = None


NOT_DONE = Delivered(previous_recorded=True, done=False)
"""The batch stays open and nothing before it is known to have failed (a claim or write error)."""


class DeliveryMetrics(Protocol):
    def delivered(self, destination: str, n: int) -> None: ...
    def failed(self, destination: str, reason: str) -> None: ...
    def dead_lettered(self, destination: str, n: int = 1) -> None: ...
    def observe_batch_latency(self, destination: str, seconds: float) -> None: ...


class DeliveryLoop:
    """Moves one destination's records out of the outbox.

    Args:
        outbox: the open outbox.
        destination: the adapter. Its hooks ``accept`` (the batch stops at the
            first record refused, for records not yet due) and ``next_due_at``
            (when to look again if idle) have defaults on ``Destination``.
        policy: backoff for retryable failures.
        batch_max: most records per batch.
        metrics: optional counters.
    """

    def __init__(
        self,
        outbox: Outbox,
        destination: Destination,
        *,
        policy: RetryPolicy,
        batch_max: int,
        metrics: DeliveryMetrics | None = None,
        on_state_change: Callable[[], None] | None = None,
    ):
        self.outbox = outbox
        self.destination = destination
        self.name = destination.name
        self.policy = policy
        self.batch_max = batch_max
        self.metrics = metrics
        self.on_state_change = on_state_change
        self.attempt = 0
        self.last_attempt_ok: bool | None = None
        self.offline_since: str | None = None
        self.last_error: str | None = None
        self.next_attempt_at: str | None = None
        self.refused_since_start = 0
        self.delivered_since_start = 0
        self._recent_failures: deque[float] = deque(maxlen=64)
        self._stop = asyncio.Event()
        self._kick = asyncio.Event()
        self._wake = outbox.subscribe()
        self._task: asyncio.Task[None] | None = None
        self.sending: Batch | None = None

    # ----------------------------------------------------------------- state
    @property
    def state(self) -> DestinationState:
        """``online``, ``offline`` or ``degraded`` (``paused`` comes from the outbox)."""
        if self.last_attempt_ok is False:
            return DestinationState.OFFLINE
        now = time.monotonic()
        if self.refused_since_start or any(now - t < DEGRADED_WINDOW_S for t in self._recent_failures):
            return DestinationState.DEGRADED
        return DestinationState.ONLINE

    def _changed(self) -> None:
        if self.on_state_change is not None:
            self.on_state_change()

    def kick(self) -> None:
        """Try now: cut a backoff wait short (the operator's "retry now", a resume)."""
        self._kick.set()
        self._wake.set()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"deliver-{self.name}")

    async def stop(self) -> None:
        """Stop; a batch in flight gets a short grace, else stays frozen for the next start."""
        self._stop.set()
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=SHUTDOWN_GRACE_S)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if self.sending is not None:
                log.info(
                    "%s: batch %s abandoned at shutdown; it is resent unchanged after restart",
                    self.name,
                    self.sending.batch_id,
                    extra={"destination": self.name, "batch_id": self.sending.batch_id},
                )

    async def _sleep(self, seconds: float | None, *, wake_on_new: bool) -> None:
        events = [self._stop, self._kick] + ([self._wake] if wake_on_new else [])
        waiters = [asyncio.create_task(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        self._kick.clear()

    # ---------------------------------------------------------------- loop
    async def run(self) -> None:
        accept = self.destination.accept
        batch: Batch | None = None  # frozen while the previous one was on the wire
        recording: asyncio.Task[bool] | None = None  # the previous answer, being written down
        try:
            while not self._stop.is_set():
                self._wake.clear()
                if batch is None:
                    await self._recorded(recording)  # a plain claim must see it
                    recording = None
                    try:
                        batch = await self.outbox.claim_batch(self.name, self.batch_max, accept)
                    except OutboxError as exc:
                        log.error("%s: cannot claim a batch: %s", self.name, exc, extra={"destination": self.name})
                        await self._sleep(5.0, wake_on_new=False)
                        continue
                    if batch is None:
                        # Paused: wait for the resume (it kicks the loop) instead of claiming
                        # after every till's commit; ``kassabro resume`` from the shell is
                        # another process and is seen within IDLE_RECHECK_S.
                        paused = self.outbox.paused.get(self.name, False)
                        await self._sleep(IDLE_RECHECK_S if paused else self._idle_timeout(), wake_on_new=not paused)
                        continue
                following = self._claim_following(batch, accept)
                delivered = NOT_DONE
                try:
                    try:
                        delivered = await self._deliver(batch, recording)
                    except OutboxError as exc:
                        await self._not_recorded(batch, exc)  # a refusal that could not be written down
                except BaseException:
                    if following is not None:
                        following.cancel()  # shutdown: a batch it froze stays open for the next start
                    raise
                previous_ok = await self._recorded(recording) and delivered.previous_recorded  # done by now
                recording = delivered.recording
                batch = await self._settle(following)
                if not delivered.done or not previous_ok:
                    # The batch is open again (a retryable failure, an outcome not
                    # written down) or split: the plain claim takes the earliest open
                    # batch first; ``batch`` stays open behind it and comes in its turn.
                    batch = None
        finally:
            if recording is not None and not recording.done():
                await asyncio.shield(recording)  # a delivered batch is written down, even at shutdown

    async def _recorded(self, recording: asyncio.Task[bool] | None) -> bool:
        """Wait for the previous answer to be written down; False if it could not be."""
        if recording is None:
            return True
        return await asyncio.shield(recording)

    def _claim_following(
        self, batch: Batch, accept: Callable[[Envelope], bool] | None
    ) -> asyncio.Task[Batch | None] | None:
        """Freeze the batch after ``batch`` on the outbox thread while ``batch`` is sent.

        The outbox's work for the next batch (reading the records, freezing the
        batch, committing it) then overlaps the round trip instead of following
        it. Only behind a normal batch: a split half or a replay settles first.
        It is still one batch in flight, in seq order; see
        ``OutboxStore.claim_batch(after=...)`` for why two open batches are safe.
        """
        if batch.kind != BatchKind.NORMAL:
            return None
        return asyncio.create_task(
            self.outbox.claim_batch(self.name, self.batch_max, accept, after=batch.batch_id),
            name=f"claim-next-{self.name}",
        )

    async def _settle(self, following: asyncio.Task[Batch | None] | None) -> Batch | None:
        """The batch ``_claim_following`` froze, or None (nothing yet, an error, shutdown).

        A batch frozen here but not used stays open in the outbox and is
        claimed in its turn, unchanged, so nothing is lost by dropping it.
        """
        if following is None:
            return None
        try:
            return await asyncio.shield(following)
        except asyncio.CancelledError:
            following.cancel()
            raise
        except OutboxError as exc:
            log.error("%s: cannot claim the next batch: %s", self.name, exc, extra={"destination": self.name})
            return None

    def _idle_timeout(self) -> float:
        when = self.destination.next_due_at()
        if when is None:
            return IDLE_RECHECK_S
        return min(IDLE_RECHECK_S, max(0.5, (when - clock.utcnow()).total_seconds()))

    async def _deliver(self, batch: Batch, previous: asyncio.Task[bool] | None = None) -> Delivered:
        """Send ``batch`` and carry out what its answer means (``agent.outcome``).

        ``previous`` (the task writing down the batch before, which ran while
        this one was on the wire) is awaited as soon as the answer is in and
        before it is dealt with, so the outcomes are seen in the order of the
        batches (a success never lands on top of the failure after it). An
        accepted batch is written down by a task of its own while the next
        batch is already being sent: the outbox thread runs jobs in order, so
        the claim behind the next batch still sees it.
        """
        self.sending = batch
        started = time.monotonic()
        try:
            answer = await self._send(batch)
        finally:
            self.sending = None
        previous_ok = await self._recorded(previous)
        decision = outcome(batch, answer)
        match decision.step:
            case Step.COMPLETE:
                task = asyncio.create_task(
                    self._complete(batch, decision.rejected, started), name=f"complete-{self.name}"
                )
                return Delivered(previous_ok, done=True, recording=task)
            case Step.DEAD_LETTER:
                await self._dead_letter(batch, decision)
                return Delivered(previous_ok, done=True)
            case Step.SPLIT:
                if self.metrics is not None:
                    self.metrics.failed(self.name, "permanent")
                await self.outbox.split_batch(self.name, batch.batch_id)
                return Delivered(previous_ok, done=False)
            case Step.RETRY:
                if isinstance(answer, Exception) and not isinstance(answer, DeliveryError):
                    log.error(
                        "%s: unexpected error sending batch %s",
                        self.name,
                        batch.batch_id,
                        exc_info=answer,
                        extra={"destination": self.name, "batch_id": batch.batch_id},
                    )
                await self._failed(batch, decision.error, decision.retry_after_s)
                return Delivered(previous_ok, done=False)
            case _:
                assert_never(decision.step)

    async def _send(self, batch: Batch) -> SendResult | Exception:
        """The adapter's answer, or the error it raised (an adapter bug must not kill the loop)."""
        try:
            return await self.destination.send(batch)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:
            return exc

    async def _complete(self, batch: Batch, rejected: Rejected, started: float) -> bool:
        """Write an accepted batch's outcome down; False (and logged) if the outbox cannot take it.

        Sent, but the answer could not be written down (a full disk): the batch
        stays open and goes again, unchanged, once the outbox takes writes.
        """
        try:
            await self.outbox.complete_batch(self.name, batch.batch_id, rejected)
        except OutboxError as exc:
            await self._not_recorded(batch, exc)
            return False
        self._succeeded(batch, batch.size - len(rejected), len(rejected), time.monotonic() - started)
        return True

    async def _not_recorded(self, batch: Batch, exc: OutboxError) -> None:
        """An answer the outbox could not write down (a full disk): log it and give the outbox a moment.

        The batch stays open and goes again, unchanged, once the outbox takes writes.
        """
        log.error(
            "%s: cannot record the outcome of batch %s: %s",
            self.name,
            batch.batch_id,
            exc,
            extra={"destination": self.name, "batch_id": batch.batch_id},
        )
        await self._sleep(5.0, wake_on_new=False)

    def _succeeded(self, batch: Batch, delivered: int, refused: int, seconds: float) -> None:
        was = self.state
        if self.last_attempt_ok is False:
            log.info("%s: back online after %s", self.name, self.offline_since, extra={"destination": self.name})
        self.attempt = 0
        self.last_attempt_ok = True
        self.offline_since = None
        self.last_error = None
        self.next_attempt_at = None
        self.delivered_since_start += delivered
        if refused:
            self.refused_since_start += refused
            log.warning(
                "%s: %d record(s) of batch %s refused; now dead letters",
                self.name,
                refused,
                batch.batch_id,
                extra={"destination": self.name, "batch_id": batch.batch_id},
            )
        if self.state != was:
            self._changed()
        if self.metrics is not None:
            self.metrics.delivered(self.name, delivered)
            self.metrics.observe_batch_latency(self.name, seconds)
            if refused:
                self.metrics.dead_lettered(self.name, refused)

    async def _failed(self, batch: Batch, error: str, retry_after_s: float | None) -> None:
        error = redact(error)  # the URL in an error may carry user:password@ or ?api_key=
        self.attempt += 1
        delay = self.policy.delay(self.attempt, retry_after_s)
        next_at = clock.iso(clock.utcnow() + dt.timedelta(seconds=delay))
        went_offline = self.last_attempt_ok is not False
        self.last_attempt_ok = False
        if went_offline:
            self.offline_since = clock.iso_now()
            self._changed()
            log.warning(
                "%s: delivery failing (%s); retrying with backoff",
                self.name,
                error,
                extra={"destination": self.name, "batch_id": batch.batch_id},
            )
        self.last_error = error
        self.next_attempt_at = next_at
        self._recent_failures.append(time.monotonic())
        if self.metrics is not None:
            self.metrics.failed(self.name, "retryable")
        with contextlib.suppress(OutboxError):
            await self.outbox.record_failure(self.name, batch.batch_id, error, next_at)
        await self._sleep(delay, wake_on_new=False)

    async def _dead_letter(self, batch: Batch, decision: Outcome) -> None:
        """Write the one record of a refused batch down as a dead letter."""
        if self.metrics is not None:
            self.metrics.failed(self.name, "permanent")
        await self.outbox.complete_batch(self.name, batch.batch_id, decision.rejected)
        [(_, reason)] = decision.rejected.values()
        record = batch.records[0]
        self.refused_since_start += 1
        self.last_attempt_ok = True
        self.attempt = 0
        self._changed()
        log.warning(
            "%s: %s refused for good (%s); kept as a dead letter",
            self.name,
            record["key"],
            reason[:200],
            extra={"destination": self.name, "record_key": record["key"], "batch_id": batch.batch_id},
        )
        if self.metrics is not None:
            self.metrics.dead_lettered(self.name, 1)

    def snapshot(self) -> dict[str, Any]:
        live = {
            "state": self.state,
            "offline_since": self.offline_since,
            "last_error": self.last_error,
            "next_attempt_at": self.next_attempt_at,
            "sending": self.sending.batch_id if self.sending else None,
        }
        if hasattr(self.destination, "broker_in_use"):  # an mqtt destination: which of its hosts it is on
            live["broker"] = self.destination.broker_in_use
        return live
