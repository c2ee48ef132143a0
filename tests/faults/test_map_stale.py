"""The Redis tier's staleness, measured against live servers (DESIGN.md, "Redis tier"):

- a stale availability-map bit (a cancel made behind the API's back) refuses a free range
  only until the repair job, following the outbox, rebuilds the day: in the API process's own
  loop and in a separate `reservations worker` (the API then started without its loop), the
  window is measured and bounded, and a control with the repair job effectively off shows the
  refusal would otherwise persist;
- the resource cache shared by two API processes: a change made through one is served and
  applied by the other at once; a change made in SQL only is not (the cache really answers)
  until the TTL ends;
- Redis killed and restarted during hot-slot traffic: no 5xx, no double booking, every 201 in
  PostgreSQL, and the map warms again by itself (fast refusals resume).

Mutants of src/ these catch (tried on a copy of the tree): a repair job that does nothing
(the window never closes); a worker built without the Redis tier (its repair has no map to
repair); a PATCH that does not write the cache (B keeps the old capacity and refuses);
`refusal` not handling an unavailable Redis (5xx during the outage); the pre-check not
read-repairing the map (no fast refusals after the restart)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from tests.support.api import new_tenant
from tests.support.faults import PrivateRedis, assert_database_consistent
from tests.support.live import LiveServer, metric, start_live_server, stop_live_server
from tests.support.servers import RedisServer

SOURCE = "availability-map"


def api(server: LiveServer, token: str) -> httpx.Client:
    # The map's refusals are timed here: without the search for alternatives each would
    # also cost (docs/alternatives.md).
    headers = {"Authorization": f"Bearer {token}", "Prefer": "alternatives=none"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=10)


def source(r: httpx.Response) -> str | None:
    assert r.status_code == 409, r.text
    found: str | None = r.json().get("source")
    return found


def scrape(server: LiveServer, name: str, **labels: str) -> float:
    return metric(httpx.get(server.url + "/metrics").text, name, **labels)


def cancel_behind_the_api(database_url: str, reservation_id: str) -> None:
    """Cancel in PostgreSQL only, as a crash between COMMIT and the map write would leave it."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE reservation SET status = 'cancelled', version = version + 1,"
            " updated_at = now() WHERE id = %s",
            (reservation_id,),
        )


# --------------------------------------------------------------------------------------------
# a stale bit, and the repair job that bounds it


@contextlib.contextmanager
def separate_worker(database_url: str, **env: str) -> Iterator[None]:
    """`reservations worker` beside the API, as deployed (the API with `--no-worker`)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "reservations", "worker"],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stderr is not None
        started = worker.stderr.readline()  # said once migrated, as its loop begins
        assert "worker running" in started, started
        time.sleep(1.0)
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert "Traceback" not in err, err


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    ["api", "worker", None],
    ids=["repair-every-1s-in-the-api", "repair-every-1s-in-a-worker", "control-no-repair"],
)
def test_a_stale_bit_refuses_only_until_the_repair_job_runs(
    database_url: str, redis_server: RedisServer, app_client: TestClient, where: str | None
) -> None:
    repair = where is not None
    env = {
        "REDIS_URL": redis_server.url,
        "RESERVATIONS_REDIS_KEY_PREFIX": f"{redis_server.prefix}stale-{secrets.token_hex(3)}:",
        "RESERVATIONS_AVAILABILITY_MAP_REPAIR_INTERVAL_SECONDS": "1" if repair else "86400",
    }
    # The session's database: the repair would first read every event earlier tests made.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE outbox_position SET after_txid = pg_snapshot_xmin(pg_current_snapshot()),"
            " after_id = 0 WHERE reader = 'availability_map'"
        )
    server = start_live_server(
        database_url, RESERVATIONS_RUN_WORKER="true" if where != "worker" else "false", **env
    )
    worker = separate_worker(database_url, **env) if where == "worker" else contextlib.nullcontext()
    with worker:
        run_stale_bit(server, app_client, database_url, where=where)


def run_stale_bit(
    server: LiveServer, app_client: TestClient, database_url: str, *, where: str | None
) -> None:
    repair = where is not None
    observe = 5.0 if repair else 3.0
    try:
        token = new_tenant(app_client).tokens["admin"]
        with api(server, token) as c:
            rid = c.post("/v1/resources", json={"name": "stale"}).json()["id"]
            repaired = scrape(server, "availability_map_repaired_total")
            # The repair job may run between the SQL cancel and the next create (a few ms of
            # its 1 s period): then start again on another range.
            for hour in range(10, 14):
                body = {
                    "resource_id": rid,
                    "start": f"2034-05-01T{hour}:00:00Z",
                    "end": f"2034-05-01T{hour}:30:00Z",
                }
                first = c.post("/v1/reservations", json=body)
                assert first.status_code == 201, first.text
                assert source(c.post("/v1/reservations", json=body)) == SOURCE
                cancel_behind_the_api(database_url, first.json()["id"])
                cancelled_at = time.monotonic()
                stale = c.post("/v1/reservations", json=body)
                if stale.status_code == 409:
                    break
            assert source(stale) == SOURCE, "the stale bit was never seen"
            window = None
            polls = Counter[str]()
            while time.monotonic() - cancelled_at < observe:
                time.sleep(0.1)
                r = c.post("/v1/reservations", json=body)
                if r.status_code == 201:
                    window = time.monotonic() - cancelled_at
                    break
                # The database path would accept: every refusal here is the map's.
                polls[str(source(r))] += 1
        seen = f"{window:.2f} s" if window is not None else f"still refused after {observe} s"
        mode = f"repair every 1 s in the {where}" if repair else "no repair"
        print(f"\nstale-bit false-refusal window ({mode}): {seen}; polls refused: {dict(polls)}")
        if repair:
            assert window is not None, f"still refused {observe} s after the cancel"
            assert window < observe
            if where == "api":  # the worker's counter is on no page here
                assert scrape(server, "availability_map_repaired_total") > repaired
        else:
            assert window is None, f"accepted after {window:.2f} s without a repair job"
            assert polls[SOURCE] >= 20
    finally:
        stop_live_server(server)


# --------------------------------------------------------------------------------------------
# the resource cache, shared by two API processes


@pytest.fixture
def two_servers(database_url: str, redis_server: RedisServer) -> Iterator[list[LiveServer]]:
    env = {
        "REDIS_URL": redis_server.url,
        "RESERVATIONS_REDIS_KEY_PREFIX": f"{redis_server.prefix}two-{secrets.token_hex(3)}:",
        "RESERVATIONS_RESOURCE_CACHE_TTL_SECONDS": "3",
        # Default DB pool (24) times two beside another xdist worker's would crowd max_connections.
        "RESERVATIONS_DB_POOL_MIN": "4",
        "RESERVATIONS_DB_POOL_MAX": "8",
    }
    servers = [start_live_server(database_url, **env) for _ in range(2)]
    try:
        yield servers
    finally:
        for s in servers:
            stop_live_server(s)


def resource_hits(server: LiveServer) -> float:
    return scrape(server, "cache_lookups_total", cache="resource", result="hit")


@pytest.mark.slow
def test_a_resource_change_through_one_process_is_applied_by_the_other(
    two_servers: list[LiveServer], app_client: TestClient, database_url: str
) -> None:
    token = new_tenant(app_client).tokens["admin"]
    with api(two_servers[0], token) as a, api(two_servers[1], token) as b:
        rid = a.post("/v1/resources", json={"name": "shared"}).json()["id"]
        hits = resource_hits(two_servers[1])
        got = b.get(f"/v1/resources/{rid}")
        assert (got.json()["version"], got.json()["capacity"]) == (1, 1)
        assert resource_hits(two_servers[1]) == hits + 1, "B did not answer from the cache"
        slot = {"resource_id": rid, "start": "2034-06-01T10:00:00Z", "end": "2034-06-01T11:00:00Z"}
        assert b.post("/v1/reservations", json=slot).status_code == 201
        assert source(b.post("/v1/reservations", json=slot)) == SOURCE

        r = a.patch(f"/v1/resources/{rid}", json={"capacity": 2}, headers={"If-Match": '"1"'})
        assert r.status_code == 200, r.text
        hits = resource_hits(two_servers[1])
        got = b.get(f"/v1/resources/{rid}")
        assert (got.json()["version"], got.json()["capacity"]) == (2, 2), got.text
        assert resource_hits(two_servers[1]) == hits + 1
        second = b.post("/v1/reservations", json=slot)
        assert second.status_code == 201, f"B refused with a stale capacity: {second.text}"

        # Control: the same change in SQL only (no cache write). B keeps serving the cached
        # version, and refuses from the map with the stale capacity, until the TTL (3 s).
        rid = a.post("/v1/resources", json={"name": "behind"}).json()["id"]
        slot["resource_id"] = rid
        assert b.post("/v1/reservations", json=slot).status_code == 201
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE resource SET capacity = 2, version = version + 1 WHERE id = %s", (rid,)
            )
        changed_at = time.monotonic()
        got = b.get(f"/v1/resources/{rid}")
        assert (got.json()["version"], got.json()["capacity"]) == (1, 1), "cache did not answer"
        assert source(b.post("/v1/reservations", json=slot)) == SOURCE
        while (
            time.monotonic() - changed_at < 6
            and b.get(f"/v1/resources/{rid}").json()["version"] == 1
        ):
            time.sleep(0.2)
        assert b.get(f"/v1/resources/{rid}").json()["capacity"] == 2, "TTL did not end it"
        assert b.post("/v1/reservations", json=slot).status_code == 201


# --------------------------------------------------------------------------------------------
# Redis restarted under hot-slot traffic


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


class HotSlot:
    """Threads hammering one taken range, and threads booking free ranges of their own."""

    def __init__(self, server: LiveServer, token: str, rid: str, taken: dict[str, Any]):
        self.server, self.token, self.rid, self.taken = server, token, rid, taken
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.codes: Counter[tuple[str, int, str | None]] = Counter()
        self.created: list[str] = []
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._hot) for _ in range(6)]
        self.threads += [threading.Thread(target=self._free, args=(i,)) for i in range(2)]

    def __enter__(self) -> HotSlot:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _post(self, client: httpx.Client, kind: str, body: dict[str, Any]) -> None:
        try:
            r = client.post("/v1/reservations", json=body)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors.append(repr(exc))
            return
        src = r.json().get("source") if r.status_code == 409 else None
        with self.lock:
            self.codes[(kind, r.status_code, src)] += 1
            if r.status_code == 201:
                self.created.append(r.json()["id"])

    def _hot(self) -> None:
        with api(self.server, self.token) as client:
            while not self.stop.is_set():
                self._post(client, "hot", self.taken)

    def _free(self, thread: int) -> None:
        with api(self.server, self.token) as client:
            n = 0
            while not self.stop.is_set():
                day, hour = divmod(n, 20)
                n += 1
                start = f"2035-{thread + 1:02d}-{day + 1:02d}T{hour:02d}:00:00Z"
                end = f"2035-{thread + 1:02d}-{day + 1:02d}T{hour:02d}:30:00Z"
                self._post(client, "free", {"resource_id": self.rid, "start": start, "end": end})


@pytest.mark.slow
def test_redis_restart_under_hot_slot_traffic(
    database_url: str, private_redis: PrivateRedis, app_client: TestClient
) -> None:
    server = start_live_server(
        database_url,
        REDIS_URL=private_redis.url,
        RESERVATIONS_REDIS_KEY_PREFIX=f"hot-{secrets.token_hex(3)}:",
    )
    try:
        token = new_tenant(app_client).tokens["admin"]
        with api(server, token) as c:
            rid = c.post("/v1/resources", json={"name": "hot"}).json()["id"]
            taken = {
                "resource_id": rid,
                "start": "2035-12-01T10:00:00Z",
                "end": "2035-12-01T11:00:00Z",
            }
            first = c.post("/v1/reservations", json=taken)
            assert first.status_code == 201, first.text
            assert source(c.post("/v1/reservations", json=taken)) == SOURCE

        with HotSlot(server, token, rid, taken) as traffic:
            time.sleep(1.0)
            private_redis.kill()
            time.sleep(1.0)
            private_redis.start()
            time.sleep(2.0)

        codes = dict(traffic.codes)
        print(f"\nhot-slot traffic across a Redis restart: {codes}")
        assert not traffic.errors, traffic.errors[:5]
        assert {code for _, code, _ in codes} <= {201, 409}, codes
        assert not any(kind == "hot" and code == 201 for kind, code, _ in codes), codes
        assert not any(kind == "free" and code != 201 for kind, code, _ in codes), codes
        # Both paths answered: the map before the outage, PostgreSQL during it.
        assert codes.get(("hot", 409, SOURCE), 0) > 10, codes
        assert codes.get(("hot", 409, None), 0) > 10, codes
        assert_database_consistent(database_url, [rid], [first.json()["id"], *traffic.created])

        # Warm again: after the guard's cool-down the map answers the hot slot once more.
        time.sleep(1.1)
        with api(server, token) as c:
            c.post("/v1/reservations", json=taken)  # may be the database's (read-repair)
            refused = scrape(server, "availability_map_decisions_total", decision="refuse")
            sources = [source(c.post("/v1/reservations", json=taken)) for _ in range(20)]
        assert sources == [SOURCE] * 20, sources
        after = scrape(server, "availability_map_decisions_total", decision="refuse")
        assert after == refused + 20
    finally:
        stop_live_server(server)
