"""Hypothesis strategies for booking policies, and a brute-force model of what they allow.

The model reads the raw policy values the strategy drew (not `Policy.hours_on`, not the span
arithmetic) and decides minute by minute with zoneinfo. Every boundary the strategies draw is
a whole minute and every zone used has whole-minute offsets, so sampling minutes is exact."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from reservations.policy.model import Policy

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
WEEKDAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
    "Pacific/Chatham",
    "Pacific/Apia",
]


def wall_of(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


def wall_minute(instant: datetime, zone: str) -> tuple[date, int, int]:
    """Local date, minutes after local midnight, and seconds of the wall clock."""
    w = wall_of(instant, zone)
    return w.date(), w.hour * 60 + w.minute, w.second


def floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def minutes_touching(start: datetime, end: datetime) -> list[datetime]:
    """The whole minutes [m, m+1) that share an instant with [start, end)."""
    out = []
    t = floor_minute(start)
    while t < end:
        out.append(t)
        t += MINUTE
    return out


@cache
def transition_days(zone: str, year: int) -> tuple[date, ...]:
    """Local dates in `year` on which the zone's UTC offset changes (looked up in zoneinfo)."""
    tz = ZoneInfo(zone)
    out = []
    d = date(year, 1, 1)
    while d.year == year:
        a = datetime.combine(d, time(), UTC)
        if (a - DAY).astimezone(tz).utcoffset() != (a + DAY).astimezone(tz).utcoffset():
            out.append(d)
        d += DAY
    return tuple(out)


def hhmm(m: int) -> str:
    return "24:00" if m == 1440 else f"{m // 60:02d}:{m % 60:02d}"


@dataclass
class Model:
    """The raw values a policy was built from, in plain Python."""

    weekly: dict[int, list[tuple[int, int]]] | None
    overrides: dict[date, list[tuple[int, int]]]
    blackouts: list[tuple[datetime, datetime]]
    buffer_before: timedelta = timedelta(0)
    buffer_after: timedelta = timedelta(0)
    min_duration: timedelta | None = None
    max_duration: timedelta | None = None
    grid: int | None = None
    min_notice: timedelta | None = None
    max_advance: timedelta | None = None
    raw: dict[str, object] = field(default_factory=dict)

    def policy(self) -> Policy:
        return Policy.model_validate(self.raw)

    def open_at(self, zone: str, t: datetime) -> bool:
        day, m, _ = wall_minute(t, zone)
        if day in self.overrides:
            hours: list[tuple[int, int]] | None = self.overrides[day]
        elif self.weekly is None:
            hours = None
        else:
            hours = self.weekly.get(day.weekday(), [])
        return hours is None or any(a <= m < b for a, b in hours)

    def blacked_out_at(self, t: datetime) -> bool:
        return any(a <= t < b for a, b in self.blackouts)

    def violations(self, zone: str, start: datetime, end: datetime, now: datetime) -> set[str]:
        """The reasons rules.check should give, decided minute by minute."""
        out = set()
        if self.min_duration is not None and end - start < self.min_duration:
            out.add("too-short")
        if self.max_duration is not None and end - start > self.max_duration:
            out.add("too-long")
        if self.grid is not None:
            _, m, s = wall_minute(start, zone)
            if s or start.microsecond or m % self.grid:
                out.add("off-grid")
        if start < now:
            out.add("in-the-past")
        elif self.min_notice is not None and start < now + self.min_notice:
            out.add("too-soon")
        if self.max_advance is not None and start > now + self.max_advance:
            out.add("too-far-ahead")
        minutes = minutes_touching(start, end)
        if not minutes or not all(self.open_at(zone, t) for t in minutes):
            out.add("outside-opening-hours")
        if any(self.blacked_out_at(t) for t in minutes):
            out.add("in-blackout")
        return out


def _intervals(
    max_intervals: int, min_intervals: int = 0
) -> st.SearchStrategy[list[tuple[int, int]]]:
    # Mostly quarter hours, sometimes any 5 minutes; sorted, so the pairs never overlap
    # (they may touch, which the policy allows).
    point = st.integers(0, 96).map(lambda k: k * 15) | st.integers(0, 288).map(lambda k: k * 5)

    def pairs(values: list[int]) -> list[tuple[int, int]]:
        values = sorted(values)
        return [
            (values[i], values[i + 1])
            for i in range(0, len(values) - 1, 2)
            if values[i] < values[i + 1]
        ]

    return st.lists(point, min_size=2 * min_intervals, max_size=2 * max_intervals).map(pairs)


def _iso(d: timedelta) -> str:
    return f"PT{int(d.total_seconds()) // 60}M"


@st.composite
def models(
    draw: st.DrawFn,
    *,
    window_start: datetime,
    days: list[date],
    simple: bool = False,
) -> Model:
    """A random policy around a window. `simple` leaves out notice, advance, durations."""
    weekly = draw(
        st.none()
        | st.dictionaries(st.integers(0, 6), _intervals(3, min_intervals=1), min_size=4)
        | st.just({i: [(0, 1440)] for i in range(7)})
    )
    # An override with no hours closes the day: a third of them do.
    special_hours = st.sampled_from([1, 1, 0]).flatmap(lambda k: _intervals(2, min_intervals=k))
    overrides = draw(st.dictionaries(st.sampled_from(days), special_hours, max_size=2))
    blackouts = [
        (window_start + k * 5 * MINUTE, window_start + (k + n) * 5 * MINUTE)
        for k, n in draw(st.lists(st.tuples(st.integers(-60, 600), st.integers(1, 36)), max_size=2))
    ]
    mins = st.sampled_from([15, 30, 45, 60, 90, 120, 240]).map(lambda m: m * MINUTE)
    buffers = st.sampled_from([0, 0, 5, 15, 30, 60]).map(lambda m: m * MINUTE)
    model = Model(
        weekly=weekly,
        overrides=overrides,
        blackouts=blackouts,
        buffer_before=draw(buffers),
        buffer_after=draw(buffers),
        grid=draw(st.none() | st.sampled_from([5, 7, 10, 15, 20, 30, 45, 60, 90, 1440])),
    )
    if not simple:
        # Each limit is left out more often than not, so that most examples still offer slots.
        rarely = st.sampled_from([False, False, True])
        lo = draw(mins) if draw(rarely) else None
        hi = draw(mins) if draw(rarely) else None
        if lo is not None and hi is not None and hi < lo:
            lo, hi = hi, lo
        model.min_duration, model.max_duration = lo, hi
        notice = st.sampled_from([0, 30, 60, 125, 600, 1440]).map(lambda m: m * MINUTE)
        advance = st.sampled_from([60, 600, 1440, 2880, 10080]).map(lambda m: m * MINUTE)
        model.min_notice = draw(notice) if draw(rarely) else None
        model.max_advance = draw(advance) if draw(rarely) else None
    raw: dict[str, object] = {
        "date_overrides": [
            {"date": d.isoformat(), "hours": [{"start": hhmm(a), "end": hhmm(b)} for a, b in h]}
            for d, h in overrides.items()
        ],
        "blackouts": [
            {"start": a, "end": b, "reason": f"blackout {i}"} for i, (a, b) in enumerate(blackouts)
        ],
        "buffer_before": _iso(model.buffer_before),
        "buffer_after": _iso(model.buffer_after),
        "slot_grid_minutes": model.grid,
    }
    if weekly is not None:
        raw["weekly_hours"] = {
            WEEKDAY_NAMES[i]: [{"start": hhmm(a), "end": hhmm(b)} for a, b in h]
            for i, h in weekly.items()
        }
    for name in ("min_duration", "max_duration", "min_notice", "max_advance"):
        value = getattr(model, name)
        if value is not None:
            raw[name] = _iso(value)
    model.raw = raw
    return model


@st.composite
def windows(draw: st.DrawFn, zones: list[str] = ZONES) -> tuple[str, datetime, list[date]]:
    """A zone, a whole-minute instant near one of its 2026 transitions (or any 2026 day), and
    the local dates around it (for overrides)."""
    zone = draw(st.sampled_from(zones))
    special = list(transition_days(zone, 2026))
    if zone == "Pacific/Apia":
        special.append(date(2011, 12, 29))  # the eve of the day Samoa skipped
    any_day = st.dates(date(2026, 1, 1), date(2026, 12, 31))
    day = draw(st.sampled_from(special) | any_day if special else any_day)
    start = datetime.combine(day, time(), UTC) + draw(st.integers(-24 * 12, 24 * 12)) * 5 * MINUTE
    local = wall_of(start, zone).date()
    return zone, start, [local + i * DAY for i in range(-1, 4)]
