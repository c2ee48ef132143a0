"""The API-key lookup cache in Redis: hits, immediate revocation (in one process and across
processes sharing the Redis), the TTL backstop, and what is (not) stored.

Controls: a revocation written straight into PostgreSQL, bypassing the service's invalidation,
is still accepted while cached. That is what makes the immediate-revocation assertions mean
something: the answers really come from the cache."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.kit.clock import Clock
from reservations.tenancy import keys
from reservations.tenancy import service as tenancy
from tests.support.api import Api, Tenant
from tests.support.live import metric, start_live_server, stop_live_server
from tests.support.servers import RedisServer, make_settings


def lookups(client: TestClient | httpx.Client, result: str) -> float:
    return metric(
        client.get("/metrics").text, "cache_lookups_total", cache="api_key", result=result
    )


def revoke_behind_the_cache(database_url: str, token: str) -> None:
    """Revoke in PostgreSQL only, as a buggy revocation path would: no invalidation."""
    prefix = keys.parse(token)[0]  # type: ignore[index]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE api_key SET revoked_at = now() WHERE prefix = %s", (prefix,))


def revoke(client: TestClient, token: str) -> None:
    prefix = keys.parse(token)[0]  # type: ignore[index]
    svc = client.app.state.services  # type: ignore[attr-defined]

    async def run() -> None:
        row = await tenancy.revoke_key(svc.db, prefix, cache=svc.key_cache)
        assert row is not None
        assert row.cache_invalidated is True

    client.portal.call(run)  # type: ignore[union-attr]


def test_second_request_is_a_cache_hit(app_client: TestClient, tenant: Tenant) -> None:
    api = tenant.another_booker()
    hits, misses = lookups(app_client, "hit"), lookups(app_client, "miss")
    assert api.get("/v1/resources").status_code == 200
    assert (lookups(app_client, "hit"), lookups(app_client, "miss")) == (hits, misses + 1)
    for _ in range(3):
        assert api.get("/v1/resources").status_code == 200
    assert (lookups(app_client, "hit"), lookups(app_client, "miss")) == (hits + 3, misses + 1)


def test_revocation_takes_effect_on_the_next_request(
    app_client: TestClient, tenant: Tenant
) -> None:
    api = tenant.another_booker()
    assert api.get("/v1/resources").status_code == 200
    assert api.get("/v1/resources").status_code == 200  # now served from the cache
    revoke(app_client, api.token)
    r = api.get("/v1/resources")
    assert r.status_code == 401
    assert r.json()["type"] == "/problems/unauthenticated"
    # The tombstone answers from now on, without reading the database.
    hits = lookups(app_client, "hit")
    assert api.get("/v1/resources").status_code == 401
    assert lookups(app_client, "hit") == hits + 1


def test_control_a_revocation_without_invalidation_is_served_from_the_cache(
    app_client: TestClient, tenant: Tenant, database_url: str
) -> None:
    api = tenant.another_booker()
    assert api.get("/v1/resources").status_code == 200
    revoke_behind_the_cache(database_url, api.token)
    assert api.get("/v1/resources").status_code == 200, "the cache did not answer"


def test_ttl_is_the_backstop(
    database_url: str, redis_server: RedisServer, app_client: TestClient, tenant: Tenant
) -> None:
    settings = make_settings(
        database_url,
        redis_url=redis_server.url,
        redis_key_prefix=redis_server.prefix + "ttl:",
        api_key_cache_ttl_seconds=1,
    )
    with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
        api = Api(client, tenant.another_booker().token)
        assert api.get("/v1/resources").status_code == 200
        revoke_behind_the_cache(database_url, api.token)
        assert api.get("/v1/resources").status_code == 200
        time.sleep(1.3)
        assert api.get("/v1/resources").status_code == 401


def test_a_cached_prefix_with_a_wrong_secret_is_refused(tenant: Tenant) -> None:
    api = tenant.another_booker()
    assert api.get("/v1/resources").status_code == 200
    prefix, secret = keys.parse(api.token)  # type: ignore[misc]
    other = secret[::-1]
    forged = f"rsv_{prefix}_{other}{keys._checksum(prefix, other)}"
    assert keys.parse(forged) is not None
    r = api.client.get("/v1/resources", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


def test_the_cache_never_holds_the_secret(tenant: Tenant, redis_server: RedisServer) -> None:
    api = tenant.another_booker()
    assert api.get("/v1/resources").status_code == 200
    prefix, secret = keys.parse(api.token)  # type: ignore[misc]
    client = redis.Redis.from_url(redis_server.url)
    try:
        raw = client.get(f"{redis_server.prefix}apikey:{prefix}")
        stored = b"".join(
            client.get(k) or b"" for k in client.scan_iter(f"{redis_server.prefix}apikey:*")
        )
    finally:
        client.close()
    assert raw is not None, "no cache entry under the key's prefix"
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw
    assert secret.encode() not in stored
    assert api.token.encode() not in stored


# --------------------------------------------------------------------------------------------
# two API processes sharing one Redis


@pytest.fixture
def two_servers(database_url: str, redis_server: RedisServer) -> Iterator[list[str]]:
    servers = [start_live_server(database_url, **redis_server.env()) for _ in range(2)]
    try:
        yield [s.url for s in servers]
    finally:
        for s in servers:
            stop_live_server(s)


def _cli_revoke(database_url: str, redis_server: RedisServer, token: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, **redis_server.env()}
    prefix = keys.parse(token)[0]  # type: ignore[index]
    done = subprocess.run(
        [sys.executable, "-m", "reservations", "keys", "revoke", prefix],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "warning" not in done.stderr, done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("invalidate", [True, False], ids=["revoke", "control-sql-only"])
def test_revocation_reaches_every_process_sharing_the_redis(
    two_servers: list[str],
    tenant: Tenant,
    database_url: str,
    redis_server: RedisServer,
    invalidate: bool,
) -> None:
    token = tenant.another_booker().token
    auth = {"Authorization": f"Bearer {token}"}
    a, b = (httpx.Client(base_url=url, headers=auth) for url in two_servers)
    with a, b:
        assert a.get("/v1/resources").status_code == 200  # A reads PostgreSQL, fills Redis
        hits_b = lookups(b, "hit")
        assert b.get("/v1/resources").status_code == 200
        assert lookups(b, "hit") == hits_b + 1, "B did not answer from the shared cache"

        if invalidate:
            # `reservations keys revoke`, as an operator runs it beside the API.
            _cli_revoke(database_url, redis_server, token)
            assert b.get("/v1/resources").status_code == 401
            assert a.get("/v1/resources").status_code == 401
        else:
            revoke_behind_the_cache(database_url, token)
            assert b.get("/v1/resources").status_code == 200
            assert a.get("/v1/resources").status_code == 200


def test_a_fill_racing_a_revocation_cannot_resurrect_the_key(redis_server: RedisServer) -> None:
    """A request that read the row just before the revocation committed fills the cache only
    after the invalidation: the stale entry must not win (fills are SET NX)."""
    import asyncio
    import uuid

    from reservations.kit.redis import RedisTier
    from reservations.tenancy.cache import REVOKED, KeyCache, KeyRecord

    record = KeyRecord(
        tenant_id=uuid.uuid4(), api_key_id=uuid.uuid4(), role="admin",
        secret_hash=b"x" * 32, expires_at=None, revoked=False,
    )  # fmt: skip

    async def run() -> tuple[KeyRecord | None, KeyRecord | None]:
        tier = RedisTier(redis_server.url, prefix=redis_server.prefix + "race:")
        await tier.open()
        try:
            cache = KeyCache(tier, ttl_seconds=60)
            await cache.fill("p1", record)
            first = await cache.get("p1")
            assert await cache.invalidate("p1")
            await cache.fill("p1", record)  # the late, stale fill
            return first, await cache.get("p1")
        finally:
            await tier.close()

    first, after = asyncio.run(run())
    assert first == record
    assert after is REVOKED


def test_a_resource_entry_is_only_replaced_by_a_newer_version(redis_server: RedisServer) -> None:
    """The resource cache's compare-and-set: a slow request that read version 1 and writes it
    back after a PATCH cached version 2 must not win; nor may any fill older than an
    archive's tombstone. A plain SET in `_PUT` fails every assertion after the first put."""
    import asyncio
    import uuid
    from datetime import UTC, datetime

    from reservations.catalog.cache import ResourceCache
    from reservations.catalog.repository import ResourceRow
    from reservations.kit.redis import RedisTier

    tenant, rid, at = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)

    def row(version: int, name: str) -> ResourceRow:
        return ResourceRow(
            id=rid, name=name, capacity=1, timezone="UTC", tags=[], metadata={}, policy={},
            version=version, created_at=at, updated_at=at,
        )  # fmt: skip

    async def run() -> list[object]:
        tier = RedisTier(redis_server.url, prefix=redis_server.prefix + "rescas:")
        await tier.open()
        try:
            cache = ResourceCache(tier, ttl_seconds=60)
            seen: list[object] = []

            async def name() -> object:
                entry = await cache.get(tenant, rid)
                return None if entry is None else (entry.version, entry.name)

            await cache.put(row(2, "after the PATCH"), tenant_id=tenant)
            seen.append(await name())
            await cache.put(row(1, "read before the PATCH"), tenant_id=tenant)  # the slow writer
            seen.append(await name())
            await cache.put(row(2, "same version, other bytes"), tenant_id=tenant)
            seen.append(await name())
            await cache.archived(rid, 3)
            seen.append(await name())
            await cache.put(row(2, "a fill from before the archive"), tenant_id=tenant)
            seen.append(await name())
            await cache.put(row(4, "restored"), tenant_id=tenant)
            seen.append(await name())
            return seen
        finally:
            await tier.close()

    assert asyncio.run(run()) == [
        (2, "after the PATCH"),
        (2, "after the PATCH"),  # the older version is refused
        (2, "after the PATCH"),  # an equal version does not replace either
        None,  # the tombstone hides the resource
        None,  # and an older fill cannot bring it back
        (4, "restored"),  # a newer version replaces the tombstone
    ]
