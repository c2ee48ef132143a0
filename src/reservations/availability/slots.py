"""Availability as a pure function: rules (rules.py), live reservations and capacity in;
bookable slots, free spans and (on request) the reasons for everything else out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reservations.kit.localtime import grid_instants
from reservations.kit.spans import Span, clip, covering, intersect, normalize, subtract
from reservations.policy import rules
from reservations.policy.model import Policy
from reservations.policy.rules import Reason
from reservations.policy.usage import Busy, Usage

DEFAULT_STEP_MINUTES = 15
_TINY = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Slot:
    start: datetime
    end: datetime
    remaining: int


@dataclass(frozen=True, slots=True)
class Unavailable:
    start: datetime
    end: datetime
    reason: Reason
    detail: str = ""


@dataclass
class Availability:
    slots: list[Slot] = field(default_factory=list)
    free: list[Span] = field(default_factory=list)
    unavailable: list[Unavailable] = field(default_factory=list)


def compute(
    policy: Policy,
    zone: str,
    capacity: int,
    busy: Sequence[Busy],
    *,
    window_start: datetime,
    window_end: datetime,
    duration: timedelta | None,
    quantity: int,
    now: datetime,
    step_minutes: int = DEFAULT_STEP_MINUTES,
    booker_blocked: Sequence[Span] = (),
    explain: bool = False,
    max_slots: int | None = None,
    history_before: datetime | None = None,
) -> Availability:
    """Slots of `duration` for `quantity` units whose start lies on the grid (the policy's,
    else `step_minutes` from local midnight) and which fit entirely in the window; each is
    exactly a range that `rules.check` accepts and the database would take. Without a
    duration, only the free spans (and the explanation) are computed. `history_before`: the
    database's history horizon; no guarded range may start before it."""
    out = Availability()
    usage = Usage(busy, window_start - policy.buffer_before, window_end + policy.buffer_after)
    room, bookable = _bookable(policy, zone, usage, capacity, quantity, (window_start, window_end))
    earliest, latest = rules.start_bounds(policy, now)
    first = _first_start(earliest, history_before, policy.buffer_before)
    out.free = clip(bookable, max(window_start, first or window_start), window_end)
    blocked = normalize(booker_blocked)
    too_long = rules.duration_violation(policy, duration) if duration is not None else None
    if duration is not None and too_long is None and quantity <= capacity:
        out.slots = _slots(
            policy,
            zone,
            usage,
            capacity,
            bookable,
            duration=duration,
            starts=(first, latest),
            blocked=blocked,
            step_minutes=step_minutes,
            max_slots=max_slots,
        )
    if explain:
        out.unavailable = _explain(
            policy,
            zone,
            usage,
            capacity,
            quantity,
            room=room,
            window=(window_start, window_end),
            bounds=(earliest, latest),
            now=now,
            blocked=blocked,
            duration_problem=too_long,
            history_before=history_before,
        )
    return out


def _bookable(
    policy: Policy, zone: str, usage: Usage, capacity: int, quantity: int, window: Span
) -> tuple[list[Span], list[Span]]:
    """Where a booking's range may lie: the room for `quantity` units with both buffers
    around it, and that room inside the window, the opening hours and outside blackouts."""
    bb, ba = policy.buffer_before, policy.buffer_after
    window_start, window_end = window
    # A booking [s, e) needs room on [s - bb, e + ba): shrink each roomy span by the buffers.
    room = normalize(
        (a + bb, b - ba) for a, b in usage.room_for(capacity, quantity) if a + bb < b - ba
    )
    allowed = rules.allowed_spans(policy, zone, window_start, window_end)
    return room, intersect(allowed, clip(room, window_start, window_end))


def _first_start(
    earliest: datetime, history_before: datetime | None, buffer_before: timedelta
) -> datetime:
    """The earliest start the notice and the history horizon both allow."""
    first = earliest
    if history_before is not None and (first is None or first < history_before + buffer_before):
        first = history_before + buffer_before
    return first


def _slots(
    policy: Policy,
    zone: str,
    usage: Usage,
    capacity: int,
    bookable: list[Span],
    *,
    duration: timedelta,
    starts: tuple[datetime, datetime | None],
    blocked: list[Span],
    step_minutes: int,
    max_slots: int | None,
) -> list[Slot]:
    """Which grid instants a slot of `duration` starts at (inside a bookable span, between the
    first and the latest start, not blocked for the booker), up to `max_slots`."""
    bb, ba = policy.buffer_before, policy.buffer_after
    first, latest = starts
    out: list[Slot] = []
    step = policy.slot_grid_minutes or step_minutes
    for span_start, span_end in bookable:
        lo = max(span_start, first or span_start)
        hi = span_end - duration + _TINY
        if latest is not None:
            hi = min(hi, latest + _TINY)
        for t in grid_instants(zone, step, lo, hi):
            if blocked and covering(blocked, t, t + _TINY) is not None:
                continue
            remaining = capacity - usage.peak(t - bb, t + duration + ba)
            out.append(Slot(t, t + duration, remaining))
            if max_slots is not None and len(out) >= max_slots:
                break
        if max_slots is not None and len(out) >= max_slots:
            break
    return out


def _explain(
    policy: Policy,
    zone: str,
    usage: Usage,
    capacity: int,
    quantity: int,
    *,
    room: list[Span],
    window: Span,
    bounds: tuple[datetime, datetime | None],
    now: datetime,
    blocked: list[Span],
    duration_problem: rules.Violation | None,
    history_before: datetime | None,
) -> list[Unavailable]:
    ws, we = window
    out: list[Unavailable] = []
    if duration_problem is not None:
        out.append(Unavailable(ws, we, duration_problem.reason, duration_problem.detail))
    earliest, latest = bounds
    history_end = history_before + policy.buffer_before if history_before is not None else None
    if history_end is not None and history_end > ws:
        out.append(
            Unavailable(ws, min(history_end, we), Reason.in_history, "moved to history; read-only")
        )
    if now > ws:
        out.append(Unavailable(ws, min(now, we), Reason.in_the_past, "the time has passed"))
    if earliest > max(ws, now):
        out.append(
            Unavailable(
                max(ws, now), min(earliest, we), Reason.too_soon, "inside the minimum notice"
            )
        )
    if latest is not None and latest < we:
        out.append(
            Unavailable(
                max(latest, ws), we, Reason.too_far_ahead, "starts beyond the maximum advance"
            )
        )
    for a, b in subtract([window], rules.open_spans(policy, zone, ws, we)):
        out.append(Unavailable(a, b, Reason.outside_opening_hours, "closed"))
    for blk in policy.blackouts:
        for a, b in clip([(blk.start, blk.end)], ws, we):
            out.append(Unavailable(a, b, Reason.in_blackout, blk.reason))
    full = clip(usage.full_for(capacity, quantity), ws, we)
    for a, b in full:
        used = usage.peak(a, b)
        detail = "booked" if capacity == 1 else f"{used} of {capacity} units in use"
        out.append(Unavailable(a, b, Reason.booked, detail))
    for a, b in subtract(subtract([window], room), full):
        out.append(Unavailable(a, b, Reason.buffer, "turnover time next to a booking"))
    for a, b in clip(blocked, ws, we):
        out.append(Unavailable(a, b, Reason.booker_limit, "you hold the most bookings allowed"))
    out.sort(key=lambda u: (u.start, u.end, u.reason))
    return out
