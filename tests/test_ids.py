"""Record and batch ids: canonical UUIDv7 strings, ordered by time, never repeated."""

from __future__ import annotations

import time
import uuid

from agent.ids import uuid7, uuid7_many


def test_uuid7_is_the_canonical_string_of_a_version_7_rfc_uuid() -> None:
    for _ in range(2000):
        text = uuid7()
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # lower-case hex, 8-4-4-4-12
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_uuid7_carries_the_time_in_milliseconds_and_sorts_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = uuid7()
    time.sleep(0.003)
    second = uuid7()
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(first).int >> 80 <= uuid.UUID(second).int >> 80 <= after
    assert first < second


def test_uuid7_does_not_repeat() -> None:
    ids = [uuid7() for _ in range(20000)]
    assert len(set(ids)) == len(ids)


def test_uuid7_many_gives_as_many_distinct_version_7_ids_of_now() -> None:
    before = time.time_ns() // 1_000_000
    ids = uuid7_many(5000)
    after = time.time_ns() // 1_000_000
    assert len(ids) == len(set(ids)) == 5000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert before <= parsed.int >> 80 <= after
