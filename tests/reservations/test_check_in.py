"""Check-in and no-shows (policy `check_in`, POST /v1/reservations/{id}/check-in, the
sweeper's `sweep_no_shows`): the window opens `opens_before` the start and closes at the end
or at `start + release_after`; at that instant the check-in is refused and the sweeper
releases the reservation as `no_show` (not a moment before), freeing the rest of its range,
offering it to the waitlist and sending `reservation.no_show`. A checked-in reservation is
never released."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from reservations.kit.clock import Clock
from reservations.kit.localtime import describe_instant
from reservations.reservations.tasks import sweep_no_shows
from tests.support.api import Tenant, _created, _problem

RELEASING = {"check_in": {"opens_before": "PT30M", "release_after": "PT10M"}}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _booked(tenant: Tenant, clock: Clock, **resource: Any) -> tuple[str, dict[str, Any], datetime]:
    room = tenant.admin.resource(timezone="Europe/Paris", **resource)
    start = (clock.now() + timedelta(hours=2)).replace(second=0, microsecond=0, tzinfo=UTC)
    made = _created(tenant.booker.book(room["id"], iso(start), iso(start + timedelta(hours=1))))
    return f"/v1/reservations/{made['id']}", made, start


def _sweep(app_client: TestClient) -> int:
    services = app_client.app.state.services  # type: ignore[attr-defined]
    return int(app_client.portal.call(sweep_no_shows, services))  # type: ignore[union-attr]


def _events(tenant: Tenant, subject: str) -> list[str]:
    page = tenant.admin.get("/v1/events", params={"limit": 500}).json()
    return [e["type"] for e in page["items"] if e.get("subject_id") == subject]


def test_check_in_reads_back_is_repeatable_and_sends_an_event(tenant: Tenant, clock: Clock) -> None:
    path, made, start = _booked(tenant, clock)
    clock.freeze(start - timedelta(minutes=5))
    first = tenant.booker.post(f"{path}/check-in")
    assert first.status_code == 200, first.text
    assert first.json()["checked_in_at"] == iso(clock.now())
    assert first.json()["status"] == "confirmed"
    clock.advance(timedelta(minutes=1))
    again = tenant.booker.post(f"{path}/check-in")
    assert again.status_code == 200
    assert again.json()["checked_in_at"] == first.json()["checked_in_at"]
    assert again.json()["version"] == first.json()["version"]
    assert tenant.booker.get(path).json()["checked_in_at"] == first.json()["checked_in_at"]
    assert _events(tenant, made["id"]).count("reservation.checked_in") == 1


def test_the_window_and_who_may_check_in(tenant: Tenant, clock: Clock) -> None:
    path, made, start = _booked(tenant, clock)
    # Default window: 15 minutes before the start until the end.
    clock.freeze(start - timedelta(minutes=15, seconds=1))
    body = _problem(tenant.booker.post(f"{path}/check-in"), 409, "check-in-refused")
    opens = start - timedelta(minutes=15)
    assert describe_instant(opens, "Europe/Paris") in body["detail"]
    _problem(tenant.viewer.post(f"{path}/check-in"), 403, "forbidden")
    clock.freeze(start + timedelta(hours=1))
    _problem(tenant.booker.post(f"{path}/check-in"), 409, "check-in-refused")
    clock.freeze(start + timedelta(minutes=59))
    _problem(tenant.another_booker().post(f"{path}/check-in"), 404, "not-found")
    assert tenant.admin.post(f"{path}/check-in").status_code == 200
    # A hold must be confirmed first.
    room = made["resource_id"]
    later = start + timedelta(hours=3)
    hold = _created(
        tenant.booker.book(room, iso(later), iso(later + timedelta(hours=1)), hold_seconds=600)
    )
    body = _problem(
        tenant.booker.post(f"/v1/reservations/{hold['id']}/check-in"), 409, "check-in-refused"
    )
    assert "confirm" in body["detail"]


def test_the_sweeper_releases_at_start_plus_release_after_and_not_before(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    path, made, start = _booked(tenant, clock, policy=RELEASING)
    waiter = tenant.another_booker()
    rest = (iso(start + timedelta(minutes=20)), iso(start + timedelta(minutes=50)))
    entry = waiter.post(
        "/v1/waitlist", json={"resource_id": made["resource_id"], "start": rest[0], "end": rest[1]}
    ).json()
    assert entry["status"] == "waiting"
    clock.freeze(start + timedelta(minutes=10) - timedelta(microseconds=1))
    _sweep(app_client)
    assert tenant.booker.get(path).json()["status"] == "confirmed"
    clock.freeze(start + timedelta(minutes=10))
    # At the release instant the check-in is refused, even before the sweeper has run.
    body = _problem(tenant.booker.post(f"{path}/check-in"), 409, "check-in-refused")
    assert "no-show" in body["detail"]
    assert _sweep(app_client) >= 1
    assert tenant.booker.get(path).json()["status"] == "no_show"
    assert "reservation.no_show" in _events(tenant, made["id"])
    _problem(tenant.booker.post(f"{path}/check-in"), 409, "reservation-not-live")
    # The rest of the range is free: the waiter was offered it.
    promoted = waiter.get(f"/v1/waitlist/{entry['id']}").json()
    assert promoted["status"] == "promoted", promoted
    listed = tenant.booker.get(
        "/v1/reservations", params={"status": "no_show", "resource_id": made["resource_id"]}
    ).json()["items"]
    assert [r["id"] for r in listed] == [made["id"]]


def test_a_checked_in_reservation_is_never_released(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    path, _, start = _booked(tenant, clock, policy=RELEASING)
    clock.freeze(start + timedelta(minutes=9))
    assert tenant.booker.post(f"{path}/check-in").status_code == 200
    clock.freeze(start + timedelta(minutes=30))
    _sweep(app_client)
    assert tenant.booker.get(path).json()["status"] == "confirmed"


def test_without_release_after_nothing_is_released(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    path, _, start = _booked(tenant, clock, policy={"check_in": {"opens_before": "PT5M"}})
    clock.freeze(start + timedelta(minutes=50))
    _sweep(app_client)
    assert tenant.booker.get(path).json()["status"] == "confirmed"


def test_bad_check_in_policies_are_refused(tenant: Tenant) -> None:
    for bad in (
        {"release_after": "PT30S"},
        {"release_after": "P2D"},
        {"opens_before": "P1DT1S"},
        {"opens_before": "soon"},
        {"later": "PT1M"},
    ):
        r = tenant.admin.post("/v1/resources", json={"name": "x", "policy": {"check_in": bad}})
        _problem(r, 422, "invalid-input")
