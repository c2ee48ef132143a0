"""Extending a hold (POST /v1/reservations/{id}/extend): a new expiry from now, never
shorter, within the hold's total life; only a live hold; owner or admin; idempotent; an
event; and the sweeper keeps the hold until its new expiry."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from fastapi.testclient import TestClient

from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.localtime import describe_instant
from reservations.reservations.tasks import sweep_expired
from tests.support.api import Tenant, _created, _db, _problem


def at(day: int, hour: int) -> str:
    """A far-future instant (July 2030), so real time never interferes."""
    return f"2030-07-{day:02d}T{hour:02d}:00:00Z"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _hold(
    tenant: Tenant, hold_seconds: int = 600, day: int = 1, **resource: Any
) -> tuple[str, dict[str, Any]]:
    room = tenant.admin.resource(**resource)
    made = _created(
        tenant.booker.book(room["id"], at(day, 10), at(day, 11), hold_seconds=hold_seconds)
    )
    return f"/v1/reservations/{made['id']}", made


def test_extend_sets_the_new_expiry_and_reads_back(tenant: Tenant, clock: Clock) -> None:
    path, made = _hold(tenant)
    clock.advance(timedelta(seconds=100))
    before = clock.now()
    r = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 1800})
    after = clock.now()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "held"
    assert before + timedelta(seconds=1800) <= ts(body["expires_at"])
    assert ts(body["expires_at"]) <= after + timedelta(seconds=1800)
    assert body["version"] == 2
    assert r.headers["etag"] == '"2"'
    got = tenant.booker.get(path).json()
    assert got["expires_at"] == body["expires_at"]
    assert (got["start"], got["end"]) == (made["start"], made["end"])
    # An admin may extend a booker's hold.
    again = tenant.admin.post(f"{path}/extend", json={"hold_seconds": 3600})
    assert again.status_code == 200, again.text
    assert ts(again.json()["expires_at"]) > ts(body["expires_at"])


def test_extend_never_shortens(tenant: Tenant) -> None:
    path, made = _hold(tenant, hold_seconds=3600)
    r = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 60})
    assert r.status_code == 200, r.text
    assert r.json()["expires_at"] == made["expires_at"]
    assert r.json()["version"] == made["version"]  # nothing written


def test_extend_is_capped_by_the_holds_total_life(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    life = settings.hold_max_life_seconds
    path, made = _hold(tenant, hold_seconds=life // 2 + 600, timezone="Europe/Berlin")
    clock.advance(timedelta(seconds=life // 2))
    r = tenant.booker.post(f"{path}/extend", json={"hold_seconds": life})
    body = _problem(r, 422, "invalid-input")
    latest = ts(made["created_at"]) + timedelta(seconds=life)
    assert f"at most {life} seconds from its creation" in body["detail"]
    # The latest expiry in UTC and in the resource's zone.
    said = describe_instant(latest, "Europe/Berlin")
    assert said.endswith(" Europe/Berlin)"), said
    assert f"can expire at {said} at the latest" in body["detail"], body
    assert tenant.booker.get(path).json()["expires_at"] == made["expires_at"]
    # Up to the cap is allowed (a little slack for the clock's advance between calls).
    ok = tenant.booker.post(f"{path}/extend", json={"hold_seconds": life // 2 - 10})
    assert ok.status_code == 200, ok.text
    assert latest - timedelta(seconds=20) < ts(ok.json()["expires_at"]) <= latest
    # hold_seconds keeps a create's bounds.
    too_long = {"hold_seconds": settings.max_hold_seconds + 1}
    _problem(tenant.booker.post(f"{path}/extend", json=too_long), 422, "invalid-input")
    _problem(tenant.booker.post(f"{path}/extend", json={"hold_seconds": 0}), 422, "invalid-input")
    _problem(tenant.booker.post(f"{path}/extend", json={}), 422, "invalid-input")


def test_only_a_live_hold_is_extended(tenant: Tenant, clock: Clock) -> None:
    room = tenant.admin.resource()
    confirmed = _created(tenant.booker.book(room["id"], at(2, 10), at(2, 11)))
    body = {"hold_seconds": 600}
    r = tenant.booker.post(f"/v1/reservations/{confirmed['id']}/extend", json=body)
    _problem(r, 409, "reservation-not-held")
    approvals = tenant.admin.resource(policy={"requires_approval": True})
    pending = _created(tenant.booker.book(approvals["id"], at(2, 10), at(2, 11)))
    assert pending["status"] == "pending"
    r = tenant.booker.post(f"/v1/reservations/{pending['id']}/extend", json=body)
    _problem(r, 409, "reservation-not-held")
    declined = tenant.admin.post(f"/v1/reservations/{pending['id']}/decline")
    assert declined.status_code == 200, declined.text
    r = tenant.booker.post(f"/v1/reservations/{pending['id']}/extend", json=body)
    _problem(r, 409, "reservation-not-live")
    cancelled, _ = _hold(tenant, day=3)
    assert tenant.booker.post(f"{cancelled}/cancel").status_code == 200
    _problem(tenant.booker.post(f"{cancelled}/extend", json=body), 409, "reservation-not-live")
    expired, made = _hold(tenant, hold_seconds=60, day=4)
    clock.advance(timedelta(seconds=61))
    _problem(tenant.booker.post(f"{expired}/extend", json=body), 409, "hold-expired")
    got = tenant.booker.get(expired).json()
    assert (got["status"], got["version"]) == ("expired", made["version"])


def test_extend_access_and_if_match(tenant: Tenant, other_tenant: Tenant) -> None:
    path, made = _hold(tenant)
    body = {"hold_seconds": 1200}
    _problem(tenant.viewer.post(f"{path}/extend", json=body), 403, "forbidden")
    _problem(tenant.another_booker().post(f"{path}/extend", json=body), 404, "not-found")
    _problem(other_tenant.admin.post(f"{path}/extend", json=body), 404, "not-found")
    _problem(
        tenant.booker.post(f"/v1/reservations/{UUID(int=9)}/extend", json=body), 404, "not-found"
    )
    assert tenant.booker.get(path).json()["expires_at"] == made["expires_at"]
    tenant.booker.patch(path, json={"customer": "x"})  # version 2
    stale = tenant.booker.post(f"{path}/extend", json=body, headers={"If-Match": '"1"'})
    assert _problem(stale, 412, "precondition-failed")["current_version"] == 2
    assert tenant.booker.get(path).json()["expires_at"] == made["expires_at"]
    ok = tenant.booker.post(f"{path}/extend", json=body, headers={"If-Match": '"2"'})
    assert ok.status_code == 200, ok.text
    assert ok.json()["version"] == 3


def test_extend_is_idempotent(tenant: Tenant, clock: Clock) -> None:
    path, _ = _hold(tenant)
    key = {"Idempotency-Key": f"test-{secrets.token_hex(8)}"}
    first = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 1200}, headers=key)
    assert first.status_code == 200, first.text
    clock.advance(timedelta(seconds=30))
    replay = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 1200}, headers=key)
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert tenant.booker.get(path).json()["version"] == first.json()["version"]
    other = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 1300}, headers=key)
    _problem(other, 422, "idempotency-key-reused")


def test_extend_is_an_event_with_the_new_expiry(tenant: Tenant, settings: Settings) -> None:
    path, made = _hold(tenant)
    r = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 1800})
    assert r.status_code == 200, r.text
    events = _db(
        settings,
        "SELECT type, data->>'expires_at', (data->>'version')::int FROM event"
        " WHERE subject_id = %s ORDER BY id",
        made["id"],
    )
    assert [e[0] for e in events] == ["reservation.held", "reservation.updated"]
    _, expires, version = events[-1]
    assert ts(expires) == ts(r.json()["expires_at"])
    assert version == r.json()["version"]


def test_the_sweeper_keeps_an_extended_hold_until_its_new_expiry(
    tenant: Tenant, clock: Clock, settings: Settings, app_client: TestClient
) -> None:
    path, made = _hold(tenant, hold_seconds=60)
    room = made["resource_id"]
    r = tenant.booker.post(f"{path}/extend", json={"hold_seconds": 600})
    assert r.status_code == 200, r.text

    def status_of() -> str:
        ((status,),) = _db(settings, "SELECT status FROM reservation WHERE id = %s", made["id"])
        return str(status)

    services = app_client.app.state.services  # type: ignore[attr-defined]
    clock.advance(timedelta(seconds=61))  # past the first expiry
    app_client.portal.call(sweep_expired, services)  # type: ignore[union-attr]
    assert status_of() == "held"
    assert tenant.booker.get(path).json()["status"] == "held"
    # Still blocking its range for others.
    other = tenant.another_booker().book(str(room), at(1, 10), at(1, 11))
    _problem(other, 409, "reservation-conflict")
    clock.advance(timedelta(seconds=540))  # past the new one
    app_client.portal.call(sweep_expired, services)  # type: ignore[union-attr]
    assert status_of() == "expired"
