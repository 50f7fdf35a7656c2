"""The outbox's error tree, and the one place a SQLite failure is translated into it.

Callers (ingest answering 507/503, a delivery loop backing off, the CLI) only
ever see ``OutboxError`` and its subclasses; a raw ``sqlite3.Error`` never
leaves the outbox. ``storage_error`` is the single mapping: a full disk
becomes ``StorageFull`` (HTTP 507, contract §2), anything else
``OutboxUnavailable`` (503).
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "Conflict",
    "OutboxError",
    "OutboxUnavailable",
    "StorageFull",
    "UnknownDestination",
    "Unstorable",
    "is_disk_full",
    "storage_error",
]

_SQLITE_FULL = 13
DISK_FULL = "the disk holding the outbox is full"
"""The 507 wording for a full disk (docs/ingest-api.md); the other is the ``max_bytes`` limit's."""


class OutboxError(Exception):
    """Base of the outbox's errors."""


class Conflict(OutboxError):
    """The natural key is stored with other content; the original is kept.

    Attributes:
        key: the natural key.
        id: the id of the record already stored under that key.
    """

    def __init__(self, key: str, stored_id: str):
        super().__init__(f"{key} is already stored with different content")
        self.key = key
        self.id = stored_id


class StorageFull(OutboxError):
    """The disk or the configured outbox size limit is full; nothing was stored."""


class Unstorable(OutboxError):
    """A record that validated but cannot be stored (it has no UTF-8 or JSON form); refused alone (422).

    Attributes:
        key: the record's natural key.
    """

    def __init__(self, key: str, reason: str):
        super().__init__(f"the record {key} cannot be stored: {reason}")
        self.key = key


class OutboxUnavailable(OutboxError):
    """The outbox cannot be written right now (I/O error, closed, shutting down)."""


class UnknownDestination(OutboxError):
    """No destination of that name is configured."""


def is_disk_full(exc: sqlite3.Error) -> bool:
    """Whether SQLite failed because the disk (or the file system's quota) is full.

    The extended error code when this Python exposes it (3.11 does), else the
    message, which is all older builds give.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return True
    return "full" in str(exc).lower()


def storage_error(exc: sqlite3.Error) -> OutboxError:
    """The outbox error a caller sees for a failed SQLite write."""
    if is_disk_full(exc):
        return StorageFull(DISK_FULL)
    return OutboxUnavailable(f"the outbox could not be written: {exc}")
