"""Record and batch ids: UUIDv7 (RFC 9562), time-ordered and random.

Python 3.11 has no ``uuid.uuid7``. The time part only helps humans and index
locality; uniqueness comes from the 74 random bits, so a Pi whose clock jumps
back after boot (no battery clock) still never repeats an id.
"""

from __future__ import annotations

import os
import time


def uuid7() -> str:
    """A new UUIDv7 as its canonical string."""
    return _format(time.time_ns() // 1_000_000, os.urandom(10))


def uuid7_many(count: int) -> list[str]:
    """``count`` new UUIDv7s, their random bits drawn from the kernel in one call.

    A group commit needs an id per new record; one ``getrandom`` per id was a
    visible share of the outbox thread's CPU (a system call each).
    """
    ms = time.time_ns() // 1_000_000
    pool = os.urandom(10 * count)
    return [_format(ms, pool[start : start + 10]) for start in range(0, 10 * count, 10)]


def _format(ms: int, random10: bytes) -> str:
    rand = int.from_bytes(random10, "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    # What str(uuid.UUID(int=value)) gives, without building a UUID object: an id
    # is made for every record stored, on the outbox thread's hot path.
    hexed = f"{value:032x}"
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
