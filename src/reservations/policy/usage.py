"""Capacity in use over time: the arithmetic the capacity rule is decided with, by the
pre-checks of a booking (reservations/conflicts.py) and by availability (availability/)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from reservations.kit.spans import Span, normalize


@dataclass(frozen=True, slots=True)
class Busy:
    """A live reservation as the constraint sees it: its range widened by buffers."""

    start: datetime
    end: datetime
    quantity: int = 1


class Usage:
    """How many units are in use, as a step function over [lo, hi)."""

    def __init__(self, busy: Sequence[Busy], lo: datetime, hi: datetime) -> None:
        deltas: dict[datetime, int] = {lo: 0}
        for b in busy:
            start, end = max(b.start, lo), min(b.end, hi)
            if start < end:
                deltas[start] = deltas.get(start, 0) + b.quantity
                deltas[end] = deltas.get(end, 0) - b.quantity
        self.times: list[datetime] = []
        self.used: list[int] = []
        running = 0
        for t in sorted(deltas):
            running += deltas[t]
            if t >= hi:
                break
            if self.used and self.used[-1] == running:
                continue
            self.times.append(t)
            self.used.append(running)
        self.hi = hi

    def steps(self) -> list[tuple[datetime, datetime, int]]:
        ends = [*self.times[1:], self.hi]
        return list(zip(self.times, ends, self.used, strict=True))

    def peak(self, start: datetime, end: datetime) -> int:
        i = max(bisect_right(self.times, start) - 1, 0)
        top = 0
        while i < len(self.times) and self.times[i] < end:
            top = max(top, self.used[i])
            i += 1
        return top

    def room_for(self, capacity: int, quantity: int) -> list[Span]:
        return normalize((a, b) for a, b, u in self.steps() if u + quantity <= capacity)

    def full_for(self, capacity: int, quantity: int) -> list[Span]:
        return normalize((a, b) for a, b, u in self.steps() if u + quantity > capacity)
