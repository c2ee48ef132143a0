"""Racing clients against a live server: keys made in its database, raw HTTP requests built
first and written together (burst, capacity_burst), and independent checks of the outcome in
the database (overlapping_pairs, live_rows, peak_usage). Used by tests/concurrency, the
PgBouncer test, tests/deploy and tests/faults."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import psycopg

from reservations.config import Settings
from reservations.kit.db import Database
from reservations.tenancy import service as tenancy
from tests.support.live import LiveServer


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


async def _resource(server: LiveServer, token: str, **fields: Any) -> str:
    async with httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        r = await client.post("/v1/resources", json={"name": "pool", **fields})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


async def fire(server: LiveServer, raw_requests: list[bytes]) -> list[int]:
    """Open every connection first, then write all requests in one tight loop."""
    host, port = server.url.removeprefix("http://").split(":")
    conns = [await asyncio.open_connection(host, int(port)) for _ in raw_requests]
    for (_, writer), raw in zip(conns, raw_requests, strict=True):
        writer.write(raw)
    codes = []
    for reader, writer in conns:
        response = await asyncio.wait_for(reader.read(), timeout=60)
        codes.append(int(response.split(b" ", 2)[1]))
        writer.close()
    return codes


def capacity_burst(
    server: LiveServer, token: str, *, capacity: int, quantities: list[int], day: int
) -> tuple[str, list[int]]:
    async def main() -> tuple[str, list[int]]:
        rid = await _resource(server, token, capacity=capacity)
        raw = [
            _http(
                "POST",
                "/v1/reservations",
                token,
                {
                    "resource_id": rid,
                    # All overlap 10:30-11:00; shifted so no two bodies are alike.
                    "start": f"2031-04-{day:02d}T10:{i % 30:02d}:00Z",
                    "end": f"2031-04-{day:02d}T11:{i % 30:02d}:00Z",
                    "quantity": q,
                },
            )
            for i, q in enumerate(quantities)
        ]
        return rid, await fire(server, raw)

    return asyncio.run(main())


def peak_usage(database_url: str, resource_id: str) -> int:
    """Most units in use at any instant, swept independently of the application's code."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT lower(during), upper(during), quantity FROM reservation"
            " WHERE resource_id = %s AND status IN ('held', 'confirmed')",
            (resource_id,),
        ).fetchall()
    events = sorted([(a, q) for a, _, q in rows] + [(b, -q) for _, b, q in rows])
    running = peak = 0
    for _, delta in events:  # ends (-q) sort before starts at the same instant
        running += delta
        peak = max(peak, running)
    return peak


def pool_burst(
    server: LiveServer, token: str, *, clients: int, size: int, day: int
) -> tuple[list[str], list[int]]:
    """`size` unit resources with a fresh tag, then `clients` creates from that pool for the
    same hour written together (first_free: every racer starts on the same resource)."""

    async def main() -> tuple[list[str], list[int]]:
        tag = f"race-{day}"
        ids = [await _resource(server, token, tags=[tag]) for _ in range(size)]
        raw = [
            _http(
                "POST",
                "/v1/reservations",
                token,
                {
                    "pool": {"tags": [tag]},
                    "start": f"2031-05-{day:02d}T10:00:00Z",
                    "end": f"2031-05-{day:02d}T11:00:00Z",
                },
            )
            for _ in range(clients)
        ]
        return ids, await fire(server, raw)

    return asyncio.run(main())
