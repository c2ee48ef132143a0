"""The per-tenant cap on live holds: 429 hold-limit-reached with Retry-After, per tenant, and
expired, confirmed or cancelled holds no longer count."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.api import new_tenant

PROBLEM = "application/problem+json"


@pytest.fixture
def capped(settings: Settings) -> Iterator[tuple[TestClient, Clock]]:
    clock = Clock()
    app = create_app(settings.model_copy(update={"max_live_holds_per_tenant": 2}), clock)
    with TestClient(app) as client:
        yield client, clock


def test_hold_cap_per_tenant(capped: tuple[TestClient, Clock]) -> None:
    client, clock = capped
    tenant, other = new_tenant(client), new_tenant(client)
    room = tenant.admin.resource()["id"]

    def hold(day: int, who: object = None) -> int:
        api = who or tenant.booker
        r = api.book(  # type: ignore[attr-defined]
            room, f"2031-01-{day:02d}T10:00:00Z", f"2031-01-{day:02d}T11:00:00Z", hold_seconds=60
        )
        return int(r.status_code)

    assert hold(1) == 201
    assert hold(2) == 201
    r = tenant.booker.book(room, "2031-01-03T10:00:00Z", "2031-01-03T11:00:00Z", hold_seconds=60)
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "/problems/hold-limit-reached"
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    # confirmed bookings are not holds
    assert (
        tenant.booker.book(room, "2031-01-04T10:00:00Z", "2031-01-04T11:00:00Z").status_code == 201
    )
    # another tenant has its own cap
    other_room = other.admin.resource()["id"]
    r = other.booker.book(
        other_room, "2031-01-01T10:00:00Z", "2031-01-01T11:00:00Z", hold_seconds=60
    )
    assert r.status_code == 201, r.text
    # a booking of several holds counts them all
    r = tenant.booker.post(
        "/v1/bookings",
        json={
            "resources": [{"resource_id": room}],
            "start": "2031-02-01T10:00:00Z",
            "end": "2031-02-01T11:00:00Z",
            "hold_seconds": 60,
        },
    )
    assert r.status_code == 429, r.text
    # once the holds expire (no sweeper needed), there is room again
    clock.advance(timedelta(seconds=61))
    assert hold(5) == 201


def test_waitlist_promotion_counts_against_the_cap(capped: tuple[TestClient, Clock]) -> None:
    """A promotion makes a hold: at the cap, the entry keeps waiting instead (it used to be
    promoted past the cap); once a hold is gone, the next promotion takes its place."""
    client, _ = capped
    tenant = new_tenant(client)
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]

    def at(hour: int) -> str:
        return f"2031-05-05T{hour:02d}:00:00Z"

    blocker = admin.book(room, at(9), at(10)).json()
    holds = [booker.book(room, at(h), at(h + 1), hold_seconds=600).json() for h in (11, 12)]
    entry = booker.post(
        "/v1/waitlist", json={"resource_id": room, "start": at(9), "end": at(10)}
    ).json()
    assert admin.post(f"/v1/reservations/{blocker['id']}/cancel").status_code == 200
    assert booker.get(f"/v1/waitlist/{entry['id']}").json()["status"] == "waiting"
    assert booker.post(f"/v1/reservations/{holds[0]['id']}/cancel").status_code == 200
    assert booker.get(f"/v1/waitlist/{entry['id']}").json()["status"] == "promoted"
