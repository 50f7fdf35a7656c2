"""Canonical JSON: the one spelling of a value that hashes and resends the same.

Sorted keys, no spaces, UTF-8 text (``ensure_ascii=False``). Three things rest
on it being written one way only: a record's digest (``agent.records.digest``,
which decides "identical content" for a natural key), the stored ``data`` text
that the outbox keeps and the http adapter splices into a body unchanged, and
a resent batch being byte for byte the first one (receivers deduplicate on
``Idempotency-Key``). The outbox builds envelopes from stored text without
this function on its hot path (``agent.outbox.envelopes``); its output is
byte for byte what this function gives.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["canonical_bytes", "canonical_json"]


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))
"""Built once: ``json.dumps`` with options builds an encoder per call, and this runs for every record stored."""


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON text (sorted keys, no spaces, non-ASCII kept)."""
    return _ENCODER.encode(value)


def canonical_bytes(value: Any) -> bytes:
    """``canonical_json(value)`` as UTF-8, what goes on the wire."""
    return canonical_json(value).encode("utf-8")
