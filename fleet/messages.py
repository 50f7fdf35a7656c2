"""What one message of the chain's stream is: a record, a shop's status, or unreadable.

The agent's ``mqtt`` destination publishes each record's envelope (contract §1)
on ``{prefix}/{store}/{type}`` and its retained status on
``{prefix}/{store}/status`` (docs/mqtt.md); through NATS's MQTT gateway these
are the subjects ``{prefix}.{store}.{type}`` and ``{prefix}.{store}.status``.
Parsing never raises: whatever cannot be read becomes ``Unreadable`` and is kept
for a person, so a poison message never blocks the ones after it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from agent.records import RECORD_MODELS, Record, RecordValidationError, parse_record

__all__ = ["Message", "RecordRow", "StatusRow", "Unreadable", "parse"]

STATUS = "status"


@dataclass(frozen=True)
class RecordRow:
    """One envelope, as stored."""

    id: str
    key: str
    type: str
    store_id: str
    seq: int
    received_at: str | None
    clock_synced: bool
    data: dict[str, Any]
    stream_seq: int
    record: Record | None
    """The validated model, for the types ``agent.records`` knows; None for others (kept as ``data``)."""


@dataclass(frozen=True)
class StatusRow:
    """One retained status message of a shop (``{"online": false}`` when it is the will)."""

    store_id: str
    online: bool
    payload: dict[str, Any]
    stream_seq: int
    stream_time: datetime


@dataclass(frozen=True)
class Unreadable:
    """A message that is neither; kept whole with the reason."""

    subject: str
    payload: bytes
    error: str
    stream_seq: int


Message = RecordRow | StatusRow | Unreadable


def parse(subject: str, payload: bytes, *, prefix: str, stream_seq: int, stream_time: datetime) -> Message:
    """Turn one stream message into what it means.

    Args:
        subject: the NATS subject, ``{prefix}.{store}.{type}``.
        payload: the message body.
        prefix: the subject prefix (the agents' ``topic_prefix`` with ``/`` as ``.``).
        stream_seq: the message's sequence in the stream (orders status updates).
        stream_time: when the cluster stored it.
    """

    def unreadable(error: str) -> Unreadable:
        return Unreadable(subject, payload, error, stream_seq)

    head = prefix + "."
    if not subject.startswith(head):
        return unreadable(f"subject is not under {prefix}")
    parts = subject[len(head) :].split(".")
    if len(parts) != 2:
        return unreadable("subject is not {prefix}.{store}.{type}")
    store_id, kind = parts
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return unreadable(f"not JSON: {exc}")
    if not isinstance(body, dict):
        return unreadable("not a JSON object")
    if kind == STATUS:
        online = body.get("online")
        if not isinstance(online, bool):
            return unreadable("status without a boolean 'online'")
        return StatusRow(store_id, online, body, stream_seq, stream_time)
    return _record(body, store_id, kind, stream_seq, unreadable)


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _record(
    body: dict[str, Any], store_id: str, kind: str, stream_seq: int, unreadable: Callable[[str], Unreadable]
) -> Message:
    """The envelope, if ``body`` is one that belongs on this subject and its data is a valid record.

    The agent validated the record at ingest; validating again with the same
    models (``agent.records``) means a row in PostgreSQL always has the typed
    columns its table promises, and a forged or garbled message is set aside
    instead of failing the whole batch's transaction.
    """
    ok = (
        _is_uuid(body.get("id"))
        and isinstance(body.get("key"), str)
        and body.get("type") == kind
        and body.get("store_id") == store_id
        and isinstance(body.get("seq"), int)
        and isinstance(body.get("clock_synced"), bool)
        and isinstance(body.get("data"), dict)
    )
    if not ok:
        return unreadable("not an envelope: needs a UUID id, key, type, store_id, seq, clock_synced and an object data")
    record: Record | None = None
    if kind in RECORD_MODELS:
        try:
            record = parse_record(kind, body["data"])
        except RecordValidationError as exc:
            return unreadable(str(exc))
        if record.key != body["key"]:
            return unreadable(f"key {body['key']!r} does not match the data's {record.key!r}")
    received_at = body.get("received_at")
    return RecordRow(
        id=body["id"],
        key=body["key"],
        type=kind,
        store_id=store_id,
        seq=body["seq"],
        received_at=received_at if isinstance(received_at, str) else None,
        clock_synced=body["clock_synced"],
        data=body["data"],
        stream_seq=stream_seq,
        record=record,
    )
