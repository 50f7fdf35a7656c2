"""Who is posting: the shared ingest token, or one till's own token (contract §2).

A shop with one till keeps ``[ingest] token_file``; a shop with several gives
each till its own ``[[ingest.tills]]`` token, so a till (or whoever read its
token) can only send records of its own ``till_id``. Every token is compared
in constant time, and every configured token is compared on every request, so
the time an answer takes does not tell which token came close.

Wrong tokens are counted per client address (``/metrics``) and limited per
address (``FailedAuthLimit``), so guessing a token from one device on the LAN
is slow and visible, and costs the other tills nothing.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """An authenticated request: ``till_id`` is None for the shared token (or no token configured)."""

    till_id: str | None


def bearer(header: str | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive), or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class TokenCheck:
    """The ingest tokens: the shared one (any till) and each till's own.

    Args:
        shared: ``[ingest] token_file``'s token, or None.
        tills: ``[[ingest.tills]]``: token -> till_id.
    """

    def __init__(self, shared: str | None, tills: dict[str, str] | None = None):
        self.shared = shared
        self.tills = [(token.encode(), till_id) for token, till_id in (tills or {}).items()]

    @property
    def required(self) -> bool:
        """A token is asked for once any is configured (loopback-only agents may run without)."""
        return self.shared is not None or bool(self.tills)

    def caller(self, header: str | None) -> Caller | None:
        """Who sent ``Authorization: header``, or None when the token is missing or wrong."""
        if not self.required:
            return Caller(None)
        token = bearer(header)
        if token is None:
            return None
        given = token.encode()
        found: Caller | None = None
        if self.shared is not None and hmac.compare_digest(given, self.shared.encode()):
            found = Caller(None)
        for expected, till_id in self.tills:
            if hmac.compare_digest(given, expected) and found is None:
                found = Caller(till_id)
        return found


MAX_TRACKED_CLIENTS = 1024
"""Addresses whose failed attempts are remembered; the oldest is forgotten beyond this (bounded memory)."""


class FailedAuthLimit:
    """Failed token attempts per client address: a few per second, the rest answered 429 unread.

    A token bucket per address that only failures drain: ``burst`` wrong tokens
    in a row, then ``per_second``. A till with the right token never drains
    it, and one address guessing tokens never slows another down.

    Args:
        per_second: failed attempts an address may make per second, sustained.
        burst: failed attempts in a row before the limit applies.
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(self, per_second: float = 2.0, burst: int = 10, clock: Callable[[], float] = time.monotonic):
        self.per_second = per_second
        self.burst = float(burst)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _level(self, client: str) -> float:
        found = self._buckets.get(client)
        if found is None:
            return self.burst
        level, at = found
        return min(self.burst, level + (self.clock() - at) * self.per_second)

    def blocked(self, client: str) -> bool:
        """Whether ``client`` used up its failed attempts: answer 429 without reading the token."""
        return self._level(client) < 1.0

    def failed(self, client: str) -> None:
        """Count one failed attempt of ``client``."""
        level = self._level(client) - 1.0
        self._buckets[client] = (level, self.clock())
        self._buckets.move_to_end(client)
        while len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)

    def retry_after_s(self, client: str) -> int:
        """Whole seconds until ``client`` may try again."""
        return max(1, math.ceil((1.0 - self._level(client)) / self.per_second))
