"""Rate limits per API key and per tenant, against the real Redis: the headers, the 429, the
tenant quota shared by a tenant's keys, refill, and that a refused request costs nothing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.kit.clock import Clock
from reservations.kit.ratelimit import Policy, RateLimiter
from reservations.kit.redis import RedisTier
from tests.support.api import new_tenant
from tests.support.live import start_live_server, stop_live_server
from tests.support.servers import RedisServer, make_settings

KEY_Q, TENANT_Q, WINDOW = 5, 8, 60
ITEM = re.compile(r'^"(\w+)"((?:;\w+=\d+)+)$')


def parse(field: str) -> dict[str, dict[str, int]]:
    """A structured-field list of `"name";k=v;...` items, strictly."""
    out = {}
    for item in field.split(","):
        match = ITEM.match(item.strip())
        assert match, f"not a structured-field item: {item!r} in {field!r}"
        params = dict(p.split("=") for p in match.group(2).strip(";").split(";"))
        out[match.group(1)] = {k: int(v) for k, v in params.items()}
    return out


@pytest.fixture(scope="module")
def limited(database_url: str, redis_server: RedisServer) -> Iterator[TestClient]:
    settings = make_settings(
        database_url,
        redis_url=redis_server.url,
        redis_key_prefix=redis_server.prefix + "rl:",
        rate_limit_key_requests=KEY_Q,
        rate_limit_tenant_requests=TENANT_Q,
        rate_limit_window_seconds=WINDOW,
    )
    with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_headers_describe_policy_and_what_is_left(limited: TestClient) -> None:
    t = new_tenant(limited)
    r = t.viewer.get("/v1/resources")
    assert r.status_code == 200
    assert parse(r.headers["RateLimit-Policy"]) == {
        "key": {"q": KEY_Q, "w": WINDOW},
        "tenant": {"q": TENANT_Q, "w": WINDOW},
    }
    # One unit refills every w/q seconds: 12 s per key unit, 7.5 s per tenant unit.
    assert parse(r.headers["RateLimit"]) == {
        "key": {"r": KEY_Q - 1, "t": 12},
        "tenant": {"r": TENANT_Q - 1, "t": 8},
    }
    r = t.viewer.get("/v1/resources")
    state = parse(r.headers["RateLimit"])
    assert state["key"]["r"] == KEY_Q - 2
    assert state["key"]["t"] in (23, 24)
    assert state["tenant"]["r"] == TENANT_Q - 2
    # Headers ride on errors too (a 404 is still a charged request).
    r = t.viewer.get("/v1/resources/00000000-0000-0000-0000-000000000000")
    assert r.status_code == 404
    assert parse(r.headers["RateLimit"])["key"]["r"] == KEY_Q - 3


def test_429_once_the_key_quota_is_used_up(limited: TestClient) -> None:
    t = new_tenant(limited)
    for i in range(KEY_Q):
        r = t.viewer.get("/v1/resources")
        assert r.status_code == 200, (i, r.text)
    r = t.viewer.get("/v1/resources")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"] == "/problems/rate-limited"
    assert body["status"] == 429
    assert body["violated_policies"] == ["key"]
    retry = int(r.headers["Retry-After"])
    assert 1 <= retry <= 12
    assert parse(r.headers["RateLimit"]) == {"key": {"r": 0, "t": retry}}
    assert "tenant" in parse(r.headers["RateLimit-Policy"])
    # Another key of the same tenant still has its own key quota (and tenant quota left).
    assert t.admin.get("/v1/resources").status_code == 200


def test_tenant_quota_is_shared_by_its_keys_and_refusals_cost_nothing(
    limited: TestClient,
) -> None:
    t = new_tenant(limited)
    for _ in range(KEY_Q):
        assert t.viewer.get("/v1/resources").status_code == 200
    for _ in range(3):  # refused: must not eat into the tenant's quota
        assert t.viewer.get("/v1/resources").status_code == 429
    left = TENANT_Q - KEY_Q
    for i in range(left):
        r = t.admin.get("/v1/resources")
        assert r.status_code == 200, (i, r.text)
    r = t.booker.get("/v1/resources")
    assert r.status_code == 429
    assert r.json()["violated_policies"] == ["tenant"]
    assert parse(r.headers["RateLimit"]) == {"tenant": {"r": 0, "t": int(r.headers["Retry-After"])}}
    # Another tenant is not affected.
    other = new_tenant(limited)
    assert other.viewer.get("/v1/resources").status_code == 200


def test_unauthenticated_requests_are_not_charged_to_anyone(limited: TestClient) -> None:
    r = limited.get("/v1/resources", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert "RateLimit" not in r.headers


def test_buckets_refill_at_quota_per_window(redis_server: RedisServer) -> None:
    async def run() -> list[tuple[bool, int]]:
        tier = RedisTier(redis_server.url, prefix=redis_server.prefix + "refill:")
        await tier.open()
        try:
            limiter = RateLimiter(tier)
            policy = Policy("p", 2, 1)  # 2 per second: one unit back every 0.5 s
            seen = []
            for pause in (0, 0, 0, 0.6, 0):
                await asyncio.sleep(pause)
                limits = await limiter.hit([(policy, "b")])
                assert limits is not None
                seen.append((limits[0].admitted, limits[0].remaining))
            return seen
        finally:
            await tier.close()

    assert asyncio.run(run()) == [(True, 1), (True, 0), (False, 0), (True, 0), (False, 0)]


@pytest.mark.slow
def test_limits_hold_across_processes(
    database_url: str, redis_server: RedisServer, limited: TestClient
) -> None:
    """Two API processes, one Redis: the key's quota is one quota, not one per process."""
    env = {
        **redis_server.env(),
        "RESERVATIONS_REDIS_KEY_PREFIX": redis_server.prefix + "rl:",
        "RESERVATIONS_RATE_LIMIT_KEY_REQUESTS": str(KEY_Q),
        "RESERVATIONS_RATE_LIMIT_TENANT_REQUESTS": str(TENANT_Q),
    }
    servers = [start_live_server(database_url, **env) for _ in range(2)]
    try:
        t = new_tenant(limited)
        codes = []
        started = time.monotonic()
        for i in range(KEY_Q + 1):
            r = httpx.get(servers[i % 2].url + "/v1/resources", headers=t.viewer.headers)
            codes.append(r.status_code)
        assert time.monotonic() - started < 12, "a unit refilled meanwhile; test too slow"
        assert codes == [200] * KEY_Q + [429]
    finally:
        for s in servers:
            stop_live_server(s)
