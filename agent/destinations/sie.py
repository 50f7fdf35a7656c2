"""The ``sie`` destination: sales become SIE 4I day files in ``dir`` (contract §3).

Unlike the network destinations it does not send as soon as it can: it
offers ``accept`` so the delivery loop only claims sales whose business day
is due (``export_at``, default 02:00 local, on the next day), and
``next_due_at`` so the loop sleeps until then instead of polling. A batch is
acknowledged only once its file is fsync'd and in place; see
``agent.sie.export`` for how a crash at any point neither loses nor doubles a
voucher.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime

from agent import __version__
from agent.destinations.base import SendResult
from agent.outbox.types import Batch, Envelope
from agent.sie.config import SieAccounts, SieDestinationConfig
from agent.sie.export import Clock, SieExporter


class SieDestination:
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

    @classmethod
    def from_config(cls, config: SieDestinationConfig, *, store_id: str | None = None) -> SieDestination:
        """Build from the config (``store_id`` is taken from each envelope instead)."""
        del store_id
        return cls(config)

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
        """Write the batch's file; raises RetryableError (disk, directory) or PermanentError (unbalanced)."""
        return await asyncio.to_thread(self.exporter.write_batch, batch)

    async def close(self) -> None:
        return None


__all__ = ["SieAccounts", "SieDestination", "SieDestinationConfig"]
