"""The ``sie`` destination: the shop's sales booked as SIE 4I files in ``dir`` (contract §3).

The books are written by runs, not per delivery batch (``agent.sie.export``):
this destination runs the booking at ``export_at``, and at start-up when the
agent was off at the last ``export_at``. Its delivery loop then only tells the
outbox what the books hold: ``accept`` takes the records the state says are
booked (or refused), ``send`` turns the refused ones into dead letters. A
record still waiting (not due, or dated in the future) stops the cursor, never
a run; it is listed in ``problems`` when it is dated in the future.

``export_day`` is ``kassabro sie export --date``: the same run with a day
forced due, then the same acknowledgement through the outbox, settled with
the delivery loop's rule (``agent.outcome``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from agent import __version__
from agent.destinations.base import DeliveryError, Destination, RetryableError, SendResult
from agent.outbox.store import OutboxStore
from agent.outbox.types import Batch, Envelope
from agent.outcome import Step, outcome
from agent.reconcile import Problem, till_label
from agent.sie.config import SieAccounts, SieDestinationConfig
from agent.sie.errors import SieWriteFailed
from agent.sie.export import BookedFile, Clock, RunReport, SieBooks
from agent.sie.state import StateError

if TYPE_CHECKING:
    from agent.outbox.service import Outbox

log = logging.getLogger(__name__)

RECHECK_S = 300.0
"""The runner looks at the wall clock at least this often (the clock may be set while it sleeps)."""


class SieDestination(Destination):
    """Books due sales as SIE 4I files.

    Args:
        config: the destination's keys.
        store_id: the store, in the file names.
        gift_card_skus: ``[skus] gift_card``.
        outbox: the agent's outbox (the runs read it); None: no runs by themselves (tests, the CLI).
        clock: now, timezone-aware (tests inject one).
        program_version: written in ``#PROGRAM``.
    """

    kind = "sie"

    def __init__(
        self,
        config: SieDestinationConfig,
        *,
        store_id: str = "store",
        gift_card_skus: Collection[str] = ("presentkort",),
        outbox: Outbox | None = None,
        clock: Clock | None = None,
        program_version: str = __version__,
    ) -> None:
        self.name = config.name
        self.config = config
        self.books = SieBooks(
            config, store_id=store_id, gift_card_skus=gift_card_skus, clock=clock, program_version=program_version
        )
        self.outbox = outbox
        self.on_booked: Callable[[], None] | None = None
        """Called after a run booked something (the agent kicks this destination's delivery loop)."""
        self.last_error: str | None = None
        self._runner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.books.prepare)
        if self.outbox is not None and self._runner is None:
            self._runner = asyncio.create_task(self._run_forever(), name=f"sie {self.name!r} runs")

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    # ------------------------------------------------------------------ runs
    async def run_now(self, force: list[tuple[date, str | None]] | None = None) -> RunReport:
        """One booking run on the outbox's reader thread.

        Raises:
            SieWriteFailed: the directory, the disk or the state failed.
        """
        assert self.outbox is not None
        report = await self.outbox.read(lambda store: self.books.run(store.conn, force or []))
        if self.on_booked is not None:
            self.on_booked()
        return report

    async def _run_forever(self) -> None:
        """A run now if the last ``export_at`` was missed, then one at every ``export_at``."""
        failures = 0
        while True:
            try:
                due = await asyncio.to_thread(self.books.run_missed)
                if due:
                    await self.run_now()
                    self.last_error = None
                    failures = 0
            except asyncio.CancelledError:
                raise
            except (SieWriteFailed, StateError, OSError) as exc:
                failures += 1
                self.last_error = str(exc)
                log.error("%s: booking run failed: %s", self.name, exc)
                await asyncio.sleep(min(300.0, 5.0 * 2 ** min(failures, 6)))
                continue
            except Exception:
                log.exception("%s: booking run failed", self.name)
                self.last_error = "the booking run failed; see the log"
                await asyncio.sleep(60.0)
                continue
            wait = (self.books.next_run_at() - self.books.clock()).total_seconds()
            await asyncio.sleep(max(1.0, min(RECHECK_S, wait)))

    # ------------------------------------------------------------------ delivery
    def accept(self, envelope: Envelope) -> bool:
        """Whether the books hold the record (booked or refused): the loop acknowledges those, in seq order."""
        try:
            state = self.books.state()
        except StateError:
            return False
        return state.booked(int(envelope.get("seq") or 0), str(envelope.get("id")))

    def next_due_at(self) -> datetime:
        """When to look again while idle: the next run."""
        return self.books.next_run_at()

    async def send(self, batch: Batch) -> SendResult:
        """Nothing to write (the runs did): the refused records become dead letters."""
        return self.write(batch)

    def write(self, batch: Batch) -> SendResult:
        """The batch's refused records, from the state.

        Raises:
            RetryableError: the state cannot be read.
        """
        try:
            refused = self.books.state().refused
        except StateError as exc:
            raise RetryableError(str(exc)) from None
        return SendResult(rejected={rid: refused[rid] for rid in batch.ids if rid in refused})

    # ------------------------------------------------------------------ for the page
    def problems(self) -> list[Problem]:
        """Sales dated in the future wait alone; a run that fails is a problem too."""
        out: list[Problem] = []
        if self.last_error:
            out.append(
                Problem(
                    code="sie_failed",
                    text=f"Bokföringen ({self.name}) kan inte skrivas: {self.last_error}",
                    text_en=f"The books ({self.name}) cannot be written: {self.last_error}",
                    since=None,
                )
            )
        try:
            state = self.books.state()
        except StateError as exc:
            return [*out, Problem(code="sie_state", text=str(exc), text_en=str(exc), since=None)]
        today = self.books.clock().astimezone(self.books.zone).date()
        future = [w for w in state.waiting.values() if w.get("type") == "sale" and str(w.get("day", "")) > str(today)]
        for entry in sorted(future, key=lambda w: (str(w["till_id"]), int(w.get("receipt_no") or 0)))[:10]:
            till, number, day = str(entry["till_id"]), entry.get("receipt_no"), entry.get("day")
            out.append(
                Problem(
                    code="future_dated",
                    text=f"{till_label(till, 'sv')}: kvitto {number} är daterat {day}, i framtiden; det bokförs "
                    "först då (stämmer kassans klocka?). Övriga dagar bokförs som vanligt.",
                    text_en=f"{till_label(till, 'en')}: receipt {number} is dated {day}, in the future; it is booked "
                    "only then (is the till's clock right?). Other days are booked as usual.",
                    since=None,
                )
            )
        return out

    def files(self) -> list[BookedFile]:
        """The files in ``dir``, newest first (the status page's Bokföring panel)."""
        return self.books.files()

    def read_file(self, name: str) -> bytes:
        """One ``.si`` file of ``dir`` by its bare name (a download).

        Raises:
            FileNotFoundError: not a ``.si`` file directly in ``dir``.
        """
        path = self.books.dir / name
        if "/" in name or name.startswith(".") or not name.endswith(".si") or not path.is_file():
            raise FileNotFoundError(name)
        return path.read_bytes()


@dataclass
class ExportReport:
    """What ``kassabro sie export`` did."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    waiting: int = 0

    def summary(self) -> str:
        lines = [f"{self.records} sale(s) exported in {len(self.files)} file(s)"]
        lines += [f"  {name}" for name in self.files]
        if self.rejected:
            lines.append(f"{len(self.rejected)} sale(s) refused (now dead letters):")
            lines += [f"  {rid}: {reason}" for rid, reason in self.rejected.items()]
        if self.waiting:
            lines.append(f"{self.waiting} sale(s) of other days or tills wait for their own export")
        return "\n".join(lines)


class SieExportError(Exception):
    """``kassabro sie export`` could not finish; the message says why (nothing half-done is acknowledged)."""


def export_day(
    store: OutboxStore,
    config: SieDestinationConfig,
    day: date,
    till: str | None = None,
    *,
    store_id: str = "store",
    gift_card_skus: Collection[str] = ("presentkort",),
    clock: Clock | None = None,
    program_version: str = __version__,
    max_batches: int = 10_000,
) -> ExportReport:
    """Export ``day`` now (and any earlier day still waiting) through the books' own state.

    This is what ``kassabro sie export --date YYYY-MM-DD [--till ID]`` runs: a
    booking run with ``day`` forced due (for ``till`` or every till), then the
    outbox told what is booked, by the delivery loop's rule. Safe while the
    agent runs: both book under the same directory lock and state.

    Raises:
        SieExportError: the directory, disk or state failed; nothing new was booked.
    """
    destination = SieDestination(
        config, store_id=store_id, gift_card_skus=gift_card_skus, clock=clock, program_version=program_version
    )
    destination.books.prepare()
    try:
        run = destination.books.run(store.conn, [(day, till)])
    except SieWriteFailed as exc:
        raise SieExportError(str(exc)) from None
    report = ExportReport(files=[run.file] if run.file else [], records=run.records, waiting=run.waiting)
    for _ in range(max_batches):
        batch = store.claim_batch(config.name, config.batch_max, accept=destination.accept)
        if batch is None:
            break
        answer: SendResult | DeliveryError
        try:
            answer = destination.write(batch)
        except DeliveryError as exc:
            answer = exc
        decision = outcome(batch, answer)
        if decision.step is Step.RETRY:
            store.record_failure(config.name, batch.batch_id, decision.error, None)
            raise SieExportError(decision.error)
        if decision.step is Step.SPLIT:
            store.split_batch(config.name, batch.batch_id)
            continue
        store.complete_batch(config.name, batch.batch_id, decision.rejected)
        report.rejected.update({rid: reason for rid, (_, reason) in decision.rejected.items()})
    return report


__all__ = ["ExportReport", "SieAccounts", "SieDestination", "SieDestinationConfig", "SieExportError", "export_day"]
