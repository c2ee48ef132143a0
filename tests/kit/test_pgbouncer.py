"""Every query path through a real PgBouncer in transaction pooling mode, with fewer server
connections (3) than clients: the races still have exactly their winners, the flows that touch
each repository work, and no session state leaks from one client to the next.

(`TEST_PGBOUNCER=1` runs the whole suite through PgBouncer as well; CI does.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import psycopg
import pytest

from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.pgbouncer import BINARY, PgBouncer, start_pgbouncer
from tests.support.race import burst, capacity_burst, create_key, overlapping_pairs, peak_usage
from tests.support.servers import PgServer

pytestmark = pytest.mark.skipif(
    BINARY is None, reason="pgbouncer is not installed (Debian: apt-get install pgbouncer)"
)


def booking(resource_id: str, start: str, end: str) -> dict[str, str]:
    return {"resource_id": resource_id, "start": start, "end": end}


@pytest.fixture
def bounced(pg_server: PgServer) -> Iterator[tuple[LiveServer, PgBouncer, str]]:
    direct = pg_server.create_database("rsv_pgb")
    bouncer = start_pgbouncer(direct, pool_size=3)
    url = bouncer.url(urlparse(direct).path.lstrip("/"))
    server = start_live_server(url, RESERVATIONS_DB_POOLER="transaction", REDIS_URL="none")
    try:
        yield server, bouncer, direct
    finally:
        stop_live_server(server)
        bouncer.stop()
        pg_server.drop_database(direct)


@pytest.mark.slow
def test_races_hold_through_pgbouncer(bounced: tuple[LiveServer, PgBouncer, str]) -> None:
    server, _, direct = bounced
    token = create_key(direct)
    result = asyncio.run(burst(server, token, 48, 1))
    assert result["codes"].count(201) == 1, result["codes"]
    assert not [c for c in result["codes"] if c >= 500], result["codes"]
    rid, codes = capacity_burst(server, token, capacity=3, quantities=[1] * 30, day=2)
    assert codes.count(201) == 3, codes
    assert peak_usage(direct, rid) == 3
    assert overlapping_pairs(direct) == 0


def test_every_flow_through_pgbouncer(bounced: tuple[LiveServer, PgBouncer, str]) -> None:
    server, bouncer, direct = bounced
    token = create_key(direct)
    h = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, headers=h, timeout=30) as c:
        policy = {
            "weekly_hours": {d: [{"start": "08:00", "end": "20:00"}] for d in ("mon", "wed")},
            "slot_grid_minutes": 30,
            "buffer_after": "PT15M",
            "booker_limit": {"max_live": 50, "period": "week"},
        }
        room = c.post(
            "/v1/resources",
            json={"name": "room", "timezone": "Europe/Berlin", "policy": policy, "tags": ["a"]},
        )
        assert room.status_code == 201, room.text
        rid = room.json()["id"]
        pool = c.post("/v1/resources", json={"name": "pool", "capacity": 2}).json()["id"]
        assert c.patch(f"/v1/resources/{rid}", json={"name": "Room 1"}).status_code == 200
        one = c.post(
            "/v1/reservations",
            json={
                "resource_id": rid,
                "start": "2031-06-02T08:00:00Z",
                "end": "2031-06-02T09:00:00Z",
            },
            headers={"Idempotency-Key": "k1"},
        )
        assert one.status_code == 201, one.text
        again = c.post(
            "/v1/reservations",
            json={
                "resource_id": rid,
                "start": "2031-06-02T08:00:00Z",
                "end": "2031-06-02T09:00:00Z",
            },
            headers={"Idempotency-Key": "k1"},
        )
        assert again.json()["id"] == one.json()["id"]
        clash = c.post(
            "/v1/reservations",
            json={
                "resource_id": rid,
                "start": "2031-06-02T09:00:00Z",
                "end": "2031-06-02T09:30:00Z",
            },
        )
        assert clash.status_code == 409, clash.text  # inside the 15-minute buffer
        rsv = one.json()["id"]
        moved = c.patch(
            f"/v1/reservations/{rsv}",
            json={"start": "2031-06-02T10:00:00Z", "end": "2031-06-02T11:00:00Z"},
        )
        assert moved.status_code == 200, moved.text
        assert c.post(f"/v1/reservations/{rsv}/cancel").status_code == 200
        held = c.post(
            "/v1/reservations",
            json={"resource_id": pool, "start": "2031-06-02T08:00:00Z",
                  "end": "2031-06-02T09:00:00Z", "hold_seconds": 300, "quantity": 2},
        )  # fmt: skip
        assert held.status_code == 201, held.text
        assert c.post(f"/v1/reservations/{held.json()['id']}/confirm").status_code == 200
        series = c.post(
            "/v1/bookings",
            json={"resources": [{"resource_id": rid}], "start": "2031-06-04T08:00:00+02:00",
                  "end": "2031-06-04T09:00:00+02:00", "rrule": "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=6",
                  "hold_seconds": 300},
        )  # fmt: skip
        assert series.status_code == 201, series.text
        bid = series.json()["id"]
        assert c.post(f"/v1/bookings/{bid}/confirm").status_code == 200
        shifted = c.patch(f"/v1/bookings/{bid}", json={"shift": "PT1H"})
        assert shifted.status_code == 200, shifted.text
        cancel = c.post(
            f"/v1/bookings/{bid}/cancel",
            json={"scope": "following", "occurrence": series.json()["reservations"][2]["start"]},
        )
        assert cancel.status_code == 200, cancel.text
        avail = c.get(
            f"/v1/resources/{rid}/availability",
            params={"from": "2031-06-02T00:00:00Z", "to": "2031-06-09T00:00:00Z",
                    "duration": "PT1H", "explain": "true"},
        )  # fmt: skip
        assert avail.status_code == 200, avail.text
        assert avail.json()["slots"]
        found = c.post(
            "/v1/availability/search",
            json={"from": "2031-06-02T08:00:00Z", "to": "2031-06-02T12:00:00Z", "tags": ["a"]},
        )
        assert found.status_code == 200, found.text
        listed = c.get("/v1/reservations", params={"resource_id": rid, "limit": 3})
        assert listed.status_code == 200
        assert listed.json()["next_cursor"]
        assert (
            c.delete(f"/v1/resources/{pool}", params={"cancel_reservations": "true"}).status_code
            == 204
        )
    # Nothing the app set leaked into the pooled server sessions: a fresh client through the
    # same bouncer sees the server defaults, not the app's per-transaction timeouts.
    with psycopg.connect(bouncer.url(urlparse(direct).path.lstrip("/")),
                         prepare_threshold=None, autocommit=True) as conn:  # fmt: skip
        for _ in range(6):  # several server connections in turn
            row = conn.execute("SHOW statement_timeout").fetchone()
            assert row is not None
            assert row[0] == "0", row
