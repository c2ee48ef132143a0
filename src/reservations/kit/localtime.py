"""Local wall time <-> instants, done by UTC-offset segments rather than by guessing folds.

A zone's offset is constant between transitions. Within one such segment, wall time is
`instant + offset`, a monotonic map, so the instants whose wall time lies in a wall interval
form one span per segment. That single rule gives the DST behaviour the API promises:
a wall time inside a spring-forward gap has no instant (no slot, no opening), and a wall time
inside a fall-back fold has two (each offered once, at its own instant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from reservations.kit.spans import Span, normalize

_HOUR = timedelta(hours=1)
_SECOND = timedelta(seconds=1)
_UTC_NAMES = frozenset(
    {
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Zulu",
        "Etc/Zulu",
        "GMT",
        "Etc/GMT",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Etc/Greenwich",
        "Greenwich",
    }
)


@dataclass(frozen=True, slots=True)
class Segment:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    offset: timedelta


def _offset(tz: tzinfo, instant: datetime) -> timedelta:
    off = instant.astimezone(tz).utcoffset()
    assert off is not None
    return off


def segments(tz: tzinfo, start: datetime, end: datetime) -> list[Segment]:
    """The constant-offset pieces of [start, end) in `tz`. Transitions are found by sampling
    every hour and bisecting to the second (no zone has two transitions within an hour)."""
    out: list[Segment] = []
    seg_start = start
    off = _offset(tz, start)
    t = start
    while t < end:
        nxt = min(t + _HOUR, end)
        if _offset(tz, nxt) != off:
            # Transitions fall on whole seconds: bisect over integer POSIX seconds, with
            # offset(lo) == off and offset(hi) != off throughout.
            lo_s, hi_s = math.floor(t.timestamp()), math.ceil(nxt.timestamp())
            while hi_s - lo_s > 1:
                mid_s = (lo_s + hi_s) // 2
                if _offset(tz, datetime.fromtimestamp(mid_s, UTC)) == off:
                    lo_s = mid_s
                else:
                    hi_s = mid_s
            hi = datetime.fromtimestamp(hi_s, UTC)
            if hi >= end:  # the change comes exactly at (or after) the end
                break
            out.append(Segment(seg_start, hi, off))
            seg_start, off = hi, _offset(tz, hi)
        t = nxt
    out.append(Segment(seg_start, end, off))
    return out


@lru_cache(maxsize=4096)
def day_segments(zone: str, day: date) -> tuple[Segment, ...]:
    """Segments covering local `day` with a margin of a day on each side (cached: zone
    rules do not change while the process runs)."""
    tz = ZoneInfo(zone)
    lo = datetime.combine(day - timedelta(days=1), time(), UTC)
    return tuple(segments(tz, lo, lo + timedelta(days=3)))


def wall_span_instants(zone: str, day: date, start_min: int, end_min: int) -> list[Span]:
    """The instants whose wall time on local `day` is in [start_min, end_min) minutes after
    local midnight (end_min may be 1440, the next midnight)."""
    midnight = datetime.combine(day, time(), UTC)  # wall time, carried as a UTC-tagged value
    a = midnight + timedelta(minutes=start_min)
    b = midnight + timedelta(minutes=end_min)
    spans = []
    for seg in day_segments(zone, day):
        lo = max(seg.start, a - seg.offset)
        hi = min(seg.end, b - seg.offset)
        if lo < hi:
            spans.append((lo, hi))
    return normalize(spans)


def wall_point_instants(zone: str, day: date, minute: int) -> list[datetime]:
    """Every instant whose wall time is `minute` after midnight of local `day`: none in a
    gap, two in a fold, one otherwise. Sorted."""
    wall = datetime.combine(day, time(), UTC) + timedelta(minutes=minute)
    out = []
    for seg in day_segments(zone, day):
        t = wall - seg.offset
        if seg.start <= t < seg.end:
            out.append(t)
    return sorted(set(out))


def local_dates(zone: str, start: datetime, end: datetime) -> list[date]:
    """The local dates that [start, end) touches, in order."""
    tz = ZoneInfo(zone)
    # Local dates need not grow with the instant: a fall-back at 00:01 (St. John's, 2009)
    # goes from a date back to the one before. Look at both ends of every constant-offset
    # segment, not just at the ends of the range.
    tiny = timedelta(microseconds=1)
    dates = [
        d
        for seg in segments(tz, start, end)
        for d in (seg.start.astimezone(tz).date(), (seg.end - tiny).astimezone(tz).date())
    ]
    first, last = min(dates), max(dates)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def minutes_after_midnight(zone: str, instant: datetime) -> tuple[date, float]:
    """Local date and wall minutes after local midnight of an instant (seconds as fraction)."""
    local = instant.astimezone(ZoneInfo(zone))
    return local.date(), local.hour * 60 + local.minute + (
        local.second + local.microsecond / 1e6
    ) / 60


def grid_instants(zone: str, step_minutes: int, lo: datetime, hi: datetime) -> list[datetime]:
    """Every instant in [lo, hi) whose local wall time is a whole multiple of `step_minutes`
    after its local midnight. A fold yields both instants; a gap yields none."""
    step = timedelta(minutes=step_minutes)
    out: list[datetime] = []
    if lo >= hi:
        return out
    for day in local_dates(zone, lo, hi):
        midnight = datetime.combine(day, time(), UTC)
        for seg in day_segments(zone, day):
            a = max(seg.start, lo, midnight - seg.offset)
            b = min(seg.end, hi, midnight + timedelta(days=1) - seg.offset)
            if a >= b:
                continue
            wall_a = a + seg.offset - midnight
            k = -(-wall_a // step)  # ceil: first grid point at or after a
            wall = k * step
            while (t := midnight + wall - seg.offset) < b:
                out.append(t)
                wall += step
    return sorted(set(out))


def _clock(t: datetime) -> str:
    return f"{t:%H:%M:%S}" if t.second or t.microsecond else f"{t:%H:%M}"


def _wall_range(start: datetime, end: datetime, *, with_date: bool) -> str:
    first = f"{start:%Y-%m-%d} {_clock(start)}" if with_date else _clock(start)
    if end.date() == start.date():
        return f"{first}\N{EN DASH}{_clock(end)}"
    return f"{first} \N{EN DASH} {end:%Y-%m-%d} {_clock(end)}"


def describe_range(start: datetime, end: datetime, zone: str | None) -> str:
    """[start, end) for a person: in UTC, and in the zone as well unless it is UTC, e.g.
    '2026-12-14 09:00-10:00 UTC (10:00-11:00 Europe/Berlin)', with en dashes. The local part
    names its date only when it is not the UTC one; a range across midnight names both ends'
    dates."""
    utc_start, utc_end = start.astimezone(UTC), end.astimezone(UTC)
    text = _wall_range(utc_start, utc_end, with_date=True) + " UTC"
    if zone is None or zone in _UTC_NAMES:
        return text
    local_start, local_end = start.astimezone(ZoneInfo(zone)), end.astimezone(ZoneInfo(zone))
    local = _wall_range(local_start, local_end, with_date=local_start.date() != utc_start.date())
    return f"{text} ({local} {zone})"


def describe_instant(at: datetime, zone: str | None) -> str:
    """An instant for a person, as describe_range says a range: '2026-12-14 09:00 UTC (10:00
    Europe/Berlin)'; the local part names its date only when it is not the UTC one."""
    utc = at.astimezone(UTC)
    text = f"{utc:%Y-%m-%d} {_clock(utc)} UTC"
    if zone is None or zone in _UTC_NAMES:
        return text
    local = at.astimezone(ZoneInfo(zone))
    wall = _clock(local) if local.date() == utc.date() else f"{local:%Y-%m-%d} {_clock(local)}"
    return f"{text} ({wall} {zone})"
