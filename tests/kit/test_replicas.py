"""Read replicas against a real streaming replica (tests/support/replica.py) that applies the
primary's WAL one second late (`recovery_min_apply_delay`), so staleness is certain, not a race.

- A client that sends back the Consistency-Token of its write always reads that write.
- Without the token the same immediate read, served by the replica, misses it: the control
  that shows the first claim could fail.
- A replica that falls behind leaves the rotation and rejoins once it catches up; one that is
  frozen (SIGSTOP) or stopped costs no errors and no long waits; writes never go to it."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx
import pytest

from tests.support.live import LiveServer, metric, start_live_server, stop_live_server
from tests.support.race import create_key
from tests.support.replica import Replica, start_replica
from tests.support.servers import PgServer

MAX_LAG = 3.0  # RESERVATIONS_REPLICA_MAX_LAG_SECONDS
CHECK = 0.5  # RESERVATIONS_REPLICA_CHECK_SECONDS
ROUNDS = 30
# A read that falls back to the primary pays at most the token wait (200 ms) and a pool
# timeout; anything near this is a hang, not a fallback.
BOUNDED = 2.0


@dataclass
class Setup:
    primary_url: str
    replica: Replica
    server: LiveServer
    client: httpx.Client
    resource_id: str
    day: int = 0

    def book(self, **headers: str) -> httpx.Response:
        """A create on a fresh slot: 30-minute slots through the years 2032-2033."""
        self.day += 1
        start = 1_956_528_000 + self.day * 1800  # 2032-01-01T00:00:00Z + n half-hours
        r = self.client.post(
            "/v1/reservations",
            json={
                "resource_id": self.resource_id,
                "start": _iso(start),
                "end": _iso(start + 1800),
            },
            headers=headers,
        )
        return r

    def wait_for_source(self, source: str, timeout: float = 45) -> float:
        """Poll a token-less read until it is served by `source`; return the time it took."""
        started = time.monotonic()
        while True:
            r = self.client.get(f"/v1/resources/{self.resource_id}")
            assert r.status_code == 200, r.text
            if r.headers.get("Read-Source") == source:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                lag = metric(self.metrics(), "replica_lag_seconds", replica="0")
                raise AssertionError(f"reads not served by {source} in {timeout} s (lag {lag})")
            time.sleep(0.1)

    def metrics(self) -> str:
        return self.client.get("/metrics").text


def _iso(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


@pytest.fixture(scope="module")
def setup(pg_server: PgServer) -> Iterator[Setup]:
    primary = pg_server.create_database("rsv_replica")
    replica = start_replica(primary, apply_delay="1s")
    server = None
    try:
        server = start_live_server(
            primary,
            DATABASE_REPLICA_URLS=replica.url(urlparse(primary).path.lstrip("/")),
            RESERVATIONS_REPLICA_MAX_LAG_SECONDS=str(MAX_LAG),
            RESERVATIONS_REPLICA_CHECK_SECONDS=str(CHECK),
            REDIS_URL="none",  # no resource cache: every read reaches a database
        )
        token = create_key(primary)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as client:
            room = client.post("/v1/resources", json={"name": "room"})
            assert room.status_code == 201, room.text
            yield Setup(primary, replica, server, client, room.json()["id"])
    finally:
        if server is not None:
            stop_live_server(server)
        replica.stop()
        pg_server.drop_database(primary)


@pytest.fixture
def env(setup: Setup) -> Iterator[Setup]:
    """The module's setup with the replica running, replaying, caught up and in rotation."""
    setup.replica.resume()
    setup.replica.start()
    setup.replica.resume_replay()
    setup.replica.catch_up(setup.primary_url)
    setup.wait_for_source("replica")
    yield setup
    setup.replica.resume()


@pytest.mark.slow
def test_read_your_writes_with_the_token(env: Setup) -> None:
    sources: Counter[str] = Counter()
    missed = []
    for _ in range(ROUNDS):
        created = env.book()
        assert created.status_code == 201, created.text
        rid = created.json()["id"]
        token = created.headers["Consistency-Token"]
        h = {"Consistency-Token": token}
        one = env.client.get(f"/v1/reservations/{rid}", headers=h)
        listed = env.client.get(
            "/v1/reservations", params={"resource_id": env.resource_id, "limit": 500}, headers=h
        )
        for r in (one, listed):
            sources[r.headers.get("Read-Source", "none")] += 1
        if one.status_code != 200 or rid not in {x["id"] for x in listed.json()["items"]}:
            missed.append((rid, one.status_code, one.headers.get("Read-Source")))
    print(f"read-your-writes: {2 * ROUNDS} reads, {len(missed)} missed, sources {dict(sources)}")
    assert not missed, missed
    assert set(sources) <= {"primary", "replica"}, sources
    # The token does not just send everything to the primary: once the replica has replayed
    # past it (the 1 s delay), the same token is served by the replica.
    time.sleep(1.5)
    late = env.client.get(f"/v1/reservations/{rid}", headers=h)
    assert late.status_code == 200
    assert late.headers["Read-Source"] == "replica"


@pytest.mark.slow
def test_without_the_token_the_replica_is_stale(env: Setup) -> None:
    """The control: the same immediate read without the token misses the write."""
    outcomes: Counter[tuple[int, str]] = Counter()
    before = metric(env.metrics(), "db_reads_total", target="replica")
    for _ in range(ROUNDS):
        created = env.book()
        assert created.status_code == 201, created.text
        r = env.client.get(f"/v1/reservations/{created.json()['id']}")
        outcomes[(r.status_code, r.headers.get("Read-Source", "none"))] += 1
    print(f"without token: {dict(outcomes)}")
    stale = {k: n for k, n in outcomes.items() if k[0] == 404}
    assert stale, outcomes
    assert {source for _, source in stale} == {"replica"}, outcomes
    assert sum(stale.values()) > ROUNDS // 2, outcomes  # a clear majority, with a 1 s delay
    assert set(outcomes) <= {(200, "replica"), (200, "primary"), (404, "replica")}, outcomes
    replica_reads = metric(env.metrics(), "db_reads_total", target="replica") - before
    assert replica_reads >= outcomes[(404, "replica")] + outcomes[(200, "replica")]


@pytest.mark.slow
def test_a_lagging_replica_leaves_the_rotation_and_rejoins(env: Setup) -> None:
    env.replica.pause_replay()  # still reachable, receiving WAL, applying none
    started = time.monotonic()
    while True:  # writes move the primary's WAL position on; the replica stays behind
        assert env.book().status_code == 201
        r = env.client.get(f"/v1/resources/{env.resource_id}")
        assert r.status_code == 200, r.text
        if r.headers["Read-Source"] == "primary":
            break
        assert time.monotonic() - started < MAX_LAG + 10, "lagging replica still in rotation"
        time.sleep(0.1)
    left_after = time.monotonic() - started
    lag = metric(env.metrics(), "replica_lag_seconds", replica="0")
    assert lag > MAX_LAG, lag
    # Out of rotation: every read now comes from the primary.
    for _ in range(10):
        r = env.client.get(f"/v1/resources/{env.resource_id}")
        assert r.headers["Read-Source"] == "primary"
    env.replica.resume_replay()
    rejoined_after = env.wait_for_source("replica")
    lag_after = metric(env.metrics(), "replica_lag_seconds", replica="0")
    print(f"lag: out after {left_after:.1f} s (lag {lag:.1f} s), back {rejoined_after:.1f} s")
    assert lag_after <= MAX_LAG, lag_after


def _reads(env: Setup, seconds: float) -> tuple[Counter[tuple[int, str]], float]:
    """Token-less reads of every kind for `seconds`: (status, source) counts, slowest."""
    outcomes: Counter[tuple[int, str]] = Counter()
    slowest = 0.0
    paths = [
        f"/v1/resources/{env.resource_id}",
        f"/v1/reservations?resource_id={env.resource_id}",
        f"/v1/resources/{env.resource_id}/availability"
        "?from=2032-01-05T00:00:00Z&to=2032-01-06T00:00:00Z&duration=PT30M",
    ]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for path in paths:
            started = time.monotonic()
            try:
                r = env.client.get(path, timeout=BOUNDED * 5)
                outcomes[(r.status_code, r.headers.get("Read-Source", "none"))] += 1
            except httpx.TimeoutException:
                outcomes[(0, "timeout")] += 1
            slowest = max(slowest, time.monotonic() - started)
    return outcomes, slowest


@pytest.mark.slow
def test_a_frozen_replica_costs_no_errors_or_hangs(env: Setup) -> None:
    """SIGSTOP: connections to the replica neither fail nor answer (a hung host)."""
    env.replica.pause()
    try:
        outcomes, slowest = _reads(env, 3 * CHECK + 2)
        print(f"frozen replica: {dict(outcomes)}, slowest {slowest:.2f} s")
        assert {code for code, _ in outcomes} == {200}, outcomes
        assert slowest < BOUNDED, slowest
        after, _ = _reads(env, 0.5)
        assert set(after) == {(200, "primary")}, after
    finally:
        env.replica.resume()
    env.wait_for_source("replica")


@pytest.mark.slow
def test_a_stopped_replica_costs_no_errors(env: Setup) -> None:
    env.replica.stop(cleanup=False)
    outcomes, slowest = _reads(env, 3 * CHECK + 1)
    print(f"stopped replica: {dict(outcomes)}, slowest {slowest:.2f} s")
    assert {code for code, _ in outcomes} == {200}, outcomes
    assert slowest < BOUNDED, slowest
    after, _ = _reads(env, 0.5)
    assert set(after) == {(200, "primary")}, after
    env.replica.start()  # back up: it catches up and rejoins
    env.wait_for_source("replica")


@pytest.mark.slow
def test_writes_never_use_the_replica(env: Setup) -> None:
    # A token the replica has not reached: the read waits its bounded while, then the primary.
    started = time.monotonic()
    future = {"Consistency-Token": "FF/0"}
    ahead = env.client.get(f"/v1/resources/{env.resource_id}", headers=future)
    assert (ahead.status_code, ahead.headers["Read-Source"]) == (200, "primary")
    assert time.monotonic() - started < BOUNDED
    # Writes are the primary's: they succeed the moment the replica is gone, with or without
    # a token (an old one, or one from the future), and each hands out a fresh token.
    env.replica.stop(cleanup=False)
    tokens = []
    for headers in ({}, {"Consistency-Token": "0/1"}, {"Consistency-Token": "FF/0"}):
        created = env.book(**headers)
        assert created.status_code == 201, created.text
        tokens.append(created.headers["Consistency-Token"])
    moved = env.client.patch(f"/v1/resources/{env.resource_id}", json={"name": "hall"})
    assert moved.status_code == 200, moved.text
    tokens.append(moved.headers["Consistency-Token"])
    assert len(set(tokens)) == len(tokens), tokens  # each write moved the WAL on
