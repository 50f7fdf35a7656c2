"""Who is posting: the shared ingest token, or one till's own token (contract §2).

A shop with one till keeps ``[ingest] token_file``; a shop with several gives
each till its own ``[[ingest.tills]]`` token, so a till (or whoever read its
token) can only send records of its own ``till_id``. Every token is compared
in constant time, and every configured token is compared on every request, so
the time an answer takes does not tell which token came close.
"""

from __future__ import annotations

import hmac
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
