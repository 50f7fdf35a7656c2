"""When a business day is due, and how a frozen batch becomes one durable SIE file.

A sale belongs to the business day of its ``occurred_at`` in the configured
time zone. Day D is due at ``export_at`` (local) on day D+1; a day the agent
missed (it was off at 02:00) is due as soon as it runs. The delivery loop
claims only due records (``accept``), in seq order, so a batch holds whole days.

``write_batch`` turns one frozen batch into one file named from the batch:

1. under the directory lock, read the export state; a batch already written
   (by an earlier attempt) answers the same again, without a second file;
2. each sale is checked (refused ones become dead letters with the reason);
   sales of a (till, day) already exported become a separate late voucher;
3. the vouchers are built and balance-checked, the text rendered;
4. the text goes to a hidden temporary file, is fsync'd, linked to its final
   name (never overwriting) and the directory fsync'd: a crash before this
   leaves only a temporary file, removed at the next start;
5. the state is updated; then, and only then, the batch is acknowledged.

A crash between 4 and 5 leaves the final file; the resent batch finds it,
verifies it with the strict reader and answers success: nothing doubled.

What fails is raised as ``agent.sie.errors`` (``SieWriteFailed``,
``SieBatchRefused``); ``agent.destinations.sie`` translates them for the
delivery loop and for ``kassabro sie export``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from agent import __version__
from agent.outbox.types import Batch, Envelope
from agent.records import Sale
from agent.sie.accounting import (
    DayTotals,
    RecordRefused,
    UnbalancedVoucher,
    Voucher,
    build_voucher,
    business_day,
    read_sale,
)
from agent.sie.config import SieDestinationConfig
from agent.sie.errors import SieBatchRefused, SieWriteFailed
from agent.sie.reader import SieFormatError, read_strict
from agent.sie.state import (
    LOCK_NAME,
    STATE_NAME,
    ExportState,
    StateError,
    fsync_dir,
    locked,
)
from agent.sie.writer import SieHeader, render

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
TMP_PREFIX = ".kassabro-"
TMP_SUFFIX = ".si.tmp"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64] or "x"


@dataclass
class _Plan:
    """What one batch becomes: vouchers, refused records, and already-booked ones."""

    vouchers: list[Voucher] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    already: list[str] = field(default_factory=list)
    days: list[tuple[str, str]] = field(default_factory=list)

    @property
    def written_ids(self) -> list[str]:
        return [rid for v in self.vouchers for rid in v.record_ids]


class SieExporter:
    """The SIE destination's synchronous core: due days, and batch -> file.

    Args:
        config: the destination's config.
        clock: now, timezone-aware (tests inject a fixed one).
        program_version: written in ``#PROGRAM``.
        state_path: where the export state lives (default ``dir/.kassabro-sie-state.json``).
    """

    def __init__(
        self,
        config: SieDestinationConfig,
        *,
        clock: Clock | None = None,
        program_version: str = __version__,
        state_path: Path | None = None,
    ) -> None:
        self.config = config
        self.dir = Path(config.dir)
        self.zone = config.zone
        self.clock = clock or _utcnow
        self.program_version = program_version
        self.state_path = state_path or self.dir / STATE_NAME
        self._forced: list[tuple[date, str | None]] = []
        self.before_link: Callable[[Path], None] | None = None
        """Called with the temporary file after it is fsync'd, before it gets its name (crash tests)."""

    # ------------------------------------------------------------------ days
    def due_at(self, day: date) -> datetime:
        """When ``day`` is exported: ``export_at`` local time on the next day."""
        return datetime.combine(day + timedelta(days=1), self.config.export_time, self.zone)

    def next_due_at(self) -> datetime:
        """The next ``export_at`` after now: when the delivery loop should look again."""
        now = self.clock().astimezone(self.zone)
        today = datetime.combine(now.date(), self.config.export_time, self.zone)
        return (
            today
            if now < today
            else datetime.combine(now.date() + timedelta(days=1), self.config.export_time, self.zone)
        )

    def day_of(self, envelope: Envelope) -> tuple[str, date] | None:
        """(till, business day) of a sale envelope; None when it cannot be read."""
        data = envelope.get("data")
        if envelope.get("type") != "sale" or not isinstance(data, dict):
            return None
        try:
            moment = datetime.fromisoformat(str(data["occurred_at"]))
            if moment.tzinfo is None:
                return None
            return str(data["till_id"]), business_day(moment, self.zone)
        except (KeyError, ValueError, TypeError):
            return None

    def accept(self, envelope: Envelope) -> bool:
        """Whether the record's day is due (or forced); the batch stops at the first that is not.

        A record that cannot be read is accepted so ``write_batch`` refuses it
        with its reason, rather than holding the cursor back for ever.
        """
        where = self.day_of(envelope)
        if where is None:
            return True
        till_id, day = where
        if self.clock() >= self.due_at(day):
            return True
        return any(day <= forced and (till is None or till == till_id) for forced, till in self._forced)

    def force_day(self, day: date, till: str | None = None) -> None:
        """Make ``day`` (and any earlier day still waiting) due now, for one till or all."""
        self._forced.append((day, till))

    # ----------------------------------------------------------------- files
    def prepare(self) -> None:
        """Create ``dir`` and remove temporary files a crash left behind."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            log.warning("removing %s, left by an export that did not finish", stale)
            stale.unlink(missing_ok=True)

    def file_name(self, batch: Batch, vouchers: list[Voucher]) -> str:
        """``kassabro-<last day>-<store>-<batch id>.si``: deterministic for a frozen batch."""
        last = max(v.day for v in vouchers)
        store = _safe(str(batch.records[0].get("store_id", "store"))) if batch.records else "store"
        return f"kassabro-{last:%Y%m%d}-{store}-{_safe(batch.batch_id)}.si"

    def write_batch(self, batch: Batch) -> dict[str, str]:
        """Write the batch's file (or recognise it was written); return the records refused.

        Returns:
            record id -> why it can never be booked; every other record is in the file.

        Raises:
            SieWriteFailed: the directory or disk failed; the same batch can be tried again later.
            SieBatchRefused: the vouchers do not balance; splitting the batch finds why.
        """
        try:
            self.prepare_dir_only()
            with locked(self.dir):
                return self._write_locked(batch)
        except StateError as exc:
            raise SieWriteFailed(str(exc)) from None
        except OSError as exc:
            raise SieWriteFailed(f"cannot write SIE file in {self.dir}: {exc.strerror or exc}") from None

    def prepare_dir_only(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)

    def _write_locked(self, batch: Batch) -> dict[str, str]:
        state = ExportState.load(self.state_path)
        done = state.batches.get(batch.batch_id)
        if done is not None:
            return dict(done.get("rejected", {}))
        plan = self._plan(batch, state)
        now = self.clock()
        if not plan.vouchers:
            state.mark(batch.batch_id, None, plan.days, plan.already, plan.rejected, now)
            state.save()
            return plan.rejected
        name = self.file_name(batch, plan.vouchers)
        final = self.dir / name
        if not self._already_written(final):
            header = SieHeader(
                company_name=self.config.company_name,
                orgnr=self.config.orgnr,
                program_version=self.program_version,
                generated=now.astimezone(self.zone).date(),
                kptyp=self.config.kptyp,
                series=self.config.series,
            )
            try:
                body, replaced = render(header, plan.vouchers, self.config.accounts, checksum=self.config.checksum)
            except UnbalancedVoucher as exc:
                raise SieBatchRefused(str(exc)) from None
            if replaced:
                log.warning(
                    "%s: %d character(s) CP437 cannot hold were replaced in %s", self.config.name, replaced, name
                )
            read_strict(body, require_checksum=self.config.checksum)  # never write what we would refuse
            self._durable_write(final, body)
        state.mark(batch.batch_id, name, plan.days, plan.written_ids + plan.already, plan.rejected, now)
        state.save()
        log.info(
            "%s: wrote %s (%d voucher(s), %d record(s))",
            self.config.name,
            name,
            len(plan.vouchers),
            len(plan.written_ids),
        )
        return plan.rejected

    def _plan(self, batch: Batch, state: ExportState) -> _Plan:
        plan = _Plan()
        booked = state.record_index()
        groups: dict[tuple[date, str, bool], list[tuple[str, Sale]]] = {}
        seen: set[str] = set()
        for envelope in batch.records:
            record_id = str(envelope["id"])
            if record_id in seen:
                continue
            seen.add(record_id)
            if record_id in booked:
                plan.already.append(record_id)
                continue
            if envelope.get("type") != "sale":
                plan.rejected[record_id] = f"a SIE destination books sales only, not {envelope.get('type')!r}"
                continue
            try:
                sale = read_sale(envelope.get("data"))
                DayTotals().add(sale)  # refuses a receipt whose discount cannot be placed
            except RecordRefused as exc:
                plan.rejected[record_id] = str(exc)
                continue
            day = business_day(sale.occurred_at, self.zone)
            late = state.exported(sale.till_id, day.isoformat()) is not None
            groups.setdefault((day, sale.till_id, late), []).append((record_id, sale))
        for (day, till_id, late), sales in sorted(groups.items()):
            try:
                voucher = build_voucher(
                    till_id, day, sales, self.config.accounts, discount_mode=self.config.discount_mode, late=late
                )
            except UnbalancedVoucher as exc:
                raise SieBatchRefused(str(exc)) from None
            if voucher.rows:
                plan.vouchers.append(voucher)
            else:
                plan.already.extend(rid for rid, _ in sales)  # nothing to book: all amounts are zero
            plan.days.append((till_id, day.isoformat()))
        return plan

    def _already_written(self, final: Path) -> bool:
        """Whether an earlier attempt of this batch already put a good file in place."""
        try:
            body = final.read_bytes()
        except FileNotFoundError:
            return False
        try:
            read_strict(body, require_checksum=self.config.checksum)
            return True
        except SieFormatError as exc:
            aside = final.with_name(f"{final.name}.invalid-{int(self.clock().timestamp())}")
            log.error("%s does not verify (%s); moved aside to %s and written again", final, exc, aside.name)
            os.replace(final, aside)
            return False

    def _durable_write(self, final: Path, body: bytes) -> None:
        tmp = self.dir / f"{TMP_PREFIX}{final.name}{TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(body)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if self.before_link is not None:
            self.before_link(tmp)
        try:
            os.link(tmp, final)  # never replaces: a file of that name is never overwritten
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            raise SieWriteFailed(f"{final.name} appeared while it was being written; trying again") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            os.replace(tmp, final)  # a file system without hard links (FAT on a USB stick)
        else:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.dir)


__all__ = ["LOCK_NAME", "STATE_NAME", "SieExporter"]
