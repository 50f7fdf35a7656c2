"""Secrets taken out of error texts before anyone sees them (issue 11).

An httpx or aiomqtt error quotes the URL it failed on, and a destination URL
may carry ``user:password@`` or ``?api_key=...``. Every error text that is
stored (``last_error``, shown on the page, in ``/api/status`` and
``kassabro status``) or logged goes through ``redact`` first.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "redact"]

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_SECRET_PARAM = re.compile(
    r"(?P<name>[?&;](?:api[_-]?key|apikey|access[_-]?token|token|key|secret|password|passwd|pw|auth|signature|sig)=)"
    r"[^&;#\s'\"]*",
    re.IGNORECASE,
)
MASK = "***"


def redact(text: str) -> str:
    """``text`` with URL credentials and secret-looking query parameters replaced by ``***``."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group('name')}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A handler filter: each record's message (arguments applied) redacted before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg = cleaned
            record.args = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
