"""Wall-clock helpers, and whether the clock can be trusted.

A Raspberry Pi has no battery-backed clock: after a power cut it boots with the
last saved time until NTP answers. Records carry ``clock_synced`` so a reader
knows when ``received_at`` is a guess; ordering always uses ``seq``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import time
from typing import Any

_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>; only the leading fields are read, the
    # tail is padding large enough for every libc layout.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("_pad", ctypes.c_byte * 256),
    ]


def _load_adjtimex() -> Any:
    """libc's ``adjtimex``, or None where there is none (not Linux): ctypes functions are untyped."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.adjtimex
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.POINTER(_Timex)]
    fn.restype = ctypes.c_int
    return fn


_adjtimex = _load_adjtimex()
_cache: tuple[float, bool] = (0.0, False)


def clock_synced(max_age_s: float = 30.0) -> bool:
    """Whether the kernel says the clock is NTP-synchronised (cached briefly).

    Reads ``adjtimex(2)`` with no modes set (read-only, no privilege needed):
    synchronised unless it returns TIME_ERROR or sets STA_UNSYNC.
    """
    global _cache
    now = time.monotonic()
    if now - _cache[0] < max_age_s and _cache[0]:
        return _cache[1]
    synced = False
    if _adjtimex is not None:
        tx = _Timex()
        state = _adjtimex(ctypes.byref(tx))
        synced = state >= 0 and state != _TIME_ERROR and not (tx.status & _STA_UNSYNC)
    _cache = (now, synced)
    return synced


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_now() -> str:
    """Now as RFC 3339 UTC with milliseconds, e.g. ``2026-11-26T13:59:01.120Z``."""
    return iso(utcnow())


def iso_at(epoch: float) -> str:
    """``iso_now()`` for a moment given as a Unix time (from an injected clock such as ``time.time``)."""
    return iso(dt.datetime.fromtimestamp(epoch, dt.UTC))


def iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def age_s(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds since an ISO time we wrote, never negative; None for None."""
    if not value:
        return None
    current = now or utcnow()
    return max(0.0, (current - parse_iso(value)).total_seconds())
