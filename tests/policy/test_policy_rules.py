"""Booking rules over HTTP: every reason code on create and reschedule, admin overrides,
turnover buffers, policy validation and versioning.

Times are far in the future (2030) so real time never interferes; tests that depend on
`now` (notice, advance, limits without a period) move the app's clock near the bookings."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.api import PROBLEM, Api, Tenant, _created, _db, _problem

BERLIN = "Europe/Berlin"  # CEST (UTC+2) in June 2030
# 2030-06-03 is a Monday.
MON, TUE = "2030-06-03", "2030-06-04"


def z(day: str, hhmm: str, offset: str = "+02:00") -> str:
    """A local wall time in Berlin summer time (or another offset) as RFC 3339."""
    return f"{day}T{hhmm}:00{offset}"


def utc(value: str) -> str:
    """The API's rendering of an instant (UTC, 'Z')."""
    return datetime.fromisoformat(value).astimezone(UTC).isoformat().replace("+00:00", "Z")


def set_now(clock: Clock, instant: datetime) -> None:
    """Move the app's clock so that now is (about) `instant`."""
    clock.offset = instant - datetime.now(UTC)


def refused(r: httpx.Response, reason: str) -> dict[str, Any]:
    """A 422 booking-rule-violated whose first reason is `reason`."""
    body = _problem(r, 422, "booking-rule-violated")
    assert body["reason"] == reason, body
    assert isinstance(body["violations"], list), body
    assert body["violations"], body
    assert body["violations"][0]["reason"] == reason
    for v in body["violations"]:
        assert set(v) == {"reason", "detail"}, v
        assert v["detail"], v
    return body


def reasons(body: dict[str, Any]) -> set[str]:
    return {v["reason"] for v in body["violations"]}


def move(api: Api, rid: str, start: str, end: str, **fields: Any) -> httpx.Response:
    return api.patch(f"/v1/reservations/{rid}", json={"start": start, "end": end, **fields})


def cancel(api: Api, rid: str) -> None:
    r = api.post(f"/v1/reservations/{rid}/cancel")
    assert r.status_code == 200, r.text


HOURS = {
    "mon": [{"start": "08:00", "end": "12:00"}, {"start": "13:00", "end": "17:00"}],
    "wed": [{"start": "00:00", "end": "24:00"}],
}


# --- opening hours and overrides ------------------------------------------------------------


def test_weekly_hours_are_local_wall_time_with_a_lunch_gap(tenant: Tenant) -> None:
    room = tenant.admin.resource(timezone=BERLIN, policy={"weekly_hours": HOURS})
    rid, bk = room["id"], tenant.booker
    # 09:00-10:00 local is 07:00-08:00Z: open in Berlin, closed if hours were read as UTC.
    ok = _created(bk.book(rid, z(MON, "09:00"), z(MON, "10:00")))
    assert (ok["start"], ok["end"]) == ("2030-06-03T07:00:00Z", "2030-06-03T08:00:00Z")
    _created(bk.book(rid, z(MON, "08:00"), z(MON, "09:00")))  # from the opening minute
    _created(bk.book(rid, z(MON, "13:00"), z(MON, "14:00")))  # the afternoon interval
    _created(bk.book(rid, z(MON, "16:00"), z(MON, "17:00")))  # up to the closing minute

    body = refused(bk.book(rid, z(MON, "11:30"), z(MON, "13:30")), "outside-opening-hours")
    assert "Europe/Berlin" in body["detail"]
    assert "override_rules" in body["detail"]
    assert body["violations"] == [
        {
            "reason": "outside-opening-hours",
            "detail": "the resource is not open for all of this range (opening hours are "
            "local time in Europe/Berlin)",
        }
    ]
    for start, end in [
        (z(MON, "07:30"), z(MON, "08:30")),  # before opening
        (z(MON, "12:00"), z(MON, "13:00")),  # exactly the lunch gap
        (z(MON, "16:30"), z(MON, "17:30")),  # past closing
        # 15:00-16:00Z is 17:00-18:00 local: open if the hours were UTC, closed in Berlin
        ("2030-06-03T15:00:00Z", "2030-06-03T16:00:00Z"),
        (z(TUE, "09:00"), z(TUE, "10:00")),  # Tuesday has no hours: closed
    ]:
        refused(bk.book(rid, start, end), "outside-opening-hours")
    # 00:00-24:00 on Wednesday and on Thursday closed: a booking into Thursday is refused
    _created(bk.book(rid, z("2030-06-05", "00:00"), z("2030-06-05", "23:00")))
    refused(
        bk.book(rid, z("2030-06-05", "23:00"), z("2030-06-06", "01:00")), "outside-opening-hours"
    )


def test_adjacent_intervals_and_midnight_split_are_one_opening(tenant: Tenant) -> None:
    policy = {
        "weekly_hours": {
            "mon": [{"start": "22:00", "end": "24:00"}],
            "tue": [{"start": "00:00", "end": "02:00"}, {"start": "02:00", "end": "03:00"}],
        }
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    _created(tenant.booker.book(room["id"], z(MON, "23:00"), z(TUE, "02:30")))
    refused(
        tenant.booker.book(room["id"], z(TUE, "02:30"), z(TUE, "03:30")), "outside-opening-hours"
    )


def test_date_overrides_close_a_day_or_set_special_hours(tenant: Tenant) -> None:
    weekdays = {d: [{"start": "08:00", "end": "18:00"}] for d in ("mon", "tue", "wed")}
    policy = {
        "weekly_hours": weekdays,
        "date_overrides": [
            {"date": "2030-06-10", "hours": []},  # a holiday Monday
            {"date": "2030-06-11", "hours": [{"start": "10:00", "end": "11:00"}]},
            {"date": "2030-06-16", "hours": [{"start": "10:00", "end": "12:00"}]},  # a Sunday
        ],
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    rid, bk = room["id"], tenant.booker
    refused(
        bk.book(rid, z("2030-06-10", "09:00"), z("2030-06-10", "10:00")), "outside-opening-hours"
    )
    _created(bk.book(rid, z("2030-06-03", "09:00"), z("2030-06-03", "10:00")))  # a normal Monday
    _created(bk.book(rid, z("2030-06-11", "10:00"), z("2030-06-11", "11:00")))
    refused(
        bk.book(rid, z("2030-06-11", "09:00"), z("2030-06-11", "10:00")), "outside-opening-hours"
    )
    refused(
        bk.book(rid, z("2030-06-11", "10:30"), z("2030-06-11", "11:30")), "outside-opening-hours"
    )
    _created(bk.book(rid, z("2030-06-16", "10:00"), z("2030-06-16", "12:00")))
    refused(
        bk.book(rid, z("2030-06-09", "10:00"), z("2030-06-09", "11:00")), "outside-opening-hours"
    )


def test_blackout_names_its_reason(tenant: Tenant) -> None:
    policy = {
        "blackouts": [
            {"start": "2030-06-03T10:00:00Z", "end": "2030-06-03T12:00:00Z", "reason": "Fire drill"}
        ]
    }
    room = tenant.admin.resource(policy=policy)
    rid, bk = room["id"], tenant.booker
    body = refused(bk.book(rid, "2030-06-03T11:00:00Z", "2030-06-03T11:30:00Z"), "in-blackout")
    assert "(Fire drill)" in body["violations"][0]["detail"]
    assert "Fire drill" in body["detail"]
    refused(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T13:00:00Z"), "in-blackout")
    refused(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:01Z"), "in-blackout")
    # half-open: touching the blackout on either side is fine
    _created(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"))
    _created(bk.book(rid, "2030-06-03T12:00:00Z", "2030-06-03T13:00:00Z"))


# --- grid, durations, notice, advance -------------------------------------------------------


def test_off_grid_counts_from_local_midnight(tenant: Tenant) -> None:
    # Kathmandu is UTC+05:45: a 30-minute grid from local midnight is :15/:45 in UTC.
    room = tenant.admin.resource(timezone="Asia/Kathmandu", policy={"slot_grid_minutes": 30})
    rid, bk = room["id"], tenant.booker
    body = refused(bk.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T11:00:00Z"), "off-grid")
    assert "30-minute grid" in body["violations"][0]["detail"]
    assert "Asia/Kathmandu" in body["violations"][0]["detail"]
    _created(bk.book(rid, "2030-06-03T10:15:00Z", "2030-06-03T11:00:00Z"))  # 16:00 local
    # only the start must be on the grid, not the end
    _created(bk.book(rid, "2030-06-03T18:00:00+05:45", "2030-06-03T18:10:00+05:45"))
    refused(bk.book(rid, "2030-06-03T18:45:00+05:45", "2030-06-03T19:30:00+05:45"), "off-grid")
    refused(bk.book(rid, "2030-06-03T20:00:30+05:45", "2030-06-03T21:00:00+05:45"), "off-grid")


def test_durations_too_short_and_too_long(tenant: Tenant) -> None:
    room = tenant.admin.resource(policy={"min_duration": "PT30M", "max_duration": "PT2H"})
    rid, bk = room["id"], tenant.booker
    body = refused(bk.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T10:29:00Z"), "too-short")
    assert body["violations"][0]["detail"] == "bookings must last at least PT30M"
    body = refused(bk.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T12:01:00Z"), "too-long")
    assert body["violations"][0]["detail"] == "bookings may last at most PT2H"
    _created(bk.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T10:30:00Z"))
    _created(bk.book(rid, "2030-06-03T11:00:00Z", "2030-06-03T13:00:00Z"))


def test_several_broken_rules_are_all_listed(tenant: Tenant) -> None:
    policy = {
        "weekly_hours": {"mon": [{"start": "08:00", "end": "12:00"}]},
        "slot_grid_minutes": 60,
        "max_duration": "PT1H",
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    body = refused(tenant.booker.book(room["id"], z(MON, "11:30"), z(MON, "13:00")), "too-long")
    assert reasons(body) == {"too-long", "off-grid", "outside-opening-hours"}


def test_min_notice_uses_the_app_clock(tenant: Tenant, clock: Clock) -> None:
    now = datetime(2030, 6, 3, 8, 0, tzinfo=UTC)
    set_now(clock, now)
    room = tenant.admin.resource(policy={"min_notice": "PT2H"})
    rid, bk = room["id"], tenant.booker
    in_one, in_three = now + timedelta(hours=1), now + timedelta(hours=3)
    body = refused(bk.book(rid, in_one.isoformat(), in_three.isoformat()), "too-soon")
    assert "book at least PT2H ahead" in body["violations"][0]["detail"]
    made = _created(bk.book(rid, in_three.isoformat(), (in_three + timedelta(hours=1)).isoformat()))
    # a reschedule is held to the same rule
    r = move(bk, made["id"], in_one.isoformat(), (in_one + timedelta(minutes=30)).isoformat())
    refused(r, "too-soon")
    # once time has passed, the same request that was fine is too soon
    clock.advance(timedelta(hours=2))
    start = in_three + timedelta(hours=2)
    refused(bk.book(rid, in_three.isoformat(), start.isoformat()), "too-soon")


def test_max_advance_uses_the_app_clock(tenant: Tenant, clock: Clock) -> None:
    set_now(clock, datetime(2030, 6, 1, 12, 0, tzinfo=UTC))
    room = tenant.admin.resource(policy={"max_advance": "P7D"})
    rid, bk = room["id"], tenant.booker
    far = ("2030-06-09T12:00:00Z", "2030-06-09T13:00:00Z")
    body = refused(bk.book(rid, *far), "too-far-ahead")
    assert "book at most P7D ahead" in body["violations"][0]["detail"]
    near = _created(bk.book(rid, "2030-06-07T12:00:00Z", "2030-06-07T13:00:00Z"))
    refused(move(bk, near["id"], *far), "too-far-ahead")
    clock.advance(timedelta(days=2))
    _created(bk.book(rid, *far))


def test_times_in_rule_messages_are_in_utc_and_the_resources_zone(
    tenant: Tenant, clock: Clock
) -> None:
    """A person in Berlin reads 12:00 where a program reads 10:00Z: every time a rule's message
    names is said in UTC and in the resource's zone (the earliest start to the second, rounded
    up, as the clock runs on between the call and the check)."""
    set_now(clock, datetime(2030, 6, 3, 8, 0, tzinfo=UTC))
    drill = {"start": "2030-06-05T10:00:00Z", "end": "2030-06-05T12:00:00Z", "reason": "Drill"}
    policy = {"min_notice": "PT2H", "max_advance": "P7D", "blackouts": [drill]}
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    rid, bk = room["id"], tenant.booker

    def said(r: httpx.Response, reason: str) -> str:
        return str(refused(r, reason)["violations"][0]["detail"])

    earliest = r"2030-06-03 10:00(:\d\d)? UTC \(12:00(:\d\d)? Europe/Berlin\)"
    soon = said(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"), "too-soon")
    assert re.fullmatch(rf"book at least PT2H ahead: start at {earliest} or later", soon), soon
    past = said(bk.book(rid, "2030-06-02T09:00:00Z", "2030-06-02T10:00:00Z"), "in-the-past")
    assert re.match(rf"the start has passed: start at {earliest} or later \(", past), past
    far = said(bk.book(rid, "2030-06-11T09:00:00Z", "2030-06-11T10:00:00Z"), "too-far-ahead")
    latest = r"2030-06-10 08:00(:\d\d)? UTC \(10:00(:\d\d)? Europe/Berlin\)"
    assert re.fullmatch(rf"book at most P7D ahead: start at {latest} or earlier", far), far
    dash = "\N{EN DASH}"
    blackout = said(bk.book(rid, "2030-06-05T11:00:00Z", "2030-06-05T13:00:00Z"), "in-blackout")
    assert blackout == (
        f"the resource is blacked out 2030-06-05 10:00{dash}12:00 UTC "
        f"(12:00{dash}14:00 Europe/Berlin) (Drill)"
    )


# --- booker limits --------------------------------------------------------------------------


def test_booker_limit_per_key_per_day(tenant: Tenant) -> None:
    policy = {"booker_limit": {"max_live": 2, "period": "day"}}
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    rid, bk = room["id"], tenant.booker
    a = _created(bk.book(rid, z(MON, "09:00"), z(MON, "10:00")))
    _created(bk.book(rid, z(MON, "11:00"), z(MON, "12:00")))
    body = refused(bk.book(rid, z(MON, "13:00"), z(MON, "14:00")), "booker-limit")
    assert body["violations"][0]["detail"] == (
        "each API key may hold at most 2 live reservation(s) of this resource per day; "
        "cancel one first"
    )
    # the local day: 23:30 local on Monday is 21:30Z, still Monday in Berlin
    refused(bk.book(rid, z(MON, "23:30"), z(TUE, "00:00")), "booker-limit")
    # 00:30 local on Tuesday is 22:30Z on Monday: a new local day
    _created(bk.book(rid, z(TUE, "00:30"), z(TUE, "01:00")))
    # another key has its own quota
    _created(tenant.another_booker().book(rid, z(MON, "13:00"), z(MON, "14:00")))
    # a cancelled reservation frees the quota
    cancel(bk, a["id"])
    _created(bk.book(rid, z(MON, "15:00"), z(MON, "16:00")))
    refused(bk.book(rid, z(MON, "17:00"), z(MON, "18:00")), "booker-limit")


def test_booker_limit_counts_holds_until_they_expire(tenant: Tenant, clock: Clock) -> None:
    room = tenant.admin.resource(policy={"booker_limit": {"max_live": 1, "period": "day"}})
    rid, bk = room["id"], tenant.booker
    _created(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z", hold_seconds=60))
    refused(bk.book(rid, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z"), "booker-limit")
    clock.advance(timedelta(seconds=61))
    _created(bk.book(rid, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z"))


def test_booker_limit_per_week_and_month_in_local_calendar(tenant: Tenant) -> None:
    weekly = tenant.admin.resource(
        timezone=BERLIN, policy={"booker_limit": {"max_live": 1, "period": "week"}}
    )
    rid, bk = weekly["id"], tenant.booker
    _created(bk.book(rid, z("2030-06-09", "22:00"), z("2030-06-09", "23:00")))  # Sunday
    # Monday 00:30 local (Sunday 22:30Z) starts a new week
    _created(bk.book(rid, z("2030-06-10", "00:30"), z("2030-06-10", "01:00")))
    refused(bk.book(rid, z("2030-06-16", "10:00"), z("2030-06-16", "11:00")), "booker-limit")
    refused(bk.book(rid, z("2030-06-03", "10:00"), z("2030-06-03", "11:00")), "booker-limit")
    _created(bk.book(rid, z("2030-06-17", "10:00"), z("2030-06-17", "11:00")))

    monthly = tenant.admin.resource(
        timezone=BERLIN, policy={"booker_limit": {"max_live": 2, "period": "month"}}
    )
    rid = monthly["id"]
    _created(bk.book(rid, z("2030-06-01", "00:30"), z("2030-06-01", "01:00")))
    _created(bk.book(rid, z("2030-06-30", "23:00"), z("2030-06-30", "23:30")))
    body = refused(bk.book(rid, z("2030-06-15", "10:00"), z("2030-06-15", "11:00")), "booker-limit")
    assert "per month" in body["violations"][0]["detail"]
    # July 1st 00:10 local is still June 30th in UTC
    _created(bk.book(rid, z("2030-07-01", "00:10"), z("2030-07-01", "00:40")))


def test_booker_limit_without_period_counts_what_has_not_ended(
    tenant: Tenant, clock: Clock
) -> None:
    set_now(clock, datetime(2030, 6, 3, 8, 0, tzinfo=UTC))
    room = tenant.admin.resource(policy={"booker_limit": {"max_live": 1}})
    rid, bk = room["id"], tenant.booker
    first = _created(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"))
    body = refused(bk.book(rid, "2030-09-01T09:00:00Z", "2030-09-01T10:00:00Z"), "booker-limit")
    assert "per " not in body["violations"][0]["detail"]
    # once the first has ended it no longer counts
    clock.advance(timedelta(hours=2, minutes=1))
    second = _created(bk.book(rid, "2030-09-01T09:00:00Z", "2030-09-01T10:00:00Z"))
    refused(bk.book(rid, "2030-09-02T09:00:00Z", "2030-09-02T10:00:00Z"), "booker-limit")
    cancel(bk, second["id"])
    _created(bk.book(rid, "2030-09-02T09:00:00Z", "2030-09-02T10:00:00Z"))
    assert first["status"] == "confirmed"


def test_booker_limit_per_customer_spans_keys(tenant: Tenant) -> None:
    policy = {"booker_limit": {"max_live": 1, "period": "day", "per": "customer"}}
    room = tenant.admin.resource(policy=policy)
    rid = room["id"]
    one, two = tenant.booker, tenant.another_booker()
    made = _created(one.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z", customer="c1"))
    body = refused(
        two.book(rid, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z", customer="c1"),
        "booker-limit",
    )
    assert "each customer may hold" in body["violations"][0]["detail"]
    _created(two.book(rid, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z", customer="c2"))
    _created(one.book(rid, "2030-06-04T11:00:00Z", "2030-06-04T12:00:00Z", customer="c1"))
    cancel(one, made["id"])
    _created(two.book(rid, "2030-06-03T13:00:00Z", "2030-06-03T14:00:00Z", customer="c1"))


def test_booker_limit_on_reschedule(tenant: Tenant) -> None:
    room = tenant.admin.resource(policy={"booker_limit": {"max_live": 1, "period": "day"}})
    rid, bk = room["id"], tenant.booker
    a = _created(bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"))
    _created(bk.book(rid, "2030-06-04T09:00:00Z", "2030-06-04T10:00:00Z"))
    # moving within its own day does not count it twice
    r = move(bk, a["id"], "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z")
    assert r.status_code == 200, r.text
    refused(move(bk, a["id"], "2030-06-04T11:00:00Z", "2030-06-04T12:00:00Z"), "booker-limit")
    r = move(bk, a["id"], "2030-06-05T11:00:00Z", "2030-06-05T12:00:00Z")
    assert r.status_code == 200, r.text


# --- overrides ------------------------------------------------------------------------------


def test_admin_override_books_anyway_but_never_overlaps(tenant: Tenant) -> None:
    policy = {
        "weekly_hours": {"mon": [{"start": "08:00", "end": "12:00"}]},
        "booker_limit": {"max_live": 1},
        "slot_grid_minutes": 60,
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    rid = room["id"]
    night = (z(TUE, "03:10"), z(TUE, "04:00"))
    refused(tenant.admin.book(rid, *night), "off-grid")
    made = _created(tenant.admin.book(rid, *night, override_rules=True))
    assert made["start"] == utc(night[0])
    # the limit is overridden too
    _created(tenant.admin.book(rid, z(TUE, "05:00"), z(TUE, "06:00"), override_rules=True))
    # a booker may not ask for it
    r = tenant.booker.book(rid, z(MON, "09:00"), z(MON, "10:00"), override_rules=True)
    _problem(r, 403, "forbidden")
    # overrides never allow an overlap
    r = tenant.admin.book(rid, z(TUE, "03:30"), z(TUE, "04:30"), override_rules=True)
    _problem(r, 409, "reservation-conflict")
    # reschedule: refused by the rules, allowed with the override (admin only)
    target = (z(TUE, "07:00"), z(TUE, "07:45"))
    refused(move(tenant.admin, made["id"], *target), "outside-opening-hours")
    _problem(move(tenant.booker, made["id"], *target, override_rules=True), 403, "forbidden")
    r = move(tenant.admin, made["id"], *target, override_rules=True)
    assert r.status_code == 200, r.text
    assert (r.json()["start"], r.json()["end"]) == (utc(target[0]), utc(target[1]))
    r = move(tenant.admin, made["id"], z(TUE, "05:30"), z(TUE, "06:30"), override_rules=True)
    _problem(r, 409, "reservation-conflict")


def test_rules_on_reschedule_and_edits_that_do_not_move(tenant: Tenant) -> None:
    policy = {"weekly_hours": {"mon": [{"start": "08:00", "end": "12:00"}]}}
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    made = _created(tenant.booker.book(room["id"], z(MON, "09:00"), z(MON, "10:00")))
    path = f"/v1/reservations/{made['id']}"
    refused(
        move(tenant.booker, made["id"], z(MON, "11:00"), z(MON, "12:30")), "outside-opening-hours"
    )
    refused(tenant.booker.patch(path, json={"end": z(MON, "12:01")}), "outside-opening-hours")
    # the hours change: the reservation now breaks them, but editing metadata is not a move
    r = tenant.admin.patch(
        f"/v1/resources/{room['id']}",
        json={"policy": {"weekly_hours": {"tue": [{"start": "08:00", "end": "12:00"}]}}},
    )
    assert r.status_code == 200, r.text
    r = tenant.booker.patch(path, json={"metadata": {"note": "x"}})
    assert r.status_code == 200, r.text
    assert tenant.booker.get(path).json()["version"] == 2


# --- buffers --------------------------------------------------------------------------------


def test_buffer_after_keeps_turnover_free(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource(policy={"buffer_after": "PT15M"})
    rid, bk = room["id"], tenant.booker
    a = _created(bk.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T11:00:00Z"))
    assert (a["start"], a["end"]) == ("2030-06-03T10:00:00Z", "2030-06-03T11:00:00Z")
    body = _problem(
        bk.book(rid, "2030-06-03T11:10:00Z", "2030-06-03T12:00:00Z"), 409, "reservation-conflict"
    )
    # the conflict names the range the customer booked, not the widened one
    assert body["conflicts"] == [
        {
            "start": "2030-06-03T10:00:00Z",
            "end": "2030-06-03T11:00:00Z",
            "status": "confirmed",
            "id": a["id"],
        }
    ]
    b = _created(bk.book(rid, "2030-06-03T11:15:00Z", "2030-06-03T12:00:00Z"))
    assert (b["start"], b["end"]) == ("2030-06-03T11:15:00Z", "2030-06-03T12:00:00Z")
    # before a booking: the new one's own buffer must end by the other's start
    _problem(
        bk.book(rid, "2030-06-03T09:00:00Z", "2030-06-03T09:50:00Z"), 409, "reservation-conflict"
    )
    _created(bk.book(rid, "2030-06-03T08:45:00Z", "2030-06-03T09:45:00Z"))
    # the database holds the widened range; the API shows the booked one
    rows = _db(
        settings,
        "SELECT start_at, end_at, lower(during), upper(during) FROM reservation WHERE id = %s",
        a["id"],
    )
    start, end, lo, hi = rows[0]
    assert (lo, hi) == (start, end + timedelta(minutes=15))
    got = bk.get(f"/v1/reservations/{a['id']}").json()
    assert (got["start"], got["end"]) == (a["start"], a["end"])


def test_buffer_before_and_after_on_reschedule(tenant: Tenant) -> None:
    room = tenant.admin.resource(policy={"buffer_before": "PT10M", "buffer_after": "PT5M"})
    rid, bk = room["id"], tenant.booker
    _created(bk.book(rid, "2030-06-03T10:00:00Z", "2030-06-03T11:00:00Z"))
    b = _created(bk.book(rid, "2030-06-03T13:00:00Z", "2030-06-03T14:00:00Z"))
    # the gap needed after 11:00 is 5 (A's after) + 10 (B's before) minutes
    r = move(bk, b["id"], "2030-06-03T11:14:00Z", "2030-06-03T12:00:00Z")
    _problem(r, 409, "reservation-conflict")
    r = move(bk, b["id"], "2030-06-03T11:15:00Z", "2030-06-03T12:00:00Z")
    assert r.status_code == 200, r.text
    assert (r.json()["start"], r.json()["end"]) == ("2030-06-03T11:15:00Z", "2030-06-03T12:00:00Z")
    # a reschedule that overlaps only its own old range is fine
    r = move(bk, b["id"], "2030-06-03T11:30:00Z", "2030-06-03T12:30:00Z")
    assert r.status_code == 200, r.text


# --- policy validation and versioning --------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        (
            {
                "weekly_hours": {
                    "mon": [{"start": "08:00", "end": "12:00"}, {"start": "11:00", "end": "13:00"}]
                }
            },
            "policy.weekly_hours.mon",
            "overlap",
        ),
        (
            {"weekly_hours": {"mon": [{"start": "12:00", "end": "12:00"}]}},
            "policy.weekly_hours.mon.0",
            "end must be after start",
        ),
        (
            {"weekly_hours": {"tue": [{"start": "22:00", "end": "02:00"}]}},
            "policy.weekly_hours.tue.0",
            "end must be after start",
        ),
        (
            {"weekly_hours": {"mon": [{"start": "8:00", "end": "12:00"}]}},
            "policy.weekly_hours.mon.0.start",
            "HH:MM",
        ),
        (
            {"weekly_hours": {"mon": [{"start": "08:00", "end": "24:30"}]}},
            "policy.weekly_hours.mon.0.end",
            "HH:MM",
        ),
        ({"weekly_hours": {"funday": []}}, "policy.weekly_hours.funday.[key]", "'mon'"),
        (
            {
                "date_overrides": [
                    {"date": "2030-06-10", "hours": []},
                    {"date": "2030-06-10", "hours": []},
                ]
            },
            "policy.date_overrides",
            "appears twice",
        ),
        ({"min_duration": "P1M"}, "policy.min_duration", "no months"),
        ({"max_advance": "P1Y"}, "policy.max_advance", "no months"),
        ({"buffer_after": "P1DT1M"}, "policy.buffer_after", "at most one day"),
        ({"buffer_before": "P2D"}, "policy.buffer_before", "at most one day"),
        ({"min_duration": "PT2H", "max_duration": "PT1H"}, "policy", "max_duration"),
        ({"slot_grid_minutes": 0}, "policy.slot_grid_minutes", ""),
        (
            {"blackouts": [{"start": "2030-06-03T12:00:00Z", "end": "2030-06-03T11:00:00Z"}]},
            "policy.blackouts.0",
            "end must be after start",
        ),
        ({"booker_limit": {"max_live": 0}}, "policy.booker_limit.max_live", ""),
        ({"bogus": 1}, "policy.bogus", ""),
    ],
)
def test_policy_validation_names_the_field(
    tenant: Tenant, policy: dict[str, Any], field: str, message: str
) -> None:
    r = tenant.admin.post("/v1/resources", json={"name": "Room", "policy": policy})
    body = _problem(r, 422, "invalid-input")
    matching = [e for e in body["errors"] if e["field"] == field]
    assert matching, body["errors"]
    assert message in matching[0]["message"], matching
    # PATCH validates the same way and changes nothing
    room = tenant.admin.resource()
    r = tenant.admin.patch(f"/v1/resources/{room['id']}", json={"policy": policy})
    assert [e for e in _problem(r, 422, "invalid-input")["errors"] if e["field"] == field]
    assert tenant.admin.get(f"/v1/resources/{room['id']}").json()["version"] == 1


def test_patching_the_policy_bumps_version_and_etag(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    path = f"/v1/resources/{room['id']}"
    r = tenant.admin.get(path)
    assert r.headers["etag"] == '"1"'
    assert r.json()["policy"]["weekly_hours"] is None
    policy = {"min_duration": "PT30M", "buffer_after": "PT15M", "slot_grid_minutes": 15}
    r = tenant.admin.patch(path, json={"policy": policy}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert r.json()["version"] == 2
    got = r.json()["policy"]
    assert (got["min_duration"], got["buffer_after"], got["slot_grid_minutes"]) == (
        "PT30M",
        "PT15M",
        15,
    )
    assert tenant.admin.get(path).json() == r.json()
    r = tenant.admin.patch(path, json={"policy": {}}, headers={"If-Match": '"1"'})
    _problem(r, 412, "precondition-failed")
    # the new policy applies to the next booking at once
    refused(
        tenant.booker.book(room["id"], "2030-06-03T10:00:00Z", "2030-06-03T10:15:00Z"), "too-short"
    )
    _problem(tenant.booker.patch(path, json={"policy": {}}), 403, "forbidden")
    assert r.headers["content-type"] == PROBLEM
