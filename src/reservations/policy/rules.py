"""The booking rules as pure functions of (policy, zone, range, now): no I/O.

Availability (slots.py) is built from exactly these functions, so what it offers and what a
booking accepts cannot drift apart."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from reservations.kit.localtime import (
    describe_instant,
    describe_range,
    local_dates,
    minutes_after_midnight,
    wall_span_instants,
)
from reservations.kit.spans import Span, clip, covering, normalize, overlapping, subtract
from reservations.policy.model import Policy

_DAY = timedelta(days=1)


class Reason(StrEnum):
    outside_opening_hours = "outside-opening-hours"
    in_blackout = "in-blackout"
    off_grid = "off-grid"
    too_short = "too-short"
    too_long = "too-long"
    too_soon = "too-soon"
    too_far_ahead = "too-far-ahead"
    in_the_past = "in-the-past"
    booker_limit = "booker-limit"
    booked = "booked"
    buffer = "buffer"
    in_history = "in-history"


@dataclass(frozen=True, slots=True)
class Violation:
    reason: Reason
    detail: str


def open_spans(policy: Policy, zone: str, start: datetime, end: datetime) -> list[Span]:
    """The instants in [start, end) at which the resource is open."""
    if start >= end:
        return []
    if policy.weekly_hours is None and not policy.date_overrides:
        return [(start, end)]
    spans: list[Span] = []
    for day in local_dates(zone, start - _DAY, end + _DAY):
        hours = policy.hours_on(day)
        if hours is None:
            hours = [(0, 1440)]
        for a, b in hours:
            spans.extend(wall_span_instants(zone, day, a, b))
    return clip(normalize(spans), start, end)


def blackout_spans(policy: Policy) -> list[Span]:
    return normalize((b.start, b.end) for b in policy.blackouts)


def allowed_spans(policy: Policy, zone: str, start: datetime, end: datetime) -> list[Span]:
    """Open and not blacked out: where a customer's range may lie."""
    return subtract(open_spans(policy, zone, start, end), blackout_spans(policy))


def on_grid(policy: Policy, zone: str, instant: datetime, step_minutes: int | None) -> bool:
    """Whether the instant's local wall time is a multiple of the grid after midnight."""
    step = policy.slot_grid_minutes or step_minutes
    if step is None:
        return True
    _, mins = minutes_after_midnight(zone, instant)
    return mins == int(mins) and int(mins) % step == 0


def duration_violation(policy: Policy, duration: timedelta) -> Violation | None:
    if policy.min_duration is not None and duration < policy.min_duration:
        return Violation(
            Reason.too_short, f"bookings must last at least {_iso(policy.min_duration)}"
        )
    if policy.max_duration is not None and duration > policy.max_duration:
        return Violation(Reason.too_long, f"bookings may last at most {_iso(policy.max_duration)}")
    return None


def start_bounds(policy: Policy, now: datetime) -> tuple[datetime, datetime | None]:
    """Earliest and latest allowed start (inclusive): never before now, and at least the
    notice ahead; at most the advance ahead."""
    earliest = now + policy.min_notice if policy.min_notice is not None else now
    latest = now + policy.max_advance if policy.max_advance is not None else None
    return earliest, latest


def check(
    policy: Policy,
    zone: str,
    *,
    start: datetime,
    end: datetime,
    now: datetime,
    new_start: bool = True,
) -> list[Violation]:
    """Every rule [start, end) breaks (the booker limit aside, which needs counts).

    `new_start=False` is for a change that keeps the start (lengthening a reservation that
    may have begun already): the rules on when a start may lie (grid, not in the past,
    notice, advance) judged that start when it was booked and are not asked again."""
    out: list[Violation] = []
    if (v := duration_violation(policy, end - start)) is not None:
        out.append(v)
    if new_start:
        out += start_violations(policy, zone, start=start, now=now)
    if covering(open_spans(policy, zone, start, end), start, end) is None:
        out.append(
            Violation(
                Reason.outside_opening_hours,
                f"the resource is not open for all of this range (opening hours are local "
                f"time in {zone})",
            )
        )
    for b in policy.blackouts:
        if overlapping([(b.start, b.end)], start, end):
            why = f" ({b.reason})" if b.reason else ""
            out.append(
                Violation(
                    Reason.in_blackout,
                    f"the resource is blacked out {describe_range(b.start, b.end, zone)}{why}",
                )
            )
            break
    return out


def start_violations(
    policy: Policy, zone: str, *, start: datetime, now: datetime
) -> list[Violation]:
    """The rules on when a start may lie: on the grid, not in the past, notice, advance."""
    out: list[Violation] = []
    if not on_grid(policy, zone, start, None):
        out.append(
            Violation(
                Reason.off_grid,
                f"starts must fall on a {policy.slot_grid_minutes}-minute grid from local "
                f"midnight in {zone}",
            )
        )
    earliest, latest = start_bounds(policy, now)
    if start < now:
        out.append(
            Violation(
                Reason.in_the_past,
                f"the start has passed: start at {_earliest(earliest, zone)} or later (admin keys "
                "may record past use with override_rules=true)",
            )
        )
    elif start < earliest:
        out.append(
            Violation(
                Reason.too_soon,
                f"book at least {_iso(policy.min_notice)} ahead: start at "
                f"{_earliest(earliest, zone)} or later",
            )
        )
    if latest is not None and start > latest:
        out.append(
            Violation(
                Reason.too_far_ahead,
                f"book at most {_iso(policy.max_advance)} ahead: start at "
                f"{describe_instant(latest, zone)} or earlier",
            )
        )
    return out


def period_span(period: str | None, zone: str, instant: datetime) -> Span | None:
    """The local calendar day, week (Monday first) or month containing the instant."""
    if period is None:
        return None
    tz = ZoneInfo(zone)
    day = instant.astimezone(tz).date()
    if period == "day":
        first, last = day, day + _DAY
    elif period == "week":
        first = day - timedelta(days=day.weekday())
        last = first + timedelta(days=7)
    else:
        first = day.replace(day=1)
        last = (first + timedelta(days=32)).replace(day=1)
    return _local_midnight(first, tz), _local_midnight(last, tz)


def _earliest(at: datetime, zone: str) -> str:
    """Said to the second, rounded up, so that the time named is itself allowed."""
    if at.microsecond:
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    return describe_instant(at, zone)


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # A zone may skip midnight itself (a DST gap at 00:00): fold=0 then maps to after it.
    return datetime.combine(day, time(), tz).astimezone(UTC)


def _iso(value: timedelta | None) -> str:
    if value is None:
        return "0"
    secs = int(value.total_seconds())
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    mins, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    if hours or mins or secs or not days:
        out += "T" + (f"{hours}H" if hours else "") + (f"{mins}M" if mins else "")
        out += f"{secs}S" if secs or (not hours and not mins) else ""
    return out
