"""The service's notion of now. One object per app, so tests can move time forward."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class Clock:
    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        """Only tests call this: it moves this process's clock, nothing else."""
        self.offset += delta
