"""Half-open time spans `[start, end)` and the set operations availability is built from.

A span list is *normalized* when it is sorted, non-empty spans only, and no two spans touch
or overlap. Every function here takes and returns normalized lists (pure, no I/O)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import datetime

Span = tuple[datetime, datetime]


def normalize(spans: Iterable[Span]) -> list[Span]:
    """Sort and merge overlapping or touching spans; drop empty ones."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def intersect(a: list[Span], b: list[Span]) -> list[Span]:
    out: list[Span] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i][0], b[j][0])
        end = min(a[i][1], b[j][1])
        if start < end:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: list[Span], b: list[Span]) -> list[Span]:
    out: list[Span] = []
    j = 0
    for start, end in a:
        cur = start
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


def clip(spans: list[Span], start: datetime, end: datetime) -> list[Span]:
    return intersect(spans, [(start, end)]) if start < end else []


def covering(spans: list[Span], start: datetime, end: datetime) -> Span | None:
    """The span that contains all of [start, end), if any."""
    i = bisect_right(spans, (start, datetime.max.replace(tzinfo=start.tzinfo))) - 1
    if i >= 0 and spans[i][0] <= start and end <= spans[i][1]:
        return spans[i]
    return None


def overlapping(spans: list[Span], start: datetime, end: datetime) -> list[Span]:
    """The spans that share an instant with [start, end)."""
    return [s for s in spans if s[0] < end and start < s[1]]
