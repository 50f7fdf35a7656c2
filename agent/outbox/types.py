"""Plain value types the outbox hands out, shared with sources and destinations."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Envelope = dict[str, Any]
"""One record as every destination receives it (contract §1, "the envelope")."""


class BatchKind(StrEnum):
    """How a frozen batch came to be (the ``batches.kind`` column holds the value)."""

    NORMAL = "normal"
    """Cut from the records after the destination's ``claimed_seq``."""
    SPLIT = "split"
    """A half of a refused batch, on the way to finding the refused record."""
    REPLAY = "replay"
    """Dead letters sent again (``kassabro dead-letters --retry``, the page's button)."""


@dataclass(frozen=True)
class EnqueueResult:
    """The answer to one stored (or already stored) record."""

    id: str
    key: str
    seq: int
    duplicate: bool

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "seq": self.seq, "duplicate": self.duplicate}


@dataclass(frozen=True)
class Origin:
    """What a record carried over from another outbox file keeps: its id, reception time and clock flag."""

    id: str
    received_at: str
    clock_synced: bool


class _Records:
    """``Batch.records``: given, or decoded from ``Batch.encoded`` on first read.

    The outbox hands the http adapter batches whose envelopes are already the
    canonical JSON it sends (``encoded``); decoding 500 envelopes that
    nobody reads would cost a third of a drained batch's CPU. Other adapters
    read ``records`` as before and get the decoded envelopes (once, then kept).
    Constructing ``Batch(..., records=[...])`` directly works as it always did.
    """

    _NOT_GIVEN: Any = None

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self._NOT_GIVEN  # the dataclass default: decode from ``encoded``
        value = obj.__dict__["_records"]
        if value is None:
            value = [json.loads(text) for text in obj.__dict__["encoded"]]
            obj.__dict__["_records"] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__["_records"] = value


@dataclass(frozen=True)
class Batch:
    """A frozen batch: its id and members were committed before it is first sent.

    A resend after a crash or a retryable failure carries the same ``batch_id``
    and exactly the same ``records``, so a receiver can deduplicate on
    ``Idempotency-Key``.

    ``encoded`` (from the outbox) holds each envelope as canonical JSON
    (UTF-8 bytes, keys sorted, no spaces), built from the stored record the
    same way on every resend; ``records`` is then decoded from it only if read.
    ``record_ids`` (from the outbox) are the members' ids, so ``ids`` needs no
    decoding either.
    """

    batch_id: str
    destination: str
    records: list[Envelope] = _Records()  # type: ignore[assignment]
    attempts: int = 0
    kind: BatchKind = BatchKind.NORMAL
    created_at: str = ""
    encoded: tuple[bytes, ...] = ()
    record_ids: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        if self.record_ids:
            return list(self.record_ids)
        return [r["id"] for r in self.records]

    @property
    def size(self) -> int:
        """How many records the batch holds (without decoding ``encoded``)."""
        return len(self.record_ids) if self.record_ids else len(self.records)

    @property
    def first_seq(self) -> int:
        return int(self.records[0]["seq"])

    @property
    def last_seq(self) -> int:
        return int(self.records[-1]["seq"])


@dataclass
class DeadLetter:
    """A record a destination permanently refused: kept, visible, replayable."""

    destination: str
    seq: int
    record_id: str
    key: str
    status: int | None
    error: str
    created_at: str
    state: str = "dead"  # dead | retrying
    extra: dict[str, Any] = field(default_factory=dict)
