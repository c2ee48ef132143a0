"""GET /v1/reports/utilization: booked time over open time, from the policy's own hours and
blackouts, capacity- and quantity-weighted, cut at each resource's local midnights (a DST
day has 23 or 25 hours), rolled up by resource, tag, local day and ISO week. Expected
figures are worked out by hand below, not by the code under test."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reservations.kit.clock import Clock
from reservations.reservations.tasks import sweep_no_shows
from tests.support.api import Tenant, _created, _problem

H = 3600.0
# Europe/Berlin leaves summer time on Sunday 2030-10-27 (03:00 CEST -> 02:00 CET): 25 hours.
WINDOW = {"from": "2030-10-26T00:00:00+02:00", "to": "2030-10-28T00:00:00+01:00"}


def _report(api: Any, **params: Any) -> Any:
    return api.get("/v1/reports/utilization", params={**WINDOW, **params})


@pytest.fixture
def rooms(tenant: Tenant) -> dict[str, str]:
    admin = tenant.admin
    # Open around the clock in Berlin, capacity 2, one hour blacked out on Saturday.
    desk = admin.resource(
        name="Desk pool",
        capacity=2,
        timezone="Europe/Berlin",
        tags=["floor-1", "desk"],
        policy={
            "blackouts": [
                {"start": "2030-10-26T12:00:00+02:00", "end": "2030-10-26T13:00:00+02:00"}
            ]
        },
    )
    # Open 09:00-17:00 on Saturdays only, in UTC.
    room = admin.resource(
        name="Room",
        timezone="UTC",
        tags=["floor-1"],
        policy={"weekly_hours": {"sat": [{"start": "09:00", "end": "17:00"}]}},
    )
    book = tenant.booker.book
    # Desk: 2 units for 2 h on Saturday, 1 unit 23:00 Sat -> 01:00 Sun local (crosses midnight).
    _created(book(desk["id"], "2030-10-26T08:00:00+02:00", "2030-10-26T10:00:00+02:00", quantity=2))
    _created(book(desk["id"], "2030-10-26T23:00:00+02:00", "2030-10-27T01:00:00+02:00"))
    # Cancelled and held ones book nothing; the cancelled one is counted as a cancellation.
    gone = _created(book(desk["id"], "2030-10-27T10:00:00+01:00", "2030-10-27T11:00:00+01:00"))
    assert tenant.booker.post(f"/v1/reservations/{gone['id']}/cancel").status_code == 200
    _created(
        book(desk["id"], "2030-10-27T12:00:00+01:00", "2030-10-27T13:00:00+01:00", hold_seconds=600)
    )
    # Room: 3 h on Saturday; and one starting before the window (clipped to it, not counted).
    _created(book(room["id"], "2030-10-26T09:00:00Z", "2030-10-26T12:00:00Z"))
    _created(
        tenant.admin.book(
            room["id"], "2030-10-25T22:00:00Z", "2030-10-25T23:00:00Z", override_rules=True
        )
    )
    return {"desk": desk["id"], "room": room["id"]}


def test_by_resource(tenant: Tenant, rooms: dict[str, str]) -> None:
    r = _report(tenant.viewer)
    assert r.status_code == 200, r.text
    groups = {g["key"]: g for g in r.json()["groups"]}
    desk = groups[rooms["desk"]]
    # Open: 24 h Saturday + 25 h Sunday, less the blackout hour, times capacity 2.
    assert desk["open_seconds"] == (24 + 25 - 1) * 2 * H
    # Booked: 2 units x 2 h, plus 1 unit x 2 h across midnight.
    assert desk["booked_seconds"] == 6 * H
    assert desk["reservations"] == 2
    assert desk["cancellations"] == 1
    assert desk["utilization"] == pytest.approx(6 / 96)
    assert desk["name"] == "Desk pool"
    room = groups[rooms["room"]]
    # The window is Saturday 2030-10-25T22:00Z .. Sunday 23:00Z; Saturday's 8 UTC hours are open.
    assert room["open_seconds"] == 8 * H
    # Booked within the window: 3 h plus the hour from 22:00Z that starts on the window's edge.
    assert room["booked_seconds"] == 4 * H
    assert room["reservations"] == 2
    total = r.json()["total"]
    assert total["open_seconds"] == desk["open_seconds"] + room["open_seconds"]
    assert total["booked_seconds"] == 10 * H
    assert total["resources"] == 2


def test_by_local_day_and_week(tenant: Tenant, rooms: dict[str, str]) -> None:
    r = _report(tenant.admin, group_by="day", resource_id=[rooms["desk"]])
    assert r.status_code == 200, r.text
    days = {g["key"]: g for g in r.json()["groups"]}
    assert set(days) == {"2030-10-26", "2030-10-27"}
    assert days["2030-10-26"]["open_seconds"] == 23 * 2 * H  # 24 h less the blackout
    assert days["2030-10-27"]["open_seconds"] == 25 * 2 * H  # the 25-hour day
    assert days["2030-10-26"]["booked_seconds"] == 5 * H  # 2x2 h + 23:00-24:00
    assert days["2030-10-27"]["booked_seconds"] == 1 * H  # 00:00-01:00
    assert days["2030-10-26"]["reservations"] == 2
    assert days["2030-10-27"]["cancellations"] == 1
    r = _report(tenant.admin, group_by="week", resource_id=[rooms["desk"]])
    weeks = r.json()["groups"]
    assert [w["key"] for w in weeks] == ["2030-W43"]  # Sat 26 and Sun 27 October 2030
    assert weeks[0]["booked_seconds"] == 6 * H


def test_by_tag(tenant: Tenant, rooms: dict[str, str]) -> None:
    r = _report(tenant.admin, group_by="tag")
    tags = {g["key"]: g for g in r.json()["groups"]}
    assert tags["floor-1"]["resources"] == 2
    assert tags["floor-1"]["booked_seconds"] == 10 * H
    assert tags["desk"]["resources"] == 1
    assert tags["desk"]["booked_seconds"] == 6 * H
    only = _report(tenant.admin, tag=["desk"]).json()
    assert [g["key"] for g in only["groups"]] == [rooms["desk"]]


def test_no_open_time_reads_null(tenant: Tenant) -> None:
    closed = tenant.admin.resource(name="Closed", policy={"weekly_hours": {}})
    r = _report(tenant.admin, resource_id=[closed["id"]])
    assert r.json()["groups"][0]["utilization"] is None


def test_refusals(tenant: Tenant) -> None:
    _problem(_report(tenant.booker), 403, "forbidden")
    long = {"from": "2030-01-01T00:00:00Z", "to": "2031-01-03T00:00:00Z"}
    body = _problem(tenant.admin.get("/v1/reports/utilization", params=long), 422, "invalid-input")
    assert "366 days" in body["detail"]
    _problem(_report(tenant.admin, group_by="month"), 422, "invalid-input")
    backwards = {"from": WINDOW["to"], "to": WINDOW["from"]}
    _problem(tenant.admin.get("/v1/reports/utilization", params=backwards), 422, "invalid-input")


def test_no_shows_are_counted_and_not_booked(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    room = tenant.admin.resource(policy={"check_in": {"release_after": "PT10M"}})
    start = (clock.now() + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    span = {"start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()}
    _created(tenant.booker.book(room["id"], span["start"], span["end"]))
    clock.freeze(start + timedelta(minutes=10))
    services = app_client.app.state.services  # type: ignore[attr-defined]
    app_client.portal.call(sweep_no_shows, services)  # type: ignore[union-attr]
    window = {"from": (start - timedelta(hours=1)).isoformat(), "to": span["end"]}
    r = tenant.admin.get("/v1/reports/utilization", params={**window, "resource_id": [room["id"]]})
    (group,) = r.json()["groups"]
    assert group["no_shows"] == 1
    assert group["reservations"] == 0
    assert group["booked_seconds"] == 0
