"""Reminders (policy `reminders`, the worker's `send_reminders`): `reservation.reminder` goes
out at start - lead (not a microsecond before), once whatever runs again (a restart, a
second worker), again for a moved reservation's new start, never for a cancelled one, and
not when its moment passed more than the catch-up before any worker ran; `hold.expiring` at
expiry - RESERVATIONS_HOLD_EXPIRING_SECONDS, again after an extension."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from reservations.kit.clock import Clock
from reservations.reminders.tasks import CATCH_UP, send_reminders
from tests.support.api import Tenant, _created, _problem

LEADS = {"reminders": ["PT1H", "P1D"]}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _send(app_client: TestClient) -> int:
    services = app_client.app.state.services  # type: ignore[attr-defined]
    return int(app_client.portal.call(send_reminders, services))  # type: ignore[union-attr]


def _events(tenant: Tenant, subject: str) -> list[dict[str, Any]]:
    page = tenant.admin.get("/v1/events", params={"limit": 500}).json()
    return [
        e
        for e in page["items"]
        if e.get("subject_id") == subject and e["type"] in ("reservation.reminder", "hold.expiring")
    ]


def _start(clock: Clock) -> datetime:
    return (clock.now() + timedelta(days=2)).replace(second=0, microsecond=0, tzinfo=UTC)


def test_each_reminder_goes_out_on_time_and_once(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    room = tenant.admin.resource(policy=LEADS)
    start = _start(clock)
    made = _created(tenant.booker.book(room["id"], iso(start), iso(start + timedelta(hours=1))))
    clock.freeze(start - timedelta(days=1, microseconds=1))
    _send(app_client)
    assert _events(tenant, made["id"]) == []
    clock.freeze(start - timedelta(days=1))
    _send(app_client)
    _send(app_client)  # again, as after a restart or on a second worker: nothing more
    (day,) = _events(tenant, made["id"])
    assert day["type"] == "reservation.reminder"
    assert day["data"]["before"] == "P1D"
    assert day["data"]["start"] == start.isoformat()
    clock.freeze(start - timedelta(minutes=30))  # the hour's, half an hour late: still sent
    _send(app_client)
    assert [e["data"]["before"] for e in _events(tenant, made["id"])] == ["P1D", "PT1H"]
    # A booker sees that a reminder is due, not whose reservation it is.
    seen = tenant.another_booker().get("/v1/events", params={"limit": 500}).json()["items"]
    reminder = [e for e in seen if e["type"] == "reservation.reminder"][-1]
    assert reminder.get("subject_id") is None
    assert "customer" not in reminder["data"]


def test_a_moved_reservation_is_reminded_again_and_a_cancelled_one_never(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    room = tenant.admin.resource(policy={"reminders": ["PT1H"]})
    start = _start(clock)
    made = _created(tenant.booker.book(room["id"], iso(start), iso(start + timedelta(hours=1))))
    gone = _created(
        tenant.booker.book(
            room["id"], iso(start + timedelta(hours=2)), iso(start + timedelta(hours=3))
        )
    )
    assert tenant.booker.post(f"/v1/reservations/{gone['id']}/cancel").status_code == 200
    clock.freeze(start - timedelta(hours=1))
    _send(app_client)
    assert len(_events(tenant, made["id"])) == 1
    later = start + timedelta(hours=4)
    moved = tenant.booker.patch(
        f"/v1/reservations/{made['id']}",
        json={"start": iso(later), "end": iso(later + timedelta(hours=1))},
    )
    assert moved.status_code == 200, moved.text
    clock.freeze(later - timedelta(hours=1))
    _send(app_client)
    sent = _events(tenant, made["id"])
    assert [e["data"]["start"] for e in sent] == [start.isoformat(), later.isoformat()]
    clock.freeze(start + timedelta(hours=2) - timedelta(minutes=30))
    _send(app_client)
    assert _events(tenant, gone["id"]) == []


def test_a_reminder_missed_by_more_than_the_catch_up_is_not_sent(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    room = tenant.admin.resource(policy={"reminders": ["PT3H"]})
    start = _start(clock)
    made = _created(tenant.booker.book(room["id"], iso(start), iso(start + timedelta(hours=1))))
    clock.freeze(start - timedelta(hours=3) + CATCH_UP + timedelta(microseconds=1))
    _send(app_client)
    assert _events(tenant, made["id"]) == []
    # The control: at the edge of the catch-up, it is sent.
    other = _created(
        tenant.booker.book(
            room["id"], iso(start + timedelta(hours=5)), iso(start + timedelta(hours=6))
        )
    )
    clock.freeze(start + timedelta(hours=5) - timedelta(hours=3) + CATCH_UP)
    _send(app_client)
    assert len(_events(tenant, other["id"])) == 1


def test_hold_expiring_before_it_lapses_and_again_after_an_extension(
    tenant: Tenant, clock: Clock, app_client: TestClient
) -> None:
    room = tenant.admin.resource()
    start = _start(clock)
    made = _created(
        tenant.booker.book(
            room["id"], iso(start), iso(start + timedelta(hours=1)), hold_seconds=600
        )
    )
    expires = datetime.fromisoformat(made["expires_at"])
    lead = timedelta(seconds=120)  # RESERVATIONS_HOLD_EXPIRING_SECONDS' default
    clock.freeze(expires - lead - timedelta(microseconds=1))
    _send(app_client)
    assert _events(tenant, made["id"]) == []
    clock.freeze(expires - lead)
    _send(app_client)
    (first,) = _events(tenant, made["id"])
    assert first["type"] == "hold.expiring"
    assert first["data"]["expires_at"] == expires.isoformat()
    r = tenant.booker.post(f"/v1/reservations/{made['id']}/extend", json={"hold_seconds": 600})
    assert r.status_code == 200, r.text
    renewed = datetime.fromisoformat(r.json()["expires_at"])
    clock.freeze(renewed - lead)
    _send(app_client)
    assert [e["data"]["expires_at"] for e in _events(tenant, made["id"])] == [
        expires.isoformat(),
        renewed.isoformat(),
    ]


def test_bad_reminder_policies_are_refused(tenant: Tenant) -> None:
    for bad in (["PT30S"], ["P8D"], ["PT1H", "PT60M"], ["PT1H"] * 6, "PT1H", ["soon"]):
        r = tenant.admin.post("/v1/resources", json={"name": "x", "policy": {"reminders": bad}})
        _problem(r, 422, "invalid-input")
