"""Completeness of the books: receipt-number gaps and Z-reports checked against receipts.

A certified Swedish till numbers its receipts 1, 2, 3, ... and closes each day
with a Z-report (Z-dagrapport) that sums them. The agent is a passive
observer, so the only proof that it holds every receipt is to compare: per
till, the receipt numbers seen (a gap is a receipt that never arrived), and per
Z-report the receipts in its range added up the way the till adds them
(count, gross and VAT per rate, payments per method, rounding, returns).

What is found becomes ``problems`` (Swedish text first, ``text_en`` beside it)
and a per-till summary (``tills``) for ``/api/status``, the page, ``/metrics``,
the retained MQTT status and ``kassabro status``. A problem clears itself when
the missing receipt arrives. A receipt refused at ingest (422) is remembered by
number, so its gap says why it is missing.

Fed from the outbox, so it survives restarts: ``catch_up`` folds in every sale
and Z-report stored after the last one it saw (``outbox_seq``), and the state
(receipt numbers as ranges, open Z-reports with the sums of the receipts found
so far, refusals) is kept in a small JSON file beside the outbox, written
atomically. Folding is idempotent (a receipt is added to a Z's sums only once),
so folding a record twice after a crash changes nothing; a state file that is
lost is rebuilt from what the outbox still holds.

Thread use: ``catch_up`` runs on the outbox's reader thread; ``refused``,
``problems`` and ``tills`` on the event loop. One lock guards the state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from agent import clock
from agent.intervals import Intervals, first_numbers
from agent.receipts import ZERO, ReceiptTotals, Unspreadable, receipt_totals
from agent.records import RecordValidationError, Sale, ZReport, parse_record

if TYPE_CHECKING:
    from agent.outbox.service import Outbox
    from agent.outbox.store import OutboxStore

log = logging.getLogger(__name__)

STATE_NAME = "reconcile.json"
"""The state file's name in ``data_dir``."""
STATE_VERSION = 1
SAVE_EVERY_S = 5.0
"""The state file is written at most this often while records arrive (see ``Reconciler.follow``)."""
FOLLOW_EVERY_S = 0.2
"""While records arrive faster than this, the state catches up at most this often (see ``Reconciler.follow``)."""
CHUNK = 5000
"""Records folded per read of the outbox (the reader thread gives the GIL back between reads)."""
LOOKUP_CHUNK = 500
KEEP_Z_REPORTS = 100
"""Z-reports kept per till once reconciled (open ones are always kept)."""
KEEP_REFUSED = 1000
"""Refused receipt numbers remembered per till, newest kept."""
SHOWN_NUMBERS = 10
"""Receipt numbers a problem's text lists before "…"."""
REASON_CHARS = 160

METHOD_WORDS = {
    "sv": {
        "card": "kort",
        "cash": "kontant",
        "swish": "Swish",
        "gift_card": "presentkort",
        "invoice": "faktura",
        "other": "övrigt",
    },
    "en": {
        "card": "card",
        "cash": "cash",
        "swish": "Swish",
        "gift_card": "gift card",
        "invoice": "invoice",
        "other": "other",
    },
}


class Problem(TypedDict):
    """One thing a person should act on (contract §4 ``problems``)."""

    code: str
    text: str
    text_en: str
    since: str | None


_OUTBOX_SV: list[tuple[str, str]] = [
    (
        "moved aside to",
        "Kassabros lagringsfil var skadad och har flyttats undan. Försäljningen tas emot i en ny fil och allt"
        " som går att läsa ur den gamla räddas dit. Ring supporten om det händer igen.",
    ),
    (
        "restart the agent",
        "Kassabros lagringsfil klarade inte kontrollen. Starta om Kassabro (eller Raspberry Pi:n): då flyttas"
        " filen undan och allt som går att läsa räddas. Försäljningen tas emot under tiden.",
    ),
    (
        "salvaged from",
        "Poster har räddats ur den skadade lagringsfilen och skickas vidare. Ring supporten om siffrorna"
        " visar att något inte kunde läsas.",
    ),
    (
        "nothing could be read from",
        "Ingenting kunde räddas ur den skadade lagringsfilen. Ring supporten: filen finns kvar för undersökning.",
    ),
]
"""The outbox's own problems (``agent.outbox.integrity``, ``salvage``: English, kept in its events) in Swedish."""


def outbox_problem(text: str, since: str | None = None) -> Problem:
    """A problem with the outbox file itself, Swedish first with the outbox's English details after it.

    The outbox keeps its problems as English event lines (they survive a
    restart in the file); what they mean for the shop is said here, once.
    """
    sv = next((sv for marker, sv in _OUTBOX_SV if marker in text), "Kassabros lagringsfil har ett fel. Ring supporten.")
    return Problem(code="outbox", text=f"{sv} (Detaljer: {text})", text_en=text, since=since)


class LastZ(TypedDict):
    z_no: int
    closed_at: str
    first_receipt_no: int | None
    last_receipt_no: int | None
    state: str


class TillSummary(TypedDict):
    """One till as ``/api/status`` ``tills`` shows it (contract §4)."""

    till_id: str
    last_receipt_no: int | None
    last_received_at: str | None
    missing_receipts: int
    missing: list[int]
    last_z: LastZ | None


class ZState:
    """The Z states: what a Z-report's comparison with its receipts found."""

    OK = "ok"
    MISSING = "missing_receipts"
    MISMATCH = "mismatch"
    UNVERIFIED = "unverified"


# --------------------------------------------------------------------------- the state


@dataclass
class ZCheck:
    """One Z-report and the receipts of its range found so far."""

    z_no: int
    closed_at: str
    received_at: str
    first: int | None
    last: int | None
    receipt_count: int
    gross: dict[int, Decimal]
    vat: dict[int, Decimal]
    payments: dict[str, Decimal]
    rounding: Decimal
    returns_total: Decimal
    found: Intervals = field(default_factory=Intervals)
    sums: ReceiptTotals = field(default_factory=ReceiptTotals)
    unverifiable: int = 0
    """Receipts of the range seen once but no longer in the outbox: their figures cannot be added."""

    @classmethod
    def of(cls, z: ZReport, received_at: str) -> ZCheck:
        return cls(
            z_no=z.z_no,
            closed_at=z.closed_at.isoformat(),
            received_at=received_at,
            first=z.first_receipt_no,
            last=z.last_receipt_no,
            receipt_count=z.receipt_count,
            gross={g.rate: g.amount for g in z.gross},
            vat={v.rate: v.amount for v in z.vat},
            payments={p.method: p.amount for p in z.payments},
            rounding=z.rounding,
            returns_total=z.returns_total,
        )

    def covers(self, number: int) -> bool:
        return self.first is not None and self.last is not None and self.first <= number <= self.last

    def missing(self) -> list[tuple[int, int]]:
        if self.first is None or self.last is None:
            return []
        return list(self.found.missing(self.first, self.last))

    def differences(self) -> list[tuple[str, str, Decimal, Decimal]]:
        """``(what_sv, what_en, on_the_z, in_the_receipts)`` for every figure that differs."""
        out: list[tuple[str, str, Decimal, Decimal]] = []
        found = len(self.found)
        if found != self.receipt_count:
            out.append(("antal kvitton", "receipt count", Decimal(self.receipt_count), Decimal(found)))
        gross = self.sums.gross()
        for rate in sorted(set(self.gross) | set(gross), reverse=True):
            z, receipts = self.gross.get(rate, ZERO), gross.get(rate, ZERO)
            if z != receipts:
                out.append((f"brutto {rate} %", f"gross {rate} %", z, receipts))
        for rate in sorted(set(self.vat) | set(self.sums.vat), reverse=True):
            z, receipts = self.vat.get(rate, ZERO), self.sums.vat.get(rate, ZERO)
            if z != receipts:
                out.append((f"moms {rate} %", f"VAT {rate} %", z, receipts))
        for method in sorted(set(self.payments) | set(self.sums.payments)):
            z, receipts = self.payments.get(method, ZERO), self.sums.payments.get(method, ZERO)
            if z != receipts:
                out.append((METHOD_WORDS["sv"][method], METHOD_WORDS["en"][method], z, receipts))
        if self.rounding != self.sums.rounding:
            out.append(("öresavrundning", "rounding", self.rounding, self.sums.rounding))
        if self.returns_total != self.sums.returns_total:
            out.append(("returer", "returns", self.returns_total, self.sums.returns_total))
        return out

    def state(self) -> str:
        if self.missing():
            return ZState.MISSING
        if self.unverifiable:
            return ZState.UNVERIFIED
        return ZState.MISMATCH if self.differences() else ZState.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "z_no": self.z_no,
            "closed_at": self.closed_at,
            "received_at": self.received_at,
            "first": self.first,
            "last": self.last,
            "receipt_count": self.receipt_count,
            "gross": _amounts_out(self.gross),
            "vat": _amounts_out(self.vat),
            "payments": _amounts_out(self.payments),
            "rounding": str(self.rounding),
            "returns_total": str(self.returns_total),
            "found": self.found.ranges(),
            "sums": _totals_out(self.sums),
            "unverifiable": self.unverifiable,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ZCheck:
        return cls(
            z_no=int(raw["z_no"]),
            closed_at=str(raw["closed_at"]),
            received_at=str(raw["received_at"]),
            first=raw.get("first"),
            last=raw.get("last"),
            receipt_count=int(raw["receipt_count"]),
            gross={int(k): Decimal(v) for k, v in raw["gross"].items()},
            vat={int(k): Decimal(v) for k, v in raw["vat"].items()},
            payments={str(k): Decimal(v) for k, v in raw["payments"].items()},
            rounding=Decimal(raw["rounding"]),
            returns_total=Decimal(raw["returns_total"]),
            found=Intervals(tuple(r) for r in raw.get("found", [])),
            sums=_totals_in(raw.get("sums", {})),
            unverifiable=int(raw.get("unverifiable", 0)),
        )


@dataclass
class TillBook:
    """Everything reconciliation knows about one till."""

    seen: Intervals = field(default_factory=Intervals)
    last_receipt_no: int | None = None
    last_received_at: str | None = None
    refused: dict[int, dict[str, str]] = field(default_factory=dict)
    refused_z: dict[int, dict[str, str]] = field(default_factory=dict)
    zs: dict[int, ZCheck] = field(default_factory=dict)
    gap_since: str | None = None

    def z_ranges(self) -> Intervals:
        out = Intervals()
        for z in self.zs.values():
            if z.first is not None and z.last is not None:
                out.add_range(z.first, z.last)
        return out

    def span(self) -> tuple[int, int] | None:
        """The receipt numbers this till is known to have used: seen, refused, or named by a Z."""
        lows = [n for n in (self.seen.low, min(self.refused, default=None)) if n is not None]
        highs = [n for n in (self.seen.high, max(self.refused, default=None)) if n is not None]
        for z in self.zs.values():
            if z.first is not None and z.last is not None:
                lows.append(z.first)
                highs.append(z.last)
        if not lows:
            return None
        return min(lows), max(highs)

    def gaps_outside_zs(self) -> list[tuple[int, int]]:
        """Missing numbers no kept Z-report covers (those are the Z's problem)."""
        low, high = self.seen.low, self.seen.high
        refused = [n for n in self.refused if n not in self.seen]
        if refused:
            low = min([low, *refused]) if low is not None else min(refused)
            high = max([high, *refused]) if high is not None else max(refused)
        if low is None or high is None:
            return []
        covered = self.z_ranges()
        out: list[tuple[int, int]] = []
        for lo, hi in self.seen.missing(low, high):
            out.extend(covered.missing(lo, hi))
        return out

    def missing_count(self) -> int:
        span = self.span()
        if span is None:
            return 0
        return span[1] - span[0] + 1 - self.seen.count_within(*span)

    def missing_numbers(self, limit: int) -> list[int]:
        span = self.span()
        if span is None:
            return []
        return first_numbers(self.seen.missing(*span), limit)

    def trim(self) -> None:
        """Forget the oldest reconciled Z-reports and refusals beyond the caps."""
        done = sorted(n for n, z in self.zs.items() if z.state() == ZState.OK)
        for z_no in done[:-KEEP_Z_REPORTS] if len(done) > KEEP_Z_REPORTS else []:
            del self.zs[z_no]
        for numbers in (self.refused, self.refused_z):
            if len(numbers) > KEEP_REFUSED:
                for number in sorted(numbers)[: len(numbers) - KEEP_REFUSED]:
                    del numbers[number]

    def to_json(self) -> dict[str, Any]:
        return {
            "seen": self.seen.ranges(),
            "last_receipt_no": self.last_receipt_no,
            "last_received_at": self.last_received_at,
            "refused": {str(k): v for k, v in self.refused.items()},
            "refused_z": {str(k): v for k, v in self.refused_z.items()},
            "zs": {str(k): z.to_json() for k, z in self.zs.items()},
            "gap_since": self.gap_since,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TillBook:
        return cls(
            seen=Intervals(tuple(r) for r in raw.get("seen", [])),
            last_receipt_no=raw.get("last_receipt_no"),
            last_received_at=raw.get("last_received_at"),
            refused={int(k): dict(v) for k, v in raw.get("refused", {}).items()},
            refused_z={int(k): dict(v) for k, v in raw.get("refused_z", {}).items()},
            zs={int(k): ZCheck.from_json(v) for k, v in raw.get("zs", {}).items()},
            gap_since=raw.get("gap_since"),
        )


def _amounts_out(amounts: dict[Any, Decimal]) -> dict[str, str]:
    return {str(k): str(v) for k, v in amounts.items()}


def _totals_out(totals: ReceiptTotals) -> dict[str, Any]:
    return {
        "gross": _amounts_out(totals.gross()),
        "vat": _amounts_out(dict(totals.vat)),
        "payments": _amounts_out(dict(totals.payments)),
        "rounding": str(totals.rounding),
        "returns_total": str(totals.returns_total),
        "count": totals.count,
    }


def _totals_in(raw: dict[str, Any]) -> ReceiptTotals:
    totals = ReceiptTotals()
    for rate, amount in raw.get("gross", {}).items():
        totals.rates[int(rate)].goods += Decimal(amount)  # only the gross is compared; kept as goods
    for rate, amount in raw.get("vat", {}).items():
        totals.vat[int(rate)] += Decimal(amount)
    for method, amount in raw.get("payments", {}).items():
        totals.payments[str(method)] += Decimal(amount)
    totals.rounding = Decimal(raw.get("rounding", "0.00"))
    totals.returns_total = Decimal(raw.get("returns_total", "0.00"))
    totals.count = int(raw.get("count", 0))
    return totals


# --------------------------------------------------------------------------- words


_TILL_PREFIX = re.compile(r"(?i)^(kassa|till)[-_ .]?(?=.)")


def till_label(till_id: str, lang: str) -> str:
    """``kassa-1`` -> "Kassa 1" / "Till 1"; any other id -> "Kassa <id>" / "Till <id>"."""
    word = "Kassa" if lang == "sv" else "Till"
    return f"{word} {_TILL_PREFIX.sub('', till_id)}"


def number_list(ranges: Iterable[tuple[int, int]], limit: int = SHOWN_NUMBERS) -> str:
    """``1004, 1010, 1011`` or ``1004, 2001–2999``: runs of three or more as a range."""
    parts: list[str] = []
    shown = 0
    for lo, hi in ranges:
        if shown >= limit:
            parts.append("…")
            break
        if hi - lo >= 2:
            parts.append(f"{lo}–{hi}")
            shown += 1
        else:
            for number in range(lo, hi + 1):
                if shown >= limit:
                    break
                parts.append(str(number))
                shown += 1
    return ", ".join(parts)


def _kr(amount: Decimal, lang: str) -> str:
    text = f"{amount:,.2f}"
    if lang == "sv":
        text = text.replace(",", " ").replace(".", ",")
    return text


def _receipts(n: int, lang: str) -> str:
    if lang == "sv":
        return "1 kvitto saknas" if n == 1 else f"{n} kvitton saknas"
    return "1 receipt missing" if n == 1 else f"{n} receipts missing"


def _refusals(book: TillBook, ranges: list[tuple[int, int]], lang: str) -> str:
    """ "; 1004 avvisades: <why>" for the refused numbers among ``ranges``."""
    refused = [n for n in sorted(book.refused) if any(lo <= n <= hi for lo, hi in ranges)]
    if not refused:
        return ""
    first = refused[0]
    why = book.refused[first].get("reason", "")
    more = f" (+{len(refused) - 1})" if len(refused) > 1 else ""
    if lang == "sv":
        return f"; {first}{more} avvisades av agenten: {why}"
    return f"; {first}{more} was refused by the agent: {why}"


def _gap_problem(till_id: str, book: TillBook, ranges: list[tuple[int, int]], since: str | None) -> Problem:
    count = sum(hi - lo + 1 for lo, hi in ranges)
    texts = {
        lang: f"{till_label(till_id, lang)}: {_receipts(count, lang)} ({number_list(ranges)})"
        + _refusals(book, ranges, lang)
        for lang in ("sv", "en")
    }
    return Problem(code="missing_receipts", text=texts["sv"], text_en=texts["en"], since=since)


def _z_problems(till_id: str, book: TillBook, z: ZCheck) -> Iterator[Problem]:
    missing = z.missing()
    label = {lang: f"{till_label(till_id, lang)}, Z {z.z_no}" for lang in ("sv", "en")}
    if missing:
        count = sum(hi - lo + 1 for lo, hi in missing)
        texts = {
            lang: f"{label[lang]}: {_receipts(count, lang)} ({number_list(missing)})" + _refusals(book, missing, lang)
            for lang in ("sv", "en")
        }
        yield Problem(code="z_missing_receipts", text=texts["sv"], text_en=texts["en"], since=z.received_at)
        return
    if z.unverifiable:
        return
    differences = z.differences()
    if not differences:
        return
    sv = "; ".join(f"{what}: Z {_kr(a, 'sv')}, kvitton {_kr(b, 'sv')}" for what, _, a, b in differences)
    en = "; ".join(f"{what}: Z {_kr(a, 'en')}, receipts {_kr(b, 'en')}" for _, what, a, b in differences)
    yield Problem(
        code="z_mismatch",
        text=f"{label['sv']} stämmer inte med kvittona: {sv}",
        text_en=f"{label['en']} does not match the receipts: {en}",
        since=z.received_at,
    )


def _z_number_problems(till_id: str, book: TillBook) -> Iterator[Problem]:
    for z_no, refusal in sorted(book.refused_z.items()):
        if z_no in book.zs:
            continue
        why = refusal.get("reason", "")
        yield Problem(
            code="z_refused",
            text=f"{till_label(till_id, 'sv')}: Z {z_no} avvisades av agenten: {why}",
            text_en=f"{till_label(till_id, 'en')}: Z {z_no} was refused by the agent: {why}",
            since=refusal.get("at"),
        )
    known = Intervals()
    for z_no in book.zs:
        known.add(z_no)
    for z_no in book.refused_z:
        known.add(z_no)
    if known.low is None or known.high is None:
        return
    gaps = list(known.missing(known.low, known.high))
    if gaps:
        count = sum(hi - lo + 1 for lo, hi in gaps)
        later = min((z.received_at for z in book.zs.values() if z.z_no > gaps[0][0]), default=None)
        sv = f"{count} Z-rapporter saknas" if count > 1 else "1 Z-rapport saknas"
        en = f"{count} Z-reports missing" if count > 1 else "1 Z-report missing"
        yield Problem(
            code="z_missing",
            text=f"{till_label(till_id, 'sv')}: {sv} (Z {number_list(gaps)})",
            text_en=f"{till_label(till_id, 'en')}: {en} (Z {number_list(gaps)})",
            since=later,
        )


# --------------------------------------------------------------------------- the reconciler


class Reconciler:
    """Per-till completeness, fed from the outbox (see the module docstring).

    Args:
        path: the state file (``data_dir/reconcile.json``); None keeps it in memory only.
        gift_card_skus: ``[skus] gift_card`` (gift cards sold count in the rate-0 gross).
        now: the current time (tests pass their own).
    """

    def __init__(
        self,
        path: Path | None,
        *,
        gift_card_skus: Collection[str] = (),
        now: Callable[[], datetime] = clock.utcnow,
    ) -> None:
        self.path = path
        self.gift_card_skus = frozenset(gift_card_skus)
        self.now = now
        self.outbox_seq = 0
        self.tills: dict[str, TillBook] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._wake: Callable[[], None] | None = None

    # -- persistence ------------------------------------------------------------

    def load(self) -> None:
        """Read the state file; a missing or unreadable one starts empty (rebuilt from the outbox)."""
        if self.path is None:
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"version {raw.get('version')!r}")
            tills = {str(k): TillBook.from_json(v) for k, v in raw.get("tills", {}).items()}
            seq = int(raw.get("outbox_seq", 0))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("reconciliation: %s cannot be read (%s); rebuilding it from the outbox", self.path, exc)
            return
        with self._lock:
            self.tills, self.outbox_seq = tills, seq

    def save(self) -> None:
        """Write the state atomically (temporary file, fsync, rename) when it changed."""
        if self.path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            body = json.dumps(
                {
                    "version": STATE_VERSION,
                    "outbox_seq": self.outbox_seq,
                    "tills": {k: v.to_json() for k, v in sorted(self.tills.items())},
                },
                ensure_ascii=False,
                separators=(",", ":"),
            )
            self._dirty = False
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with self._lock:
                self._dirty = True
            log.warning("reconciliation: cannot write %s: %s", self.path, exc)

    # -- feeding ----------------------------------------------------------------

    def catch_up(self, store: OutboxStore, limit: int = CHUNK) -> int:
        """Fold the sales and Z-reports stored after ``outbox_seq``; returns how many were read.

        Runs on a thread with its own connection (``Outbox.read``). Call again
        while it returns ``limit``.
        """
        conn = store.conn
        with self._lock:
            cursor = self.outbox_seq
        newest = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0]
        if newest < cursor:
            log.warning("reconciliation: the outbox was replaced (seq %d < %d); reading it again", newest, cursor)
            cursor = 0
        # Read without the lock (the status page may want it meanwhile); fold under it.
        # A sale's till and receipt number come from its natural key (``sale:{till_id}:{receipt_no}``;
        # a till_id holds no colon), not from its JSON: a json_extract per sale was most of this read.
        rows = conn.execute(
            "SELECT seq, type, received_at, key, CASE WHEN type = 'z_report' THEN data END"
            " FROM records WHERE seq > ? AND type IN ('sale', 'z_report') ORDER BY seq LIMIT ?",
            (cursor, limit),
        ).fetchall()
        with self._lock:
            self.outbox_seq = cursor
            for seq, record_type, received_at, key, z_data in rows:
                sale_key: list[str] = key.split(":") if record_type == "sale" else []
                if len(sale_key) == 3 and sale_key[2].isdigit():
                    self._fold_sale(conn, sale_key[1], int(sale_key[2]), received_at, seq)
                elif record_type == "z_report" and z_data:
                    self._fold_z(conn, z_data, received_at)
                self.outbox_seq = seq
            if rows:
                self._dirty = True
        return len(rows)

    def _book(self, till_id: str) -> TillBook:
        book = self.tills.get(till_id)
        if book is None:
            book = self.tills[till_id] = TillBook()
        return book

    def _fold_sale(self, conn: Any, till_id: str, receipt_no: int, received_at: str, seq: int) -> None:
        book = self._book(till_id)
        book.seen.add(receipt_no)
        book.refused.pop(receipt_no, None)
        if book.last_receipt_no is None or receipt_no >= book.last_receipt_no:
            book.last_receipt_no = receipt_no
        book.last_received_at = received_at
        for z in book.zs.values():
            if z.covers(receipt_no) and receipt_no not in z.found:
                row = conn.execute("SELECT data FROM records WHERE seq = ?", (seq,)).fetchone()
                self._add_to_z(z, receipt_no, row[0] if row else None)

    def _fold_z(self, conn: Any, data: str, received_at: str) -> None:
        try:
            z = parse_record("z_report", json.loads(data))
        except (ValueError, RecordValidationError) as exc:
            log.warning("reconciliation: a stored Z-report cannot be read: %s", exc)
            return
        assert isinstance(z, ZReport)
        book = self._book(z.till_id)
        book.refused_z.pop(z.z_no, None)
        if z.z_no in book.zs:
            return  # folded already (a restart before the state was saved)
        check = book.zs[z.z_no] = ZCheck.of(z, received_at)
        if check.first is None or check.last is None:
            return
        wanted = [n for lo, hi in book.seen.ranges() for n in range(max(lo, check.first), min(hi, check.last) + 1)]
        for start in range(0, len(wanted), LOOKUP_CHUNK):
            chunk = wanted[start : start + LOOKUP_CHUNK]
            keys = [f"sale:{z.till_id}:{n}" for n in chunk]
            marks = ",".join("?" * len(keys))
            found = {
                int(json.loads(d)["receipt_no"]): d
                for (d,) in conn.execute(f"SELECT data FROM records WHERE key IN ({marks})", keys)
            }
            for number in chunk:
                self._add_to_z(check, number, found.get(number))

    def _add_to_z(self, z: ZCheck, receipt_no: int, data: str | None) -> None:
        z.found.add(receipt_no)
        if data is None:
            z.unverifiable += 1  # seen once, pruned from the outbox since
            return
        try:
            sale = parse_record("sale", json.loads(data))
            assert isinstance(sale, Sale)
            z.sums.add(receipt_totals(sale, self.gift_card_skus))
        except (ValueError, RecordValidationError, Unspreadable) as exc:
            log.warning("reconciliation: receipt %d cannot be added up: %s", receipt_no, exc)
            z.unverifiable += 1

    def refused(self, record_type: str, data: Any, details: list[dict[str, Any]]) -> None:
        """Remember a receipt (or Z-report) ingest refused, when its till and number can be read."""
        if record_type not in ("sale", "z_report") or not isinstance(data, dict):
            return
        till_id, number = data.get("till_id"), data.get("receipt_no" if record_type == "sale" else "z_no")
        if not isinstance(till_id, str) or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", till_id):
            return
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number < 2**63:
            return
        first = details[0] if details else {"loc": [], "msg": "refused"}
        where = ".".join(str(p) for p in first.get("loc", []))
        reason = f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
        entry = {"reason": reason[:REASON_CHARS], "at": clock.iso(self.now())}
        with self._lock:
            book = self._book(till_id)
            if record_type == "sale":
                if number in book.seen:
                    return  # a stored receipt sent again, broken: nothing is missing
                book.refused[number] = entry
            else:
                if number in book.zs:
                    return
                book.refused_z[number] = entry
            book.trim()
            self._dirty = True
        if self._wake is not None:
            self._wake()

    # -- what it found ------------------------------------------------------------

    def problems(self) -> list[Problem]:
        """Everything to act on, per till in till order; gaps first, then Z-reports."""
        out: list[Problem] = []
        now = clock.iso(self.now())
        with self._lock:
            for till_id in sorted(self.tills):
                book = self.tills[till_id]
                gaps = book.gaps_outside_zs()
                if gaps:
                    if book.gap_since is None:
                        book.gap_since = now
                        self._dirty = True
                    out.append(_gap_problem(till_id, book, gaps, book.gap_since))
                elif book.gap_since is not None:
                    book.gap_since = None
                    self._dirty = True
                for z_no in sorted(book.zs):
                    out.extend(_z_problems(till_id, book, book.zs[z_no]))
                out.extend(_z_number_problems(till_id, book))
        return out

    def summaries(self) -> list[TillSummary]:
        """``/api/status`` ``tills``: one entry per till, in till order."""
        out: list[TillSummary] = []
        with self._lock:
            for till_id in sorted(self.tills):
                book = self.tills[till_id]
                last_z: LastZ | None = None
                if book.zs:
                    z = book.zs[max(book.zs)]
                    last_z = LastZ(
                        z_no=z.z_no,
                        closed_at=z.closed_at,
                        first_receipt_no=z.first,
                        last_receipt_no=z.last,
                        state=z.state(),
                    )
                out.append(
                    TillSummary(
                        till_id=till_id,
                        last_receipt_no=book.last_receipt_no,
                        last_received_at=book.last_received_at,
                        missing_receipts=book.missing_count(),
                        missing=book.missing_numbers(SHOWN_NUMBERS * 10),
                        last_z=last_z,
                    )
                )
        return out

    def z_check(self, till_id: str, z_no: int) -> ZCheck | None:
        """The comparison of one Z-report, if it is known (for the books' Z mode)."""
        with self._lock:
            book = self.tills.get(till_id)
            return None if book is None else book.zs.get(z_no)

    # -- running ------------------------------------------------------------------

    async def follow(self, outbox: Outbox) -> None:
        """Catch up now and after every commit that stored records; save at most every ``SAVE_EVERY_S``.

        The save is an fsync on the SD card that ingest's commits also wait
        for, so it is not paid per commit: the state follows the outbox by its
        seq, and a crash before a save only means reading those records again
        (folding is idempotent); a refusal of the last seconds may be forgotten.
        Runs until cancelled (the agent's stop); the caller saves once more after.

        A catch-up is a hand-off to the reader thread and back; with tills
        posting flat out that was one per commit and about a tenth of the
        agent's CPU (docs/benchmarks.md). So commits arriving within
        ``FOLLOW_EVERY_S`` of the last catch-up are folded together after it;
        a lone sale is still folded at once.
        """
        import asyncio

        event = outbox.subscribe()
        last_save = 0.0
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        self._wake = wake
        try:
            while True:
                event.clear()
                caught_up = time.monotonic()
                try:
                    while await outbox.read(self.catch_up) >= CHUNK:
                        pass
                    if time.monotonic() - last_save >= SAVE_EVERY_S:
                        with self._lock:
                            for book in self.tills.values():
                                book.trim()
                        await asyncio.to_thread(self.save)
                        last_save = time.monotonic()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("reconciliation: catching up with the outbox failed; trying again at the next record")
                wait = None if not self._dirty else max(0.05, SAVE_EVERY_S - (time.monotonic() - last_save))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
                rest = FOLLOW_EVERY_S - (time.monotonic() - caught_up)
                if rest > 0:
                    await asyncio.sleep(rest)
        finally:
            self._wake = None
