"""Recurrence expansion is bounded by work: adversarial rules (BYSETPOS, fine frequencies over
rare or impossible days, huge INTERVAL or COUNT, no end) are expanded or refused within
100 ms of CPU, the metered loop yields what dateutil yields, a control shows the bound is what
stops them, honest series still book, and no occurrence ends on or after 9000-01-01."""

from __future__ import annotations

import asyncio
import gc
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any

import httpx
import pytest
from dateutil.rrule import rrule, rrulestr
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from reservations.bookings import service as booking_service
from reservations.bookings.recurrence import (
    HORIZON,
    MAX_OCCURRENCES,
    WORK_BUDGET,
    RecurrenceError,
    expand,
)
from reservations.bookings.walk import Meter, WindowEnd, WorkExceeded, walk
from reservations.kit.fields import LATEST
from tests.support.api import Tenant, _created, _problem

CPU_LIMIT = 0.1  # seconds of this thread's CPU per expansion
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati"]
WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]

# Found by hand or by the generator below; each cost seconds to forever before the bound.
WORST = [
    "FREQ=SECONDLY;BYSETPOS=2",  # one instant per period, so never a second one: forever
    "FREQ=HOURLY;BYSETPOS=2",
    "FREQ=SECONDLY;BYHOUR=23;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",  # 82,800 s searched per day
    "FREQ=MINUTELY;BYHOUR=23;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",
    "FREQ=SECONDLY;INTERVAL=7;BYHOUR=23;BYMINUTE=59;BYSECOND=59",
    "FREQ=YEARLY;BYSETPOS=366;BYDAY=MO",
    "FREQ=MONTHLY;BYDAY=1MO;BYMONTHDAY=8",  # the first Monday is never the 8th
    "FREQ=YEARLY;BYWEEKNO=53;BYDAY=1MO",
    "FREQ=WEEKLY;INTERVAL=9999;BYMONTH=2;BYMONTHDAY=29",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;COUNT=2",  # leap day on a Monday: 28 years
    "FREQ=HOURLY;BYMINUTE="
    + ",".join(map(str, range(60)))
    + ";BYSECOND="
    # 3,600 times of day rebuilt every hour, on days that almost never come
    + ",".join(map(str, range(60)))
    + ";BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",
    "FREQ=DAILY;BYHOUR="
    + ",".join(map(str, range(24)))
    + ";BYMINUTE="
    # 86,400 times of day, most of them before DTSTART on the first day
    + ",".join(map(str, range(60)))
    + ";BYSECOND="
    + ",".join(map(str, range(60)))
    + ";COUNT=5",
    "FREQ=YEARLY;BYSETPOS=" + ",".join(str(-p) for p in range(366, 300, -1)) + ";BYDAY=MO",
]


@contextmanager
def wall_guard(seconds: float) -> Iterator[None]:
    """Stop a runaway expansion (the code before the bound) so the test fails, not hangs."""

    def stop(signum: int, frame: object) -> None:
        raise TimeoutError(f"still expanding after {seconds}s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except TimeoutError as exc:
        # Raised somewhere inside dateutil's generator, whose frames pytest cannot render.
        raise AssertionError(str(exc)) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def cpu_of_expansion(rule: str, start: datetime, zone: str = "UTC") -> tuple[float, str]:
    """CPU seconds this thread spent expanding `rule`, and what came of it. The collector is
    held off meanwhile: a full collection walks the whole test process's heap (pytest,
    hypothesis, the app), which is not the expansion's work."""
    gc.disable()
    try:
        with wall_guard(3.0):
            before = time.thread_time()
            try:
                outcome = f"{len(expand(rule, zone=zone, start=start, end=start + MINUTE))} occ"
            except RecurrenceError as exc:
                outcome = f"refused: {exc}"
            return time.thread_time() - before, outcome
    finally:
        gc.enable()


# The generator ---------------------------------------------------------------------------


def _values(low: int, high: int, zero: bool = False) -> st.SearchStrategy[list[int]]:
    one = st.integers(low, high).filter(lambda v: zero or v != 0)
    span = st.integers(low, high).flatmap(
        lambda a: st.integers(a, min(a + 70, high)).map(lambda b: list(range(a, b + 1)))
    )
    return st.lists(one, min_size=1, max_size=6, unique=True) | span.map(
        lambda vs: [v for v in vs if zero or v != 0]
    ).filter(bool)


def _joined(values: list[int]) -> str:
    return ",".join(map(str, values))


_BYDAY = st.lists(
    st.tuples(
        st.sampled_from(["", "", "1", "-1", "2", "5", "-5", "53", "-53", "+3"]),
        st.sampled_from(WEEKDAYS),
    ).map("".join),
    min_size=1,
    max_size=7,
    unique=True,
).map(",".join)

_SPARSE = {
    "BYSETPOS": _values(-366, 366).map(_joined)
    | st.sampled_from(["2", "366", "-366", "5", "1,2,3", "-1"]),
    "BYMONTH": st.sampled_from(["2", "2,4", "12", "1,7"]) | _values(1, 12).map(_joined),
    "BYMONTHDAY": st.sampled_from(["29", "30", "31", "-31", "1", "-1"])
    | _values(-31, 31).map(_joined),
    "BYYEARDAY": st.sampled_from(["366", "-366", "60", "1", "-1"])
    | _values(-366, 366).map(_joined),
    "BYWEEKNO": st.sampled_from(["53", "-53", "1", "52"]) | _values(-53, 53).map(_joined),
    "BYDAY": _BYDAY,
    "BYHOUR": st.sampled_from(["23", "0", "9,17"]) | _values(0, 23, zero=True).map(_joined),
    "BYMINUTE": st.sampled_from(["59", "0", "0,30"]) | _values(0, 59, zero=True).map(_joined),
    "BYSECOND": st.sampled_from(["59", "0"]) | _values(0, 59, zero=True).map(_joined),
    "WKST": st.sampled_from(WEEKDAYS),
}


@st.composite
def adversarial_rules(draw: st.DrawFn) -> str:
    freq = draw(
        st.sampled_from(["SECONDLY", "MINUTELY", "HOURLY"])
        | st.sampled_from(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"])
    )
    parts = [f"FREQ={freq}"]
    interval = draw(st.sampled_from([1, 1, 2, 7, 59, 61, 3599, 9999]) | st.integers(1, 9999))
    if interval != 1:
        parts.append(f"INTERVAL={interval}")
    for name in draw(st.lists(st.sampled_from(sorted(_SPARSE)), max_size=5, unique=True)):
        parts.append(f"{name}={draw(_SPARSE[name])}")
    end = draw(st.sampled_from(["none", "count", "until"]))
    if end == "count":
        parts.append(f"COUNT={draw(st.sampled_from([1, 2, 1000, 9999]) | st.integers(1, 9999))}")
    elif end == "until":
        until = draw(st.dates(date(1970, 1, 1), date(9999, 12, 31)))
        clock = draw(st.sampled_from(["", "T235959", "T000000Z"]))
        parts.append(f"UNTIL={until:%Y%m%d}{clock}")
    rule = ";".join(draw(st.permutations(parts)))
    return rule


_STARTS = st.datetimes(datetime(1970, 1, 2), datetime(8999, 12, 1)).map(
    lambda d: d.replace(tzinfo=UTC, microsecond=0)
)
_NEAR_STARTS = st.datetimes(datetime(2026, 1, 1), datetime(2031, 12, 31)).map(
    lambda d: d.replace(tzinfo=UTC, microsecond=0)
)
ADVERSARIAL = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@ADVERSARIAL
@given(adversarial_rules().filter(lambda r: len(r) <= 500), _NEAR_STARTS | _STARTS)
@example(WORST[0], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[1], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[2], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[3], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[4], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[5], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[6], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[7], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[8], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[9], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[10], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[11], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example(WORST[12], datetime(2026, 3, 2, 17, tzinfo=UTC))
@example("FREQ=MINUTELY;BYHOUR=23;BYMONTHDAY=31;BYMONTH=1,3", datetime(2099, 1, 1, tzinfo=UTC))
@example("FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=29", datetime(2097, 3, 1, tzinfo=UTC))
def test_adversarial_rules_are_expanded_or_refused_within_100ms(rule: str, start: datetime) -> None:
    cpu, outcome = cpu_of_expansion(rule, start, "Europe/Berlin")
    assert cpu < CPU_LIMIT, f"{cpu * 1000:.0f} ms of CPU for {rule} from {start}: {outcome}"


@settings(max_examples=40, deadline=None)
@given(adversarial_rules().filter(lambda r: len(r) <= 500), st.sampled_from(ZONES), _NEAR_STARTS)
def test_the_bound_holds_in_any_zone(rule: str, zone: str, start: datetime) -> None:
    cpu, outcome = cpu_of_expansion(rule, start, zone)
    assert cpu < CPU_LIMIT, f"{cpu * 1000:.0f} ms of CPU for {rule} in {zone}: {outcome}"


@pytest.mark.parametrize("rule", WORST[:5])
def test_the_worst_rules_are_refused_by_the_work_bound_and_say_how_to_fix_them(rule: str) -> None:
    start = datetime(2026, 3, 2, 17, tzinfo=UTC)
    with wall_guard(3.0), pytest.raises(RecurrenceError, match="steps to expand") as refused:
        expand(rule, zone="Europe/Berlin", start=start, end=start + MINUTE)
    assert "coarser FREQ" in str(refused.value)
    assert "UNTIL" in str(refused.value)


# The metered loop is dateutil's loop -------------------------------------------------------


def _plain(text: str, first: datetime) -> rrule | None:
    try:
        parsed = rrulestr("RRULE:" + text, dtstart=first)
    except (ValueError, TypeError, KeyError, OverflowError):
        return None
    return parsed if isinstance(parsed, rrule) else None


@settings(max_examples=120, deadline=None)
@given(adversarial_rules().filter(lambda r: len(r) <= 500), _NEAR_STARTS)
@example("FREQ=MONTHLY;BYSETPOS=-1;BYDAY=FR;COUNT=60", datetime(2026, 1, 1, 9, tzinfo=UTC))
@example("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR;COUNT=300", datetime(2026, 1, 1, 9, tzinfo=UTC))
@example("FREQ=MINUTELY;INTERVAL=7;BYHOUR=23;COUNT=500", datetime(2026, 1, 1, 9, tzinfo=UTC))
def test_the_metered_walk_yields_what_dateutil_yields(rule: str, start: datetime) -> None:
    """Up to where the metered walk stops, it hands out exactly dateutil's instants: it is
    the same loop, only watched. (dateutil itself gets there with the same work.)"""
    first = start.replace(tzinfo=None)
    metered, plain = _plain(rule, first), _plain(rule, first)
    if metered is None or plain is None:
        return
    meter = Meter(budget=WORK_BUDGET, stop=(first + HORIZON).date())
    got: list[datetime] = []
    stopped = "end"
    with wall_guard(3.0):
        try:
            for instant in walk(metered, meter):
                got.append(instant)
                if len(got) > MAX_OCCURRENCES:
                    break
        except WorkExceeded:
            stopped = "work"
        except WindowEnd:
            stopped = "window"
        except (ValueError, IndexError):  # dateutil's own refusals (and one crash)
            stopped = "dateutil"
        assert got == list(islice(plain, len(got))), stopped


def test_until_ends_the_search_where_dateutil_would_search_on() -> None:
    """A Tuesday 29 February at 09:00: 2028, then not before 2056. dateutil finds 2028 and
    then walks 28 years of days to learn that 2056 is past UNTIL; the walk stops at UNTIL."""
    rule = "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=TU;BYHOUR=9;UNTIL=20300101"
    first = datetime(2026, 3, 2, 9)
    got: list[datetime] = []
    meter = Meter(budget=WORK_BUDGET, stop=date(2030, 1, 1))
    with pytest.raises(WindowEnd):
        got.extend(walk(rrulestr("RRULE:" + rule, dtstart=first), meter))  # type: ignore[arg-type]
    assert got == [datetime(2028, 2, 29, 9)]
    assert got == list(rrulestr("RRULE:" + rule, dtstart=first))  # dateutil gets there, slowly
    start = first.replace(tzinfo=UTC)
    occ = expand(rule, zone="UTC", start=start, end=start + HOUR)
    assert [o.start for o in occ] == [datetime(2028, 2, 29, 9, tzinfo=UTC)]


# The control: without the bound, the same rules run on -----------------------------------

CONTROL = """
import sys
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from dateutil.rrule import rrulestr
from reservations.bookings.recurrence import expand

rule, how = sys.argv[1], sys.argv[2]
start = datetime(2026, 3, 2, 17, tzinfo=UTC)
print("ready", flush=True)
if how == "unmetered":
    expand(rule, zone="UTC", start=start, end=start + timedelta(minutes=1), budget=None)
else:  # dateutil as the code before the bound ran it (islice over its iterator)
    list(islice(rrulestr("RRULE:" + rule, dtstart=start.replace(tzinfo=None)), 367))
print("finished", flush=True)
"""


@pytest.mark.parametrize("how", ["unmetered", "plain dateutil"])
def test_without_the_bound_an_adversarial_rule_runs_past_one_second(how: str) -> None:
    rule = "FREQ=SECONDLY;BYSETPOS=2"
    start = datetime(2026, 3, 2, 17, tzinfo=UTC)
    cpu, outcome = cpu_of_expansion(rule, start)
    assert cpu < CPU_LIMIT
    assert "steps to expand" in outcome
    child = subprocess.Popen(
        [sys.executable, "-c", CONTROL, rule, how], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready
        assert child.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        assert child.poll() is None, "the expansion finished within 1 s without the bound"
    finally:
        child.kill()
        child.wait()


# Honest series ---------------------------------------------------------------------------

HONEST = [
    ("FREQ=DAILY;COUNT=1000", MAX_OCCURRENCES),
    ("FREQ=DAILY;COUNT=500", 500),
    ("FREQ=WEEKLY;BYDAY=MO,WE,FR;UNTIL=20280301T000000Z", 313),
    ("FREQ=MONTHLY;BYSETPOS=-1;BYDAY=FR;UNTIL=20310301T000000Z", 60),
    ("FREQ=HOURLY;BYHOUR=9,10,11,12,13,14,15,16;BYDAY=MO,TU,WE,TH,FR;COUNT=1000", 1000),
    ("FREQ=DAILY;BYHOUR=9,12,15;BYMINUTE=0,30;COUNT=1000", 1000),
]


@pytest.mark.parametrize(("rule", "count"), HONEST)
def test_honest_series_fit_in_half_the_budget(rule: str, count: int) -> None:
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    occ = expand(rule, zone="UTC", start=start, end=start + MINUTE, budget=WORK_BUDGET // 2)
    assert len(occ) == count


# 9000-01-01 ------------------------------------------------------------------------------


def test_no_occurrence_may_end_on_or_after_9000() -> None:
    start = datetime(8999, 12, 31, 21, tzinfo=UTC)
    last = expand("FREQ=HOURLY;COUNT=3", zone="UTC", start=start, end=start + 59 * MINUTE)
    assert last[-1].end == LATEST - MINUTE
    with pytest.raises(RecurrenceError, match="9000-01-01"):
        expand("FREQ=HOURLY;COUNT=3", zone="UTC", start=start, end=start + HOUR)
    with pytest.raises(RecurrenceError, match="9000-01-01") as refused:
        expand("FREQ=DAILY;COUNT=5", zone="Pacific/Kiritimati", start=start, end=start + HOUR)
    # The occurrence is named in UTC and in the series' zone.
    assert str(refused.value).startswith(
        "the occurrence starting 9000-01-01 21:00 UTC (9000-01-02 11:00 Pacific/Kiritimati) "
        "would end on or after 9000-01-01"
    ), refused.value


# Through the API -------------------------------------------------------------------------


def _book(tenant: Tenant, start: str, rule: str) -> httpx.Response:
    room = tenant.admin.resource()
    end = datetime.fromisoformat(start) + timedelta(minutes=30)
    body = {
        "resources": [{"resource_id": room["id"]}],
        "start": start,
        "end": end.isoformat(),
        "rrule": rule,
    }
    return tenant.booker.post("/v1/bookings", json=body)


def _weekdays(first: int, last: int, weekdays: set[int]) -> int:
    day, n = date(first, 1, 1), 0
    while day.year <= last:
        n += day.weekday() in weekdays
        day += timedelta(days=1)
    return n


@pytest.mark.parametrize(
    ("rule", "count"),
    [
        ("FREQ=DAILY;COUNT=500", 500),
        (
            "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20311231T235959Z",
            _weekdays(2030, 2031, {0, 1, 2, 3, 4}),  # 522: more than the 366 allowed before
        ),
        ("FREQ=MONTHLY;BYSETPOS=-1;BYDAY=FR;UNTIL=20341231T235959Z", 60),
    ],
)
def test_honest_series_book(tenant: Tenant, rule: str, count: int) -> None:
    r = _book(tenant, "2030-01-01T09:00:00+00:00", rule)
    assert len(_created(r)["reservations"]) == count


def test_an_adversarial_series_is_refused_at_once_and_leaves_nothing_running(
    tenant: Tenant,
) -> None:
    before = time.monotonic()
    r = _book(tenant, "2030-01-01T09:00:00+00:00", WORST[0])
    assert time.monotonic() - before < 1.5
    body = _problem(r, 422, "invalid-input")
    assert [e["field"] for e in body["errors"]] == ["rrule"], body
    assert "coarser FREQ" in body["detail"]
    # A thread left expanding (the deadline's way) would burn this process's CPU now.
    cpu = time.process_time()
    time.sleep(1.0)
    assert time.process_time() - cpu < 0.3


def test_a_series_is_expanded_while_its_request_holds_no_connection(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expansion runs before the booking takes a pooled connection (so before any
    advisory lock, which lives in a transaction, and before the Redlock of a booking across
    clusters): counted per request task while it runs. The control: the evaluation of the
    occurrences, under the booking's transaction, sees the connection the probe counts."""
    held: dict[object, int] = {}
    seen: dict[str, list[int]] = {"expansion": [], "evaluation": []}
    take = AsyncConnectionPool.connection

    @asynccontextmanager
    async def counted(self: AsyncConnectionPool[Any], *args: Any, **kw: Any) -> AsyncIterator[Any]:
        task = asyncio.current_task()
        held[task] = held.get(task, 0) + 1
        try:
            async with take(self, *args, **kw) as conn:
                yield conn
        finally:
            held[task] -= 1

    def watched(name: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def wrapper(*args: Any, **kw: Any) -> Any:
            seen[name].append(held.get(asyncio.current_task(), 0))
            return await original(*args, **kw)

        return wrapper

    monkeypatch.setattr(AsyncConnectionPool, "connection", counted)
    monkeypatch.setattr(
        booking_service, "occurrences_of", watched("expansion", booking_service.occurrences_of)
    )
    monkeypatch.setattr(
        booking_service, "evaluate", watched("evaluation", booking_service.evaluate)
    )
    r = _book(tenant, "2030-01-01T09:00:00+00:00", "FREQ=DAILY;COUNT=5")
    assert len(_created(r)["reservations"]) == 5
    assert seen == {"expansion": [0], "evaluation": [1]}


def test_a_series_past_9000_is_refused(tenant: Tenant) -> None:
    r = _book(tenant, "8999-12-30T09:00:00+00:00", "FREQ=DAILY;COUNT=5")
    body = _problem(r, 422, "invalid-input")
    assert [e["field"] for e in body["errors"]] == ["rrule"], body
    assert "9000-01-01" in body["detail"]
