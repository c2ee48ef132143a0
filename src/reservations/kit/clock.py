"""The service's notion of now. One object per app, so tests can move time forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)
        self.frozen: datetime | None = None

    def now(self) -> datetime:
        if self.frozen is not None:
            return self.frozen
        return datetime.now(UTC) + self.offset

    def freeze(self, at: datetime) -> None:
        """Only tests call this: now is `at` until `reset` (a boundary to the microsecond)."""
        self.frozen = at

    def reset(self) -> None:
        self.offset = timedelta(0)
        self.frozen = None

    def advance(self, delta: timedelta) -> None:
        """Only tests call this: it moves this process's clock, nothing else."""
        self.offset += delta
