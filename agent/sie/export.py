"""The booking run: every due sale in the outbox -> one durable SIE file, whatever the order it came in.

How records were batched or when they arrived never changes the vouchers
(contract §3). So the books are not written per delivery batch: a *run*
(at ``export_at``, at start-up for a run the agent missed, and on
``kassabro sie export``) reads from the outbox every sale and Z-report it has
not read yet plus those still waiting, decides per (till, business day) what
is due, and writes all the run's vouchers in one file:

- ``voucher_per = "day"``: one voucher per till and business day. Day D is
  due at ``export_at`` (local) on day D+1. A sale for a (till, day) already
  exported goes into a late voucher, at most one per (till, day) per run.
- ``voucher_per = "z_report"``: one voucher per Z-report, written when the Z
  and all the receipts of its range are in (then its VAT is the Z's), or once
  ``z_wait_hours`` have passed since it closed (then the receipts' VAT, and
  the missing receipts named in the voucher text). Sales no Z-report covers
  are booked per day once ``z_wait_hours`` have passed after their day was due.

Due-ness is judged per (till, day): a sale not due yet (dated in the future
while the till's or the agent's clock was wrong) waits alone and never holds
back one that is due. The run is deterministic: the same records give the same
vouchers in the same order, with the same text.

Writing: under the directory lock, the state (``agent.sie.state``) is saved
with the file's text before the file is written (write-ahead), then the file
goes to a hidden temporary name, is fsync'd, linked to its final name (never
overwriting) and the directory fsync'd. A crash anywhere leaves either the
old state (nothing booked, the run is done again) or the text in the state
(written at the next run): never a lost or a doubled voucher.

The outbox learns what is booked through the ``sie`` destination's delivery
loop (``agent.destinations.sie``): it acknowledges the records the state
says are booked, and turns the refused ones into dead letters.

What fails is raised as ``agent.sie.errors.SieWriteFailed``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from agent import __version__
from agent.intervals import Intervals
from agent.records import RecordValidationError, Sale, ZReport, parse_record
from agent.sie.accounting import RecordRefused, UnbalancedVoucher, Voucher, build_voucher, business_day, read_sale
from agent.sie.config import SieDestinationConfig
from agent.sie.errors import SieWriteFailed
from agent.sie.reader import SieFormatError, read, read_strict
from agent.sie.state import LOCK_NAME, STATE_NAME, ExportState, StateError, fsync_dir, locked
from agent.sie.writer import SieHeader, render

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
TMP_PREFIX = ".kassabro-"
TMP_SUFFIX = ".si.tmp"
LOOKUP_CHUNK = 500


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64] or "x"


def _span(numbers: Iterable[tuple[int, int]]) -> str:
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in numbers)


@dataclass
class _Read:
    """One record read from the outbox for a run."""

    record_id: str
    seq: int
    record_type: str
    data: object


@dataclass
class RunReport:
    """What one run did."""

    file: str | None = None
    vouchers: int = 0
    records: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    waiting: int = 0


@dataclass(frozen=True)
class BookedFile:
    """One file in ``dir`` as the status page lists it."""

    name: str
    size: int
    days: tuple[str, ...]
    vouchers: int
    balanced: bool
    checksum_ok: bool


class SieBooks:
    """The booking run of one ``sie`` destination (see the module docstring).

    Args:
        config: the destination's config.
        store_id: the store, in the file names.
        gift_card_skus: ``[skus] gift_card``.
        clock: now, timezone-aware (tests inject a fixed one).
        program_version: written in ``#PROGRAM``.
    """

    def __init__(
        self,
        config: SieDestinationConfig,
        *,
        store_id: str = "store",
        gift_card_skus: Iterable[str] = ("presentkort",),
        clock: Clock | None = None,
        program_version: str = __version__,
    ) -> None:
        self.config = config
        self.dir = Path(config.dir)
        self.zone = config.zone
        self.store_id = store_id
        self.gift_card_skus = frozenset(gift_card_skus)
        self.clock = clock or _utcnow
        self.program_version = program_version
        self.state_path = self.dir / STATE_NAME
        self.before_link: Callable[[Path], None] | None = None
        """Called with the temporary file after it is fsync'd, before it gets its name (crash tests)."""
        self._cached: tuple[tuple[int, int], ExportState] | None = None
        self._files: dict[str, tuple[tuple[int, int], BookedFile]] = {}

    # ------------------------------------------------------------------ times
    def due_at(self, day: date) -> datetime:
        """When ``day`` is exported: ``export_at`` local time on the next day."""
        return datetime.combine(day + timedelta(days=1), self.config.export_time, self.zone)

    def last_scheduled(self) -> datetime:
        """The latest ``export_at`` at or before now: a run before it was missed."""
        now = self.clock().astimezone(self.zone)
        today = datetime.combine(now.date(), self.config.export_time, self.zone)
        return today if now >= today else today - timedelta(days=1)

    def next_run_at(self) -> datetime:
        """The next ``export_at`` after now."""
        return self.last_scheduled() + timedelta(days=1)

    def run_missed(self) -> bool:
        """Whether the last scheduled run has not happened (the agent was off at ``export_at``)."""
        state = self.state()
        if state.last_run_at is None:
            return True
        return datetime.fromisoformat(state.last_run_at) < self.last_scheduled()

    # ------------------------------------------------------------------ state
    def prepare(self) -> None:
        """Create ``dir`` and remove temporary files a crash left behind."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(f"{TMP_PREFIX}*{TMP_SUFFIX}"):
            log.warning("removing %s, left by an export that did not finish", stale)
            stale.unlink(missing_ok=True)

    def state(self) -> ExportState:
        """The state as on disk, read again only when the file changed (the delivery loop asks often).

        Raises:
            StateError: it cannot be read.
        """
        try:
            info = self.state_path.stat()
            stamp = (info.st_mtime_ns, info.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        except OSError as exc:
            raise StateError(f"the SIE export state {self.state_path} cannot be read: {exc.strerror}") from None
        if self._cached is None or self._cached[0] != stamp:
            self._cached = (stamp, ExportState.load(self.state_path))
        return self._cached[1]

    # ------------------------------------------------------------------ the run
    def run(self, conn: sqlite3.Connection, force: Iterable[tuple[date, str | None]] = ()) -> RunReport:
        """Book everything due (and what ``force`` makes due) in one file; see the module docstring.

        Args:
            conn: a connection to the outbox (reads only).
            force: ``(day, till or None)``: that day and earlier are due now, for one till or all.

        Raises:
            SieWriteFailed: the directory, the disk or the state failed; nothing new is booked.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with locked(self.dir):
                return self._run_locked(conn, list(force))
        except StateError as exc:
            raise SieWriteFailed(str(exc)) from None
        except OSError as exc:
            raise SieWriteFailed(f"cannot write SIE files in {self.dir}: {exc.strerror or exc}") from None

    def _run_locked(self, conn: sqlite3.Connection, force: list[tuple[date, str | None]]) -> RunReport:
        state = ExportState.load(self.state_path)
        self._write_unwritten(state)
        now = self.clock()
        if state.scanned_seq is None:  # a new state, or one of the release that wrote a file per batch
            row = conn.execute("SELECT acked_seq FROM destinations WHERE name = ?", (self.config.name,)).fetchone()
            state.scanned_seq = int(row[0]) if row is not None and row[0] is not None else 0
        records, newest = self._read(conn, state)
        report = RunReport()
        sales: list[tuple[str, Sale, int]] = []
        zs: list[tuple[str, ZReport, int]] = []
        for record in records:
            if record.record_type == "z_report":
                try:
                    z = parse_record("z_report", record.data)
                    assert isinstance(z, ZReport)
                    zs.append((record.record_id, z, record.seq))
                except RecordValidationError:
                    pass  # reconciliation shows it; the books book sales
                continue
            try:
                sales.append((record.record_id, read_sale(record.data), record.seq))
            except RecordRefused as exc:
                report.refused[record.record_id] = str(exc)
        vouchers, waiting = self._plan(state, sales, zs, now, force, report)
        state.waiting = waiting
        state.scanned_seq = max(state.scanned_seq, newest)
        state.refused.update(report.refused)
        state.last_run_at = now.isoformat()
        report.waiting = sum(1 for w in waiting.values() if w.get("type") == "sale")
        if vouchers:
            name, body = self._render(vouchers, now)
            report.file, report.vouchers = name, len(vouchers)
            report.records = sum(len(v.record_ids) for v in vouchers)
            for voucher in vouchers:
                state.days.setdefault(voucher.till_id, {}).setdefault(voucher.day.isoformat(), name)
                booked = state.receipts.setdefault(voucher.till_id, Intervals())
                for number in voucher.receipts:
                    booked.add(number)
            for till_id, z_no, first, last in self._zs_in(vouchers):
                state.zs.setdefault(till_id, {})[str(z_no)] = {"file": name, "first": first, "last": last}
            state.runs.append(
                {
                    "at": now.isoformat(),
                    "file": name,
                    "vouchers": len(vouchers),
                    "days": sorted({v.day.isoformat() for v in vouchers}),
                }
            )
            state.unwritten[name] = body.decode("latin-1")
            state.save()  # the commit point: from here the file is written, now or at the next run
            self._write_unwritten(state)
            log.info(
                "%s: wrote %s (%d voucher(s), %d sale(s))", self.config.name, name, report.vouchers, report.records
            )
        else:
            state.save()
        self._copy(state)
        self._cached = None
        return report

    def _read(self, conn: sqlite3.Connection, state: ExportState) -> tuple[list[_Read], int]:
        """The sales and Z-reports after ``scanned_seq``, and those still waiting, in seq order."""
        assert state.scanned_seq is not None
        rows = conn.execute(
            "SELECT id, seq, type, data FROM records WHERE seq > ? AND type IN ('sale', 'z_report') ORDER BY seq",
            (state.scanned_seq,),
        ).fetchall()
        newest = max((row[1] for row in rows), default=state.scanned_seq)
        ids = [rid for rid in state.waiting if rid not in {row[0] for row in rows}]
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start : start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows.extend(conn.execute(f"SELECT id, seq, type, data FROM records WHERE id IN ({marks})", chunk))
        rows.sort(key=lambda row: row[1])
        out = []
        for record_id, seq, record_type, text in rows:
            try:
                data = json.loads(text)
            except ValueError:
                data = None
            out.append(_Read(str(record_id), int(seq), str(record_type), data))
        return out, int(newest)

    # ------------------------------------------------------------------ planning
    def _due(self, till_id: str, day: date, now: datetime, force: list[tuple[date, str | None]]) -> bool:
        if now >= self.due_at(day):
            return True
        return any(day <= forced and (till is None or till == till_id) for forced, till in force)

    def _plan(
        self,
        state: ExportState,
        sales: list[tuple[str, Sale, int]],
        zs: list[tuple[str, ZReport, int]],
        now: datetime,
        force: list[tuple[date, str | None]],
        report: RunReport,
    ) -> tuple[list[Voucher], dict[str, dict[str, object]]]:
        """The run's vouchers in file order, and what still waits."""
        waiting: dict[str, dict[str, object]] = {}
        vouchers: list[Voucher] = []
        per_day: dict[tuple[str, date], list[tuple[str, Sale]]] = {}
        if self.config.voucher_per == "z_report":
            sales, z_vouchers, z_waiting = self._plan_zs(state, sales, zs, now, force)
            vouchers.extend(z_vouchers)
            waiting.update(z_waiting)
        for record_id, sale, seq in sales:
            day = business_day(sale.occurred_at, self.zone)
            due = self._due(sale.till_id, day, now, force)
            if due and self.config.voucher_per == "z_report" and not self._z_covered(state, sale):
                # Sales no Z-report covers wait z_wait_hours for one, unless forced.
                forced = any(day <= d and (t is None or t == sale.till_id) for d, t in force)
                due = forced or now >= self.due_at(day) + timedelta(hours=self.config.z_wait_hours)
            if not due:
                waiting[record_id] = {
                    "seq": seq,
                    "type": "sale",
                    "till_id": sale.till_id,
                    "receipt_no": sale.receipt_no,
                    "day": day.isoformat(),
                }
                continue
            per_day.setdefault((sale.till_id, day), []).append((record_id, sale))
        for (till_id, day), group in sorted(per_day.items(), key=lambda item: (item[0][1], item[0][0])):
            late = state.exported(till_id, day.isoformat()) is not None
            voucher = self._voucher(till_id, day, group, report, late=late)
            if voucher is not None:
                vouchers.append(voucher)
        vouchers.sort(key=lambda v: (v.day, v.till_id, v.late, v.text))
        return vouchers, waiting

    def _voucher(
        self,
        till_id: str,
        day: date,
        group: list[tuple[str, Sale]],
        report: RunReport,
        *,
        late: bool = False,
        text: str | None = None,
        vat: dict[int, Decimal] | None = None,
    ) -> Voucher | None:
        """One voucher, leaving out (refusing) a receipt that cannot be booked."""
        kept: list[tuple[str, Sale]] = []
        for record_id, sale in group:
            try:
                build_voucher(
                    till_id, day, [(record_id, sale)], self.config.accounts, gift_card_skus=self.gift_card_skus
                )
                kept.append((record_id, sale))
            except (RecordRefused, UnbalancedVoucher) as exc:
                report.refused[record_id] = str(exc)
        if not kept:
            return None
        voucher = build_voucher(
            till_id,
            day,
            kept,
            self.config.accounts,
            discount_mode=self.config.discount_mode,
            vat_basis=self.config.vat_basis,
            gift_card_skus=self.gift_card_skus,
            late=late,
            text=text,
            vat=vat if len(kept) == len(group) else None,
        )
        return voucher if voucher.rows else None

    # ------------------------------------------------------------------ Z mode
    def _z_covered(self, state: ExportState, sale: Sale) -> bool:
        """Whether a booked Z-report's range holds the receipt (then it is a late sale of that Z)."""
        return any(
            z.get("first") is not None and z["first"] <= sale.receipt_no <= z["last"]
            for z in state.zs.get(sale.till_id, {}).values()
        )

    def _plan_zs(
        self,
        state: ExportState,
        sales: list[tuple[str, Sale, int]],
        zs: list[tuple[str, ZReport, int]],
        now: datetime,
        force: list[tuple[date, str | None]],
    ) -> tuple[list[tuple[str, Sale, int]], list[Voucher], dict[str, dict[str, object]]]:
        """Z vouchers for the Z-reports that are complete or waited long enough; the sales left over."""
        by_number: dict[tuple[str, int], tuple[str, Sale, int]] = {
            (s.till_id, s.receipt_no): (r, s, q) for r, s, q in sales
        }
        taken: set[str] = set()
        vouchers: list[Voucher] = []
        waiting: dict[str, dict[str, object]] = {}
        for z_id, z, seq in sorted(zs, key=lambda item: (item[1].till_id, item[1].z_no)):
            if str(z.z_no) in state.zs.get(z.till_id, {}):
                continue  # booked already (the same Z sent again is a duplicate, not a new record)
            day = business_day(z.opened_at, self.zone)
            if z.first_receipt_no is None or z.last_receipt_no is None:
                state.zs.setdefault(z.till_id, {})[str(z.z_no)] = {"file": None, "first": None, "last": None}
                continue
            booked = state.receipts.get(z.till_id, Intervals())
            present = Intervals()
            group: list[tuple[str, Sale]] = []
            for number in range(z.first_receipt_no, z.last_receipt_no + 1):
                found = by_number.get((z.till_id, number))
                if found is not None and found[0] not in taken:
                    group.append((found[0], found[1]))
                    present.add(number)
                elif number in booked:
                    present.add(number)
            missing = list(present.missing(z.first_receipt_no, z.last_receipt_no))
            complete = not missing and len(group) == z.last_receipt_no - z.first_receipt_no + 1
            forced = any(day <= d and (t is None or t == z.till_id) for d, t in force)
            timed_out = now >= z.closed_at + timedelta(hours=self.config.z_wait_hours)
            if not (complete or timed_out or forced):
                waiting[z_id] = {"seq": seq, "type": "z_report", "till_id": z.till_id, "z_no": z.z_no}
                for record_id, member in group:
                    taken.add(record_id)  # they wait with their Z
                    waiting[record_id] = {
                        "seq": by_number[(z.till_id, member.receipt_no)][2],
                        "type": "sale",
                        "till_id": z.till_id,
                        "receipt_no": member.receipt_no,
                        "day": business_day(member.occurred_at, self.zone).isoformat(),
                    }
                continue
            span = f"kvitto {z.first_receipt_no}-{z.last_receipt_no}"
            text = f"Kassa {z.till_id} Z {z.z_no} {day.isoformat()} {span} ({len(group)} kvitton)"
            if missing:
                text += f" saknas: {_span(missing)}"[:120]
            vat = {v.rate: v.amount for v in z.vat} if complete else None
            report = RunReport()
            voucher = self._voucher(z.till_id, day, group, report, text=text, vat=vat) if group else None
            state.refused.update(report.refused)
            taken.update(record_id for record_id, _ in group)
            if voucher is not None:
                voucher.z = (z.z_no, z.first_receipt_no, z.last_receipt_no)
                vouchers.append(voucher)
            else:
                state.zs.setdefault(z.till_id, {})[str(z.z_no)] = {
                    "file": None,
                    "first": z.first_receipt_no,
                    "last": z.last_receipt_no,
                }
        rest = [item for item in sales if item[0] not in taken]
        rest = [item for item in rest if item[0] not in waiting]
        return rest, vouchers, waiting

    @staticmethod
    def _zs_in(vouchers: list[Voucher]) -> Iterable[tuple[str, int, int, int]]:
        for voucher in vouchers:
            if voucher.z is not None:
                yield voucher.till_id, *voucher.z

    # ------------------------------------------------------------------ files
    def _render(self, vouchers: list[Voucher], now: datetime) -> tuple[str, bytes]:
        """The run's file name and text; the name comes from its records, so a run done again names it alike."""
        header = SieHeader(
            company_name=self.config.company_name,
            orgnr=self.config.orgnr,
            program_version=self.program_version,
            generated=now.astimezone(self.zone).date(),
            kptyp=self.config.kptyp,
            series=self.config.series,
        )
        body, replaced = render(header, vouchers, self.config.accounts, checksum=self.config.checksum)
        ids = sorted(rid for voucher in vouchers for rid in voucher.record_ids)
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:12]
        last = max(v.day for v in vouchers)
        name = f"kassabro-{last:%Y%m%d}-{_safe(self.store_id)}-{digest}.si"
        if replaced:
            log.warning("%s: %d character(s) CP437 cannot hold were replaced in %s", self.config.name, replaced, name)
        read_strict(body, require_checksum=self.config.checksum)  # never write what we would refuse
        return name, body

    def _write_unwritten(self, state: ExportState) -> None:
        """Write the files the state committed to but a crash kept from disk (or this run's)."""
        if not state.unwritten:
            return
        for name, text in sorted(state.unwritten.items()):
            final = self.dir / name
            if not self._already_written(final):
                self._durable_write(final, text.encode("latin-1"))
        state.unwritten = {}
        state.save()

    def _already_written(self, final: Path) -> bool:
        """Whether a good file of that name is in place (an earlier attempt of the same run)."""
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

    def _copy(self, state: ExportState) -> None:
        """Copy every file of the runs that ``copy_to`` lacks (a USB stick, a mounted share); never fails a run."""
        target = self.config.copy_to
        if target is None:
            return
        for run in state.runs:
            name = run.get("file")
            if not name or (target / name).exists() or not (self.dir / name).exists():
                continue
            try:
                tmp = target / f"{TMP_PREFIX}{name}{TMP_SUFFIX}"
                shutil.copyfile(self.dir / name, tmp)
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, target / name)
                fsync_dir(target)
            except OSError as exc:
                log.warning("%s: cannot copy %s to %s: %s", self.config.name, name, target, exc.strerror or exc)
                return

    def files(self) -> list[BookedFile]:
        """The ``.si`` files in ``dir``, newest day first, each read and checked (once per version of a file)."""
        out: list[BookedFile] = []
        known: dict[str, tuple[tuple[int, int], BookedFile]] = {}
        try:
            paths = list(self.dir.glob("*.si"))
        except OSError:
            return []
        for path in paths:
            try:
                info = path.stat()
            except OSError:
                continue
            stamp = (info.st_mtime_ns, info.st_size)
            kept = self._files.get(path.name)
            if kept is None or kept[0] != stamp:
                try:
                    doc = read(path.read_bytes())
                except OSError:
                    continue
                days = tuple(sorted({v.date.isoformat() for v in doc.vouchers if v.date}))
                balanced = bool(doc.vouchers) and not doc.unbalanced and not doc.errors
                checked = BookedFile(
                    path.name, info.st_size, days, len(doc.vouchers), balanced, doc.checksum_ok is not False
                )
                kept = (stamp, checked)
            known[path.name] = kept
            out.append(kept[1])
        self._files = known
        return sorted(out, key=lambda f: (f.days[-1] if f.days else "", f.name), reverse=True)


__all__ = ["LOCK_NAME", "STATE_NAME", "BookedFile", "RunReport", "SieBooks"]
