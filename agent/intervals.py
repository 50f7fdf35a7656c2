"""A set of integers kept as sorted, disjoint, inclusive ranges.

Receipt numbers run 1, 2, 3, ... per till, so the numbers seen over years fit
in a handful of ranges; a gap is the space between two of them. Reconciliation
(``agent.reconcile``) keeps one ``Intervals`` per till and one per Z-report.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator


class Intervals:
    """Sorted, disjoint, non-adjacent ``[lo, hi]`` ranges of integers.

    Args:
        ranges: initial ranges (any order, may overlap).
    """

    __slots__ = ("_his", "_los")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        for lo, hi in ranges:
            self.add_range(lo, hi)

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        index = bisect.bisect_right(self._los, number) - 1
        return index >= 0 and self._his[index] >= number

    def __len__(self) -> int:
        """How many numbers the set holds."""
        return sum(hi - lo + 1 for lo, hi in zip(self._los, self._his, strict=True))

    def __bool__(self) -> bool:
        return bool(self._los)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Intervals) and self.ranges() == other.ranges()

    def __repr__(self) -> str:
        return f"Intervals({self.ranges()!r})"

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    @property
    def low(self) -> int | None:
        return self._los[0] if self._los else None

    @property
    def high(self) -> int | None:
        return self._his[-1] if self._his else None

    def add(self, number: int) -> bool:
        """Add one number; True when it was not in the set yet."""
        if self._his and number == self._his[-1] + 1:  # the usual case: the next receipt
            self._his[-1] = number
            return True
        if number in self:
            return False
        self.add_range(number, number)
        return True

    def add_range(self, lo: int, hi: int) -> None:
        """Add every number of ``lo..hi`` (inclusive), merging touching ranges."""
        if hi < lo:
            return
        start = bisect.bisect_left(self._his, lo - 1)
        end = bisect.bisect_right(self._los, hi + 1)
        if start < end:
            lo = min(lo, self._los[start])
            hi = max(hi, self._his[end - 1])
        self._los[start:end] = [lo]
        self._his[start:end] = [hi]

    def count_within(self, lo: int, hi: int) -> int:
        """How many numbers of ``lo..hi`` are in the set."""
        return sum(min(h, hi) - max(l_, lo) + 1 for l_, h in self._overlapping(lo, hi))

    def missing(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        """The ranges of ``lo..hi`` that are not in the set, in order."""
        at = lo
        for l_, h in self._overlapping(lo, hi):
            if l_ > at:
                yield at, l_ - 1
            at = h + 1
        if at <= hi:
            yield at, hi

    def _overlapping(self, lo: int, hi: int) -> Iterator[tuple[int, int]]:
        start = max(0, bisect.bisect_right(self._los, lo) - 1)
        for index in range(start, len(self._los)):
            l_, h = self._los[index], self._his[index]
            if l_ > hi:
                break
            if h >= lo:
                yield l_, h


def first_numbers(ranges: Iterable[tuple[int, int]], limit: int) -> list[int]:
    """The first ``limit`` numbers of ``ranges``, in order."""
    out: list[int] = []
    for lo, hi in ranges:
        for number in range(lo, hi + 1):
            if len(out) >= limit:
                return out
            out.append(number)
    return out
