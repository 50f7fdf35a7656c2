"""How a stored record becomes the envelope a destination receives (contract §1).

Two shapes of one thing: the decoded envelope (a dict, for the CLI, the
status API and adapters that read fields) and the envelope as canonical JSON
bytes, built from the stored ``data`` text without decoding it (the http
adapter splices these into a body; decoding 500 envelopes nobody reads would
cost a third of a drained batch's CPU). Both come from rows of the
``MEMBER`` columns, read as plain tuples.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from json.encoder import encode_basestring
from typing import Any

from agent.canonical import canonical_bytes
from agent.outbox.types import Batch, BatchKind, Envelope

__all__ = ["MEMBER", "MEMBER_R", "batch_from_rows", "envelope", "envelope_json", "member_envelope", "member_rows"]

MEMBER = "seq, id, key, type, received_at, clock_synced, digest, data"
"""The columns ``envelope_json`` and ``member_envelope`` take, in this order."""
MEMBER_R = ", ".join(f"r.{column}" for column in MEMBER.split(", "))
"""``MEMBER`` qualified by the ``records r`` alias, for joins."""

MemberRow = tuple[Any, ...]
"""A row of the ``MEMBER`` columns: ``seq, id, key, type, received_at, clock_synced, digest, data``."""

_YIELD_EVERY = 64
"""Envelopes built between two offers of the GIL to other threads (about 0.3 ms)."""
_HEAD = {True: b'{"clock_synced":true,"data":', False: b'{"clock_synced":false,"data":'}


def member_rows(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> list[MemberRow]:
    """Rows of ``MEMBER`` columns as plain tuples: ``sqlite3.Row`` costs more than the JSON here."""
    cursor = conn.cursor()
    cursor.row_factory = None
    try:
        rows: list[MemberRow] = cursor.execute(sql, args).fetchall()
        return rows
    finally:
        cursor.close()


def envelope_json(row: MemberRow, store_id_json: str) -> bytes:
    """The envelope of a ``MEMBER`` row as canonical JSON (UTF-8, keys sorted, no spaces).

    Byte for byte what ``canonical_bytes(envelope)`` gives, built from
    the stored ``data`` text without decoding it. The stored text is canonical
    when its SHA-256 is the record's digest (every record stored since the
    outbox keeps canonical text); an older record's text is canonicalised
    here, so a batch is the same bytes on every resend either way. The text
    columns are NOT NULL TEXT, so each is a ``str`` that ``encode_basestring``
    (what ``json.dumps(..., ensure_ascii=False)`` uses for strings) writes.
    Bytes, not str: the UTF-8 of ``data`` is needed for the check anyway, and
    the delivery loop then joins bytes instead of encoding a 330 KB body.

    Args:
        row: ``seq, id, key, type, received_at, clock_synced, digest, data``.
        store_id_json: the store id, already a JSON string.
    """
    seq, record_id, key, record_type, received_at, synced, stored_digest, data = row
    raw: bytes = data.encode("utf-8")
    if hashlib.sha256(raw).hexdigest() != stored_digest:
        raw = canonical_bytes(json.loads(data))
    tail = (
        f',"id":{encode_basestring(record_id)},"key":{encode_basestring(key)},'
        f'"received_at":{encode_basestring(received_at)},"seq":{int(seq)},"store_id":{store_id_json},'
        f'"type":{encode_basestring(record_type)}}}'
    )
    return _HEAD[bool(synced)] + raw + tail.encode("utf-8")


def member_envelope(row: MemberRow, store_id: str) -> Envelope:
    """The envelope (decoded) of a ``MEMBER`` row, as ``envelope`` gives it."""
    seq, record_id, key, record_type, received_at, synced, _, data = row
    return {
        "id": record_id,
        "key": key,
        "type": record_type,
        "store_id": store_id,
        "seq": seq,
        "received_at": received_at,
        "clock_synced": bool(synced),
        "data": json.loads(data),
    }


def envelope(row: sqlite3.Row, store_id: str) -> Envelope:
    """The envelope (decoded) of a ``records`` row read by column name."""
    return {
        "id": row["id"],
        "key": row["key"],
        "type": row["type"],
        "store_id": store_id,
        "seq": row["seq"],
        "received_at": row["received_at"],
        "clock_synced": bool(row["clock_synced"]),
        "data": json.loads(row["data"]),
    }


def batch_from_rows(
    batch_id: str,
    name: str,
    rows: Sequence[MemberRow],
    *,
    store_id: str,
    attempts: int,
    kind: BatchKind,
    created_at: str,
) -> Batch:
    """A ``Batch`` whose envelopes are canonical JSON (UTF-8); ``records`` decodes them if read."""
    store_id_json = encode_basestring(store_id)
    encoded: list[bytes] = []
    for start in range(0, len(rows), _YIELD_EVERY):
        if start:
            # Pure Python for a while: let the delivery loop's thread take the
            # GIL now (an answer to handle) instead of after the 5 ms switch interval.
            time.sleep(0)
        encoded.extend(envelope_json(row, store_id_json) for row in rows[start : start + _YIELD_EVERY])
    return Batch(
        batch_id=batch_id,
        destination=name,
        attempts=attempts,
        kind=kind,
        created_at=created_at,
        encoded=tuple(encoded),
        record_ids=tuple(row[1] for row in rows),
    )
