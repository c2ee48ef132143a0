"""Wall time <-> instants by offset segments, checked against zoneinfo itself, minute by minute.

Each property converts candidate instants back to wall time with zoneinfo, so it checks the
segment arithmetic against an independent oracle rather than against itself."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reservations.kit.localtime import (
    describe_instant,
    describe_range,
    grid_instants,
    local_dates,
    minutes_after_midnight,
    segments,
    wall_point_instants,
    wall_span_instants,
)

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kolkata",  # +05:30, no DST
    "Pacific/Apia",  # skipped 2011-12-30 entirely (-10 -> +14)
    "America/Santiago",  # DST changes at local midnight
    "Europe/Dublin",  # negative DST in the tz database
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/St_Johns",  # -03:30 / -02:30
    "Antarctica/Troll",  # +00 / +02: a two-hour DST jump
]
YEARS = range(2009, 2031)  # includes Apia's 2011 jump and Santiago's rule changes

PROPS = settings(max_examples=150, deadline=None)


def wall_of(instant: datetime, zone: str) -> datetime:
    return instant.astimezone(ZoneInfo(zone)).replace(tzinfo=None)


@cache
def transition_days(zone: str) -> tuple[date, ...]:
    """Local dates on which the UTC offset changes, found by sampling each UTC noon."""
    tz = ZoneInfo(zone)
    out: list[date] = []
    t = datetime(YEARS[0], 1, 1, 12, tzinfo=UTC)
    prev = t.astimezone(tz).utcoffset()
    while t.year < YEARS[-1] + 1:
        t += DAY
        off = t.astimezone(tz).utcoffset()
        if off != prev:
            # The change lies in the last 24 hours: the local dates around it are interesting.
            d = t.astimezone(tz).date()
            out.extend([d - DAY, d])
        prev = off
    return tuple(out)


@st.composite
def zone_and_day(draw: st.DrawFn) -> tuple[str, date]:
    zone = draw(st.sampled_from(ZONES))
    days = transition_days(zone)
    if days and draw(st.booleans()):
        return zone, draw(st.sampled_from(days))
    return zone, draw(st.dates(date(YEARS[0], 1, 1), date(YEARS[-1], 12, 31)))


def offsets_near(zone: str, day: date) -> set[timedelta]:
    """Every UTC offset the zone uses within two days of `day` (sampled every 15 minutes)."""
    tz = ZoneInfo(zone)
    t = datetime.combine(day - 2 * DAY, time(), UTC)
    out = set()
    for _ in range(4 * 24 * 5):
        off = t.astimezone(tz).utcoffset()
        assert off is not None
        out.add(off)
        t += timedelta(minutes=15)
    return out


def brute_instants_of_wall(zone: str, wall: datetime) -> list[datetime]:
    """All instants whose wall time in `zone` is `wall` (naive)."""
    naive_utc = wall.replace(tzinfo=UTC)
    found = {
        naive_utc - off
        for off in offsets_near(zone, wall.date())
        if wall_of(naive_utc - off, zone) == wall
    }
    return sorted(found)


@PROPS
@given(
    st.sampled_from(ZONES),
    st.datetimes(datetime(YEARS[0], 1, 1), datetime(YEARS[-1], 12, 31), timezones=st.just(UTC)),
    st.integers(1, 60 * 24 * 400),
)
def test_segments_tile_the_range_with_constant_maximal_offsets(
    zone: str, start: datetime, length_minutes: int
) -> None:
    tz = ZoneInfo(zone)
    start = start.replace(microsecond=0)
    end = start + timedelta(minutes=length_minutes)
    segs = segments(tz, start, end)
    assert segs[0].start == start
    assert segs[-1].end == end
    for a, b in itertools.pairwise(segs):
        assert a.end == b.start
        assert a.offset != b.offset, "adjacent segments with one offset should be one segment"
    for seg in segs:
        assert seg.start < seg.end
        # Constant offset: at both ends (to the second), and at every hour in between.
        assert seg.start.astimezone(tz).utcoffset() == seg.offset
        assert (seg.end - timedelta(seconds=1)).astimezone(tz).utcoffset() == seg.offset
        t = seg.start
        while t < seg.end:
            assert t.astimezone(tz).utcoffset() == seg.offset
            t += timedelta(minutes=59)


@PROPS
@given(zone_and_day(), st.integers(0, 1439), st.booleans())
def test_wall_point_instants_are_exactly_the_instants_with_that_wall_time(
    zd: tuple[str, date], minute: int, near_transition: bool
) -> None:
    zone, day = zd
    if near_transition:
        minute = minute - minute % 30  # transitions happen on the half hour: hit them often
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    got = wall_point_instants(zone, day, minute)
    assert got == brute_instants_of_wall(zone, wall)
    assert len(got) <= 2
    for t in got:
        assert wall_of(t, zone) == wall


@pytest.mark.parametrize(
    ("zone", "wall", "count"),
    [
        ("Europe/Berlin", datetime(2026, 3, 29, 2, 30), 0),
        ("Europe/Berlin", datetime(2026, 10, 25, 2, 30), 2),
        ("Europe/Berlin", datetime(2026, 10, 25, 3, 0), 1),
        ("America/New_York", datetime(2026, 3, 8, 2, 0), 0),
        ("America/New_York", datetime(2026, 11, 1, 1, 0), 2),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 0), 0),
        ("Australia/Lord_Howe", datetime(2026, 10, 4, 2, 30), 1),
        ("Australia/Lord_Howe", datetime(2026, 4, 5, 1, 45), 2),
        ("Pacific/Apia", datetime(2011, 12, 30, 12, 0), 0),  # the whole day never happened
        ("Asia/Kolkata", datetime(2026, 3, 29, 2, 30), 1),
        ("UTC", datetime(2026, 10, 25, 2, 30), 1),
    ],
)
def test_gap_has_no_instant_and_fold_has_two(zone: str, wall: datetime, count: int) -> None:
    minute = wall.hour * 60 + wall.minute
    got = wall_point_instants(zone, wall.date(), minute)
    assert len(got) == count
    assert got == brute_instants_of_wall(zone, wall)
    if count == 2:
        # The two instants lie apart by exactly the change of offset.
        first, second = (t.astimezone(ZoneInfo(zone)).utcoffset() for t in got)
        assert first is not None
        assert second is not None
        assert got[1] - got[0] == first - second


@settings(max_examples=100, deadline=None)
@given(zone_and_day(), st.integers(0, 1440), st.integers(0, 1440))
def test_wall_span_instants_is_every_minute_with_wall_time_in_range(
    zd: tuple[str, date], a: int, b: int
) -> None:
    zone, day = zd
    start_min, end_min = min(a, b), max(a, b)
    got = wall_span_instants(zone, day, start_min, end_min)
    for (_, end), (start, _) in itertools.pairwise(got):
        assert end < start
    # Brute force: every UTC minute from a day before `day` to a day after (UTC offsets lie
    # within -12h..+14h), kept if its wall time fits.
    t = datetime.combine(day - DAY, time(), UTC)
    want = set()
    while t < datetime.combine(day + 2 * DAY, time(), UTC):
        w = wall_of(t, zone)
        m = w.hour * 60 + w.minute
        if w.date() == day and start_min <= m < end_min:
            want.add(t)
        t += MINUTE
    have = set()
    for s, e in got:
        assert s.second == 0
        assert e.second == 0
        while s < e:
            have.add(s)
            s += MINUTE
    assert have == want


@PROPS
@given(
    zone_and_day(),
    st.integers(-24 * 60, 24 * 60),
    st.integers(0, 3 * 24 * 60),
    st.integers(0, 59),
    st.sampled_from([1, 5, 7, 15, 30, 45, 60, 90, 120, 1440]) | st.integers(1, 1440),
)
def test_grid_instants_equal_brute_force_over_every_minute(
    zd: tuple[str, date], offset_min: int, length_min: int, lo_seconds: int, step: int
) -> None:
    zone, day = zd
    lo = datetime.combine(day, time(), UTC) + timedelta(minutes=offset_min, seconds=lo_seconds)
    hi = lo + timedelta(minutes=length_min)
    got = grid_instants(zone, step, lo, hi)
    want = []
    t = lo.replace(second=0) + (MINUTE if lo.second else timedelta(0))
    while t < hi:
        w = wall_of(t, zone)
        if (w.hour * 60 + w.minute) % step == 0:
            want.append(t)
        t += MINUTE
    assert got == want


@PROPS
@given(zone_and_day(), st.integers(-1440, 1440), st.integers(1, 4 * 1440))
@example(("America/St_Johns", date(2009, 11, 1)), 0, 152)  # fall-back at 00:01 local
def test_local_dates_are_the_dates_the_range_touches(
    zd: tuple[str, date], offset_min: int, length_min: int
) -> None:
    zone, day = zd
    start = datetime.combine(day, time(), UTC) + timedelta(minutes=offset_min)
    end = start + timedelta(minutes=length_min)
    got = local_dates(zone, start, end)
    touched = set()
    t = start
    while t < end:
        touched.add(wall_of(t, zone).date())
        t += MINUTE
    assert got[0] == min(touched)
    assert got[-1] == max(touched)
    assert got == [got[0] + i * DAY for i in range(len(got))]
    # Only a day the zone skipped entirely (Apia, 2011-12-30) may be listed yet untouched.
    for d in set(got) - touched:
        assert not brute_instants_of_wall(zone, datetime.combine(d, time(12)))


@PROPS
@given(
    st.sampled_from(ZONES),
    st.datetimes(datetime(YEARS[0], 1, 1), datetime(YEARS[-1], 12, 31), timezones=st.just(UTC)),
)
def test_minutes_after_midnight_matches_the_wall_clock(zone: str, instant: datetime) -> None:
    day, mins = minutes_after_midnight(zone, instant)
    w = wall_of(instant, zone)
    assert day == w.date()
    assert mins == pytest.approx(
        (w - datetime.combine(w.date(), time())).total_seconds() / 60, abs=1e-6
    )


def test_describe_range_says_utc_and_the_local_wall_time() -> None:
    def t(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2026, 12, day, hour, minute, tzinfo=UTC)

    dash = "\N{EN DASH}"
    assert describe_range(t(14, 9), t(14, 10), "Europe/Berlin") == (
        f"2026-12-14 09:00{dash}10:00 UTC (10:00{dash}11:00 Europe/Berlin)"
    )
    assert describe_range(t(14, 9), t(14, 10), "UTC") == f"2026-12-14 09:00{dash}10:00 UTC"
    assert describe_range(t(14, 9), t(14, 10), None) == f"2026-12-14 09:00{dash}10:00 UTC"
    # Another local date is named; so are both ends of a range across midnight.
    assert describe_range(t(14, 23), t(15, 0, 30), "Pacific/Auckland") == (
        f"2026-12-14 23:00 {dash} 2026-12-15 00:30 UTC (2026-12-15 12:00{dash}13:30 "
        "Pacific/Auckland)"
    )
    assert describe_range(t(14, 22, 30), t(14, 23, 30), "Europe/Berlin") == (
        f"2026-12-14 22:30{dash}23:30 UTC (23:30 {dash} 2026-12-15 00:30 Europe/Berlin)"
    )


def test_describe_instant_says_utc_and_the_local_wall_time() -> None:
    at = datetime(2026, 12, 14, 9, tzinfo=UTC)
    assert describe_instant(at, "Europe/Berlin") == "2026-12-14 09:00 UTC (10:00 Europe/Berlin)"
    assert describe_instant(at, "UTC") == "2026-12-14 09:00 UTC"
    assert describe_instant(at, None) == "2026-12-14 09:00 UTC"
    # Another local date is named; seconds are said when there are any.
    late = datetime(2026, 12, 14, 23, 0, 30, tzinfo=UTC)
    assert describe_instant(late, "Pacific/Auckland") == (
        "2026-12-14 23:00:30 UTC (2026-12-15 12:00:30 Pacific/Auckland)"
    )
    assert describe_instant(late, "America/New_York") == (
        "2026-12-14 23:00:30 UTC (18:00:30 America/New_York)"
    )
