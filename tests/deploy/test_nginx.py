"""Two API processes behind a real nginx configured by deploy/nginx.conf.

Shows that both instances take traffic, that X-Request-ID goes from the client (or nginx)
to the API and back, and that SIGKILLing one instance while clients book loses no
acknowledged write and double-books nothing: the only failures are creates that were in
flight to the dead instance and reads cut off mid-answer (nginx retries the others), and a
client that retries its failed requests, creates with the same Idempotency-Key, ends with
exactly the rows it was told about."""

from __future__ import annotations

import asyncio
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.deploy.nginx import Nginx, nginx_binary, start_nginx
from tests.support.live import (
    LiveServer,
    admin_token,
    free_port,
    metric,
    start_live_server,
    stop_live_server,
)
from tests.support.race import overlapping_pairs
from tests.support.servers import RedisServer

pytestmark = pytest.mark.slow

HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclass
class Cluster:
    apis: list[LiveServer]
    nginx: Nginx
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def cluster(database_url: str, redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    nginx_binary()  # skip (or fail in CI) before starting anything
    env = {
        **redis_server.env(),
        # Two instances on one test server (max_connections 100, shared with another xdist
        # worker): small warm pools.
        "RESERVATIONS_DB_POOL_MIN": "8",
        "RESERVATIONS_DB_POOL_MAX": "8",
    }
    apis: list[LiveServer] = []
    nginx = None
    try:
        for _ in range(2):
            apis.append(start_live_server(database_url, **env))
        ports = [int(api.url.rsplit(":", 1)[1]) for api in apis]
        nginx = start_nginx(listen_port=free_port(), upstream_ports=ports, tmp=tmp_path / "nginx")
        yield Cluster(apis=apis, nginx=nginx, token=admin_token(database_url))
    finally:
        if nginx is not None:
            nginx.stop()
        for api in apis:
            stop_live_server(api)


def served(api: LiveServer, route: str, method: str = "GET", status: str = "200") -> float:
    text = httpx.get(api.url + "/metrics", timeout=5).text
    return metric(text, "http_requests_total", route=route, method=method, status=status)


def test_both_instances_serve_and_the_request_id_round_trips(cluster: Cluster) -> None:
    route = "/v1/resources/{resource_id}"
    with httpx.Client(base_url=cluster.nginx.url, headers=cluster.auth, timeout=10) as client:
        r = client.post("/v1/resources", json={"name": "behind nginx"})
        assert r.status_code == 201, r.text
        resource = r.json()["id"]
        before = [served(api, route) for api in cluster.apis]
        for _ in range(200):
            assert client.get(f"/v1/resources/{resource}").status_code == 200
        after = [served(api, route) for api in cluster.apis]
        per_instance = [a - b for a, b in zip(after, before, strict=True)]
        print(f"GETs through nginx per instance: {per_instance}")
        assert sum(per_instance) == 200
        # Round robin: about 100 each; a lopsided split means one instance was not used.
        assert min(per_instance) >= 60, per_instance

        # The client's id reaches the API, which echoes it; nginx adds nothing: one header.
        r = client.get(f"/v1/resources/{resource}", headers={"X-Request-ID": "client-42.a:b"})
        assert r.headers.get_list("x-request-id") == ["client-42.a:b"]
        # No id: nginx makes one; the API echoes the id it was sent, and it is the one in
        # nginx's access log, so it travelled nginx -> API -> client.
        r = client.get(f"/v1/resources/{resource}")
        (generated,) = r.headers.get_list("x-request-id")
        assert HEX32.fullmatch(generated), generated
        # An id that could smuggle anything into a log line is replaced, by nginx and by the
        # API alike.
        r = client.get(f"/v1/resources/{resource}", headers={"X-Request-ID": "a b\tc"})
        (replaced,) = r.headers.get_list("x-request-id")
        assert HEX32.fullmatch(replaced)
        assert replaced != generated

    direct = httpx.get(cluster.apis[0].url + "/healthz", headers={"X-Request-ID": "direct-1"})
    assert direct.headers.get_list("x-request-id") == ["direct-1"]
    direct = httpx.get(cluster.apis[0].url + "/healthz", headers={"X-Request-ID": "x" * 129})
    assert HEX32.fullmatch(direct.headers["x-request-id"])

    cluster.nginx.stop()  # flushes the access log
    log = "\n".join(cluster.nginx.access_log())
    assert f"rid={generated} " in log
    assert "rid=client-42.a:b " in log
    assert f"rid={replaced} " in log


@dataclass
class Outcome:
    method: str
    path: str
    started: float
    ended: float
    status: int | None  # None: transport error
    error: str = ""
    body: dict[str, Any] | None = None
    key: str | None = None
    reservation: str | None = None
    request_ids: list[str] | None = None


CLIENTS = 24
# The kill comes after this many answered requests and the traffic stops this many after the
# victim is dead (counts, not seconds: a slow CI run must see as much traffic on each side).
BEFORE_KILL = 80
AFTER_DEATH = 80
MAX_SECONDS = 30.0


async def _client(
    i: int,
    url: str,
    auth: dict[str, str],
    resources: list[str],
    stop: asyncio.Event,
    out: list[Outcome],
) -> None:
    rng = random.Random(i)
    mine: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as client:
        while not stop.is_set():
            body: dict[str, Any] | None = None
            key = None
            if mine and rng.random() < 0.3:
                method, path = "GET", f"/v1/reservations/{rng.choice(mine)}"
            elif rng.random() < 0.1:
                method, path = "GET", f"/v1/resources/{rng.choice(resources)}"
            else:
                # A small grid of hour-long ranges on half-hour offsets: early creates mostly
                # find free ranges, later ones mostly conflict, some only partly.
                start = f"2032-05-{rng.randint(3, 4):02d}T{rng.randint(8, 15):02d}:"
                start += rng.choice(("00", "30"))
                end_hour = int(start[11:13]) + 1
                method, path = "POST", "/v1/reservations"
                body = {
                    "resource_id": rng.choice(resources),
                    "start": start + ":00Z",
                    "end": f"{start[:11]}{end_hour:02d}{start[13:]}:00Z",
                }
                key = uuid.uuid4().hex
            started = time.monotonic()
            try:
                r = await client.request(
                    method, path, json=body, headers={"Idempotency-Key": key} if key else None
                )
            except httpx.TransportError as exc:
                out.append(
                    Outcome(
                        method, path, started, time.monotonic(), None, repr(exc), body=body, key=key
                    )
                )
                continue
            o = Outcome(method, path, started, time.monotonic(), r.status_code, body=body, key=key)
            o.request_ids = r.headers.get_list("x-request-id")
            if method == "POST" and r.status_code == 201:
                o.reservation = r.json()["id"]
                mine.append(o.reservation)
            out.append(o)


async def _traffic_with_a_kill(
    cluster: Cluster, resources: list[str], victim: LiveServer
) -> tuple[list[Outcome], float, float, float]:
    out: list[Outcome] = []
    t0 = time.monotonic()
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(_client(i, cluster.nginx.url, cluster.auth, resources, stop, out))
        for i in range(CLIENTS)
    ]
    # Polling counts in a list the client tasks append to; an Event per count would be noise.
    while len(out) < BEFORE_KILL and time.monotonic() - t0 < MAX_SECONDS:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    killed_at = time.monotonic()
    victim.process.kill()  # SIGKILL: no drain, no goodbye
    await asyncio.to_thread(victim.process.wait)
    dead_at = time.monotonic()
    while (  # noqa: ASYNC110
        sum(o.started > dead_at for o in out) < AFTER_DEATH
        and time.monotonic() - t0 < 2 * MAX_SECONDS
    ):
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*clients)
    return out, t0, killed_at, dead_at


def _retry(client: httpx.Client, o: Outcome) -> httpx.Response:
    """The client's part of the contract: retry a failed create with the same key and body."""
    assert o.body is not None
    assert o.key is not None
    for _ in range(20):
        r = client.post("/v1/reservations", json=o.body, headers={"Idempotency-Key": o.key})
        if r.status_code == 409 and r.json()["type"].endswith("/idempotency-key-in-use"):
            time.sleep(0.25)  # the dead instance's transaction is still being rolled back
            continue
        return r
    raise AssertionError(f"key {o.key} stayed in use")


def test_killing_an_instance_mid_traffic_loses_no_acknowledged_write(
    cluster: Cluster, database_url: str
) -> None:
    with httpx.Client(base_url=cluster.nginx.url, headers=cluster.auth, timeout=30) as client:
        resources = []
        for n in range(12):
            r = client.post("/v1/resources", json={"name": f"court {n}"})
            assert r.status_code == 201, r.text
            resources.append(r.json()["id"])

        victim = cluster.apis[1]
        out, t0, killed_at, dead_at = asyncio.run(_traffic_with_a_kill(cluster, resources, victim))

        statuses = Counter((o.method, o.status) for o in out)
        failed = [o for o in out if o.status is None or o.status >= 500]
        print(
            f"{len(out)} requests, {statuses}; SIGKILL at {killed_at - t0:.2f} s, "
            f"dead {1000 * (dead_at - killed_at):.0f} ms later; failed: {len(failed)}"
        )
        before_kill = sum(o.ended < killed_at for o in out)
        after_kill = sum(o.started > dead_at for o in out)
        assert before_kill > 50, (before_kill, after_kill)
        assert after_kill > 50, (before_kill, after_kill)

        # Reads never get an error status: nginx retries on the survivor those that hit the
        # dead instance. The one read failure it cannot mend is an answer cut off mid-way:
        # uvicorn writes the headers and the body separately, and once nginx has passed the
        # headers on it can only close the client's connection (a transport error, seen about
        # once in 45 runs). Such a read was in flight at the kill, and the client's retry of
        # it (a GET is safe to repeat) succeeds.
        cut_off = [o for o in out if o.method == "GET" and o.status != 200]
        assert all(o.status is None and o.started < dead_at for o in cut_off), [
            (round(o.started - dead_at, 3), o.status, o.error) for o in cut_off
        ]
        for o in cut_off:
            assert client.get(o.path).status_code == 200
        assert {s for (m, s) in statuses if m == "POST"} <= {201, 409, 502, None}, statuses
        assert statuses["POST", 201] > 0, statuses  # free ranges
        assert statuses["POST", 409] > 0, statuses  # conflicting ranges
        # The only failures are creates on their way to the instance as it died: in flight, or
        # sent just after on one of nginx's idle keepalive connections to it (a POST already
        # sent is not retried). Within a second of the death nginx routes around it.
        failed = [o for o in failed if o.method == "POST"]  # the reads are checked above
        assert all(o.started < dead_at + 1.0 for o in failed), [
            (round(o.started - dead_at, 3), o.status, o.error) for o in failed
        ]
        assert len(failed) + len(cut_off) <= CLIENTS
        # nginx's own 502 page carries the request id as well.
        assert all(o.request_ids and len(o.request_ids) == 1 for o in failed if o.status)

        # The client retries its failed creates with the same Idempotency-Key: a create that
        # committed before the kill is replayed, one that did not runs again (and may now
        # find the range taken).
        acknowledged = {o.reservation for o in out if o.reservation}
        retried = Counter()
        for o in failed:
            r = _retry(client, o)
            assert r.status_code in (201, 409), r.text
            replayed = r.headers.get("idempotent-replayed") == "true"
            retried[r.status_code, replayed] += 1
            if r.status_code == 201:
                acknowledged.add(r.json()["id"])
        print(f"retries of the failed creates (status, replayed): {dict(retried)}")

    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT id::text FROM reservation WHERE resource_id = ANY(%s::uuid[])"
            " AND status IN ('held', 'confirmed')",
            (resources,),
        ).fetchall()
    in_database = {row[0] for row in rows}
    # No acknowledged write lost, and (after the retries) nothing in the database that no
    # client was told about.
    assert acknowledged - in_database == set()
    assert in_database - acknowledged == set()
    assert overlapping_pairs(database_url) == 0

    # Both instances took creates before the kill; afterwards only the survivor answered.
    cluster.nginx.stop()
    ports = [api.url.rsplit(":", 1)[1] for api in cluster.apis]
    answered = Counter()
    for line in cluster.nginx.access_log():
        found = re.search(r'"POST /v1/reservations .* upstream=(.*) upstream_status=', line)
        if found:
            last = found.group(1).split(", ")[-1]  # the upstream that answered
            answered[last.rsplit(":", 1)[-1]] += 1
    print(f"creates answered per instance (nginx access log): {dict(answered)}")
    assert answered[ports[0]] > 0, answered
    assert answered[ports[1]] > 0, answered
