"""Approvals (a pending booking holds its range, visible to availability, until an admin
decides) and the waitlist (a freed range goes to the first waiting entry that fits, once)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.reservations.tasks import sweep_expired
from tests.support.api import Tenant, _created, _problem, new_tenant
from tests.support.servers import (
    PgServer,
    RedisServer,
    make_settings,
    wait_for_earlier_transactions,
)

DAY = "2034-02-06"


def at(hour: int, minute: int = 0) -> str:
    return f"{DAY}T{hour:02d}:{minute:02d}:00Z"


def _approval_room(tenant: Tenant, **policy: Any) -> str:
    return str(tenant.admin.resource(policy={"requires_approval": True, **policy})["id"])


def _types(tenant: Tenant, subject: str) -> list[str]:
    wait_for_earlier_transactions(tenant.admin.client)
    r = tenant.admin.get("/v1/events", params={"limit": 500})
    return [e["type"] for e in r.json()["items"] if e["subject_id"] == subject]


def test_a_bookers_booking_is_pending_holds_its_range_and_an_admin_decides(
    tenant: Tenant,
) -> None:
    room = _approval_room(tenant)
    pending = _created(tenant.booker.book(room, at(9), at(10)))
    assert pending["status"] == "pending"
    assert pending["expires_at"] is not None
    # It holds the range: nobody else gets it, and availability shows it taken.
    _problem(tenant.admin.book(room, at(9, 30), at(10, 30)), 409, "reservation-conflict")
    r = tenant.admin.get(
        f"/v1/resources/{room}/availability",
        params={"from": at(8), "to": at(12), "duration": "PT1H"},
    )
    starts = [s["start"] for s in r.json()["slots"]]
    assert "2034-02-06T09:00:00Z" not in starts
    assert "2034-02-06T10:00:00Z" in starts
    # The booker cannot confirm it; listing by status finds it as pending.
    _problem(
        tenant.booker.post(f"/v1/reservations/{pending['id']}/confirm"), 409, "approval-required"
    )
    listed = tenant.admin.get("/v1/reservations", params={"resource_id": room, "status": "pending"})
    assert [x["id"] for x in listed.json()["items"]] == [pending["id"]]
    # Only admins decide.
    _problem(tenant.booker.post(f"/v1/reservations/{pending['id']}/approve"), 403, "forbidden")
    r = tenant.admin.post(f"/v1/reservations/{pending['id']}/approve")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["expires_at"]) == ("confirmed", None)
    _problem(
        tenant.admin.post(f"/v1/reservations/{pending['id']}/decline"),
        409,
        "reservation-not-pending",
    )
    assert _types(tenant, pending["id"]) == ["reservation.pending", "reservation.confirmed"]

    # Declined: the range is free again.
    other = _created(tenant.booker.book(room, at(11), at(12)))
    r = tenant.admin.post(f"/v1/reservations/{other['id']}/decline")
    assert r.json()["status"] == "declined"
    assert tenant.admin.book(room, at(11), at(12)).status_code == 201
    assert _types(tenant, other["id"]) == ["reservation.pending", "reservation.declined"]
    # An admin's own booking needs no approval.
    assert _created(tenant.admin.book(room, at(14), at(15)))["status"] == "confirmed"


def test_a_pending_booking_expires_when_nobody_decides(
    tenant: Tenant, app_client: TestClient
) -> None:
    room = _approval_room(tenant, approval_window="PT1M")
    pending = _created(tenant.booker.book(room, at(9), at(10)))
    clock = app_client.app.state.services.clock  # type: ignore[attr-defined]
    clock.offset += type(clock.offset)(minutes=2)
    r = tenant.admin.get(f"/v1/reservations/{pending['id']}")
    assert r.json()["status"] == "expired"
    _problem(
        tenant.admin.post(f"/v1/reservations/{pending['id']}/approve"),
        409,
        "reservation-not-pending",
    )
    assert tenant.booker.book(room, at(9), at(10)).status_code == 201


def test_a_pending_series_awaits_approval_whole(tenant: Tenant) -> None:
    room = _approval_room(tenant)
    r = tenant.booker.post(
        "/v1/bookings",
        json={
            "resources": [{"resource_id": room}],
            "start": at(9),
            "end": at(10),
            "rrule": "FREQ=DAILY;COUNT=3",
            "timezone": "UTC",
        },
    )
    assert r.status_code == 201, r.text
    booking = r.json()
    assert booking["status"] == "pending"
    _problem(tenant.booker.post(f"/v1/bookings/{booking['id']}/confirm"), 409, "approval-required")
    r = tenant.admin.post(f"/v1/bookings/{booking['id']}/confirm")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed"


def _join(api: Any, room: str, start: str, end: str, **fields: Any) -> dict[str, Any]:
    r = api.post("/v1/waitlist", json={"resource_id": room, "start": start, "end": end, **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_freed_range_goes_to_the_first_waiting_entry_that_fits(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    _created(admin.book(room, at(8), at(9)))  # stays
    taken = _created(admin.book(room, at(9), at(12)))
    too_long = _join(booker, room, at(8), at(12))  # first in line, but will not fit
    first = _join(booker, room, at(9), at(10), customer="first")
    second = _join(tenant.another_booker(), room, at(9), at(10), customer="second")
    assert [e["status"] for e in (too_long, first, second)] == ["waiting"] * 3
    assert (first["position"], second["position"]) == (2, 3)
    other = tenant.another_booker()
    _problem(other.get(f"/v1/waitlist/{first['id']}"), 404, "not-found")

    assert admin.post(f"/v1/reservations/{taken['id']}/cancel").status_code == 200
    first = booker.get(f"/v1/waitlist/{first['id']}").json()
    assert first["status"] == "promoted"
    hold = booker.get(f"/v1/reservations/{first['reservation_id']}").json()
    assert (hold["status"], hold["start"], hold["customer"]) == ("held", at(9), "first")
    assert admin.get(f"/v1/waitlist/{second['id']}").json()["position"] == 2
    assert admin.get(f"/v1/waitlist/{too_long['id']}").json()["status"] == "waiting"
    assert "waitlist.promoted" in _types(tenant, first["id"])
    # Leaving: the entry is out of line, and leaving again changes nothing.
    r = booker.delete(f"/v1/waitlist/{too_long['id']}")
    assert r.json()["status"] == "left"
    assert booker.delete(f"/v1/waitlist/{too_long['id']}").json()["status"] == "left"
    assert admin.get(f"/v1/waitlist/{second['id']}").json()["position"] == 1


def test_an_unclaimed_hold_passes_to_the_next(tenant: Tenant, app_client: TestClient) -> None:
    admin = tenant.admin
    room = admin.resource()["id"]
    taken = _created(admin.book(room, at(9), at(10)))
    first = _join(tenant.booker, room, at(9), at(10), hold_seconds=60)
    second = _join(tenant.another_booker(), room, at(9), at(10))
    admin.post(f"/v1/reservations/{taken['id']}/cancel")
    assert admin.get(f"/v1/waitlist/{first['id']}").json()["status"] == "promoted"
    svc = app_client.app.state.services  # type: ignore[attr-defined]
    svc.clock.offset += type(svc.clock.offset)(minutes=2)
    app_client.portal.call(sweep_expired, svc)  # type: ignore[union-attr]
    second = admin.get(f"/v1/waitlist/{second['id']}").json()
    assert second["status"] == "promoted"
    hold = admin.get(f"/v1/reservations/{second['reservation_id']}").json()
    assert hold["status"] == "held"


def test_joining_a_free_range_promotes_at_once(tenant: Tenant) -> None:
    room = tenant.admin.resource()["id"]
    entry = _join(tenant.booker, room, at(9), at(10))
    assert entry["status"] == "promoted"
    assert entry["position"] is None
    _problem(
        tenant.booker.post(
            "/v1/waitlist", json={"resource_id": room, "start": at(10), "end": at(9)}
        ),
        422,
        "invalid-input",
    )
    _problem(
        tenant.booker.post(
            "/v1/waitlist",
            json={"resource_id": room, "start": "2020-01-01T09:00:00Z", "end": at(9)},
        ),
        422,
        "invalid-input",
    )


def test_two_cancellations_and_many_waiters_promote_each_freed_unit_exactly_once(
    tenant: Tenant,
) -> None:
    """Two racing cancellations on a capacity-2 resource, eight waiters: exactly two are
    promoted (no double promotion, none lost), each once, and capacity holds."""
    admin = tenant.admin
    room = admin.resource(capacity=2)["id"]
    taken = [_created(admin.book(room, at(9), at(10))) for _ in range(2)]
    waiters = [_join(tenant.another_booker(), room, at(9), at(10)) for _ in range(8)]
    barrier = threading.Barrier(2)

    def cancel(row: dict[str, Any]) -> None:
        barrier.wait()
        assert admin.post(f"/v1/reservations/{row['id']}/cancel").status_code == 200

    threads = [threading.Thread(target=cancel, args=(row,)) for row in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.1)
    states = [admin.get(f"/v1/waitlist/{w['id']}").json() for w in waiters]
    promoted = [s for s in states if s["status"] == "promoted"]
    assert [s["id"] for s in promoted] == [w["id"] for w in waiters[:2]]  # first come first
    assert len({s["reservation_id"] for s in promoted}) == 2
    live = admin.get(
        "/v1/reservations", params={"resource_id": room, "status": ["held", "confirmed"]}
    ).json()["items"]
    assert len(live) == 2


def test_without_the_capacity_trigger_promotion_still_counts_under_the_lock(
    pg_server: PgServer, redis_server: RedisServer
) -> None:
    """With the capacity trigger dropped, promotion's own check (the live rows read under the
    resource's lock, which every promotion also passes admission with) still hands out one
    hold for the one freed unit: promotion no longer spends an insert, and a savepoint, on
    each waiter only for the database to refuse it. (The trigger's own control, a writer that
    skips every application check, is tests/concurrency/test_capacity_race.py.)"""
    url = pg_server.create_database("rsv_control_waitlist")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER reservation_capacity ON reservation")
            conn.execute("DROP TRIGGER reservation_capacity_update ON reservation")
        settings = make_settings(
            url, redis_url=redis_server.url, redis_key_prefix=redis_server.prefix + "ctl:"
        )
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            tenant = new_tenant(client)
            room = tenant.admin.resource(capacity=2)["id"]
            taken = [_created(tenant.admin.book(room, at(9), at(10))) for _ in range(2)]
            waiters = [_join(tenant.booker, room, at(9), at(10)) for _ in range(8)]
            tenant.admin.post(f"/v1/reservations/{taken[0]['id']}/cancel")
            states = [tenant.admin.get(f"/v1/waitlist/{w['id']}").json() for w in waiters]
            assert sum(s["status"] == "promoted" for s in states) == 1
            assert sum(s["status"] == "waiting" for s in states) == 7
    finally:
        pg_server.drop_database(url)


def test_a_declined_booking_frees_its_range_for_the_first_waiter(tenant: Tenant) -> None:
    room = _approval_room(tenant)
    pending = _created(tenant.booker.book(room, at(9), at(10)))
    waiter = _join(tenant.another_booker(), room, at(9), at(10))
    assert waiter["status"] == "waiting"
    assert tenant.admin.post(f"/v1/reservations/{pending['id']}/decline").status_code == 200
    waiter = tenant.admin.get(f"/v1/waitlist/{waiter['id']}").json()
    assert waiter["status"] == "promoted"
    hold = tenant.admin.get(f"/v1/reservations/{waiter['reservation_id']}").json()
    # An approval resource: the waiter's turn is a pending booking, for an admin to decide.
    assert (hold["status"], hold["start"], hold["end"]) == ("pending", at(9), at(10))
    assert "waitlist.promoted" in _types(tenant, waiter["id"])


@pytest.fixture
def bounded(settings: Settings) -> Iterator[TestClient]:
    small = settings.model_copy(update={"waitlist_max_per_resource": 3, "waitlist_max_per_key": 2})
    with TestClient(create_app(small, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_the_waitlist_is_bounded_per_resource_and_per_key(bounded: TestClient) -> None:
    tenant = new_tenant(bounded)
    room, other_room = (tenant.admin.resource()["id"] for _ in range(2))
    for r in (room, other_room):
        tenant.admin.book(r, at(9), at(17))
    first, second = tenant.booker, tenant.another_booker()
    _join(first, room, at(9), at(10))
    _join(first, other_room, at(9), at(10))
    full = first.post("/v1/waitlist", json={"resource_id": room, "start": at(10), "end": at(11)})
    assert (full.status_code, full.json()["type"]) == (409, "/problems/waitlist-full"), full.text
    assert "leave one" in full.json()["detail"]
    _join(second, room, at(10), at(11))
    _join(second, room, at(11), at(12))
    third = tenant.another_booker()
    full = third.post("/v1/waitlist", json={"resource_id": room, "start": at(12), "end": at(13)})
    assert (full.status_code, full.json()["type"]) == (409, "/problems/waitlist-full"), full.text
    # Leaving frees a place.
    mine = second.get("/v1/waitlist", params={"resource_id": room}).json()["items"][0]
    assert second.delete(f"/v1/waitlist/{mine['id']}").status_code == 200
    _join(third, room, at(12), at(13))
