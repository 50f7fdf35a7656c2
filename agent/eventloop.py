"""The event loop the agent runs on: uvloop where it is installed, else asyncio's own.

On this machine uvloop took about a fifth off the agent's CPU per ingest
request (docs/benchmarks.md, "Agent CPU per HTTP ingest request"): the loop's
own work per request (polling, transports, wake-ups from the outbox thread)
is done in C. It has wheels for 64-bit Raspberry Pi OS and x86_64, not for
32-bit Raspberry Pi OS (armv7l), whose bundle leaves it out (deploy/dist.py,
``OPTIONAL``): there the agent runs on asyncio's loop, exactly as before,
only slower. ``KASSABRO_EVENT_LOOP=asyncio`` chooses asyncio's loop anywhere
(for a suspected uvloop problem); ``uvloop`` insists on it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["ENV", "chosen", "run"]

T = TypeVar("T")

ENV = "KASSABRO_EVENT_LOOP"
"""``auto`` (the default: uvloop when installed), ``asyncio`` or ``uvloop``."""


class EventLoopError(RuntimeError):
    """``KASSABRO_EVENT_LOOP`` names a loop that cannot be had."""


def chosen() -> str:
    """``uvloop`` or ``asyncio``: the loop ``run`` will use, after ``KASSABRO_EVENT_LOOP``.

    Raises:
        EventLoopError: the variable says ``uvloop`` and it is not installed, or holds something else.
    """
    wanted = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "asyncio", "uvloop"):
        raise EventLoopError(f"{ENV}={wanted!r}: use auto, asyncio or uvloop")
    if wanted == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if wanted == "uvloop":
            raise EventLoopError(f"{ENV}=uvloop, but uvloop is not installed (no wheel for this Pi?)") from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the ``chosen`` loop."""
    if chosen() == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
