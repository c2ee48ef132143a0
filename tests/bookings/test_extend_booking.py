"""Extending a booking's holds (POST /v1/bookings/{id}/extend): every live hold, or none."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import httpx

from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.api import Api, Tenant, _created, _db, _problem


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _book(api: Api, resources: list[str], hold_seconds: int | None = 600) -> httpx.Response:
    body: dict[str, Any] = {
        "resources": [{"resource_id": r} for r in resources],
        "start": "2030-08-05T09:00:00Z",
        "end": "2030-08-05T10:00:00Z",
        "rrule": "FREQ=DAILY;COUNT=2",
    }
    if hold_seconds is not None:
        body["hold_seconds"] = hold_seconds
    return api.post("/v1/bookings", json=body)


def _expiries(settings: Settings, booking_id: str) -> list[tuple[Any, ...]]:
    return _db(
        settings,
        "SELECT status, expires_at, version FROM reservation WHERE booking_id = %s ORDER BY id",
        booking_id,
    )


def test_every_hold_of_the_booking_is_extended(tenant: Tenant, clock: Clock) -> None:
    room, desk = tenant.admin.resource(), tenant.admin.resource(name="Desk")
    body = _created(_book(tenant.booker, [room["id"], desk["id"]]))
    path = f"/v1/bookings/{body['id']}"
    clock.advance(timedelta(seconds=100))
    before = clock.now()
    r = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 1800})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.headers["etag"]) == (2, '"2"')
    expiries = {ts(x["expires_at"]) for x in r.json()["reservations"]}
    assert len(r.json()["reservations"]) == 4
    assert all(before + timedelta(seconds=1800) <= e for e in expiries)
    assert all(e <= clock.now() + timedelta(seconds=1800) for e in expiries)
    got = tenant.booker.get(path).json()
    assert [x["status"] for x in got["reservations"]] == ["held"] * 4
    assert got["reservations"] == r.json()["reservations"]
    # Never shorter: a shorter ask leaves every hold as it is.
    same = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 60})
    assert same.status_code == 200, same.text
    assert same.json()["reservations"] == r.json()["reservations"]
    # Once extended, the holds outlive their first expiry.
    clock.advance(timedelta(seconds=600))
    confirmed = tenant.booker.post(f"{path}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    _problem(
        tenant.booker.post(f"{path}/extend", json={"hold_seconds": 60}), 409, "reservation-not-held"
    )


def test_a_partly_expired_booking_extends_nothing(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    room = tenant.admin.resource()
    body = _created(_book(tenant.booker, [room["id"]], hold_seconds=60))
    first = body["reservations"][0]["id"]
    extended = tenant.booker.post(f"/v1/reservations/{first}/extend", json={"hold_seconds": 600})
    assert extended.status_code == 200, extended.text
    before = _expiries(settings, body["id"])
    clock.advance(timedelta(seconds=61))  # the other hold runs out
    r = tenant.booker.post(f"/v1/bookings/{body['id']}/extend", json={"hold_seconds": 1200})
    _problem(r, 409, "hold-expired")
    assert _expiries(settings, body["id"]) == before
    assert tenant.booker.get(f"/v1/bookings/{body['id']}").json()["version"] == 1


def test_a_refused_hold_extends_nothing(tenant: Tenant, clock: Clock, settings: Settings) -> None:
    """All or none: one hold past its total life refuses the whole extension."""
    life = settings.hold_max_life_seconds
    room = tenant.admin.resource()
    body = _created(_book(tenant.booker, [room["id"]], hold_seconds=life // 2 + 600))
    clock.advance(timedelta(seconds=life // 2))
    before = _expiries(settings, body["id"])
    r = tenant.booker.post(f"/v1/bookings/{body['id']}/extend", json={"hold_seconds": life})
    _problem(r, 422, "invalid-input")
    assert _expiries(settings, body["id"]) == before


def test_booking_extend_access_if_match_and_idempotency(
    tenant: Tenant, other_tenant: Tenant, clock: Clock
) -> None:
    room = tenant.admin.resource()
    body = _created(_book(tenant.booker, [room["id"]]))
    path = f"/v1/bookings/{body['id']}"
    ask = {"hold_seconds": 1200}
    _problem(tenant.viewer.post(f"{path}/extend", json=ask), 403, "forbidden")
    _problem(tenant.another_booker().post(f"{path}/extend", json=ask), 404, "not-found")
    _problem(other_tenant.admin.post(f"{path}/extend", json=ask), 404, "not-found")
    stale = tenant.booker.post(f"{path}/extend", json=ask, headers={"If-Match": '"2"'})
    _problem(stale, 412, "precondition-failed")
    key = {"Idempotency-Key": f"test-{secrets.token_hex(8)}", "If-Match": '"1"'}
    first = tenant.booker.post(f"{path}/extend", json=ask, headers=key)
    assert first.status_code == 200, first.text
    clock.advance(timedelta(seconds=30))
    replay = tenant.booker.post(f"{path}/extend", json=ask, headers=key)
    assert (replay.status_code, replay.content) == (200, first.content)
    assert replay.headers["idempotent-replayed"] == "true"
    assert tenant.booker.get(path).json()["version"] == 2
    # An admin may extend a booker's booking.
    assert tenant.admin.post(f"{path}/extend", json=ask).status_code == 200


def test_a_confirmed_booking_has_nothing_to_extend(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    body = _created(_book(tenant.booker, [room["id"]], hold_seconds=None))
    r = tenant.booker.post(f"/v1/bookings/{body['id']}/extend", json={"hold_seconds": 600})
    _problem(r, 409, "reservation-not-held")
    assert tenant.booker.post(f"/v1/bookings/{body['id']}/cancel").status_code == 200
    r = tenant.booker.post(f"/v1/bookings/{body['id']}/extend", json={"hold_seconds": 600})
    _problem(r, 409, "reservation-not-live")
