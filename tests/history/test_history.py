"""The history: ended reservations move out of the live table into monthly partitions, stay
readable through every read path, are read-only, and nothing can be booked or moved before
the horizon (the database refuses it, so the exclusion constraint never needs to see them).

Every test here has its own database: the horizon is one fact per database."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors as pg_errors
from typer.testing import CliRunner

from reservations import cli
from reservations.app import create_app
from reservations.context import Context
from reservations.history import repository
from reservations.history import tasks as history
from reservations.kit.clock import Clock
from tests.support.api import Tenant, _created, _problem, new_tenant
from tests.support.pgbouncer import start_pgbouncer
from tests.support.servers import THROUGH_PGBOUNCER, PgServer, RedisServer, make_settings

NOW = datetime.now(UTC)


def iso(at: datetime) -> str:
    return at.isoformat()


def days_ago(n: float, hour: int = 10) -> datetime:
    return (NOW - timedelta(days=n)).replace(hour=hour, minute=0, second=0, microsecond=0)


@dataclasses.dataclass
class World:
    client: TestClient
    tenant: Tenant
    url: str

    @property
    def svc(self) -> Context:
        svc: Context = self.client.app.state.services  # type: ignore[attr-defined]
        return svc

    def run(self, **settings: Any) -> history.HistoryRun:
        svc = dataclasses.replace(self.svc, settings=self.svc.settings.model_copy(update=settings))
        run: history.HistoryRun = self.client.portal.call(
            lambda: history.run_once(svc.db, svc.settings, now=svc.clock.now())
        )  # type: ignore[union-attr]
        return run

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def w(pg_server: PgServer, redis_server: RedisServer) -> Iterator[World]:
    url = pg_server.create_database("rsv_history")
    # The app (and so the history job's DDL) goes through PgBouncer when the suite does.
    bouncer = start_pgbouncer(url, pool_size=4) if THROUGH_PGBOUNCER else None
    app_url = bouncer.url(urlparse(url).path.lstrip("/")) if bouncer else url
    settings = make_settings(
        app_url, redis_url=redis_server.url, redis_key_prefix=redis_server.prefix + "hist:"
    )
    try:
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            yield World(client=client, tenant=new_tenant(client), url=url)
    finally:
        if bouncer:
            bouncer.stop()
        pg_server.drop_database(url)


def _book(w: World, room: str, start: datetime, hours: int = 1, **fields: Any) -> dict[str, Any]:
    """An admin's booking; these tests book the past on purpose (recording past use)."""
    fields.setdefault("override_rules", True)
    r = w.tenant.admin.book(room, iso(start), iso(start + timedelta(hours=hours)), **fields)
    return _created(r)


def test_ended_reservations_move_to_history_and_every_read_still_finds_them(w: World) -> None:
    admin = w.tenant.admin
    room = admin.resource()["id"]
    old = [_book(w, room, days_ago(n)) for n in (400, 200, 120, 95)]
    cancelled = _book(w, room, days_ago(100, hour=14))
    assert admin.post(f"/v1/reservations/{cancelled['id']}/cancel").status_code == 200
    recent = _book(w, room, days_ago(30))
    future = _book(w, room, days_ago(-3))
    before = {r["id"]: admin.get(f"/v1/reservations/{r['id']}").json() for r in [*old, recent]}

    run = w.run()
    assert run.moved == 5
    assert abs(run.horizon - (datetime.now(UTC) - timedelta(days=90))) < timedelta(minutes=1)
    # One partition per month a moved row starts in, plus the horizon's and two ahead.
    months = {repository.partition_name(repository.month_start(r)) for r in _starts(old)}
    months |= {repository.partition_name(repository.month_start(days_ago(100)))}
    ahead = repository.month_start(run.horizon)
    for _ in range(3):
        months.add(repository.partition_name(ahead))
        ahead = repository.next_month(ahead)
    assert set(run.created) == months
    live = {row[0] for row in w.sql("SELECT id::text FROM reservation")}
    moved = {row[0] for row in w.sql("SELECT id::text FROM reservation_history")}
    assert live == {recent["id"], future["id"]}
    assert moved == {r["id"] for r in old} | {cancelled["id"]}

    # Single reads, lists (with and without a window), and the resource filter.
    for rid, body in before.items():
        assert admin.get(f"/v1/reservations/{rid}").json() == body
    r = admin.get("/v1/reservations", params={"resource_id": room, "limit": 100})
    listed = [x["id"] for x in r.json()["items"]]
    by_start = sorted([*old, cancelled, recent, future], key=lambda x: x["start"])
    assert listed == [x["id"] for x in by_start]
    window = {"from": iso(days_ago(210)), "to": iso(days_ago(110)), "resource_id": room}
    assert [x["id"] for x in admin.get("/v1/reservations", params=window).json()["items"]] == [
        old[1]["id"],
        old[2]["id"],
    ]
    # Nothing left to move; a second run changes nothing.
    again = w.run()
    assert (again.moved, again.created) == (0, [])


def _starts(rows: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(r["start"]) for r in rows]


def test_history_is_read_only(w: World) -> None:
    admin = w.tenant.admin
    room = admin.resource()["id"]
    held = _book(w, room, days_ago(200), hold_seconds=600)
    done = _book(w, room, days_ago(150))
    w.run()
    for rid, action in ((held["id"], "confirm"), (done["id"], "cancel")):
        r = admin.post(f"/v1/reservations/{rid}/{action}")
        body = _problem(r, 409, "reservation-in-history")
        assert "read-only" in body["detail"]
    r = admin.patch(f"/v1/reservations/{done['id']}", json={"customer": "late edit"})
    _problem(r, 409, "reservation-in-history")
    # Unknown stays unknown, other tenants see nothing.
    other = new_tenant(w.client)
    _problem(other.admin.post(f"/v1/reservations/{done['id']}/cancel"), 404, "not-found")
    _problem(other.admin.get(f"/v1/reservations/{done['id']}"), 404, "not-found")


def test_nothing_can_be_booked_or_moved_before_the_horizon(w: World) -> None:
    admin = w.tenant.admin
    room = admin.resource(policy={"buffer_before": "PT30M"})["id"]
    _book(w, room, days_ago(120))
    run = w.run()
    assert run.moved == 1
    horizon = run.horizon

    def refused(r: Any) -> None:
        body = _problem(r, 422, "booking-rule-violated")
        assert body["reason"] == "in-history", body

    # A range before the horizon, even for an admin overriding the rules.
    refused(
        admin.book(
            room,
            iso(horizon - timedelta(hours=3)),
            iso(horizon - timedelta(hours=2)),
            override_rules=True,
        )
    )
    # After the horizon, but its buffer reaches before it.
    refused(
        admin.book(
            room,
            iso(horizon + timedelta(minutes=10)),
            iso(horizon + timedelta(hours=1)),
            override_rules=True,
        )
    )
    ok = _book(w, room, horizon + timedelta(minutes=30))
    # Moving a live reservation there is refused too, and leaves it where it was.
    r = admin.patch(
        f"/v1/reservations/{ok['id']}",
        json={
            "start": iso(horizon - timedelta(days=1)),
            "end": iso(horizon - timedelta(hours=23)),
            "override_rules": True,
        },
    )
    refused(r)
    assert admin.get(f"/v1/reservations/{ok['id']}").json()["start"] == ok["start"]
    # A booking (series) that starts there is refused whole.
    r = admin.post(
        "/v1/bookings",
        json={
            "resources": [{"resource_id": room}],
            "start": iso(horizon - timedelta(days=2)),
            "end": iso(horizon - timedelta(days=2) + timedelta(hours=1)),
            "rrule": "FREQ=DAILY;COUNT=2",
            "timezone": "UTC",
            "override_rules": True,
        },
    )
    assert r.status_code == 422, r.text
    assert w.sql("SELECT count(*) FROM booking")[0][0] == 0


def test_availability_offers_nothing_before_the_horizon_nor_before_now(w: World) -> None:
    """No start before now is bookable without override_rules (the horizon lies further
    back still): around the horizon nothing is offered; around now, slots start at now or
    later, and each books."""
    admin = w.tenant.admin
    room = admin.resource(policy={"buffer_before": "PT30M"})["id"]
    _book(w, room, days_ago(120))
    horizon = w.run().horizon

    def availability(start: datetime) -> dict[str, Any]:
        r = admin.get(
            f"/v1/resources/{room}/availability",
            params={
                "from": iso(start),
                "to": iso(start + timedelta(hours=6)),
                "duration": "PT1H",
                "explain": "true",
            },
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    body = availability(horizon.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2))
    assert (body["slots"], body["free"]) == ([], []), body
    now = datetime.now(UTC)
    body = availability(now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2))
    assert body["slots"], body
    assert all(datetime.fromisoformat(s["start"]) >= now for s in body["slots"]), body["slots"]
    assert datetime.fromisoformat(body["free"][0]["start"]) >= now
    slot = body["slots"][0]
    assert admin.book(room, slot["start"], slot["end"]).status_code == 201


def test_old_months_are_detached(w: World) -> None:
    admin = w.tenant.admin
    room = admin.resource()["id"]
    ancient = _book(w, room, days_ago(300))
    older = _book(w, room, days_ago(200))
    run = w.run(history_detach_after_months=1)
    assert run.moved == 2
    assert run.detached == [
        repository.partition_name(repository.month_start(datetime.fromisoformat(r["start"])))
        for r in (ancient, older)
    ]
    # The detached months are plain tables now, kept for export; reads no longer see them.
    for row in (ancient, older):
        _problem(admin.get(f"/v1/reservations/{row['id']}"), 404, "not-found")
    table = run.detached[0]
    assert w.sql(f'SELECT id::text FROM "{table}"') == [(ancient["id"],)]


_RAW_INSERT = (
    "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during,"
    " status, created_by, created_at, updated_at)"
    " SELECT gen_random_uuid(), r.tenant_id, r.id, %(s)s, %(e)s, tstzrange(%(s)s, %(e)s),"
    " %(status)s, (SELECT id FROM api_key WHERE tenant_id = r.tenant_id LIMIT 1),"
    " now(), now() FROM resource r WHERE r.id = %(r)s"
)


def _mover_waits_for(w: World, status: str) -> float:
    """Leave a writer's transaction open after inserting a row that ended 100 days ago, run
    the history job beside it, and return how long the job took."""
    room = w.tenant.admin.resource()["id"]
    start = days_ago(100)
    writer = psycopg.connect(w.url)
    try:
        writer.execute(
            _RAW_INSERT, {"r": room, "s": start, "e": start + timedelta(hours=1), "status": status}
        )
        took: list[float] = []

        def mover() -> None:
            t0 = time.monotonic()
            w.run()
            took.append(time.monotonic() - t0)

        thread = threading.Thread(target=mover)
        thread.start()
        thread.join(1.5)
        writer.commit()
        thread.join(10)
        assert took, "the history job did not finish"
        return took[0]
    finally:
        writer.close()


def test_the_horizon_waits_for_writers_that_read_it(w: World) -> None:
    """A writer of a live row holds the history lock (shared) from its check until it
    commits, so the horizon cannot move under a row checked against the old one (the job
    would then take an overlapping row away from the constraint's sight)."""
    assert _mover_waits_for(w, "confirmed") >= 1.5
    # Committed first, so the row was there to be moved (it ended 100 days ago).
    assert w.sql("SELECT count(*) FROM reservation_history")[0][0] == 1


def test_control_a_writer_of_a_dead_row_does_not_hold_the_horizon(w: World) -> None:
    """The control: the same open transaction writing a cancelled row (which uses no units
    and is not checked) does not hold the job up, so the wait above is the lock's doing."""
    assert _mover_waits_for(w, "cancelled") < 1.0


def test_the_database_refuses_a_live_row_before_the_horizon(w: World) -> None:
    """Not only the API: any writer (here raw SQL) is refused by the trigger."""
    room = w.tenant.admin.resource()["id"]
    w.run()
    with psycopg.connect(w.url) as conn, pytest.raises(pg_errors.CheckViolation) as caught:
        conn.execute(
            _RAW_INSERT,
            {
                "r": room,
                "s": days_ago(95),
                "e": days_ago(95) + timedelta(hours=1),
                "status": "confirmed",
            },
        )
    assert caught.value.diag.constraint_name == "reservation_history_horizon"


def test_the_history_command_runs_one_pass(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    room = w.tenant.admin.resource()["id"]
    ended = _book(w, room, days_ago(150))
    monkeypatch.setenv("DATABASE_URL", w.url)
    monkeypatch.setenv("RESERVATIONS_HISTORY_AFTER_DAYS", "120")
    result = CliRunner().invoke(cli.app, ["history"])
    assert result.exit_code == 0, result.output
    assert "moved: 1\n" in result.output
    assert w.sql("SELECT id::text FROM reservation_history") == [(ended["id"],)]
