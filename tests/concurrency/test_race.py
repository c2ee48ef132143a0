"""Racing clients against a real server process: exactly one winner per slot.

The control runs the same race against a database whose exclusion constraint was dropped
(everything else, application pre-check and advisory lock included, unchanged) and shows that
it double-books: the race is real, and the constraint is what stops it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from reservations.config import Settings
from reservations.kit.db import Database
from reservations.tenancy import service as tenancy
from tests.conftest import LiveServer, PgServer, start_live_server, stop_live_server

CLIENTS = 48


def create_key(database_url: str, role: tenancy.Role = tenancy.Role.admin) -> str:
    async def main() -> str:
        db = Database(database_url, Settings(database_url=database_url, db_pool_min=1))
        await db.open()
        try:
            created = await tenancy.create_key(db, tenant="racers", role=role)
            return created.token
        finally:
            await db.close()

    return asyncio.run(main())


def _http(method: str, path: str, token: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: race\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + payload


async def burst(server: LiveServer, token: str, n: int, slot: int) -> dict[str, Any]:
    """n overlapping creates that reach the server together: every connection is opened and
    every request built first, then all are written in one tight loop. (A Python HTTP client
    sending one by one staggers them enough that each finds the previous winner committed.)"""
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        r = await client.post("/v1/resources", json={"name": f"court {slot}"})
        assert r.status_code == 201, r.text
        resource_id = r.json()["id"]
    host, port = server.url.removeprefix("http://").split(":")
    # Overlapping ranges of the same hour, shifted by minutes: each pair conflicts, and no two
    # bodies are identical.
    requests = [
        _http(
            "POST",
            "/v1/reservations",
            token,
            {
                "resource_id": resource_id,
                "start": f"2031-03-{slot:02d}T10:{i % 30:02d}:00Z",
                "end": f"2031-03-{slot:02d}T11:{i % 30:02d}:00Z",
            },
        )
        for i in range(n)
    ]
    conns = [await asyncio.open_connection(host, int(port)) for _ in range(n)]
    started = time.perf_counter()
    for (_, writer), raw in zip(conns, requests, strict=True):
        writer.write(raw)
    codes = []
    for reader, writer in conns:
        response = await asyncio.wait_for(reader.read(), timeout=60)
        codes.append(int(response.split(b" ", 2)[1]))
        writer.close()
    elapsed = time.perf_counter() - started
    return {"resource_id": resource_id, "codes": codes, "elapsed": elapsed}


def live_rows(database_url: str, resource_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM reservation WHERE resource_id = %s"
            " AND status IN ('held', 'confirmed')",
            (resource_id,),
        ).fetchone()
        assert row is not None
        return int(row[0])


def overlapping_pairs(database_url: str) -> int:
    """Overlapping live pairs on unit-capacity resources (pooled ones may overlap)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM reservation a JOIN reservation b"
            " ON a.resource_id = b.resource_id AND a.id < b.id AND a.during && b.during"
            " WHERE a.status IN ('held', 'confirmed') AND b.status IN ('held', 'confirmed')"
            " AND NOT a.pooled AND NOT b.pooled"
        ).fetchone()
        assert row is not None
        return int(row[0])


@pytest.mark.slow
def test_racing_creates_have_exactly_one_winner(live_server: LiveServer) -> None:
    token = create_key(live_server.database_url)
    for slot in (1, 2, 3):
        result = asyncio.run(burst(live_server, token, CLIENTS, slot))
        codes = result["codes"]
        assert codes.count(201) == 1, codes
        assert codes.count(409) == CLIENTS - 1, codes
        assert not [c for c in codes if c >= 500]
        assert result["elapsed"] < 10, f"burst took {result['elapsed']:.1f} s"
        assert live_rows(live_server.database_url, result["resource_id"]) == 1
    assert overlapping_pairs(live_server.database_url) == 0


@pytest.fixture
def unguarded_server(pg_server: PgServer) -> Iterator[LiveServer]:
    """A server on a database without the exclusion constraint (one per partition of the
    live table): the guard disabled."""
    url = pg_server.create_database("rsv_control")
    with psycopg.connect(url, autocommit=True) as conn:
        guards = conn.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint"
            " WHERE contype = 'x' AND conrelid::regclass::text LIKE 'reservation%'"
        ).fetchall()
        assert len(guards) == 16, guards
        for table, name in guards:
            conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    server = start_live_server(url)
    yield server
    stop_live_server(server)
    pg_server.drop_database(url)


@pytest.mark.slow
def test_control_without_the_constraint_the_race_double_books(
    unguarded_server: LiveServer,
) -> None:
    token = create_key(unguarded_server.database_url)
    winners = []
    for slot in range(1, 6):
        result = asyncio.run(burst(unguarded_server, token, CLIENTS, slot))
        winners.append(result["codes"].count(201))
        if winners[-1] > 1:
            break
    # Check-then-insert in application code lets several racers through the same slot.
    assert max(winners) > 1, f"expected a double booking without the guard, got {winners}"
    assert overlapping_pairs(unguarded_server.database_url) > 0
