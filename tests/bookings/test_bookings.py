"""Bookings over HTTP: recurring series in local wall time, multi-resource groups,
all-or-nothing and skip-conflicts, holds confirmed as one, cancel and move by scope,
If-Match, visibility and idempotency."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from fastapi.testclient import TestClient

from reservations.bookings.recurrence import MAX_OCCURRENCES
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.reservations.tasks import sweep_expired
from tests.support.api import Api, Tenant, _created, _db, _problem

BERLIN = "Europe/Berlin"
TZ = ZoneInfo(BERLIN)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def wall(value: str) -> str:
    """Local Berlin wall time of an instant, as 'YYYY-MM-DD HH:MM Day'."""
    return ts(value).astimezone(TZ).strftime("%Y-%m-%d %H:%M %a")


def book(
    api: Api, resources: list[str] | list[dict[str, Any]], start: str, end: str, **fields: Any
) -> httpx.Response:
    units = [r if isinstance(r, dict) else {"resource_id": r} for r in resources]
    return api.post("/v1/bookings", json={"resources": units, "start": start, "end": end, **fields})


def reservation_rows(settings: Settings, resource_id: str) -> list[tuple[Any, ...]]:
    return _db(
        settings,
        "SELECT start_at, status, booking_id FROM reservation WHERE resource_id = %s"
        " ORDER BY start_at",
        resource_id,
    )


def bookings_of(settings: Settings, tenant: Tenant) -> int:
    rows = _db(
        settings,
        "SELECT count(*) FROM booking b JOIN tenant t ON t.id = b.tenant_id WHERE t.name = %s",
        tenant.name,
    )
    return int(rows[0][0])


def statuses(body: dict[str, Any]) -> list[str]:
    return [r["status"] for r in body["reservations"]]


# --- series --------------------------------------------------------------------------------


def test_weekly_series_stays_at_local_time_across_dst(tenant: Tenant) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-03-18T09:00:00+01:00",  # a Monday, before the change on 2030-03-31
        "2030-03-18T10:00:00+01:00",
        rrule="FREQ=WEEKLY;BYDAY=MO,WE;COUNT=20",
        customer="team-a",
    )
    body = _created(r)
    assert r.headers["location"] == f"/v1/bookings/{body['id']}"
    assert r.headers["etag"] == '"1"'
    assert (body["status"], body["timezone"], body["mode"], body["version"]) == (
        "confirmed",
        BERLIN,
        "all-or-nothing",
        1,
    )
    assert body["rrule"] == "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=20"
    items = body["reservations"]
    assert len(items) == 20
    assert {wall(i["start"])[11:] for i in items} == {"09:00 Mon", "09:00 Wed"}
    assert {wall(i["end"])[11:16] for i in items} == {"10:00"}
    assert wall(items[0]["start"]) == "2030-03-18 09:00 Mon"
    assert wall(items[-1]["start"]) == "2030-05-22 09:00 Wed"
    # the instants differ across the change: 08:00Z in winter, 07:00Z in summer
    assert {ts(i["start"]).hour for i in items} == {8, 7}
    assert all(i["booking_id"] == body["id"] for i in items)
    assert all(i["customer"] == "team-a" for i in items)
    assert [o["outcome"] for o in body["report"]] == ["booked"] * 20
    # the reservations are ordinary reservations of the booking
    listed = tenant.booker.get("/v1/reservations", params={"booking_id": body["id"], "limit": 50})
    assert [i["id"] for i in listed.json()["items"]] == [i["id"] for i in items]
    got = tenant.booker.get(f"/v1/bookings/{body['id']}")
    assert got.status_code == 200
    assert got.headers["etag"] == '"1"'
    assert "report" not in got.json()
    assert got.json()["reservations"] == items


def test_interval_until_and_exdates(tenant: Tenant) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-01T09:00:00+02:00",
            "2030-06-01T09:30:00+02:00",
            rrule="FREQ=DAILY;INTERVAL=2;UNTIL=20300610T235959",
            exdates=["2030-06-03T07:00:00Z", "2030-06-07"],  # an instant and a local date
        )
    )
    assert [wall(i["start"])[:16] for i in body["reservations"]] == [
        "2030-06-01 09:00",
        "2030-06-05 09:00",
        "2030-06-09 09:00",
    ]
    assert body["exdates"] == ["2030-06-03T07:00:00+00:00", "2030-06-07"]
    # an exdate instant that is not an occurrence's start leaves it in
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-07-01T09:00:00+02:00",
            "2030-07-01T09:30:00+02:00",
            rrule="FREQ=DAILY;COUNT=2",
            exdates=["2030-07-02T09:00:00Z"],
        )
    )
    assert len(body["reservations"]) == 2


def test_until_in_utc_as_rfc_5545_requires(tenant: Tenant) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-06-01T09:00:00+02:00",
        "2030-06-01T09:30:00+02:00",
        rrule="FREQ=DAILY;UNTIL=20300603T070000Z",
    )
    assert len(_created(r)["reservations"]) == 3


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"rrule": f"FREQ=DAILY;COUNT={MAX_OCCURRENCES + 1}"}, "rrule"),
        ({"rrule": "FREQ=DAILY"}, "rrule"),  # unbounded
        ({"rrule": "FREQ=WEEKLY"}, "rrule"),  # unbounded, past the horizon first
        ({"rrule": "FREQ=YEARLY;COUNT=7"}, "rrule"),  # bounded, but over five years ahead
        ({"rrule": "FREQ=SOMETIMES;COUNT=2"}, "rrule"),
        ({"rrule": "DTSTART:20300601T090000\nRRULE:FREQ=DAILY;COUNT=2"}, "rrule"),
        (
            {"rrule": "FREQ=DAILY;COUNT=3", "exdates": ["2030-06-01", "2030-06-02", "2030-06-03"]},
            "rrule",
        ),
        ({"exdates": ["2030-06-02"]}, ""),  # exdates without a rule
        ({"rrule": "FREQ=HOURLY;COUNT=3"}, "rrule"),  # occurrences overlap each other
    ],
)
def test_series_validation(
    tenant: Tenant, settings: Settings, fields: dict[str, Any], field: str
) -> None:
    room = tenant.admin.resource()
    r = book(tenant.booker, [room["id"]], "2030-06-01T09:00:00Z", "2030-06-01T10:30:00Z", **fields)
    body = _problem(r, 422, "invalid-input")
    if field:
        assert [e["field"] for e in body["errors"]] == [field], body
    assert reservation_rows(settings, room["id"]) == []


def test_times_in_booking_messages_are_in_utc_and_the_zone(tenant: Tenant) -> None:
    """Occurrences that overlap name their starts in UTC and in the resource's zone; an
    occurrence a cancel or a move names that the booking does not have, in UTC and in the
    booking's zone (here the resource's, its default)."""
    room = tenant.admin.resource(timezone=BERLIN)
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-06-01T09:00:00Z",
        "2030-06-01T10:30:00Z",
        rrule="FREQ=HOURLY;COUNT=3",
    )
    assert (
        "Occurrences 2030-06-01 09:00 UTC (11:00 Europe/Berlin) and "
        "2030-06-01 10:00 UTC (12:00 Europe/Berlin) overlap"
    ) in _problem(r, 422, "invalid-input")["detail"]
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-03T09:00:00Z",
            "2030-06-03T10:00:00Z",
            rrule="FREQ=DAILY;COUNT=3",
        )
    )
    path = f"/v1/bookings/{body['id']}"
    missing = {"scope": "occurrence", "occurrence": "2030-06-03T09:30:00Z"}
    said = "No occurrence of this booking starts at 2030-06-03 09:30 UTC (11:30 Europe/Berlin);"
    cancel = _problem(tenant.booker.post(f"{path}/cancel", json=missing), 404, "not-found")
    assert said in cancel["detail"], cancel
    move = _problem(tenant.booker.patch(path, json={"shift": "PT1H", **missing}), 404, "not-found")
    assert said in move["detail"], move


def test_series_of_exactly_the_limit_is_accepted(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-01-01T09:00:00Z",
        "2030-01-01T09:05:00Z",
        rrule=f"FREQ=DAILY;COUNT={MAX_OCCURRENCES}",
    )
    assert len(_created(r)["reservations"]) == MAX_OCCURRENCES


def test_a_booking_holds_at_most_1000_reservations(tenant: Tenant, settings: Settings) -> None:
    rooms = [tenant.admin.resource(name=f"R{i}")["id"] for i in range(4)]
    args = ("2030-01-01T09:00:00Z", "2030-01-01T09:05:00Z")
    r = book(tenant.booker, rooms, *args, rrule="FREQ=DAILY;COUNT=251")  # 1,004
    body = _problem(r, 422, "invalid-input")
    assert "at most 1000 reservations" in body["detail"], body
    assert [e["field"] for e in body["errors"]] == ["rrule"]
    assert all(reservation_rows(settings, room) == [] for room in rooms)
    r = book(tenant.booker, rooms, *args, rrule="FREQ=DAILY;COUNT=250")  # exactly 1,000
    assert len(_created(r)["reservations"]) == 1_000


# --- all-or-nothing and skip-conflicts ----------------------------------------------------------


def test_all_or_nothing_names_the_conflicting_occurrence_and_writes_nothing(
    tenant: Tenant, settings: Settings
) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    other = tenant.another_booker()
    taken = _created(
        other.book(room["id"], "2030-06-17T09:30:00+02:00", "2030-06-17T11:00:00+02:00")
    )
    series = {
        "rrule": "FREQ=WEEKLY;COUNT=5",
    }
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-06-03T09:00:00+02:00",
        "2030-06-03T10:00:00+02:00",
        **series,
    )
    body = _problem(r, 409, "reservation-conflict")
    assert body["occurrences"] == [
        {
            "start": "2030-06-17T07:00:00Z",
            "end": "2030-06-17T08:00:00Z",
            "outcome": "skipped",
            "reasons": [
                {
                    "resource_id": room["id"],
                    "reason": "booked",
                    # someone else's reservation: its range, not its id
                    "conflicts": [
                        {"start": taken["start"], "end": taken["end"], "status": "confirmed"}
                    ],
                }
            ],
        }
    ]
    assert [row[0] for row in reservation_rows(settings, room["id"])] == [ts(taken["start"])]
    assert bookings_of(settings, tenant) == 0

    # the admin sees whose it is
    r = book(
        tenant.admin,
        [room["id"]],
        "2030-06-03T09:00:00+02:00",
        "2030-06-03T10:00:00+02:00",
        **series,
    )
    conflicts = _problem(r, 409, "reservation-conflict")["occurrences"][0]["reasons"][0][
        "conflicts"
    ]
    assert conflicts[0]["id"] == taken["id"]

    # skip-conflicts books the rest and reports each occurrence
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-06-03T09:00:00+02:00",
        "2030-06-03T10:00:00+02:00",
        mode="skip-conflicts",
        **series,
    )
    body = _created(r)
    assert body["mode"] == "skip-conflicts"
    assert [(wall(o["start"])[:10], o["outcome"]) for o in body["report"]] == [
        ("2030-06-03", "booked"),
        ("2030-06-10", "booked"),
        ("2030-06-17", "skipped"),
        ("2030-06-24", "booked"),
        ("2030-07-01", "booked"),
    ]
    assert body["report"][2]["reasons"][0]["reason"] == "booked"
    assert [wall(i["start"])[:10] for i in body["reservations"]] == [
        "2030-06-03",
        "2030-06-10",
        "2030-06-24",
        "2030-07-01",
    ]
    assert len(reservation_rows(settings, room["id"])) == 5
    # nothing left to book: skip-conflicts refuses too (409), and writes nothing
    r = book(
        tenant.booker,
        [room["id"]],
        "2030-06-03T09:00:00+02:00",
        "2030-06-03T10:00:00+02:00",
        mode="skip-conflicts",
        **series,
    )
    assert len(_problem(r, 409, "reservation-conflict")["occurrences"]) == 5
    assert bookings_of(settings, tenant) == 1


def test_a_rule_broken_by_one_occurrence(tenant: Tenant, settings: Settings) -> None:
    policy = {
        "weekly_hours": {"mon": [{"start": "08:00", "end": "18:00"}]},
        "date_overrides": [{"date": "2030-06-10", "hours": []}],  # a holiday
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    args = ([room["id"]], "2030-06-03T09:00:00+02:00", "2030-06-03T10:00:00+02:00")
    r = book(tenant.booker, *args, rrule="FREQ=WEEKLY;COUNT=3")
    body = _problem(r, 422, "booking-rule-violated")
    assert body["reason"] == "outside-opening-hours"
    assert [(o["start"], [x["reason"] for x in o["reasons"]]) for o in body["occurrences"]] == [
        ("2030-06-10T07:00:00Z", ["outside-opening-hours"])
    ]
    assert body["occurrences"][0]["reasons"][0]["resource_id"] == room["id"]
    assert reservation_rows(settings, room["id"]) == []
    body = _created(book(tenant.booker, *args, rrule="FREQ=WEEKLY;COUNT=3", mode="skip-conflicts"))
    assert [o["outcome"] for o in body["report"]] == ["booked", "skipped", "booked"]
    assert body["report"][1]["reasons"][0]["reason"] == "outside-opening-hours"
    assert len(body["reservations"]) == 2
    # an admin may override the rules for the whole series (but never an overlap)
    r = book(tenant.admin, *args, rrule="FREQ=WEEKLY;COUNT=3", override_rules=True)
    assert [
        o["reasons"][0]["reason"] for o in _problem(r, 409, "reservation-conflict")["occurrences"]
    ] == ["booked", "booked"]
    _problem(book(tenant.booker, *args, override_rules=True), 403, "forbidden")


def test_booker_limit_applies_across_a_series(tenant: Tenant) -> None:
    room = tenant.admin.resource(policy={"booker_limit": {"max_live": 2, "period": "month"}})
    args = ([room["id"]], "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z")
    body = _problem(
        book(tenant.booker, *args, rrule="FREQ=WEEKLY;COUNT=3"), 422, "booking-rule-violated"
    )
    assert body["reason"] == "booker-limit"
    assert [o["start"] for o in body["occurrences"]] == ["2030-06-17T09:00:00Z"]
    body = _created(book(tenant.booker, *args, rrule="FREQ=WEEKLY;COUNT=5", mode="skip-conflicts"))
    # June: the first two; July: the first two again (06-03, 06-10, 06-17, 06-24, 07-01)
    assert [o["outcome"] for o in body["report"]] == [
        "booked",
        "booked",
        "skipped",
        "skipped",
        "booked",
    ]


# --- several resources ------------------------------------------------------------------------


def test_room_and_projector_are_booked_together_or_not_at_all(
    tenant: Tenant, settings: Settings
) -> None:
    room = tenant.admin.resource(name="Room")
    projector = tenant.admin.resource(name="Projector", capacity=2)
    start, end = "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"
    both = [{"resource_id": room["id"]}, {"resource_id": projector["id"], "quantity": 2}]
    body = _created(book(tenant.booker, both, start, end))
    assert sorted((i["resource_id"], i["quantity"]) for i in body["reservations"]) == sorted(
        [(room["id"], 1), (projector["id"], 2)]
    )
    # the projector is taken at 11: nothing is booked, and the 409 says which resource
    other = tenant.another_booker()
    _created(other.book(projector["id"], "2030-06-03T11:30:00Z", "2030-06-03T12:00:00Z"))
    r = book(tenant.booker, both, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z")
    body = _problem(r, 409, "reservation-conflict")
    (occurrence,) = body["occurrences"]
    assert [x["resource_id"] for x in occurrence["reasons"]] == [projector["id"]]
    assert occurrence["reasons"][0]["conflicts"] == [
        {"start": "2030-06-03T11:30:00Z", "end": "2030-06-03T12:00:00Z", "status": "confirmed"}
    ]
    assert len(reservation_rows(settings, room["id"])) == 1
    # a single unit still fits
    _created(
        book(
            tenant.booker,
            [room["id"], projector["id"]],
            "2030-06-03T11:00:00Z",
            "2030-06-03T12:00:00Z",
        )
    )
    # validation: the same resource twice, too many units, an unknown or foreign resource
    _problem(book(tenant.booker, [room["id"], room["id"]], start, end), 422, "invalid-input")
    _problem(
        book(
            tenant.booker,
            [{"resource_id": room["id"], "quantity": 2}],
            "2030-06-04T09:00:00Z",
            "2030-06-04T10:00:00Z",
        ),
        422,
        "invalid-input",
    )
    _problem(
        book(tenant.booker, [room["id"], "00000000-0000-0000-0000-000000000009"], start, end),
        404,
        "not-found",
    )
    _problem(
        book(tenant.viewer, [room["id"]], "2030-06-05T09:00:00Z", "2030-06-05T10:00:00Z"),
        403,
        "forbidden",
    )


# --- holds and confirm -----------------------------------------------------------------------


def test_held_booking_is_confirmed_as_one(tenant: Tenant) -> None:
    room, desk = tenant.admin.resource(), tenant.admin.resource(name="Desk")
    body = _created(
        book(
            tenant.booker,
            [room["id"], desk["id"]],
            "2030-06-03T09:00:00Z",
            "2030-06-03T10:00:00Z",
            rrule="FREQ=DAILY;COUNT=3",
            hold_seconds=300,
        )
    )
    assert body["status"] == "held"
    assert statuses(body) == ["held"] * 6
    assert all(r["expires_at"] is not None for r in body["reservations"])
    path = f"/v1/bookings/{body['id']}"
    _problem(
        tenant.booker.post(f"{path}/confirm", headers={"If-Match": '"2"'}),
        412,
        "precondition-failed",
    )
    r = tenant.booker.post(f"{path}/confirm", headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["version"], r.headers["etag"]) == ("confirmed", 2, '"2"')
    assert statuses(r.json()) == ["confirmed"] * 6
    assert all(x.get("expires_at") is None for x in r.json()["reservations"])
    # confirming again changes nothing
    again = tenant.booker.post(f"{path}/confirm")
    assert again.status_code == 200
    assert again.json()["version"] == 2


def test_confirm_after_the_hold_expired_confirms_nothing(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    room = tenant.admin.resource()
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-03T09:00:00Z",
            "2030-06-03T10:00:00Z",
            rrule="FREQ=DAILY;COUNT=2",
            hold_seconds=60,
        )
    )
    clock.advance(timedelta(seconds=61))
    r = tenant.booker.post(f"/v1/bookings/{body['id']}/confirm")
    _problem(r, 409, "hold-expired")
    assert [row[1] for row in reservation_rows(settings, room["id"])] == ["held", "held"]
    got = tenant.booker.get(f"/v1/bookings/{body['id']}").json()
    assert statuses(got) == ["expired", "expired"]
    assert got["version"] == 1
    # the expired hold blocks no one
    _created(
        tenant.another_booker().book(room["id"], "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z")
    )


def test_a_partly_expired_hold_confirms_nothing(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    room = tenant.admin.resource()
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-03T09:00:00Z",
            "2030-06-03T10:00:00Z",
            rrule="FREQ=DAILY;COUNT=2",
            hold_seconds=60,
        )
    )
    # one reservation of the booking is confirmed on its own; the other's hold runs out
    first = body["reservations"][0]["id"]
    assert tenant.booker.post(f"/v1/reservations/{first}/confirm").status_code == 200
    clock.advance(timedelta(seconds=61))
    _problem(tenant.booker.post(f"/v1/bookings/{body['id']}/confirm"), 409, "hold-expired")
    assert [row[1] for row in reservation_rows(settings, room["id"])] == ["confirmed", "held"]


def test_confirm_after_the_sweeper_still_says_hold_expired(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    room = tenant.admin.resource()
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-03T09:00:00Z",
            "2030-06-03T10:00:00Z",
            hold_seconds=60,
        )
    )
    clock.advance(timedelta(seconds=61))
    app_client.portal.call(sweep_expired, app_client.app.state.services)  # type: ignore[union-attr, attr-defined]
    _problem(tenant.booker.post(f"/v1/bookings/{body['id']}/confirm"), 409, "hold-expired")


# --- cancel ------------------------------------------------------------------------------------


def test_cancel_by_scope(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    body = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-03T09:00:00Z",
            "2030-06-03T10:00:00Z",
            rrule="FREQ=DAILY;COUNT=6",
        )
    )
    path = f"/v1/bookings/{body['id']}"
    starts = [r["start"] for r in body["reservations"]]

    def cancel(**change: Any) -> dict[str, Any]:
        r = tenant.booker.post(f"{path}/cancel", json=change)
        assert r.status_code == 200, r.text
        return dict(r.json())

    got = cancel(scope="occurrence", occurrence=starts[1])
    assert statuses(got) == ["confirmed", "cancelled"] + ["confirmed"] * 4
    assert got["version"] == 2
    # the occurrence may be named with any offset
    got = cancel(scope="following", occurrence="2030-06-06T11:00:00+02:00")
    assert statuses(got) == [
        "confirmed",
        "cancelled",
        "confirmed",
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    # the freed ranges can be booked by others
    _created(tenant.another_booker().book(room["id"], starts[4], "2030-06-07T10:00:00Z"))
    _problem(
        tenant.booker.post(
            f"{path}/cancel", json={"scope": "occurrence", "occurrence": "2030-06-03T09:30:00Z"}
        ),
        404,
        "not-found",
    )
    _problem(
        tenant.booker.post(f"{path}/cancel", json={"scope": "occurrence"}), 422, "invalid-input"
    )
    _problem(
        tenant.booker.post(f"{path}/cancel", headers={"If-Match": '"1"'}),
        412,
        "precondition-failed",
    )
    got = cancel()
    assert got["status"] == "cancelled"
    assert statuses(got) == ["cancelled"] * 6
    version = got["version"]
    assert cancel()["version"] == version  # repeatable, changes nothing
    r = tenant.booker.post(f"{path}/cancel")  # no body at all: scope all
    assert r.status_code == 200, r.text


# --- move --------------------------------------------------------------------------------------


def _series(tenant: Tenant, room: dict[str, Any], count: int = 4) -> dict[str, Any]:
    # Mondays 09:00-10:00 Berlin from 2030-03-18: the third is after the change to summer time
    return _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-03-18T09:00:00+01:00",
            "2030-03-18T10:00:00+01:00",
            rrule=f"FREQ=WEEKLY;COUNT={count}",
        )
    )


def _walls(body: dict[str, Any]) -> list[str]:
    return [f"{wall(r['start'])[:16]}-{wall(r['end'])[11:16]}" for r in body["reservations"]]


def test_move_shifts_local_wall_time_and_sets_durations(tenant: Tenant) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    body = _series(tenant, room)
    path = f"/v1/bookings/{body['id']}"
    r = tenant.booker.patch(path, json={"shift": "PT1H"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert _walls(r.json()) == [
        "2030-03-18 10:00-11:00",
        "2030-03-25 10:00-11:00",
        "2030-04-01 10:00-11:00",
        "2030-04-08 10:00-11:00",
    ]
    third = r.json()["reservations"][2]["start"]
    r = tenant.booker.patch(
        path,
        json={"shift": "-PT30M", "duration": "PT45M", "scope": "following", "occurrence": third},
    )
    assert r.status_code == 200, r.text
    assert _walls(r.json()) == [
        "2030-03-18 10:00-11:00",
        "2030-03-25 10:00-11:00",
        "2030-04-01 09:30-10:15",
        "2030-04-08 09:30-10:15",
    ]
    first = r.json()["reservations"][0]["start"]
    r = tenant.booker.patch(
        path, json={"duration": "PT2H", "scope": "occurrence", "occurrence": first}
    )
    assert r.status_code == 200, r.text
    assert _walls(r.json())[0] == "2030-03-18 10:00-12:00"
    assert r.json()["version"] == 4
    # the moved reservations are what the reservation API shows, each with a new version
    res = tenant.booker.get(f"/v1/reservations/{r.json()['reservations'][0]['id']}").json()
    assert (res["start"], res["end"], res["version"]) == (
        "2030-03-18T09:00:00Z",
        "2030-03-18T11:00:00Z",
        3,
    )
    _problem(
        tenant.booker.patch(path, json={"shift": "PT1H"}, headers={"If-Match": '"1"'}),
        412,
        "precondition-failed",
    )
    _problem(tenant.booker.patch(path, json={}), 422, "invalid-input")
    _problem(tenant.booker.patch(path, json={"shift": "P1M"}), 422, "invalid-input")
    _problem(
        tenant.booker.patch(
            path,
            json={"shift": "PT1H", "scope": "occurrence", "occurrence": "2030-03-18T09:30:00Z"},
        ),
        404,
        "not-found",
    )


def test_a_move_into_a_conflict_moves_nothing(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    body = _series(tenant, room)
    blocker = _created(
        tenant.admin.book(room["id"], "2030-04-08T10:30:00+02:00", "2030-04-08T11:00:00+02:00")
    )
    before = reservation_rows(settings, room["id"])
    path = f"/v1/bookings/{body['id']}"
    r = tenant.booker.patch(path, json={"shift": "PT1H"})
    conflict = _problem(r, 409, "reservation-conflict")
    assert conflict["conflicts"] == [
        {
            "start": blocker["start"],
            "end": blocker["end"],
            "status": "confirmed",
            "resource_id": room["id"],  # a booking's move names the resource of each conflict
        }
    ]
    assert reservation_rows(settings, room["id"]) == before
    assert tenant.booker.get(path).json()["version"] == 1
    # lengthening so that occurrences overlap each other is refused at commit; nothing moves
    r = tenant.booker.patch(path, json={"duration": "P8D"})
    _problem(r, 409, "reservation-conflict")
    assert reservation_rows(settings, room["id"]) == before
    # occurrences may move onto each other's old ranges (the guards are checked at commit)
    r = tenant.booker.patch(path, json={"shift": "P7D"})
    assert r.status_code == 200, r.text
    assert [w[:10] for w in _walls(r.json())] == [
        "2030-03-25",
        "2030-04-01",
        "2030-04-08",
        "2030-04-15",
    ]


def test_a_move_that_breaks_a_rule_names_the_occurrence(tenant: Tenant) -> None:
    policy = {
        "weekly_hours": {"mon": [{"start": "08:00", "end": "12:00"}]},
        "date_overrides": [{"date": "2030-04-01", "hours": [{"start": "08:00", "end": "10:00"}]}],
    }
    room = tenant.admin.resource(timezone=BERLIN, policy=policy)
    body = _series(tenant, room)
    path = f"/v1/bookings/{body['id']}"
    r = tenant.booker.patch(path, json={"shift": "PT1H"})
    refused = _problem(r, 422, "booking-rule-violated")
    assert refused["reason"] == "outside-opening-hours"
    assert [v["reason"] for v in refused["violations"]] == ["outside-opening-hours"]
    assert ts(refused["occurrence"]) == ts(body["reservations"][2]["start"])
    assert _walls(tenant.booker.get(path).json()) == _walls(body)
    _problem(
        tenant.booker.patch(path, json={"shift": "PT1H", "override_rules": True}), 403, "forbidden"
    )
    r = tenant.admin.patch(path, json={"shift": "PT1H", "override_rules": True})
    assert r.status_code == 200, r.text


def test_an_expired_hold_does_not_block_a_move(tenant: Tenant, clock: Clock) -> None:
    room = tenant.admin.resource(timezone=BERLIN)
    body = _series(tenant, room, count=2)
    _created(
        tenant.another_booker().book(
            room["id"], "2030-03-25T10:00:00+01:00", "2030-03-25T11:00:00+01:00", hold_seconds=60
        )
    )
    clock.advance(timedelta(seconds=61))
    r = tenant.booker.patch(f"/v1/bookings/{body['id']}", json={"shift": "PT1H"})
    assert r.status_code == 200, r.text


# --- visibility and idempotency ---------------------------------------------------------------


def test_bookings_are_visible_to_their_booker_and_the_tenants_admins(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    room = tenant.admin.resource()
    body = _created(
        book(tenant.booker, [room["id"]], "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z")
    )
    path = f"/v1/bookings/{body['id']}"
    assert tenant.booker.get(path).status_code == 200
    assert tenant.admin.get(path).json()["id"] == body["id"]
    assert tenant.viewer.get(path).status_code == 200
    stranger = tenant.another_booker()
    for api in (stranger, other_tenant.admin):
        _problem(api.get(path), 404, "not-found")
        _problem(api.post(f"{path}/cancel"), 404, "not-found")
        _problem(api.post(f"{path}/confirm"), 404, "not-found")
        _problem(api.patch(path, json={"shift": "PT1H"}), 404, "not-found")
    _problem(tenant.viewer.post(f"{path}/cancel"), 403, "forbidden")
    _problem(
        tenant.booker.get("/v1/bookings/00000000-0000-0000-0000-000000000001"), 404, "not-found"
    )
    _problem(tenant.booker.get("/v1/bookings/nope"), 422, "invalid-input")
    # the admin may act on it
    r = tenant.admin.post(f"{path}/cancel")
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"


def test_idempotent_booking_replays(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()
    payload = {
        "resources": [{"resource_id": room["id"]}],
        "start": "2030-06-03T09:00:00Z",
        "end": "2030-06-03T10:00:00Z",
        "rrule": "FREQ=DAILY;COUNT=3",
    }
    key = {"Idempotency-Key": "booking-42"}
    first = tenant.booker.post("/v1/bookings", json=payload, headers=key)
    assert first.status_code == 201, first.text
    again = tenant.booker.post("/v1/bookings", json=payload, headers=key)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert len(reservation_rows(settings, room["id"])) == 3
    assert bookings_of(settings, tenant) == 1
    changed = {**payload, "rrule": "FREQ=DAILY;COUNT=4"}
    _problem(
        tenant.booker.post("/v1/bookings", json=changed, headers=key), 422, "idempotency-key-reused"
    )
    # without the key, the same request is a new booking attempt (and conflicts)
    _problem(tenant.booker.post("/v1/bookings", json=payload), 409, "reservation-conflict")
    # the key is per API key
    other = tenant.another_booker().post("/v1/bookings", json=payload, headers=key)
    _problem(other, 409, "reservation-conflict")
    assert bookings_of(settings, tenant) == 1


def test_a_bookings_reservations_read_like_reservations(
    tenant: Tenant, app_client: TestClient
) -> None:
    room = tenant.admin.resource()
    body = _created(
        book(tenant.booker, [room["id"]], "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z")
    )
    (item,) = body["reservations"]
    schema = app_client.get("/openapi.json").json()["components"]["schemas"]["ReservationRead"]
    assert set(schema["required"]) <= set(item)
    assert item == tenant.booker.get(f"/v1/reservations/{item['id']}").json()


# --- moves and cancels of whole bookings: limits and groups -------------------------------------


def _starts(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return sorted((r["resource_id"], r["start"], r["status"]) for r in body["reservations"])


def test_moving_a_booking_respects_the_booker_limit(tenant: Tenant) -> None:
    room = tenant.admin.resource(policy={"booker_limit": {"max_live": 1, "period": "day"}})
    assert (
        tenant.booker.book(room["id"], "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z").status_code
        == 201
    )
    series = _created(
        book(
            tenant.booker,
            [room["id"]],
            "2030-06-04T13:00:00Z",
            "2030-06-04T14:00:00Z",
            rrule="FREQ=DAILY;COUNT=2",
        )
    )
    path = f"/v1/bookings/{series['id']}"
    # The whole series a day later: June 5 holds the occurrence moving away and the one moving
    # in, and the one moving away does not count.
    r = tenant.booker.patch(path, json={"shift": "PT24H"})
    assert r.status_code == 200, r.text
    moved = r.json()
    assert [x["start"] for x in moved["reservations"]] == [
        "2030-06-05T13:00:00Z",
        "2030-06-06T13:00:00Z",
    ]
    # One occurrence into June 3, where this key already has its one reservation: refused,
    # and nothing moves.
    r = tenant.booker.patch(
        path,
        json={"shift": "-PT48H", "scope": "occurrence", "occurrence": "2030-06-05T13:00:00Z"},
    )
    body = _problem(r, 422, "booking-rule-violated")
    assert body["reason"] == "booker-limit"
    after = tenant.booker.get(path).json()
    assert _starts(after) == _starts(moved)
    assert after["version"] == moved["version"]
    # Another key is not limited by this one's reservations.
    other = tenant.another_booker()
    mine = _created(book(other, [room["id"]], "2030-06-07T13:00:00Z", "2030-06-07T14:00:00Z"))
    r = other.patch(f"/v1/bookings/{mine['id']}", json={"shift": "-PT96H"})  # to June 3, 13:00
    assert r.status_code == 200, r.text


def test_a_group_is_cancelled_and_moved_as_one(tenant: Tenant, settings: Settings) -> None:
    room, projector = tenant.admin.resource(name="Room"), tenant.admin.resource(name="Projector")
    both = [room["id"], projector["id"]]
    group = _created(book(tenant.booker, both, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"))
    path = f"/v1/bookings/{group['id']}"

    r = tenant.booker.patch(path, json={"shift": "PT2H"})
    assert r.status_code == 200, r.text
    assert _starts(r.json()) == sorted((rid, "2030-06-03T11:00:00Z", "confirmed") for rid in both)
    # both old ranges are free again, both new ones taken
    for rid in both:
        assert (
            tenant.another_booker()
            .book(rid, "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z")
            .status_code
            == 201
        )
        assert (
            tenant.another_booker()
            .book(rid, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z")
            .status_code
            == 409
        )

    # The projector is taken at 14:00: moving the group there moves neither.
    blocker = tenant.another_booker().book(
        projector["id"], "2030-06-03T14:00:00Z", "2030-06-03T15:00:00Z"
    )
    assert blocker.status_code == 201, blocker.text
    before = tenant.booker.get(path).json()
    r = tenant.booker.patch(path, json={"shift": "PT3H"})
    body = _problem(r, 409, "reservation-conflict")
    assert body["conflicts"] == [
        {
            "start": "2030-06-03T14:00:00Z",
            "end": "2030-06-03T15:00:00Z",
            "status": "confirmed",
            "resource_id": projector["id"],
        }
    ]
    after = tenant.booker.get(path).json()
    assert _starts(after) == _starts(before)
    assert after["version"] == before["version"]

    r = tenant.booker.post(f"{path}/cancel", json={})
    assert r.status_code == 200, r.text
    assert statuses(r.json()) == ["cancelled", "cancelled"]
    for rid in both:  # the group's ranges are free on both resources
        assert (
            tenant.another_booker()
            .book(rid, "2030-06-03T11:00:00Z", "2030-06-03T12:00:00Z")
            .status_code
            == 201
        )
    live = [
        row
        for rid in both
        for row in reservation_rows(settings, rid)
        if row[2] is not None and str(row[2]) == group["id"] and row[1] in ("held", "confirmed")
    ]
    assert live == []


def test_a_group_meeting_two_conflicts_names_both(tenant: Tenant) -> None:
    room, projector = tenant.admin.resource(name="Room"), tenant.admin.resource(name="Projector")
    other = tenant.another_booker()
    for rid in (room["id"], projector["id"]):
        assert other.book(rid, "2030-06-03T09:30:00Z", "2030-06-03T10:30:00Z").status_code == 201
    r = book(
        tenant.booker, [room["id"], projector["id"]], "2030-06-03T09:00:00Z", "2030-06-03T10:00:00Z"
    )
    body = _problem(r, 409, "reservation-conflict")
    (occurrence,) = body["occurrences"]
    assert sorted(x["resource_id"] for x in occurrence["reasons"]) == sorted(
        [room["id"], projector["id"]]
    )
