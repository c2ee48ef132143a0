"""`reservations demo`: seeds a realistic tenant once; a second run adds nothing and only
prints a new admin key for it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.tenancy import service as tenancy
from tests.support.servers import PgServer

CLI = [sys.executable, "-m", "reservations", "demo"]


@pytest.fixture
def fresh_database(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("rsv_demo")
    yield url
    pg_server.drop_database(url)


def _run(database_url: str) -> list[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": "none"}
    result = subprocess.run(CLI, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()


def _is_admin_key(database_url: str, token: str) -> bool:
    async def main() -> bool:
        db = Database(database_url, Settings(database_url=database_url, db_pool_min=1))
        await db.open()
        try:
            found = await tenancy.authenticate(db, token, now=Clock().now())
            return found is not None and found.role is tenancy.Role.admin
        finally:
            await db.close()

    return asyncio.run(main())


def _census(database_url: str) -> dict[str, object]:
    with psycopg.connect(database_url) as conn:
        (tenant_id,) = conn.execute("SELECT id FROM tenant WHERE name = 'demo'").fetchone()  # type: ignore[misc]
        resources = conn.execute(
            "SELECT timezone, capacity, policy FROM resource WHERE tenant_id = %s", (tenant_id,)
        ).fetchall()
        statuses = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT CASE WHEN needs_approval THEN 'pending' ELSE status END, count(*)"
                " FROM reservation WHERE tenant_id = %s GROUP BY 1",
                (tenant_id,),
            ).fetchall()
        )
        (days,) = conn.execute(  # type: ignore[misc]
            "SELECT count(DISTINCT lower(during)::date) FROM reservation WHERE tenant_id = %s",
            (tenant_id,),
        ).fetchone()
    return {"resources": resources, "statuses": statuses, "days": days}


def test_demo_seeds_a_realistic_tenant_once(fresh_database: str) -> None:
    first = _run(fresh_database)
    assert first[0].startswith("seeded tenant 'demo': 12 resources;"), first
    assert "/app" in first[-2]
    assert _is_admin_key(fresh_database, first[-1])

    seeded = _census(fresh_database)
    resources = seeded["resources"]
    assert isinstance(resources, list)
    assert len(resources) == 12
    assert len({zone for zone, _, _ in resources}) >= 5
    assert any(capacity > 1 for _, capacity, _ in resources)
    policies = [policy for _, _, policy in resources]
    assert sum(bool(p.get("requires_approval")) for p in policies) == 1
    assert any(p.get("blackouts") for p in policies)
    assert all(p.get("weekly_hours") or p.get("buffer_after") for p in policies)
    assert any(p.get("buffer_before") or p.get("buffer_after") for p in policies)
    statuses = seeded["statuses"]
    assert isinstance(statuses, dict)
    assert statuses.get("confirmed", 0) >= 50
    assert statuses.get("held", 0) >= 1
    assert statuses.get("pending", 0) >= 1
    assert isinstance(seeded["days"], int)
    assert seeded["days"] >= 7

    second = _run(fresh_database)
    assert "already seeded (12 resources): nothing added" in second[0], second
    assert second[-1] != first[-1]
    assert _is_admin_key(fresh_database, second[-1])
    assert _census(fresh_database) == seeded
