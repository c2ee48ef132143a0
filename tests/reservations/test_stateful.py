"""Hypothesis stateful test: random create / hold / confirm / reschedule / cancel / time passing
/ sweeping against a small in-memory model of the booking rules. After every step the API's
answer must match the model's, and the database must hold no overlapping live reservations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from reservations.reservations.tasks import sweep_expired
from tests.support.api import new_tenant

DAY = datetime(2032, 1, 5, tzinfo=UTC)


@dataclass
class Booking:
    resource: int
    start: datetime
    end: datetime
    status: str
    expires_at: datetime | None

    def effective(self, now: datetime) -> str:
        if self.status == "held" and self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.status

    def live(self, now: datetime) -> bool:
        return self.effective(now) in ("held", "confirmed")


class BookingMachine(RuleBasedStateMachine):
    client: TestClient
    database_url: str

    bookings = Bundle("bookings")

    def __init__(self) -> None:
        super().__init__()
        self.tenant = new_tenant(self.client)
        self.api = self.tenant.admin
        self.resources = [self.api.resource(name=f"r{i}")["id"] for i in range(2)]
        self.model: dict[str, Booking] = {}
        self.clock = self.client.app.state.services.clock  # type: ignore[attr-defined]

    def now(self) -> datetime:
        now: datetime = self.clock.now()
        return now

    def _blocked(self, resource: int, start: datetime, end: datetime, skip: str = "") -> bool:
        now = self.now()
        return any(
            b.resource == resource and b.live(now) and b.start < end and start < b.end
            for rid, b in self.model.items()
            if rid != skip
        )

    @rule(
        target=bookings,
        resource=st.integers(0, 1),
        hour=st.integers(0, 8),
        hours=st.integers(1, 3),
        hold=st.sampled_from([None, 30, 90]),
    )
    def create(self, resource: int, hour: int, hours: int, hold: int | None) -> Any:
        start = DAY + timedelta(hours=hour)
        end = start + timedelta(hours=hours)
        expected_ok = not self._blocked(resource, start, end)
        body: dict[str, Any] = {}
        if hold is not None:
            body["hold_seconds"] = hold
        r = self.api.book(self.resources[resource], start.isoformat(), end.isoformat(), **body)
        assert r.status_code == (201 if expected_ok else 409), r.text
        if r.status_code != 201:
            return None
        data = r.json()
        expires = datetime.fromisoformat(data["expires_at"]) if data["expires_at"] else None
        self.model[data["id"]] = Booking(resource, start, end, data["status"], expires)
        return data["id"]

    @rule(ident=bookings)
    def confirm(self, ident: str | None) -> None:
        if ident is None:
            return
        b = self.model[ident]
        state = b.effective(self.now())
        r = self.api.post(f"/v1/reservations/{ident}/confirm")
        if state in ("held", "confirmed"):
            assert r.status_code == 200, r.text
            b.status, b.expires_at = "confirmed", None
        else:
            assert r.status_code == 409, r.text

    @rule(ident=consumes(bookings))
    def cancel(self, ident: str | None) -> None:
        if ident is None:
            return
        b = self.model[ident]
        state = b.effective(self.now())
        r = self.api.post(f"/v1/reservations/{ident}/cancel")
        if state == "expired":
            assert r.status_code == 409, r.text
        else:
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "cancelled"
            b.status, b.expires_at = "cancelled", None

    @rule(ident=bookings, hour=st.integers(0, 8), hours=st.integers(1, 3))
    def reschedule(self, ident: str | None, hour: int, hours: int) -> None:
        if ident is None:
            return
        b = self.model[ident]
        start = DAY + timedelta(hours=hour)
        end = start + timedelta(hours=hours)
        r = self.api.patch(
            f"/v1/reservations/{ident}", json={"start": start.isoformat(), "end": end.isoformat()}
        )
        if (start, end) == (b.start, b.end):
            assert r.status_code == 200, r.text
        elif not b.live(self.now()) or self._blocked(b.resource, start, end, skip=ident):
            assert r.status_code == 409, r.text
        else:
            assert r.status_code == 200, r.text
            b.start, b.end = start, end

    @rule(seconds=st.sampled_from([13, 47, 120]))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    @precondition(lambda self: bool(self.model))
    @rule()
    def sweep(self) -> None:
        now = self.now()
        self.client.portal.call(sweep_expired, self.client.app.state.services)  # type: ignore[union-attr]
        for b in self.model.values():
            if b.effective(now) == "expired":
                b.status = "expired"

    @invariant()
    def api_agrees_with_model(self) -> None:
        r = self.api.get("/v1/reservations", params={"limit": 500})
        assert r.status_code == 200
        seen = {item["id"]: item["status"] for item in r.json()["items"]}
        now = self.now()
        for ident, b in self.model.items():
            assert seen[ident] == b.effective(now), (ident, seen[ident], b)

    @invariant()
    def database_never_double_books(self) -> None:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM reservation a JOIN reservation b"
                " ON a.resource_id = b.resource_id AND a.id < b.id"
                " AND tstzrange(a.start_at, a.end_at) && tstzrange(b.start_at, b.end_at)"
                " WHERE a.resource_id = ANY(%s::uuid[])"
                " AND a.status IN ('held', 'confirmed') AND b.status IN ('held', 'confirmed')"
                " AND (a.status = 'confirmed' OR a.expires_at > %s)"
                " AND (b.status = 'confirmed' OR b.expires_at > %s)",
                (self.resources, self.now(), self.now()),
            ).fetchone()
        assert row is not None
        assert row[0] == 0


def test_booking_state_machine(app_client: TestClient, database_url: str, clock: Any) -> None:
    BookingMachine.client = app_client
    BookingMachine.database_url = database_url
    run = BookingMachine.TestCase
    run.settings = settings(
        max_examples=30,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    run().runTest()
