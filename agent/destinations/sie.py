"""The ``sie`` destination: sales become SIE 4I day files in ``dir`` (contract §3).

Unlike the network destinations it does not send as soon as it can: it
offers ``accept`` so the delivery loop only claims sales whose business day
is due (``export_at``, default 02:00 local, on the next day), and
``next_due_at`` so the loop sleeps until then instead of polling. A batch is
acknowledged only once its file is fsync'd and in place; see
``agent.sie.export`` for how a crash at any point neither loses nor doubles a
voucher.

``export_day`` is the same destination run once, outside the loop, for
``kassabro sie export``: it claims, writes and settles batches through the
outbox with the loop's own rule (``agent.outcome``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, datetime

from agent import __version__
from agent.destinations.base import DeliveryError, Destination, PermanentError, RetryableError, SendResult
from agent.outbox.store import OutboxStore
from agent.outbox.types import Batch, Envelope
from agent.outcome import Step, outcome
from agent.sie.config import SieAccounts, SieDestinationConfig
from agent.sie.errors import SieBatchRefused, SieWriteFailed
from agent.sie.export import Clock, SieExporter
from agent.sie.state import ExportState


class SieDestination(Destination):
    """Writes due sales as SIE 4I files.

    Args:
        config: the destination's keys.
        clock: now, timezone-aware (tests inject one).
        program_version: written in ``#PROGRAM``.
    """

    kind = "sie"

    def __init__(
        self,
        config: SieDestinationConfig,
        *,
        clock: Clock | None = None,
        program_version: str = __version__,
    ) -> None:
        self.name = config.name
        self.config = config
        self.exporter = SieExporter(config, clock=clock, program_version=program_version)

    async def start(self) -> None:
        await asyncio.to_thread(self.exporter.prepare)

    def accept(self, envelope: Envelope) -> bool:
        """Whether the sale's business day is due for export (the batch stops at the first that is not)."""
        return self.exporter.accept(envelope)

    def next_due_at(self) -> datetime:
        """When the next day becomes due: the delivery loop's wake-up when idle."""
        return self.exporter.next_due_at()

    def force_day(self, day: date, till: str | None = None) -> None:
        """Export ``day`` (and earlier waiting days) at the next claim, for one till or all."""
        self.exporter.force_day(day, till)

    async def send(self, batch: Batch) -> SendResult:
        """Write the batch's file; see ``write``."""
        return await asyncio.to_thread(self.write, batch)

    def write(self, batch: Batch) -> SendResult:
        """Write the batch's file (blocking), translating SIE's errors into delivery errors.

        Raises:
            RetryableError: the directory, disk or export state failed.
            PermanentError: the vouchers do not balance; splitting the batch finds the record.
        """
        try:
            return SendResult(rejected=self.exporter.write_batch(batch))
        except SieWriteFailed as exc:
            raise RetryableError(str(exc)) from None
        except SieBatchRefused as exc:
            raise PermanentError(str(exc)) from None

    async def close(self) -> None:
        return None


@dataclass
class ExportReport:
    """What ``kassabro sie export`` did."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    batches: int = 0

    def summary(self) -> str:
        lines = [f"{self.records} sale(s) exported in {len(self.files)} file(s)"]
        lines += [f"  {name}" for name in self.files]
        if self.rejected:
            lines.append(f"{len(self.rejected)} sale(s) refused (now dead letters):")
            lines += [f"  {rid}: {reason}" for rid, reason in self.rejected.items()]
        return "\n".join(lines)


class SieExportError(Exception):
    """``kassabro sie export`` could not finish; the message says why (nothing half-done is acknowledged)."""


def export_day(
    store: OutboxStore,
    config: SieDestinationConfig,
    day: date,
    till: str | None = None,
    *,
    clock: Clock | None = None,
    program_version: str = __version__,
    max_batches: int = 10_000,
) -> ExportReport:
    """Export ``day`` now (and any earlier day still waiting) through the outbox's own state.

    This is what ``kassabro sie export --date YYYY-MM-DD [--till ID]`` runs. It
    claims batches exactly as the running agent would (with ``day`` forced due),
    writes each batch's file, and settles the batch by the delivery loop's rule
    (``agent.outcome``), so a record is never in two files whether the agent or
    this command exported it; the two serialise on the directory lock. An open
    batch the agent had not finished is sent first, unchanged. Records after
    the first one that is not due (another till's, with ``till``; a later
    day's) stay for the regular export.

    Args:
        store: the open outbox (``OutboxStore``), with ``config.name`` registered.
        config: the SIE destination's config.
        day: the business day to export.
        till: only this till (others wait for the regular export).

    Raises:
        SieExportError: the directory or disk failed; the batch stays open and is retried later.
    """
    destination = SieDestination(config, clock=clock, program_version=program_version)
    destination.force_day(day, till)
    destination.exporter.prepare()
    report = ExportReport()
    for _ in range(max_batches):
        batch = store.claim_batch(config.name, config.batch_max, accept=destination.accept)
        if batch is None:
            break
        report.batches += 1
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
        report.records += batch.size - len(decision.rejected)
        name = ExportState.load(destination.exporter.state_path).batches.get(batch.batch_id, {}).get("file")
        if name and name not in report.files:
            report.files.append(name)
    return report


__all__ = ["ExportReport", "SieAccounts", "SieDestination", "SieDestinationConfig", "SieExportError", "export_day"]
