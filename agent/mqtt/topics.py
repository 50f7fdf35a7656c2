"""The topic names of one store under one prefix (docs/mqtt.md lists them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Every topic the agent publishes or subscribes to, in one place.

    Args:
        prefix: the destination's ``topic_prefix``.
        store_id: the store; the level below the prefix.
    """

    prefix: str
    store_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.store_id}"

    def record(self, record_type: str) -> str:
        """Where records of ``record_type`` are published: ``{prefix}/{store}/{type}``."""
        return f"{self.base}/{record_type}"

    @property
    def status(self) -> str:
        """The retained presence and backlog JSON."""
        return f"{self.base}/status"

    def ingest(self, record_type: str) -> str:
        """Where a till publishes one record of ``record_type`` for the agent to take in."""
        return f"{self.base}/ingest/{record_type}"

    @property
    def rejected(self) -> str:
        """Where the agent answers an ingest message it did not store."""
        return f"{self.base}/ingest/rejected"
