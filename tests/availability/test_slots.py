"""Availability (slots.compute) agrees with the booking rules and a brute-force capacity check:
what it offers can be booked, and what can be booked on the grid is offered."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reservations.availability.slots import Availability, compute
from reservations.policy import rules
from reservations.policy.model import WEEKDAYS, Policy
from reservations.policy.usage import Busy, Usage
from tests.support.policy_model import (
    MINUTE,
    Model,
    minutes_touching,
    models,
    transition_days,
    wall_minute,
    wall_of,
    windows,
)

AGREEMENT = settings(max_examples=250, deadline=None)
PROPS = settings(max_examples=150, deadline=None)


def peak(busy: list[Busy], start: datetime, end: datetime) -> int:
    """Most units in use at any instant of [start, end): usage only rises at a busy start, so
    its maximum is at `start` or at one of those."""
    points = [start] + [b.start for b in busy if start < b.start < end]
    return max(sum(b.quantity for b in busy if b.start <= p < b.end) for p in points)


# Mostly whole minutes (so bounds land exactly on the grid), sometimes not (so that an
# off-by-less-than-a-minute shows).
SECONDS = st.sampled_from([0, 0, 0, 30, -30]).map(lambda n: n * timedelta(seconds=1))


@st.composite
def busy_lists(draw: st.DrawFn, around: datetime) -> list[Busy]:
    out = []
    for _ in range(draw(st.integers(0, 5))):
        start = around + draw(st.integers(-36, 24 * 12)) * 5 * MINUTE + draw(SECONDS)
        end = start + draw(st.integers(1, 48)) * 5 * MINUTE + draw(SECONDS)
        out.append(Busy(start, end, draw(st.integers(1, 3))))
    return out


@dataclass
class Scenario:
    zone: str
    model: Model
    capacity: int
    busy: list[Busy]
    window_start: datetime
    window_end: datetime
    duration: timedelta
    quantity: int
    now: datetime
    step_minutes: int

    def compute(self, **extra: Any) -> Availability:
        return compute(
            self.model.policy(),
            self.zone,
            self.capacity,
            self.busy,
            window_start=self.window_start,
            window_end=self.window_end,
            duration=self.duration,
            quantity=self.quantity,
            now=self.now,
            step_minutes=self.step_minutes,
            **extra,
        )

    def fits(self, start: datetime) -> bool:
        """Brute-force capacity: room for the quantity over the range widened by buffers."""
        lo = start - self.model.buffer_before
        hi = start + self.duration + self.model.buffer_after
        return peak(self.busy, lo, hi) + self.quantity <= self.capacity


@st.composite
def scenarios(draw: st.DrawFn, *, simple: bool = False) -> Scenario:
    zone, window_start, days = draw(windows())
    model = draw(models(window_start=window_start, days=days, simple=simple))
    duration = draw(st.sampled_from([30, 60, 5, 15, 45, 90, 120, 240])) * MINUTE
    if not draw(st.booleans()):  # often a duration the policy allows, so that slots come out
        duration = max(duration, model.min_duration or duration)
        duration = min(duration, model.max_duration or duration)
    return Scenario(
        zone=zone,
        model=model,
        capacity=draw(st.integers(1, 4)),
        busy=draw(busy_lists(window_start)),
        window_start=window_start,
        window_end=window_start + draw(st.integers(6, 12 * 24)) * 5 * MINUTE + draw(SECONDS),
        duration=duration,
        quantity=draw(st.sampled_from([1, 1, 1, 2, 3])),
        now=window_start - draw(st.integers(-12 * 60, 2 * 24 * 60)) * MINUTE + draw(SECONDS),
        step_minutes=draw(st.sampled_from([5, 10, 15, 30, 60])),
    )


@AGREEMENT
@given(scenarios())
def test_offered_slots_are_exactly_the_bookable_grid_starts(s: Scenario) -> None:
    policy, zone = s.model.policy(), s.zone
    slots = s.compute().slots
    bb, ba = s.model.buffer_before, s.model.buffer_after

    # (a) Every offered slot is bookable: in the window, passes every rule, fits capacity.
    for slot in slots:
        assert slot.end - slot.start == s.duration
        assert s.window_start <= slot.start
        assert slot.end <= s.window_end
        assert rules.check(policy, zone, start=slot.start, end=slot.end, now=s.now) == []
        assert s.fits(slot.start), slot
        assert slot.remaining == s.capacity - peak(s.busy, slot.start - bb, slot.end + ba)
    starts = [slot.start for slot in slots]
    assert starts == sorted(set(starts)), "slots are ordered and offered once per instant"

    # (b) Every bookable start on the grid is offered: enumerate every minute of the window
    # and keep those whose local wall time is on the grid.
    step = s.model.grid or s.step_minutes
    want = []
    t = s.window_start
    while t + s.duration <= s.window_end:
        _, m, _ = wall_minute(t, zone)
        if (
            m % step == 0
            and s.fits(t)
            and not rules.check(policy, zone, start=t, end=t + s.duration, now=s.now)
        ):
            want.append(t)
        t += MINUTE
    assert starts == want


@PROPS
@given(scenarios())
def test_max_slots_gives_the_first_slots(s: Scenario) -> None:
    full = s.compute().slots
    assert s.compute(max_slots=1).slots == full[:1]
    assert s.compute(max_slots=3).slots == full[:3]


@PROPS
@given(scenarios(simple=True))
def test_explain_accounts_for_every_unfree_instant(s: Scenario) -> None:
    ws, we = s.window_start, s.window_end
    result = s.compute(explain=True)

    def inside(t: datetime, spans: list[tuple[datetime, datetime]]) -> bool:
        return any(a <= t < b for a, b in spans)

    by_reason: dict[str, list[tuple[datetime, datetime]]] = {}
    for u in result.unavailable:
        assert ws <= u.start < u.end <= we
        by_reason.setdefault(u.reason.value, []).append((u.start, u.end))
    for t in minutes_touching(ws, we):
        in_use = sum(b.quantity for b in s.busy if b.start <= t < b.end)
        full = in_use + s.quantity > s.capacity
        closed = not s.model.open_at(s.zone, t)
        dark = s.model.blacked_out_at(t)
        if inside(t, result.free):
            # Free minutes are open, not blacked out and have room.
            assert not full, t
            assert not closed, t
            assert not dark, t
            assert not any(
                inside(t, by_reason.get(r, []))
                for r in ("booked", "outside-opening-hours", "in-blackout")
            )
        else:
            assert any(inside(t, spans) for spans in by_reason.values()), f"no reason at {t}"
        # And each of these reasons is given exactly where it is true.
        assert inside(t, by_reason.get("booked", [])) == full
        assert inside(t, by_reason.get("outside-opening-hours", [])) == closed
        assert inside(t, by_reason.get("in-blackout", [])) == dark


@PROPS
@given(st.data())
def test_usage_is_the_sum_of_quantities_in_use(data: st.DataObject) -> None:
    around = datetime(2026, 3, 29, tzinfo=UTC)
    busy = data.draw(busy_lists(around))
    lo = around + data.draw(st.integers(-60, 600)) * MINUTE
    hi = lo + data.draw(st.integers(1, 24 * 60)) * MINUTE
    usage = Usage(busy, lo, hi)
    steps = usage.steps()
    assert steps[0][0] == lo
    assert steps[-1][1] == hi
    for (_, e, u), (s2, _, u2) in itertools.pairwise(steps):
        assert e == s2
        assert u != u2
    for a, b, used in steps:
        for t in (a, b - timedelta(microseconds=1)):
            assert used == sum(x.quantity for x in busy if x.start <= t < x.end)
    a = lo + data.draw(st.integers(0, 24 * 60)) * MINUTE
    b = a + data.draw(st.integers(1, 600)) * MINUTE
    if b <= hi:
        assert usage.peak(a, b) == peak(busy, a, b)
    cap, q = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    room, full = usage.room_for(cap, q), usage.full_for(cap, q)
    for t in minutes_touching(lo, hi):
        in_use = sum(x.quantity for x in busy if x.start <= t < x.end)
        assert any(r0 <= t < r1 for r0, r1 in room) == (in_use + q <= cap)
        assert any(f0 <= t < f1 for f0, f1 in full) == (in_use + q > cap)


# DST table ------------------------------------------------------------------------------


def local_midnight(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(), ZoneInfo(zone)).astimezone(UTC)


def dst_days(zone: str) -> list[tuple[str, date]]:
    """The 2026 transition days of the zone, told apart by the real length of the day."""
    out = []
    for day in transition_days(zone, 2026):
        length = local_midnight(day + timedelta(days=1), zone) - local_midnight(day, zone)
        if length != timedelta(days=1):
            out.append(("spring" if length < timedelta(days=1) else "fall", day))
    return out


ALL_DAY = {d.value: [{"start": "00:00", "end": "24:00"}] for d in WEEKDAYS}
DST_CASES = [
    ("Europe/Berlin", "spring", 46),
    ("Europe/Berlin", "fall", 50),
    ("America/New_York", "spring", 46),
    ("America/New_York", "fall", 50),
    ("Australia/Lord_Howe", "spring", 47),  # clocks skip 02:00-02:30
    ("Australia/Lord_Howe", "fall", 49),  # 01:30-02:00 happens twice
]


@pytest.mark.parametrize(("zone", "kind", "count"), DST_CASES)
def test_dst_day_offers_one_slot_per_real_half_hour(zone: str, kind: str, count: int) -> None:
    (day,) = [d for k, d in dst_days(zone) if k == kind]
    lo, hi = local_midnight(day, zone), local_midnight(day + timedelta(days=1), zone)
    policy = Policy.model_validate({"weekly_hours": ALL_DAY, "slot_grid_minutes": 30})
    result = compute(
        policy,
        zone,
        1,
        [],
        window_start=lo,
        window_end=hi,
        duration=timedelta(minutes=30),
        quantity=1,
        now=lo - timedelta(days=7),
    )
    starts = [s.start for s in result.slots]
    assert len(starts) == len(set(starts)) == (hi - lo) / timedelta(minutes=30) == count
    walls = [wall_of(t, zone).time() for t in starts]
    every_half_hour = [time(h, m) for h in range(24) for m in (0, 30)]
    tz = ZoneInfo(zone)

    def exists(w: time) -> bool:
        naive = datetime.combine(day, w)
        return any(
            naive.replace(tzinfo=tz, fold=f).astimezone(UTC).astimezone(tz).replace(tzinfo=None)
            == naive
            for f in (0, 1)
        )

    def repeated(w: time) -> bool:
        naive = datetime.combine(day, w)
        return naive.replace(tzinfo=tz, fold=0).utcoffset() != naive.replace(
            tzinfo=tz, fold=1
        ).utcoffset() and exists(w)

    if kind == "spring":
        missing = [w for w in every_half_hour if not exists(w)]
        assert missing, "a spring-forward day skips some wall times"
        assert not set(walls) & set(missing)
        assert sorted(set(walls)) == [w for w in every_half_hour if exists(w)]
        assert len(walls) == len(set(walls))
    else:
        twice = [w for w in every_half_hour if repeated(w)]
        assert twice, "a fall-back day repeats some wall times"
        for w in every_half_hour:
            assert walls.count(w) == (2 if w in twice else 1), w
    for a, b in zip(result.slots, result.slots[1:], strict=False):
        assert b.start - a.start == timedelta(minutes=30)  # no hole and no overlap in time


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "Asia/Kolkata", "UTC"])
def test_zone_without_dst_has_48_slots_on_every_transition_day(zone: str) -> None:
    assert dst_days(zone) == []
    days = {d for z in ("Europe/Berlin", "America/New_York") for _, d in dst_days(z)}
    policy = Policy.model_validate({"weekly_hours": ALL_DAY, "slot_grid_minutes": 30})
    for day in sorted(days):
        lo = local_midnight(day, zone)
        result = compute(
            policy,
            zone,
            1,
            [],
            window_start=lo,
            window_end=lo + timedelta(days=1),
            duration=timedelta(minutes=30),
            quantity=1,
            now=lo - timedelta(days=7),
        )
        assert [wall_of(s.start, zone).time() for s in result.slots] == [
            time(h, m) for h in range(24) for m in (0, 30)
        ]


@pytest.mark.parametrize(
    ("limits", "first", "last"),
    [
        ({"min_notice": "PT1H"}, time(11), time(13, 30)),
        ({"max_advance": "PT2H"}, time(10), time(12)),
        ({"min_notice": "PT30M", "max_advance": "PT1H30M"}, time(10, 30), time(11, 30)),
    ],
)
def test_notice_and_advance_bounds_are_inclusive_in_slots(
    limits: dict[str, str], first: time, last: time
) -> None:
    zone = "UTC"
    now = datetime(2026, 5, 4, 10, tzinfo=UTC)
    policy = Policy.model_validate({"slot_grid_minutes": 30, **limits})
    result = compute(
        policy,
        zone,
        1,
        [],
        window_start=now,
        window_end=now + timedelta(hours=4),
        duration=timedelta(minutes=30),
        quantity=1,
        now=now,
    )
    assert result.slots[0].start.time() == first
    assert result.slots[-1].start.time() == last
