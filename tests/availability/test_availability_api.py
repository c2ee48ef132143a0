"""Availability and search over HTTP: slots and free spans under every rule, explain, errors,
agreement between what availability offers and what a booking accepts, DST days, and the
search across resources with its pagination. Also the OpenAPI document of the new routes."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from reservations.kit.clock import Clock
from reservations.kit.openapi import PROBLEM_SCHEMAS
from tests.support.api import PROBLEM, Api, Tenant, _created, _problem

BERLIN = "Europe/Berlin"
ALL_DAY = {
    d: [{"start": "00:00", "end": "24:00"}]
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def local(zone: str, day: str, hhmm: str, fold: int = 0) -> datetime:
    wall = datetime.fromisoformat(f"{day}T{hhmm}:00")
    return wall.replace(tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


def set_now(clock: Clock, instant: datetime) -> None:
    clock.offset = instant - datetime.now(UTC)


def avail(
    api: Api, rid: str, start: datetime | str, end: datetime | str, **params: Any
) -> httpx.Response:
    query = {
        "from": start if isinstance(start, str) else iso(start),
        "to": end if isinstance(end, str) else iso(end),
        **params,
    }
    return api.get(f"/v1/resources/{rid}/availability", params=query)


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return dict(r.json())


def slots(body: dict[str, Any]) -> list[tuple[datetime, datetime]]:
    return [(ts(s["start"]), ts(s["end"])) for s in body["slots"]]


def spans(items: list[dict[str, Any]]) -> list[tuple[datetime, datetime]]:
    return [(ts(s["start"]), ts(s["end"])) for s in items]


def walls(zone: str, instants: list[datetime]) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%H:%M") for t in instants]


# --- one resource --------------------------------------------------------------------------

MONDAY = "2030-06-03"  # CEST, UTC+2


def L(hhmm: str, day: str = MONDAY) -> datetime:
    return local(BERLIN, day, hhmm)


@pytest.fixture
def office(tenant: Tenant) -> dict[str, Any]:
    """Monday 08-12 and 13-17 Berlin time, hourly grid, 30 min turnover after each booking,
    a blackout 14-15, and one booking 09-10."""
    policy = {
        "weekly_hours": {
            "mon": [{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}]
        },
        "slot_grid_minutes": 60,
        "buffer_after": "PT30M",
        "blackouts": [{"start": iso(L("14:00")), "end": iso(L("15:00")), "reason": "Cleaning"}],
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    _created(tenant.admin.book(room["id"], iso(L("09:00")), iso(L("10:00"))))
    return room


def test_slots_and_free_spans_follow_every_rule(tenant: Tenant, office: dict[str, Any]) -> None:
    day = (L("00:00"), L("00:00", "2030-06-04"))
    body = ok(avail(tenant.booker, office["id"], *day, duration="PT1H"))
    assert body["resource_id"] == office["id"]
    assert body["timezone"] == BERLIN
    assert body["capacity"] == 1
    assert (body["from"], body["to"], body["duration"], body["quantity"]) == (
        iso(day[0]),
        iso(day[1]),
        "PT1H",
        1,
    )
    assert "unavailable" not in body
    # 08:00 would run into the booking's start; 10:00 into its turnover; 14:00 the blackout
    assert slots(body) == [
        (L(h), L(h) + timedelta(hours=1)) for h in ("11:00", "13:00", "15:00", "16:00")
    ]
    assert all(s["remaining"] == 1 for s in body["slots"])
    # free spans: where a booking fits (its own 30 min turnover must end by 09:00)
    assert spans(body["free"]) == [
        (L("08:00"), L("08:30")),
        (L("10:30"), L("12:00")),
        (L("13:00"), L("14:00")),
        (L("15:00"), L("17:00")),
    ]
    # a shorter duration fits 08:00 too, and other weekdays are closed
    body = ok(avail(tenant.booker, office["id"], *day, duration="PT30M"))
    assert walls(BERLIN, [s for s, _ in slots(body)]) == [
        "08:00",
        "11:00",
        "13:00",
        "15:00",
        "16:00",
    ]
    body = ok(
        avail(
            tenant.booker,
            office["id"],
            L("00:00", "2030-06-04"),
            L("00:00", "2030-06-10"),
            duration="PT1H",
        )
    )
    assert body["slots"] == []
    assert body["free"] == []
    # without duration: free spans only
    body = ok(avail(tenant.booker, office["id"], *day))
    assert body["slots"] == []
    assert "duration" not in body
    assert len(body["free"]) == 4


def test_every_offered_slot_books_and_nearby_times_do_not(
    tenant: Tenant, office: dict[str, Any]
) -> None:
    day = (L("00:00"), L("00:00", "2030-06-04"))
    offered = slots(ok(avail(tenant.booker, office["id"], *day, duration="PT1H")))
    # not offered: off the grid, closed, in the blackout, in the turnover
    bk = tenant.booker
    assert (
        _problem(
            bk.book(office["id"], iso(L("11:30")), iso(L("12:00"))), 422, "booking-rule-violated"
        )["reason"]
        == "off-grid"
    )
    assert (
        _problem(
            bk.book(office["id"], iso(L("12:00")), iso(L("13:00"))), 422, "booking-rule-violated"
        )["reason"]
        == "outside-opening-hours"
    )
    assert (
        _problem(
            bk.book(office["id"], iso(L("14:00")), iso(L("15:00"))), 422, "booking-rule-violated"
        )["reason"]
        == "in-blackout"
    )
    _problem(bk.book(office["id"], iso(L("10:00")), iso(L("11:00"))), 409, "reservation-conflict")
    # offered: 11 and 13 and 15 do not touch each other's turnover; 16 would meet 15's
    for start, end in offered[:3]:
        _created(bk.book(office["id"], iso(start), iso(end)))
    _problem(bk.book(office["id"], *map(iso, offered[3])), 409, "reservation-conflict")
    assert slots(ok(avail(bk, office["id"], *day, duration="PT1H"))) == []


def test_explain_lists_every_unavailable_range(tenant: Tenant, office: dict[str, Any]) -> None:
    day = (L("00:00"), L("00:00", "2030-06-04"))
    body = ok(avail(tenant.viewer, office["id"], *day, duration="PT1H", explain="true"))
    got = [(ts(u["start"]), ts(u["end"]), u["reason"], u["detail"]) for u in body["unavailable"]]
    assert got == [
        (L("00:00"), L("08:00"), "outside-opening-hours", "closed"),
        (L("08:30"), L("09:00"), "buffer", "turnover time next to a booking"),
        (L("09:00"), L("10:30"), "booked", "booked"),
        (L("12:00"), L("13:00"), "outside-opening-hours", "closed"),
        (L("14:00"), L("15:00"), "in-blackout", "Cleaning"),
        (L("17:00"), day[1], "outside-opening-hours", "closed"),
    ]
    # explain does not change the slots
    plain = ok(avail(tenant.viewer, office["id"], *day, duration="PT1H"))
    assert plain["slots"] == body["slots"]
    assert plain["free"] == body["free"]


def test_notice_and_advance_bound_the_slots(tenant: Tenant, clock: Clock) -> None:
    now = datetime(2030, 6, 3, 8, 0, tzinfo=UTC)
    set_now(clock, now)
    room = tenant.admin.resource(
        policy={"min_notice": "PT2H", "max_advance": "P1D", "slot_grid_minutes": 60}
    )
    window = (datetime(2030, 6, 3, tzinfo=UTC), datetime(2030, 6, 5, tzinfo=UTC))
    body = ok(avail(tenant.booker, room["id"], *window, duration="PT1H", explain="true"))
    starts = [s for s, _ in slots(body)]
    # the clock runs on a little: the first whole hour at least 2 h on, the last at most 1 day
    assert starts[0] == datetime(2030, 6, 3, 11, tzinfo=UTC)
    assert starts[-1] == datetime(2030, 6, 4, 8, tzinfo=UTC)
    assert starts == [starts[0] + timedelta(hours=i) for i in range(len(starts))]
    assert ts(body["free"][0]["start"]) - now >= timedelta(hours=2)
    reasons = {u["reason"]: (ts(u["start"]), ts(u["end"])) for u in body["unavailable"]}
    assert reasons["in-the-past"][0] == window[0]
    assert reasons["in-the-past"][1] - now < timedelta(minutes=1)  # now, as the clock ran
    assert reasons["too-soon"][0] == reasons["in-the-past"][1]
    assert reasons["too-soon"][1] - now >= timedelta(hours=2)
    assert reasons["too-far-ahead"][1] == window[1]
    # and both ends agree with the booking rules
    _created(tenant.booker.book(room["id"], iso(starts[0]), iso(starts[0] + timedelta(hours=1))))
    _created(tenant.booker.book(room["id"], iso(starts[-1]), iso(starts[-1] + timedelta(hours=1))))
    r = tenant.booker.book(
        room["id"], iso(starts[-1] + timedelta(hours=1)), iso(starts[-1] + timedelta(hours=2))
    )
    assert _problem(r, 422, "booking-rule-violated")["reason"] == "too-far-ahead"


def test_date_override_and_step(tenant: Tenant) -> None:
    policy = {
        "weekly_hours": {"mon": [{"start": "09:00", "end": "11:00"}]},
        "date_overrides": [
            {"date": "2030-06-10", "hours": []},
            {"date": "2030-06-17", "hours": [{"start": "10:00", "end": "11:00"}]},
        ],
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    rid = room["id"]

    def starts(day: str, **params: Any) -> list[str]:
        body = ok(
            avail(tenant.booker, rid, L("00:00", day), L("23:00", day), duration="PT30M", **params)
        )
        return walls(BERLIN, [s for s, _ in slots(body)])

    assert starts("2030-06-03") == ["09:00", "09:15", "09:30", "09:45", "10:00", "10:15", "10:30"]
    assert starts("2030-06-03", step=30) == ["09:00", "09:30", "10:00", "10:30"]
    assert starts("2030-06-10") == []
    assert starts("2030-06-17", step=20) == ["10:00", "10:20"]


def test_booker_limit_hides_slots_from_that_booker_only(tenant: Tenant) -> None:
    room = tenant.admin.resource(
        policy={"booker_limit": {"max_live": 1, "period": "day"}, "slot_grid_minutes": 60}
    )
    rid = room["id"]
    day = (datetime(2030, 6, 3, tzinfo=UTC), datetime(2030, 6, 4, tzinfo=UTC))
    _created(tenant.booker.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T11:00:00Z"))
    mine = ok(avail(tenant.booker, rid, *day, duration="PT1H", explain="true"))
    assert mine["slots"] == []
    assert [u["reason"] for u in mine["unavailable"] if u["reason"] == "booker-limit"] == [
        "booker-limit"
    ]
    theirs = ok(avail(tenant.another_booker(), rid, *day, duration="PT1H"))
    assert len(theirs["slots"]) == 23


def test_availability_errors(tenant: Tenant, other_tenant: Tenant, app_client: TestClient) -> None:
    room = tenant.admin.resource(policy={"min_duration": "PT30M", "max_duration": "PT2H"})
    rid = room["id"]
    a = datetime(2030, 6, 1, tzinfo=UTC)
    r = avail(tenant.booker, rid, a, a + timedelta(days=31, seconds=1))
    body = _problem(r, 422, "invalid-input")
    assert body["errors"][0]["field"] == "to"
    ok(avail(tenant.booker, rid, a, a + timedelta(days=31)))
    _problem(avail(tenant.booker, rid, a, a), 422, "invalid-input")
    _problem(avail(tenant.booker, rid, a, a - timedelta(hours=1)), 422, "invalid-input")
    _problem(
        avail(tenant.booker, rid, "2030-06-01T00:00:00", iso(a + timedelta(days=1))),
        422,
        "invalid-input",
    )
    _problem(
        avail(tenant.booker, rid, a, a + timedelta(days=1), duration="P1M"), 422, "invalid-input"
    )
    _problem(
        avail(tenant.booker, rid, a, a + timedelta(days=1), duration="PT0S"), 422, "invalid-input"
    )
    body = _problem(
        avail(tenant.booker, rid, a, a + timedelta(days=1), duration="PT10M"),
        422,
        "booking-rule-violated",
    )
    assert body["reason"] == "too-short"
    assert body["violations"][0]["reason"] == "too-short"
    body = _problem(
        avail(tenant.booker, rid, a, a + timedelta(days=1), duration="PT3H"),
        422,
        "booking-rule-violated",
    )
    assert body["reason"] == "too-long"
    _problem(
        avail(tenant.booker, "00000000-0000-0000-0000-000000000007", a, a + timedelta(days=1)),
        404,
        "not-found",
    )
    _problem(avail(other_tenant.admin, rid, a, a + timedelta(days=1)), 404, "not-found")
    r = app_client.get(
        f"/v1/resources/{rid}/availability",
        params={"from": iso(a), "to": iso(a + timedelta(days=1))},
    )
    _problem(r, 401, "unauthenticated")
    # every role of the tenant may read it
    for api in (tenant.viewer, tenant.booker, tenant.admin):
        ok(avail(api, rid, a, a + timedelta(days=1), duration="PT1H"))


# --- agreement: what is offered can be booked, and nothing else ------------------------------


def _gone(
    slot: tuple[datetime, datetime], booked: tuple[datetime, datetime], bb: timedelta, ba: timedelta
) -> bool:
    """Whether a slot meets a booking, turnover included (both sides widened)."""
    return slot[0] - bb < booked[1] + ba and booked[0] - bb < slot[1] + ba


def test_booking_offered_slots_one_by_one_removes_exactly_the_overlapping(tenant: Tenant) -> None:
    rng = random.Random(20300603)
    bb, ba = timedelta(minutes=10), timedelta(minutes=20)
    policy = {
        "weekly_hours": {
            d: [{"start": "07:00", "end": "12:30"}, {"start": "13:30", "end": "19:00"}]
            for d in ("mon", "tue", "wed")
        },
        "slot_grid_minutes": 15,
        "buffer_before": "PT10M",
        "buffer_after": "PT20M",
        "blackouts": [
            {"start": iso(L("15:00", "2030-06-04")), "end": iso(L("16:10", "2030-06-04"))}
        ],
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    rid, bk = room["id"], tenant.booker
    for start, end in [("09:00", "10:00"), ("16:45", "17:15")]:
        _created(tenant.admin.book(rid, iso(L(start)), iso(L(end))))
    window = (L("00:00"), L("00:00", "2030-06-06"))
    offered = slots(ok(avail(bk, rid, *window, duration="PT45M")))
    assert len(offered) > 50

    # everything on a 5-minute grid that is not offered is refused (sampled)
    candidates = [window[0] + timedelta(minutes=5 * i) for i in range(3 * 24 * 12)]
    starts = {s for s, _ in offered}
    refused = rng.sample([c for c in candidates if c not in starts], 40)
    for start in refused:
        r = bk.book(rid, iso(start), iso(start + timedelta(minutes=45)))
        assert r.status_code in (409, 422), (start, r.text)

    for _ in range(6):
        pick = rng.choice(offered)
        made = _created(bk.book(rid, iso(pick[0]), iso(pick[1])))
        assert (ts(made["start"]), ts(made["end"])) == pick
        now_offered = slots(ok(avail(bk, rid, *window, duration="PT45M")))
        assert now_offered == [s for s in offered if not _gone(s, pick, bb, ba)]
        assert pick not in now_offered
        offered = now_offered
    # a slot offered last is still bookable, a removed neighbour is not
    _created(bk.book(rid, *map(iso, rng.choice(offered))))


@st.composite
def random_policy(draw: st.DrawFn) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    if draw(st.booleans()):
        hours = {}
        for d in ("mon", "tue"):
            cuts = sorted(draw(st.sets(st.integers(0, 96), min_size=2, max_size=4)))
            intervals = [(a * 15, b * 15) for a, b in zip(cuts[::2], cuts[1::2], strict=False)]
            hours[d] = [
                {
                    "start": f"{a // 60:02d}:{a % 60:02d}",
                    "end": "24:00" if b == 1440 else f"{b // 60:02d}:{b % 60:02d}",
                }
                for a, b in intervals
            ]
        policy["weekly_hours"] = hours
    policy["slot_grid_minutes"] = draw(st.sampled_from([None, 10, 15, 30, 60]))
    for key in ("buffer_before", "buffer_after"):
        policy[key] = draw(st.sampled_from(["PT0S", "PT5M", "PT15M", "PT1H"]))
    if draw(st.booleans()):
        policy["max_duration"] = "PT2H"
    if draw(st.booleans()):
        a = datetime(2030, 6, 3, 4, tzinfo=UTC) + timedelta(minutes=15 * draw(st.integers(0, 96)))
        policy["blackouts"] = [
            {"start": iso(a), "end": iso(a + timedelta(minutes=15 * draw(st.integers(1, 16))))}
        ]
    return {k: v for k, v in policy.items() if v is not None}


@hyp_settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    policy=random_policy(),
    zone=st.sampled_from(["UTC", BERLIN, "Asia/Kathmandu", "America/New_York"]),
    capacity=st.sampled_from([1, 2]),
    existing=st.lists(st.tuples(st.integers(0, 90), st.integers(1, 8)), max_size=4),
    seed=st.integers(0, 2**16),
)
def test_random_policies_offer_exactly_what_books(
    tenant: Tenant,
    policy: dict[str, Any],
    zone: str,
    capacity: int,
    existing: list[tuple[int, int]],
    seed: int,
) -> None:
    rng = random.Random(seed)
    room = tenant.admin.resource(timezone=zone, capacity=capacity, policy=policy)
    rid, bk = room["id"], tenant.booker
    base = datetime(2030, 6, 3, 0, tzinfo=UTC)
    for offset, length in existing:
        start = base + timedelta(minutes=15 * offset)
        tenant.admin.book(
            rid, iso(start), iso(start + timedelta(minutes=15 * length)), override_rules=True
        )
    window = (base, base + timedelta(days=1))
    offered = slots(ok(avail(bk, rid, *window, duration="PT30M", step=15)))
    starts = {s for s, _ in offered}
    for pick in rng.sample(offered, min(3, len(offered))):
        made = _created(bk.book(rid, iso(pick[0]), iso(pick[1])))
        assert bk.post(f"/v1/reservations/{made['id']}/cancel").status_code == 200
    grid = [base + timedelta(minutes=5 * i) for i in range(24 * 12)]
    # (a slot must fit in the window: starts too late to end in it are not offered)
    later = [g for g in grid if g not in starts and g + timedelta(minutes=30) <= window[1]]
    for start in rng.sample(later, 6):
        r = bk.book(rid, iso(start), iso(start + timedelta(minutes=30)))
        if policy.get("slot_grid_minutes") is None and start.minute % 15:
            # without a policy grid, the step (15) only chooses which starts to list
            if r.status_code == 201:
                assert bk.post(f"/v1/reservations/{r.json()['id']}/cancel").status_code == 200
            continue
        assert r.status_code in (409, 422), (start, r.text)


# --- DST ---------------------------------------------------------------------------------------


def _transitions(zone: str, year: int) -> list[date]:
    """The local dates in `year` on which the zone's UTC offset changes."""
    tz = ZoneInfo(zone)
    out = []
    day = date(year, 1, 1)
    while day.year == year:
        a = datetime.combine(day, datetime.min.time(), tz).utcoffset()
        b = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).utcoffset()
        if a != b:
            out.append(day)
        day += timedelta(days=1)
    return out


@pytest.mark.parametrize("zone", [BERLIN, "America/New_York"])
def test_dst_days_have_no_gap_slots_and_both_fold_slots(tenant: Tenant, zone: str) -> None:
    spring, autumn = _transitions(zone, 2030)
    tz = ZoneInfo(zone)
    room = tenant.admin.resource(
        timezone=zone, policy={"weekly_hours": ALL_DAY, "slot_grid_minutes": 30}
    )
    rid = room["id"]

    def day_slots(day: date) -> list[datetime]:
        start = datetime.combine(day, datetime.min.time(), tz)
        end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tz)
        return [s for s, _ in slots(ok(avail(tenant.booker, rid, start, end, duration="PT30M")))]

    short = day_slots(spring)
    assert len(short) == 46
    assert "02:00" not in walls(zone, short)
    assert "02:30" not in walls(zone, short)
    assert walls(zone, short)[:6] == ["00:00", "00:30", "01:00", "01:30", "03:00", "03:30"]
    assert all(b - a == timedelta(minutes=30) for a, b in pairwise(short))

    long = day_slots(autumn)
    assert len(long) == 50
    repeated = "02:30" if zone == BERLIN else "01:30"  # the hour that happens twice
    assert walls(zone, long).count(repeated) == 2
    assert walls(zone, long).count("00:30") == 1
    first, second = (t for t in long if walls(zone, [t])[0] == repeated)
    assert second - first == timedelta(hours=1)
    assert first.astimezone(tz).utcoffset() != second.astimezone(tz).utcoffset()
    # the second instant of the repeated hour books, with its own offset
    offset = second.astimezone(tz).isoformat()
    made = _created(
        tenant.booker.book(rid, offset, (second + timedelta(minutes=30)).astimezone(tz).isoformat())
    )
    assert ts(made["start"]) == second
    after = day_slots(autumn)
    assert first in after
    assert second not in after
    assert len(after) == 49


# --- search ------------------------------------------------------------------------------------


def search(api: Api, **body: Any) -> httpx.Response:
    return api.post("/v1/availability/search", json=body)


def hits(r: httpx.Response) -> list[tuple[str, str]]:
    body = ok(r)
    return [(h["resource"]["id"], h["earliest"]["start"]) for h in body["items"]]


W = {"from": "2030-06-03T09:00:00Z", "to": "2030-06-03T12:00:00Z"}


def test_search_filters_by_tags_capacity_and_quantity(tenant: Tenant, other_tenant: Tenant) -> None:
    adm = tenant.admin
    big = adm.resource(name="Big", tags=["room", "large"], capacity=5)
    mid = adm.resource(name="Mid", tags=["room"], capacity=3)
    desk = adm.resource(name="Desk", tags=["desk"])
    foreign = other_tenant.admin.resource(name="Foreign", tags=["room", "large"], capacity=9)
    _created(adm.book(big["id"], W["from"], W["to"], quantity=2))

    everything = hits(search(tenant.booker, **W))
    assert sorted(i for i, _ in everything) == sorted([big["id"], mid["id"], desk["id"]])
    assert foreign["id"] not in {i for i, _ in hits(search(tenant.booker, **W, tags=["room"]))}
    assert {i for i, _ in hits(search(tenant.booker, **W, tags=["room"]))} == {big["id"], mid["id"]}
    assert {i for i, _ in hits(search(tenant.booker, **W, tags=["room", "large"]))} == {big["id"]}
    assert hits(search(tenant.booker, **W, tags=["nope"])) == []
    assert {i for i, _ in hits(search(tenant.booker, **W, min_capacity=3))} == {
        big["id"],
        mid["id"],
    }
    # quantity 3: Mid has 3 free, Big has only 3 of 5 free (2 in use): both fit; 4: neither
    assert {i for i, _ in hits(search(tenant.booker, **W, quantity=3))} == {big["id"], mid["id"]}
    assert hits(search(tenant.booker, **W, quantity=4)) == []
    body = ok(search(tenant.viewer, **W, tags=["large"]))
    assert body["items"][0]["earliest"]["remaining"] == 3
    assert body["items"][0]["resource"] == {
        "id": big["id"],
        "name": "Big",
        "capacity": 5,
        "timezone": "UTC",
        "tags": ["room", "large"],
    }
    assert body["next_cursor"] is None
    assert hits(search(other_tenant.booker, **W)) == [(foreign["id"], W["from"])]


def test_search_whole_window_versus_a_duration(tenant: Tenant) -> None:
    adm = tenant.admin
    a = adm.resource(name="A", policy={"slot_grid_minutes": 30})
    b = adm.resource(name="B")
    c = adm.resource(
        name="C", policy={"weekly_hours": {"mon": [{"start": "10:00", "end": "12:00"}]}}
    )
    d = adm.resource(name="D")
    _created(adm.book(a["id"], "2030-06-03T09:00:00Z", "2030-06-03T10:10:00Z"))
    _created(adm.book(b["id"], "2030-06-03T09:00:00Z", "2030-06-03T09:20:00Z"))
    # whole window (no duration): only D is free throughout
    assert hits(search(tenant.booker, **W)) == [(d["id"], W["from"])]
    body = ok(search(tenant.booker, **W))
    assert body["items"][0]["earliest"]["end"] == W["to"]
    # with a duration: earliest first, then by id; A's grid puts it at 10:30
    got = hits(search(tenant.booker, **W, duration="PT1H"))
    assert got == [
        (d["id"], "2030-06-03T09:00:00Z"),
        (b["id"], "2030-06-03T09:30:00Z"),
        (c["id"], "2030-06-03T10:00:00Z"),
        (a["id"], "2030-06-03T10:30:00Z"),
    ]
    got = hits(search(tenant.booker, **W, duration="PT1H", step_minutes=20))
    assert got[1] == (b["id"], "2030-06-03T09:20:00Z")
    # a duration that fits nowhere finds nothing; one longer than the window neither
    assert hits(search(tenant.booker, **W, duration="PT3H")) == [(d["id"], W["from"])]
    assert hits(search(tenant.booker, **W, duration="PT4H")) == []


def test_search_pagination_is_complete_and_ordered(tenant: Tenant) -> None:
    adm = tenant.admin
    made = []
    for i in range(9):
        room = adm.resource(name=f"R{i}", tags=["pg"])
        made.append(room["id"])
        if i % 3:  # three groups with equal earliest starts: ties are broken by id
            end = datetime(2030, 6, 3, 9 + i % 3, tzinfo=UTC)
            _created(adm.book(room["id"], W["from"], iso(end)))
    full = hits(search(tenant.booker, **W, duration="PT1H", tags=["pg"], limit=100))
    assert len(full) == 9
    assert full == sorted(full, key=lambda h: (h[1], h[0]))
    paged: list[tuple[str, str]] = []
    cursor = None
    for _ in range(10):
        body = ok(search(tenant.booker, **W, duration="PT1H", tags=["pg"], limit=2, cursor=cursor))
        paged += [(h["resource"]["id"], h["earliest"]["start"]) for h in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert paged == full
    assert len(set(paged)) == 9


def test_search_errors(tenant: Tenant) -> None:
    tenant.admin.resource()
    body = _problem(search(tenant.booker, **W, cursor="not-a-cursor"), 422, "invalid-input")
    assert body["errors"][0]["field"] == "cursor"
    r = search(tenant.booker, **{"from": "2030-06-01T00:00:00Z", "to": "2030-07-02T00:00:01Z"})
    assert _problem(r, 422, "invalid-input")["errors"][0]["field"] == "to"
    ok(search(tenant.booker, **{"from": "2030-06-01T00:00:00Z", "to": "2030-07-02T00:00:00Z"}))
    r = search(tenant.booker, **{"from": W["to"], "to": W["from"]})
    assert _problem(r, 422, "invalid-input")["errors"][0]["field"] == "to"
    _problem(search(tenant.booker, **W, duration="P1M"), 422, "invalid-input")
    _problem(search(tenant.booker, **W, bogus=True), 422, "invalid-input")
    _problem(search(tenant.booker, **W, limit=0), 422, "invalid-input")


# --- OpenAPI ---------------------------------------------------------------------------------


NEW_ROUTES = {
    ("/v1/resources/{resource_id}/availability", "get"): {401, 404, 422},
    ("/v1/availability/search", "post"): {401, 422},
    ("/v1/bookings", "post"): {401, 403, 404, 409, 422},
    ("/v1/bookings/{booking_id}", "get"): {401, 404, 422},
    ("/v1/bookings/{booking_id}", "patch"): {401, 403, 404, 409, 412, 422},
    ("/v1/bookings/{booking_id}/confirm", "post"): {401, 403, 404, 409, 412, 422},
    ("/v1/bookings/{booking_id}/cancel", "post"): {401, 403, 404, 412, 422},
}


def test_openapi_lists_the_new_routes_with_problem_responses(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    for (path, method), codes in NEW_ROUTES.items():
        op = doc["paths"][path][method]
        for code in codes:
            content = op["responses"][str(code)]["content"]
            assert list(content) == [PROBLEM], (path, method, code)
            # Each status's problem body, typed (kit/openapi.PROBLEM_SCHEMAS).
            name = PROBLEM_SCHEMAS.get(code, "Problem")
            assert content[PROBLEM]["schema"] == {"$ref": f"#/components/schemas/{name}"}
    schemas = doc["components"]["schemas"]
    assert "policy" in schemas["ResourceCreate"]["properties"]
    assert "override_rules" in schemas["ReservationCreate"]["properties"]
    assert "BookingCreate" in schemas


def test_openapi_documents_capacity_in_use(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    assert "409" in doc["paths"]["/v1/resources/{resource_id}"]["patch"]["responses"]


def test_search_says_when_it_looked_at_only_the_first_resources(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More matching resources than the search looks at: the page says so (`complete`
    false) instead of passing over the rest in silence."""
    from reservations.availability import service

    monkeypatch.setattr(service, "MAX_SEARCH_RESOURCES", 3)  # instead of creating 2,001 rooms
    for i in range(3):
        tenant.admin.resource(name=f"C{i}", tags=["cap"])
    body = ok(search(tenant.booker, **W, duration="PT1H", tags=["cap"]))
    assert (len(body["items"]), body["complete"]) == (3, True)
    tenant.admin.resource(name="C3", tags=["cap"])
    body = ok(search(tenant.booker, **W, duration="PT1H", tags=["cap"]))
    assert (len(body["items"]), body["complete"]) == (3, False)
    body = ok(search(tenant.booker, **W, duration="PT1H", tags=["cap"], min_capacity=2))
    assert (body["items"], body["complete"]) == ([], True)  # a narrower search is whole again
