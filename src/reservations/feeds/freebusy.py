"""Free/busy as a pure function: a resource's policy, capacity and live reservations in; the
periods in which it cannot be booked out, each BUSY (taken: a reservation or the buffers
around one) or BUSY-UNAVAILABLE (anything else: closed, blacked out, inside the notice,
beyond the advance, or a gap no allowed booking fits in).

**Free** means: an instant t is free when some booking of one unit that an admin key could
make at this moment without `override_rules` contains t. Such a booking [s, e) starts on
the policy's grid (any instant when it sets none), no earlier than now plus the notice and
the history horizon, no later than now plus the advance; lasts at least `min_duration` and at
most `max_duration` and the system's longest reservation; is open and clear of blackouts
throughout; and has its buffers clear of other reservations on enough units. Every instant
that no such booking contains is busy. Booker limits (they depend on who books) and approval
(which does not refuse) play no part.

It is built from the functions admission and availability decide with: `slots.compute`
(rules.allowed_spans, the buffers and the capacity in use, the notice and the history
horizon; its explanation says which time reservations and buffers take), `rules.start_bounds`
(the advance), `localtime.grid_instants` (the grid). Only the last step is here: which
instants the allowed bookings cover, given where they may lie and start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from reservations.availability.slots import compute
from reservations.kit.localtime import grid_instants, segments
from reservations.kit.spans import Span, clip, intersect, normalize, subtract
from reservations.policy import rules
from reservations.policy.model import Policy
from reservations.policy.rules import Reason
from reservations.policy.usage import Busy

# Free/busy is computed for the 5-minute step that holds now (so the same reservations give
# the same bytes, and the ETag only changes when they do or when a step passes).
STEP = timedelta(minutes=5)
_TAKEN = (Reason.booked, Reason.buffer)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_TINY = timedelta(microseconds=1)


class FbType(StrEnum):
    """RFC 5545 FBTYPE values a free/busy feed uses."""

    busy = "BUSY"
    unavailable = "BUSY-UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Period:
    start: datetime
    end: datetime
    type: FbType


@dataclass(frozen=True, slots=True)
class Moment:
    """The step of time a feed is computed for: [floor, ceil] of now on STEP. What it shows
    free stays bookable through the step: the notice is counted from `ceil`, the advance
    from `floor` (at a step's boundary they are the same instant, and exact)."""

    floor: datetime
    ceil: datetime

    @classmethod
    def of(cls, now: datetime) -> Moment:
        floor = now - (now - _EPOCH) % STEP
        return cls(floor=floor, ceil=floor if floor == now else floor + STEP)


def free_spans(
    policy: Policy,
    zone: str,
    capacity: int,
    busy: Sequence[Busy],
    *,
    window: Span,
    moment: Moment,
    max_length: timedelta,
    history_before: datetime | None,
) -> tuple[list[Span], list[Span]]:
    """(free, taken) inside the window: where an allowed booking lies (see the module), and
    where reservations and their buffers leave no unit."""
    ws, we = window
    shortest = policy.min_duration or timedelta(0)
    longest = min(policy.max_duration or max_length, max_length)
    # A booking that starts in the window may end past it: it must fit where it may lie, so
    # look `shortest` further (what lies beyond that cannot refuse a booking that fits).
    seen = compute(
        policy,
        zone,
        capacity,
        busy,
        window_start=ws,
        window_end=we + shortest,
        duration=None,
        quantity=1,
        now=moment.ceil,
        explain=True,
        history_before=history_before,
    )
    taken = clip(
        normalize((u.start, u.end) for u in seen.unavailable if u.reason in _TAKEN), ws, we
    )
    if shortest > longest:
        return [], taken
    _, latest = rules.start_bounds(policy, moment.floor)
    covered: list[Span] = []
    # `seen.free`: where a booking's range may lie, starting no earlier than the notice and
    # the history horizon allow. In each such span, the allowed starts are those on the
    # grid up to `last`; each covers from its start to its longest allowed end.
    for lo, hi in seen.free:
        last = min(hi - shortest, we)
        if latest is not None:
            last = min(last, latest)
        if last < lo:
            continue
        step = policy.slot_grid_minutes
        if step is None:  # every instant is a start: the cover is one span
            covered.append((lo, min(hi, last + longest)))
        else:
            covered += grid_cover(zone, step, (lo, hi), last=last, longest=longest)
    return clip(normalize(covered), ws, we), taken


def grid_cover(
    zone: str, step: int, span: Span, *, last: datetime, longest: timedelta
) -> list[Span]:
    """What bookings of at most `longest` starting on the grid in [span start, last], and
    ending inside the span, cover. Within a stretch of constant UTC offset, grid starts lie at
    most `step` apart (local midnight restarts the grid sooner), so when `longest` is at least
    that, each stretch covers from its first start to its last start's longest end, and the
    starts between need not be listed (a 1-minute grid over 62 days has 89,000)."""
    lo, hi = span
    end = last + _TINY  # grid_instants is half-open
    if longest < timedelta(minutes=step):  # gaps between the bookings: each one counts
        return [(s, min(hi, s + longest)) for s in grid_instants(zone, step, lo, end) if s < hi]
    out: list[Span] = []
    reach = timedelta(minutes=step) + _TINY  # a stretch's first and last starts lie this near
    for seg in segments(ZoneInfo(zone), lo, end):
        a, b = max(seg.start, lo), min(seg.end, end)
        first = grid_instants(zone, step, a, min(b, a + reach))
        final = grid_instants(zone, step, max(a, b - reach), b)
        if first and final and first[0] < hi:
            out.append((first[0], min(hi, final[-1] + longest)))
    return out


def _seconds(spans: list[Span], window: Span) -> list[Span]:
    """Widened to whole seconds (iCalendar's resolution): a busy instant is never shown free."""
    return clip(
        normalize((a - timedelta(microseconds=a.microsecond), _ceil(b)) for a, b in spans),
        *window,
    )


def _ceil(at: datetime) -> datetime:
    return at if not at.microsecond else at + timedelta(microseconds=1_000_000 - at.microsecond)


def periods(free: list[Span], taken: list[Span], window: Span) -> list[Period]:
    """The window's busy periods in order, to the second: BUSY where taken, BUSY-UNAVAILABLE
    elsewhere."""
    busy = _seconds(subtract([window], free), window)
    taken = _seconds(taken, window)
    out = [Period(a, b, FbType.busy) for a, b in intersect(busy, taken)]
    out += [Period(a, b, FbType.unavailable) for a, b in subtract(busy, taken)]
    out.sort(key=lambda p: p.start)
    return out
