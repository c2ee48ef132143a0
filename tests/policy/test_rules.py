"""The booking rules (rules.py) and the pure booker-limit arithmetic (enforce.py) against a
minute-by-minute model of the policy the strategy drew."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reservations.policy import rules
from reservations.policy.enforce import blocked_periods, over_limit
from reservations.policy.model import WEEKDAYS, Policy
from tests.support.policy_model import (
    MINUTE,
    ZONES,
    Model,
    minutes_touching,
    models,
    wall_minute,
    wall_of,
    windows,
)

PROPS = settings(max_examples=200, deadline=None)


@st.composite
def policy_and_range(draw: st.DrawFn) -> tuple[str, Model, datetime, datetime, datetime]:
    zone, around, days = draw(windows())
    model = draw(models(window_start=around, days=days))
    start = around + draw(st.integers(-120, 24 * 60)) * MINUTE
    if draw(st.booleans()):
        start += timedelta(seconds=draw(st.integers(1, 59)))  # never on a grid
    end = start + draw(st.sampled_from([15, 30, 45, 60, 90, 120, 240, 24 * 60])) * MINUTE
    now = start - draw(st.integers(-60, 3 * 24 * 60)) * MINUTE
    now += timedelta(seconds=draw(st.integers(0, 59)))
    return zone, model, start, end, now


@PROPS
@given(policy_and_range())
def test_check_reports_exactly_the_rules_the_range_breaks(
    case: tuple[str, Model, datetime, datetime, datetime],
) -> None:
    zone, model, start, end, now = case
    got = rules.check(model.policy(), zone, start=start, end=end, now=now)
    assert {v.reason.value for v in got} == model.violations(zone, start, end, now)
    assert len(got) == len({v.reason for v in got}), "one violation per reason"
    assert all(v.detail for v in got)


@settings(max_examples=100, deadline=None)
@given(policy_and_range())
def test_open_and_allowed_spans_are_the_open_minutes(
    case: tuple[str, Model, datetime, datetime, datetime],
) -> None:
    zone, model, start, _, _ = case
    policy = model.policy()
    end = start + timedelta(hours=26)  # past one local day, into the next
    start = start.replace(second=0)
    open_ = rules.open_spans(policy, zone, start, end)
    allowed = rules.allowed_spans(policy, zone, start, end)

    def minutes(spans: list[tuple[datetime, datetime]]) -> set[datetime]:
        return {t for a, b in spans for t in minutes_touching(a, b)}

    want_open = {t for t in minutes_touching(start, end) if model.open_at(zone, t)}
    assert minutes(open_) == want_open
    assert minutes(allowed) == {t for t in want_open if not model.blacked_out_at(t)}
    for spans in (open_, allowed):
        for (_, e), (s, _) in itertools.pairwise(spans):
            assert e < s


@PROPS
@given(
    st.sampled_from(ZONES),
    st.datetimes(datetime(2026, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)),
    st.integers(1, 1440),
    st.integers(1, 1440),
)
def test_on_grid_is_a_whole_multiple_of_the_grid_in_wall_minutes(
    zone: str, instant: datetime, policy_grid: int, step: int
) -> None:
    if instant.microsecond % 3:
        instant = instant.replace(second=0, microsecond=0)  # often a whole minute
    _, m, s = wall_minute(instant, zone)
    whole = s == 0 and instant.microsecond == 0
    policy = Policy(slot_grid_minutes=policy_grid)
    # The policy's grid wins over the caller's step; without one the caller's step counts.
    assert rules.on_grid(policy, zone, instant, step) == (whole and m % policy_grid == 0)
    assert rules.on_grid(Policy(), zone, instant, step) == (whole and m % step == 0)
    assert rules.on_grid(Policy(), zone, instant, None)


PERIOD_ZONES = [*ZONES, "America/Havana", "Asia/Beirut"]  # the latter two: DST at midnight


def first_of_period(period: str, day: date) -> tuple[date, date]:
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    first = day.replace(day=1)
    nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, nxt


@PROPS
@given(
    st.sampled_from(["day", "week", "month"]),
    st.sampled_from(PERIOD_ZONES),
    st.datetimes(datetime(2010, 1, 1), datetime(2030, 12, 31), timezones=st.just(UTC)),
)
def test_period_span_is_the_local_calendar_period(
    period: str, zone: str, instant: datetime
) -> None:
    span = rules.period_span(period, zone, instant)
    assert span is not None
    lo, hi = span
    assert lo <= instant < hi
    first, after_last = first_of_period(period, wall_of(instant, zone).date())
    tiny = timedelta(microseconds=1)
    # lo is the first instant of the first local date; hi the first one after the last.
    assert wall_of(lo, zone).date() == first
    assert wall_of(lo - tiny, zone).date() < first
    assert wall_of(hi - tiny, zone).date() < after_last
    assert wall_of(hi, zone).date() == after_last
    assert rules.period_span(None, zone, instant) is None


def period_key(period: str | None, zone: str, start: datetime) -> object:
    if period is None:
        return None
    return first_of_period(period, wall_of(start, zone).date())[0]


starts = st.lists(
    st.datetimes(datetime(2026, 3, 20), datetime(2026, 4, 10), timezones=st.just(UTC)),
    max_size=12,
)


@PROPS
@given(
    st.sampled_from([None, "day", "week", "month"]),
    st.integers(1, 4),
    st.sampled_from(ZONES),
    starts,
    starts,
)
def test_over_limit_never_lets_a_period_exceed_max_live(
    period: str | None,
    max_live: int,
    zone: str,
    existing: list[datetime],
    new: list[datetime],
) -> None:
    policy = Policy.model_validate({"booker_limit": {"max_live": max_live, "period": period}})
    refused = over_limit(policy, zone, existing, new)
    kept = list(new)
    for r in refused:
        kept.remove(r)  # refused is a sub-multiset of new
    before = Counter(period_key(period, zone, s) for s in existing)
    after = Counter(period_key(period, zone, s) for s in existing + kept)
    new_counts = Counter(period_key(period, zone, s) for s in new)
    for key, n in new_counts.items():
        # Never over the cap because of new starts, and refuse only what the cap requires.
        assert after[key] - before[key] == min(n, max(0, max_live - before[key]))
    assert refused == sorted(refused)
    assert over_limit(Policy(), zone, existing, new) == []


@PROPS
@given(st.integers(1, 4), st.sampled_from(ZONES), starts)
def test_blocked_periods_are_the_full_periods(
    max_live: int, zone: str, existing: list[datetime]
) -> None:
    policy = Policy.model_validate({"booker_limit": {"max_live": max_live, "period": "day"}})
    blocked = blocked_periods(policy, zone, existing)
    counts = Counter(period_key("day", zone, s) for s in existing)
    assert [wall_of(a, zone).date() for a, _ in blocked] == sorted(
        k for k, n in counts.items() if n >= max_live
    )
    # A start in a blocked period is refused; the next one on a free day is not.
    for a, _ in blocked:
        assert over_limit(policy, zone, existing, [a]) == [a]


def test_hours_across_midnight_book_as_one_range() -> None:
    policy = Policy.model_validate(
        {
            "weekly_hours": {
                "fri": [{"start": "22:00", "end": "24:00"}],
                "sat": [{"start": "00:00", "end": "02:00"}],
            }
        }
    )
    zone = "Europe/Berlin"
    tz = ZoneInfo(zone)
    start = datetime(2026, 5, 1, 23, tzinfo=tz)  # a Friday
    now = datetime(2026, 4, 1, tzinfo=UTC)
    assert rules.check(policy, zone, start=start, end=start + timedelta(hours=3), now=now) == []
    late = rules.check(policy, zone, start=start, end=start + timedelta(hours=4), now=now)
    assert [v.reason for v in late] == [rules.Reason.outside_opening_hours]


def test_opening_hours_follow_the_wall_clock_across_dst() -> None:
    """09:00-17:00 local is 8 real hours on an ordinary day and on both transition days."""
    every_day = [{"start": "09:00", "end": "17:00"}]
    policy = Policy.model_validate({"weekly_hours": {d.value: every_day for d in WEEKDAYS}})
    zone = "Europe/Berlin"
    for day in (date(2026, 3, 29), date(2026, 10, 25), date(2026, 6, 1)):
        lo = datetime.combine(day, time(), UTC) - timedelta(hours=3)
        spans = rules.open_spans(policy, zone, lo, lo + timedelta(days=1))
        assert len(spans) == 1
        a, b = spans[0]
        assert wall_of(a, zone) == datetime.combine(day, time(9))
        assert b - a == timedelta(hours=8)


@pytest.mark.parametrize(
    ("notice", "advance", "offset", "reasons"),
    [
        ("PT1H", None, timedelta(minutes=59), {"too-soon"}),
        ("PT1H", None, timedelta(hours=1), set()),
        (None, "PT2H", timedelta(hours=2), set()),
        (None, "PT2H", timedelta(hours=2, seconds=1), {"too-far-ahead"}),
    ],
)
def test_notice_and_advance_bounds_are_inclusive(
    notice: str | None, advance: str | None, offset: timedelta, reasons: set[str]
) -> None:
    raw = {k: v for k, v in (("min_notice", notice), ("max_advance", advance)) if v}
    policy = Policy.model_validate(raw)
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    start = now + offset
    got = rules.check(policy, "UTC", start=start, end=start + timedelta(hours=1), now=now)
    assert {v.reason.value for v in got} == reasons
