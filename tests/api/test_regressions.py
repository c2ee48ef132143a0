"""Defects a review of the rules, capacity, bookings and caches found, each pinned here."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pg_errors

from reservations.config import Settings
from tests.support.api import Tenant, _created, _problem


def test_lowering_capacity_to_one_counts_quantities(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource(capacity=3)["id"]
    _created(tenant.booker.book(room, "2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z", quantity=2))
    body = _problem(
        tenant.admin.patch(f"/v1/resources/{room}", json={"capacity": 1}), 409, "capacity-in-use"
    )
    assert body["peak_usage"] == 2
    assert tenant.admin.get(f"/v1/resources/{room}").json()["capacity"] == 3
    # The database refuses it too, whoever writes: a unit resource's row uses one unit.
    assert settings.database_url is not None
    with (
        psycopg.connect(settings.database_url) as conn,
        pytest.raises(pg_errors.ExclusionViolation),
    ):
        conn.execute("UPDATE resource SET capacity = 1 WHERE id = %s", (room,))
    unit = tenant.admin.resource()["id"]
    one = _created(tenant.booker.book(unit, "2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z"))
    with (
        psycopg.connect(settings.database_url) as conn,
        pytest.raises(pg_errors.ExclusionViolation),
    ):
        conn.execute("UPDATE reservation SET quantity = 5 WHERE id = %s", (one["id"],))


def test_capacity_patch_of_another_tenants_resource_reveals_nothing(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    room = tenant.admin.resource(capacity=3)["id"]
    _created(tenant.booker.book(room, "2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z", quantity=3))
    r = other_tenant.admin.patch(f"/v1/resources/{room}", json={"capacity": 2})
    body = _problem(r, 404, "not-found")
    assert "peak_usage" not in body


def test_booking_confirm_is_refused_when_one_hold_already_expired(
    tenant: Tenant, settings: Settings
) -> None:
    room = tenant.admin.resource()["id"]
    booking = tenant.booker.post(
        "/v1/bookings",
        json={
            "resources": [{"resource_id": room}],
            "start": "2031-03-03T10:00:00Z",
            "end": "2031-03-03T11:00:00Z",
            "rrule": "FREQ=DAILY;COUNT=3",
            "hold_seconds": 600,
        },
    ).json()
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:  # what a sweeper elsewhere did
        conn.execute(
            "UPDATE reservation SET status = 'expired' WHERE id = %s",
            (booking["reservations"][0]["id"],),
        )
    _problem(tenant.booker.post(f"/v1/bookings/{booking['id']}/confirm"), 409, "hold-expired")
    after = tenant.booker.get(f"/v1/bookings/{booking['id']}").json()
    assert [r["status"] for r in after["reservations"]] == ["expired", "held", "held"]


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("GET", "availability", {"duration": "P999999D"}),
        ("POST", "/v1/availability/search", {"duration": "P999999D"}),
        ("PATCH", "booking", {"shift": "P3000000D"}),
        ("PATCH", "booking", {"shift": "-P800000D"}),
    ],
)
def test_huge_durations_are_422(
    tenant: Tenant, method: str, path: str, payload: dict[str, str]
) -> None:
    room = tenant.admin.resource()["id"]
    window = {"from": "2031-03-03T00:00:00Z", "to": "2031-03-04T00:00:00Z"}
    if path == "availability":
        r = tenant.viewer.get(f"/v1/resources/{room}/availability", params={**window, **payload})
    elif path == "booking":
        booking = tenant.booker.post(
            "/v1/bookings",
            json={
                "resources": [{"resource_id": room}],
                "start": "2031-03-03T10:00:00Z",
                "end": "2031-03-03T11:00:00Z",
            },
        ).json()
        r = tenant.booker.patch(f"/v1/bookings/{booking['id']}", json=payload)
    else:
        r = tenant.viewer.post(path, json={**window, **payload})
    _problem(r, 422, "invalid-input")


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=DAILY;BYWEEKNO=53;BYMONTH=6",
        "FREQ=MINUTELY;BYWEEKNO=53;BYMONTH=6;COUNT=1",
        "FREQ=DAILY;BYYEARDAY=40;BYMONTHDAY=1;COUNT=1",
    ],
)
def test_rules_that_never_match_are_refused_quickly(tenant: Tenant, rule: str) -> None:
    room = tenant.admin.resource()["id"]
    r = tenant.booker.post(
        "/v1/bookings",
        json={
            "resources": [{"resource_id": room}],
            "start": "2031-03-03T10:00:00Z",
            "end": "2031-03-03T11:00:00Z",
            "rrule": rule,
        },
    )
    _problem(r, 422, "invalid-input")
