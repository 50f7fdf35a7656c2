"""Plain value types the outbox hands out, shared with sources and destinations."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Envelope = dict[str, Any]
"""One record as every destination receives it (contract §1, "the envelope")."""


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
class Batch:
    """A frozen batch: its id and members were committed before it is first sent.

    A resend after a crash or a retryable failure carries the same ``batch_id``
    and exactly the same ``records``, so a receiver can deduplicate on
    ``Idempotency-Key``.
    """

    batch_id: str
    destination: str
    records: list[Envelope]
    attempts: int = 0
    kind: str = "normal"  # normal | split | replay
    created_at: str = ""

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.records]

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
