"""The one way into the outbox: parse, validate, derive, enqueue, answer.

HTTP, the spool directory, MQTT and ``kassabro submit`` all end here, so a
record is judged the same way whichever door it came through, and every
answer is one of contract §2's table.

JSON with a duplicated object key is refused: ``{"total": 10, "total": 99}``
means different things to different parsers, and a till's bug should be
caught, not guessed at.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from agent import clock
from agent.outbox.errors import Unstorable
from agent.outbox.service import Outbox
from agent.outbox.store import Conflict, OutboxUnavailable, StorageFull
from agent.outbox.types import EnqueueResult
from agent.quickread import read_record
from agent.records import (
    MAX_DETAILS,
    RECORD_TYPES,
    Record,
    RecordValidationError,
    Sale,
    derive_movements,
    gift_card_problems,
    time_window,
    window_problems,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
"""Contract §2: a body over 1 MiB is refused with 413."""

BATCH_KEYS = {"sales": "sale", "stock_movements": "stock_movement", "z_reports": "z_report"}
"""A batch body's lists and the record type each holds, in the order they are stored."""

DEFAULT_MAX_AGE_DAYS = 400
DEFAULT_MAX_FUTURE_HOURS = 24
"""``[ingest] max_age_days`` / ``max_future_hours`` when not configured (contract §1)."""

DEFAULT_GIFT_CARD_SKUS = ("presentkort",)
"""``[skus] gift_card`` when not configured (contract §1)."""

Refusal = Callable[[str, Any, list[dict[str, Any]]], None]
"""Told ``(record_type, data, details)`` of every record validation refused (``data`` as parsed)."""


class BadInput(Exception):
    """Input that is not a record: ``details`` as contract §2's 422 body."""

    def __init__(self, details: list[dict[str, Any]]):
        super().__init__("; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in details))
        self.details = details


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # in C; the Python loop below runs only when a key repeats
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadInput([{"loc": ["body", key], "msg": f"the key {key!r} appears more than once in one object"}])
            seen.add(key)
    return out


def _refuse_constant(name: str) -> Any:
    raise BadInput([{"loc": ["body"], "msg": f"{name} is not a number JSON allows"}])


def _json_int(text: str) -> int | Decimal:
    """A JSON integer: an int when short, else the exact ``Decimal`` for the record's rules to refuse.

    ``int()`` of more than 4,300 digits raises ``ValueError`` (and is slow well
    before that); a ``Decimal`` of the text is cheap, and the field it sits in
    answers "more than 20 significant digits", naming itself.
    """
    return int(text) if len(text) <= 20 else Decimal(text)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant, parse_float=Decimal, parse_int=_json_int
)
"""Built once (``json.loads`` with hooks builds one per call); decoding with it is reentrant."""


def parse_json(body: bytes | str) -> Any:
    """Decode a JSON body strictly (UTF-8, no duplicate keys, no NaN/Infinity).

    Numbers with a fraction or exponent become exact ``Decimal`` (never a
    binary float: ``10.0000000000000001`` stays what the till wrote and is
    refused for its decimals, not rounded to 10.00); long integers too.
    """
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput([{"loc": ["body"], "msg": f"the body is not UTF-8 (byte {exc.start})"}]) from None
    else:
        text = body
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        if text.startswith("\ufeff"):  # what json.loads says of a second one
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            [{"loc": ["body"], "msg": f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}]
        ) from None
    except RecursionError:
        raise BadInput([{"loc": ["body"], "msg": "the JSON is nested too deeply"}]) from None


def validate_one(
    record_type: str,
    data: Any,
    loc_prefix: tuple[Any, ...] = (),
    *,
    gift_card_skus: Collection[str] = DEFAULT_GIFT_CARD_SKUS,
    on_refused: Refusal | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> Record:
    """A validated record, or ``BadInput`` whose locations start with ``loc_prefix``.

    Besides the record's own rules, a sale's gift-card lines (``gift_card_skus``)
    must be at VAT rate 0. ``on_refused`` hears of every refusal, with the
    record's own details (reconciliation remembers refused receipt numbers).
    """
    if isinstance(data, float) and not math.isfinite(data):
        raise BadInput([{"loc": list(loc_prefix), "msg": "must be an object"}])
    try:
        record = read_record(record_type, data)
    except RecordValidationError as exc:
        details = exc.details
    else:
        details = window_problems(record, *window) if window is not None else []
        if isinstance(record, Sale):
            details += gift_card_problems(record, gift_card_skus)
        if not details:
            return record
    if on_refused is not None:
        on_refused(record_type, data, details)
    raise BadInput([{"loc": [*loc_prefix, *d["loc"]], "msg": d["msg"]} for d in details[:MAX_DETAILS]])


def validate_batch(
    data: Any,
    *,
    gift_card_skus: Collection[str] = DEFAULT_GIFT_CARD_SKUS,
    on_refused: Refusal | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> list[Record]:
    """``{"sales": [...], "stock_movements": [...], "z_reports": [...]}`` -> records, in that order.

    Every invalid record is reported, not only the first, so an integrator
    fixes a rejected file in one go. The batch is all or nothing, so when one
    record is refused ``on_refused`` also hears of the valid ones that are not
    stored with it (detail: "refused with its batch").
    """
    allowed = ", ".join(f"'{k}'" for k in BATCH_KEYS)
    if not isinstance(data, dict):
        raise BadInput([{"loc": ["body"], "msg": f"must be an object with the lists {allowed}"}])
    details: list[dict[str, Any]] = []
    for key in data:
        if key not in BATCH_KEYS and len(details) < MAX_DETAILS:
            details.append({"loc": [key], "msg": f"unknown key; only {allowed} are allowed"})
    records: list[Record] = []
    valid_items: list[tuple[str, Any]] = []
    for key, record_type in BATCH_KEYS.items():
        items = data.get(key, [])
        if not isinstance(items, list):
            details.append({"loc": [key], "msg": "must be a list"})
            continue
        for index, item in enumerate(items):
            if len(details) >= MAX_DETAILS:
                break  # enough to fix the body by; validating the rest would only cost time and memory
            try:
                records.append(
                    validate_one(
                        record_type,
                        item,
                        (key, index),
                        gift_card_skus=gift_card_skus,
                        on_refused=on_refused,
                        window=window,
                    )
                )
                valid_items.append((record_type, item))
            except BadInput as exc:
                details.extend(exc.details)
    if details and on_refused is not None:
        first = details[0]
        why = f"refused with its batch ({'.'.join(map(str, first['loc']))}: {first['msg']})"
        for record_type, item in valid_items:
            on_refused(record_type, item, [{"loc": [], "msg": why}])
    if not details and not records:
        details.append({"loc": ["body"], "msg": "holds no records"})
    if details:
        raise BadInput(details[:MAX_DETAILS])
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if record.key in seen:
            raise BadInput([{"loc": ["body"], "msg": f"the key {record.key} appears twice in one batch"}])
        seen[record.key] = index
    return records


PARSE_OFF_LOOP_BYTES = 64 * 1024
"""Bodies above this are parsed, validated and expanded on a worker thread (a receipt is a few KiB)."""


def _off_loop(body: bytes | str | Any) -> bool:
    """Whether judging ``body`` goes to a worker thread: raw input over ``PARSE_OFF_LOOP_BYTES``.

    A 1 MiB body of 340,000 empty objects takes most of a second to parse with
    the duplicate-key check, and a valid batch of 1,000 sales of many lines
    about as long to validate and expand: on a thread the loop keeps answering
    other tills and ``/healthz`` meanwhile (the interpreter switches every 5 ms).
    Parsed input (MQTT, the spool's own parse) is small or already paid for.
    """
    return isinstance(body, (bytes, str)) and len(body) > PARSE_OFF_LOOP_BYTES


@dataclass
class _Judged:
    """What ``Ingestor._judge`` made of a body: the records, and them with their derived movements."""

    records: list[Record]
    expanded: list[Record]
    primary: list[int]
    """Where each of ``records`` sits in ``expanded``."""


@dataclass
class IngestAnswer:
    """An HTTP-shaped answer: ``status`` and the JSON ``body`` of contract §2."""

    status: int
    body: dict[str, Any]
    results: list[EnqueueResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (200, 201)


def _safe_loc_part(part: Any) -> Any:
    """A location part as it can go out in any answer: at most 64 characters, valid UTF-8.

    A location may echo a key the till sent (an unknown field, a repeated key),
    which may be huge or hold a lone surrogate that no UTF-8 encoder takes.
    """
    if not isinstance(part, str) or (part.isascii() and len(part) <= 64):
        return part
    text = part if len(part) <= 64 else part[:61] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_answer(details: list[dict[str, Any]]) -> IngestAnswer:
    """The 422 answer: at most ``MAX_DETAILS`` details, each location safe to encode."""
    safe = [{"loc": [_safe_loc_part(p) for p in d["loc"]], "msg": d["msg"]} for d in details[:MAX_DETAILS]]
    return IngestAnswer(422, {"error": "validation", "details": safe})


def foreign_till(records: list[Record], till_id: str | None) -> str | None:
    """The first ``till_id`` among ``records`` that is not ``till_id`` (None: any till may send)."""
    if till_id is None:
        return None
    for record in records:
        if record.till_id != till_id:
            return record.till_id
    return None


def forbidden_answer(till_id: str) -> IngestAnswer:
    """Contract §2's 403: a till's own token sent another till's record; nothing is stored."""
    message = f"this till's token may not send records of till {till_id}"
    return IngestAnswer(403, {"error": "forbidden", "till_id": till_id, "message": message})


class Ingestor:
    """Validates and enqueues records for every source, and counts what it saw.

    Args:
        outbox: the open outbox.
        derive_stock_from_sales: store a stock movement per sale line in the
            same transaction as the sale (contract §1).
        gift_card_skus: ``[skus] gift_card``: lines selling a gift card must
            be at VAT rate 0.
        on_answer: called with ``(record_type, answer)`` after every attempt,
            for metrics and the status page's counters.
        on_refused: called with ``(record_type, data, details)`` for every
            record refused by validation (see ``validate_one``).
        max_age_days, max_future_hours: ``[ingest]``'s ``occurred_at`` window,
            applied only while the clock is synchronised (contract §1).
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        derive_stock_from_sales: bool = True,
        gift_card_skus: Collection[str] = DEFAULT_GIFT_CARD_SKUS,
        on_answer: Callable[[str, IngestAnswer], None] | None = None,
        on_refused: Refusal | None = None,
        max_age_days: int = DEFAULT_MAX_AGE_DAYS,
        max_future_hours: int = DEFAULT_MAX_FUTURE_HOURS,
    ):
        self.outbox = outbox
        self.derive_stock_from_sales = derive_stock_from_sales
        self.gift_card_skus = frozenset(gift_card_skus)
        self.on_answer = on_answer
        self.on_refused = on_refused
        self.max_age_days = max_age_days
        self.max_future_hours = max_future_hours
        self.closing = False

    def _window(self) -> tuple[datetime, datetime] | None:
        """The ``occurred_at`` window, or None while the clock is not synchronised (contract §1)."""
        if not clock.clock_synced():
            return None
        return time_window(clock.utcnow(), self.max_age_days, self.max_future_hours)

    async def one(self, record_type: str, body: bytes | str | Any, *, till_id: str | None = None) -> IngestAnswer:
        """Ingest one record of ``record_type`` from raw bytes or parsed JSON.

        ``till_id``: the till a per-till token belongs to; a record of another till is refused (403).
        """
        if record_type not in RECORD_TYPES:
            return self._done(
                record_type, validation_answer([{"loc": ["type"], "msg": f"unknown record type {record_type!r}"}])
            )
        try:
            judged = await self._judged(record_type, body)
        except BadInput as exc:
            return self._done(record_type, validation_answer(exc.details))
        foreign = foreign_till(judged.records, till_id)
        if foreign is not None:
            return self._done(record_type, forbidden_answer(foreign))
        answer = await self._store(judged)
        if answer.ok:
            answer.body = answer.results[0].as_json()
        return self._done(record_type, answer)

    async def batch(self, body: bytes | str | Any, *, till_id: str | None = None) -> IngestAnswer:
        """Ingest ``{"sales": [...], "stock_movements": [...], "z_reports": [...]}`` all or nothing.

        ``till_id`` as for ``one``: one record of another till refuses the whole batch.
        """
        try:
            judged = await self._judged(None, body)
        except BadInput as exc:
            return self._done("batch", validation_answer(exc.details))
        foreign = foreign_till(judged.records, till_id)
        if foreign is not None:
            return self._done("batch", forbidden_answer(foreign))
        answer = await self._store(judged)
        if answer.ok:
            answer.body = {"records": [r.as_json() for r in answer.results]}
            answer.status = 200 if all(r.duplicate for r in answer.results) else 201
        return self._done("batch", answer)

    async def _judged(self, record_type: str | None, body: bytes | str | Any) -> _Judged:
        """``_judge`` of ``body``, on a worker thread when it is large (``_off_loop``); raises ``BadInput``.

        The refusals validation reports are collected there and told to
        ``on_refused`` here, on the event loop, in the order they came: the
        reconciler and the metrics it feeds are not thread-safe.
        """
        window = self._window()
        refusals: list[tuple[str, Any, list[dict[str, Any]]]] = []
        try:
            if _off_loop(body):
                return await asyncio.to_thread(self._judge, record_type, body, window, refusals)
            return self._judge(record_type, body, window, refusals)
        finally:
            if self.on_refused is not None:
                for refusal in list(refusals):
                    self.on_refused(*refusal)

    def _judge(
        self,
        record_type: str | None,
        body: bytes | str | Any,
        window: tuple[datetime, datetime] | None,
        refusals: list[tuple[str, Any, list[dict[str, Any]]]],
    ) -> _Judged:
        """Parse, validate and expand ``body`` (one record of ``record_type``, or a batch when None).

        The CPU of an ingest, and nothing else: it touches no shared state but
        ``refusals``, so it may run on a worker thread. Raises ``BadInput``.
        """

        def refused(kind: str, data: Any, details: list[dict[str, Any]]) -> None:
            refusals.append((kind, data, details))

        on_refused = refused if self.on_refused is not None else None
        data = parse_json(body) if isinstance(body, (bytes, str)) else body
        if record_type is None:
            records = validate_batch(data, gift_card_skus=self.gift_card_skus, on_refused=on_refused, window=window)
        else:
            records = [
                validate_one(
                    record_type, data, gift_card_skus=self.gift_card_skus, on_refused=on_refused, window=window
                )
            ]
        expanded: list[Record] = []
        primary: list[int] = []
        for record in records:
            primary.append(len(expanded))
            expanded.append(record)
            if self.derive_stock_from_sales and isinstance(record, Sale):
                expanded.extend(derive_movements(record))
        return _Judged(records, expanded, primary)

    async def _store(self, judged: _Judged) -> IngestAnswer:
        """Enqueue the records plus their derived movements; results for the records only."""
        if self.closing:
            return IngestAnswer(503, {"error": "unavailable", "message": "the agent is shutting down; retry later"})
        try:
            results = await self.outbox.enqueue(judged.expanded)
        except Conflict as exc:
            log.warning("ingest: conflict on %s; the stored original is kept", exc.key)
            return IngestAnswer(409, {"error": "conflict", "key": exc.key, "id": exc.id})
        except Unstorable as exc:
            return validation_answer([{"loc": [], "msg": str(exc)}])
        except StorageFull as exc:
            return IngestAnswer(507, {"error": "storage_full", "message": str(exc)})
        except OutboxUnavailable as exc:
            return IngestAnswer(503, {"error": "unavailable", "message": str(exc)})
        mine = [results[i] for i in judged.primary]
        status = 200 if all(r.duplicate for r in mine) else 201
        return IngestAnswer(status, {}, mine)

    def _done(self, record_type: str, answer: IngestAnswer) -> IngestAnswer:
        if self.on_answer is not None:
            self.on_answer(record_type, answer)
        return answer
