"""dateutil's RRULE iteration, stopped at a date and metered in work (pure, no I/O).

dateutil walks the calendar one period at a time (a year, month, week, day, hour, minute or
second, times INTERVAL) and stops only at COUNT, at the first candidate past UNTIL, or after
the year 9999. A period in which no candidate survives the BY parts produces nothing to
compare with UNTIL, so a rule whose matches are rare or impossible walks on, past any UNTIL
and without returning control: FREQ=HOURLY;BYSETPOS=2 never matches (an hourly period holds
one instant) and would examine every hour until 9999; FREQ=SECONDLY;BYHOUR=23 on a rare day
searches 82,800 seconds of every day in between. A clock cannot stop that generator; only
the generator's own steps can.

So the walk here is dateutil's own loop (`rrule._iter`, its code unchanged) run with an
instrumented `_iterinfo`, the helper it asks for every period's day set and for every new
month's calendar masks. Before a period runs, the helper

- ends the walk (`WindowEnd`) if the period begins after `Meter.stop` (no candidate of that
  period or a later one can be on or before that date), and
- charges the `Meter` an upper bound of the work dateutil will do for that period, in
  "steps" (a day checked against the BY parts, a time of day built, a candidate compared,
  one step of an inner search), and ends the walk (`WorkExceeded`) once the total passes
  the budget.

The bound per period (`_Costs`), read off dateutil's loop:

- a fixed overhead, plus one step per day of the period's day set for the BY filters, plus
  one more per day and BYSETPOS value (each position rescans the kept days), plus the square
  of the BYSETPOS count (the positions are de-duplicated in a list);
- candidates: dateutil builds (kept days x times of day) candidates; past the first period
  every one of them is yielded (and charged to the consumer) or ends the walk, so only the
  first period, whose candidates before DTSTART are skipped silently, is charged days x times;
- HOURLY/MINUTELY/SECONDLY: the period's times of day are rebuilt (BYMINUTE x BYSECOND values
  for HOURLY), and the step to the next period searches, INTERVAL at a time, for an allowed
  hour/minute/second: at most one lap of the frequency's own part (24 or 60 steps), or,
  when a coarser part restricts it (MINUTELY with BYHOUR, SECONDLY with BYHOUR or BYMINUTE),
  the longest run of disallowed positions on the orbit of INTERVAL steps round the day
  (`_search_steps`: walked here for orbits up to 1,440 long, else the whole orbit x 60);
- DAILY and finer: the months a step can jump over (one `monthrange` each);
- a new year or month: the calendar masks (BYWEEKNO weeks, nth-weekday BYDAY positions).

Everything dateutil does for a period, including the step to the next one, is paid for
before it starts, so the walk stops before it passes its budget (give or take building one
period's day set) and never searches a period past its stop. The constructor's own work (the
DAILY-and-coarser times-of-day table, BYHOUR x BYMINUTE x BYSECOND) is charged by the caller
before the rule is built (`times_of_day`).

This relies on dateutil's internals (`rrule._iter` and `_iterinfo`, unchanged in substance
since 2.7); the import below refuses to load if the names it hooks are gone, and
tests/bookings/test_recurrence_bounds.py checks the bound against adversarial rules.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import dateutil.rrule as du
from dateutil.rrule import DAILY, HOURLY, MINUTELY, MONTHLY, SECONDLY, WEEKLY, YEARLY, rrule

# Steps charged for what dateutil does besides checking days, in units of about one such
# check (a quarter of a microsecond); tests/bookings/test_recurrence_bounds.py measures the ratio.
PERIOD_STEPS = 20  # one turn of the loop: day set (a year-long list), slicing, branching
YIELD_STEPS = 4  # an instant handed out, through the generators
TIME_STEPS = 3  # a datetime.time built (and sorted) for a table of times of day
CANDIDATE_STEPS = 2  # a day and a time combined and compared with DTSTART
MONTH_STEPS = 4  # a month stepped over when a day count overflows (calendar.monthrange)
MASK_STEPS = 40  # a new year's masks (copies of year-long lists), a month's nth-weekday mask


class WorkExceeded(Exception):
    """The walk would pass its work budget."""


class WindowEnd(Exception):
    """The walk reached a period that begins after its stop date."""


class Meter:
    """Work charged to one walk, and the last date a period of it may begin on."""

    __slots__ = ("budget", "stop", "used")

    def __init__(self, *, budget: int | None, stop: date) -> None:
        self.budget = budget  # None: unmetered (tests' control runs only)
        self.stop = stop
        self.used = 0

    def charge(self, steps: int) -> None:
        self.used += steps
        if self.budget is not None and self.used > self.budget:
            raise WorkExceeded(self.used)


def times_of_day(hours: int, minutes: int, seconds: int) -> int:
    """Steps to build a DAILY-or-coarser rule's table of times of day (BYHOUR x BYMINUTE x
    BYSECOND values, each at least one); the caller charges them before building it."""
    return TIME_STEPS * hours * minutes * seconds


class Unreachable(ValueError):
    """No step of INTERVAL ever lands on an allowed hour/minute/second."""


@dataclass(frozen=True, slots=True)
class _Costs:
    fixed: int  # per period
    per_day: int  # per day of a period's day set
    first_per_day: int  # per day of the first period only (candidates before DTSTART)
    year: int  # per new year's masks
    month: int  # per new month's masks (nth-weekday BYDAY)


# FREQ -> (positions in a day, seconds per position)
_FINE = {HOURLY: (24, 3600), MINUTELY: (1440, 60), SECONDLY: (86400, 1)}
_SIMULATED = 1440  # longest orbit walked here to find the real longest search


def _search_steps(rule: rrule) -> int:
    """Most INTERVAL steps dateutil takes, going from one HOURLY/MINUTELY/SECONDLY period
    to the next, in its search for an allowed hour (and minute, and second).

    The steps visit the orbit start + k x INTERVAL (mod a day) in order, so from any
    position the search ends within the longest run of disallowed positions on the orbit.
    The orbit is walked here when it is short; otherwise the whole orbit is charged (x60:
    with no allowed position dateutil re-walks it once per BYSECOND search before giving up)."""
    state = vars(rule)
    freq: int = state["_freq"]
    interval: int = state["_interval"]
    hours, minutes, seconds = (state[k] for k in ("_byhour", "_byminute", "_bysecond"))
    coarser = {HOURLY: None, MINUTELY: hours, SECONDLY: hours or minutes}[freq]
    if not coarser:
        # Only the frequency's own part can be restricted: at most one lap of its values.
        own = {HOURLY: hours, MINUTELY: minutes, SECONDLY: seconds}[freq]
        return {HOURLY: 24, MINUTELY: 60, SECONDLY: 60}[freq] if own else 1
    size, unit = _FINE[freq]
    cycle = size // math.gcd(interval, size)
    if cycle > _SIMULATED:
        return cycle * 60
    start: datetime = state["_dtstart"]
    here = (start.hour * 3600 + start.minute * 60 + start.second) // unit

    def allowed(position: int) -> bool:
        second = position * unit
        return (
            (not hours or second // 3600 in hours)
            and (not minutes or second // 60 % 60 in minutes)
            and (freq != SECONDLY or not seconds or second % 60 in seconds)
        )

    flags = [allowed((here + k * interval) % size) for k in range(1, cycle + 1)]
    if not any(flags):
        raise Unreachable("no step of INTERVAL reaches an allowed BYHOUR/BYMINUTE/BYSECOND")
    longest = run = 0
    for flag in flags + flags:
        run = 0 if flag else run + 1
        longest = max(longest, run)
    return longest + 1


def _costs(rule: rrule) -> _Costs:
    state = vars(rule)
    freq: int = state["_freq"]
    interval: int = state["_interval"]
    setpos = len(state["_bysetpos"] or ())
    fixed = PERIOD_STEPS + setpos * setpos
    if freq < HOURLY:
        first_per_day = CANDIDATE_STEPS * len(state["_timeset"])
        days = {YEARLY: 0, MONTHLY: 0, WEEKLY: 7, DAILY: 1}[freq] * interval
        fixed += MONTH_STEPS * (days // 28 + 1)
    else:
        # Each period rebuilds its times of day (HOURLY: BYMINUTE x BYSECOND of them), then
        # searches for the next period.
        minutes, seconds = state["_byminute"], state["_bysecond"]
        times = {HOURLY: len(minutes or ()) * len(seconds or ()), MINUTELY: len(seconds or ())}
        count = max(times.get(freq, 1), 1)
        steps = _search_steps(rule)
        months = steps * interval * _FINE[freq][1] // (28 * 86400) + 1
        fixed += TIME_STEPS * count + steps + MONTH_STEPS * months
        first_per_day = CANDIDATE_STEPS * count
    weeks = len(state["_byweekno"] or ())
    nth = len(state["_bynweekday"] or ())
    month = MASK_STEPS + 12 * nth if nth else 0
    year = MASK_STEPS + (MASK_STEPS + 7 * weeks if weeks else 0) + month
    return _Costs(fixed, 1 + setpos, first_per_day, year, month)


_DaySet = tuple[Iterable[int | None], int, int]


class _MeteredInfo(du._iterinfo):
    """dateutil's per-walk calendar helper, charging each period before it runs.

    No __slots__: the base's __init__ resets `self.__slots__`, which must stay its own."""

    def __init__(self, rule: rrule) -> None:
        super().__init__(rule)
        self.meter: Meter = vars(rule)["_walk_meter"]
        self.costs = _costs(rule)
        self.first = True

    def _period(self, begins: date, days: _DaySet) -> _DaySet:
        if begins > self.meter.stop:
            raise WindowEnd
        count = days[2] - days[1]
        steps = self.costs.fixed + self.costs.per_day * count
        if self.first:
            steps += self.costs.first_per_day * count
            self.first = False
        self.meter.charge(steps)
        return days

    def rebuild(self, year: int, month: int) -> None:
        if year != self.lastyear:
            self.meter.charge(self.costs.year)
        elif month != self.lastmonth:
            self.meter.charge(self.costs.month)
        super().rebuild(year, month)

    def ydayset(self, year: int, month: int, day: int) -> _DaySet:
        return self._period(date(year, 1, 1), super().ydayset(year, month, day))

    def mdayset(self, year: int, month: int, day: int) -> _DaySet:
        return self._period(date(year, month, 1), super().mdayset(year, month, day))

    def wdayset(self, year: int, month: int, day: int) -> _DaySet:
        return self._period(date(year, month, day), super().wdayset(year, month, day))

    def ddayset(self, year: int, month: int, day: int) -> _DaySet:
        return self._period(date(year, month, day), super().ddayset(year, month, day))


def _metered_loop() -> Callable[[rrule], Iterator[datetime]]:
    """dateutil's `rrule._iter`, the same code, reading `_iterinfo` from a namespace where it
    is `_MeteredInfo`. Refuses to build if that code no longer asks for what is hooked."""
    loop: Any = vars(rrule)["_iter"]
    code: types.CodeType = loop.__code__
    hooked = {"_iterinfo", "rebuild", "ydayset", "mdayset", "wdayset", "ddayset"}
    if missing := hooked - set(code.co_names):
        raise ImportError(f"dateutil's rrule._iter no longer uses {sorted(missing)}")
    namespace = {**vars(du), "_iterinfo": _MeteredInfo}
    built: Callable[[rrule], Iterator[datetime]] = types.FunctionType(
        code, namespace, "_iter", loop.__defaults__, loop.__closure__
    )
    return built


_LOOP = _metered_loop()


def walk(rule: rrule, meter: Meter) -> Iterator[datetime]:
    """The rule's instants in order, as `iter(rule)` gives them; raises `WorkExceeded` or
    `WindowEnd` instead of walking on, and `Unreachable` (a ValueError, as dateutil raises
    for some rules it cannot expand) for a fine FREQ whose steps never land."""
    vars(rule)["_walk_meter"] = meter
    for instant in _LOOP(rule):
        meter.charge(YIELD_STEPS)
        yield instant
