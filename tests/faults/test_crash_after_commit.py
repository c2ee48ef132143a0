"""Idempotency when the API process dies between a write's commit and its response.

`RESERVATIONS_FAULT_CRASH_AFTER_COMMIT` (src/reservations/kit/faults.py, test-only) makes the
server SIGKILL itself as a committed write's 2xx is about to leave. The client hears nothing (a
transport error), although the effect is in the database. The contract under test: a retry
with the same Idempotency-Key and body, once a server is back, receives the original result
(`Idempotent-Replayed: true`, the same reservation), and no key ever makes two rows.

The trigger itself (which responses it fires on) is unit-tested with a fake kill first."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.types import Message, Receive, Scope, Send

from reservations.config import Settings
from reservations.kit.faults import CrashAfterCommit, CrashAfterCommitMiddleware
from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.race import create_key
from tests.support.servers import PgServer, RedisServer

# -- the trigger, without dying ------------------------------------------------------------


def _app(status: int, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def _run(middleware: CrashAfterCommitMiddleware, method: str) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/v1/reservations", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return sent


class Killed(Exception):
    pass


def _kill() -> None:
    raise Killed


@pytest.mark.parametrize(
    ("method", "status", "headers", "fires"),
    [
        ("POST", 201, [], True),
        ("PATCH", 200, [], True),
        ("DELETE", 204, [], True),
        ("GET", 200, [], False),  # reads commit nothing
        ("POST", 409, [], False),  # a refusal committed nothing
        ("POST", 503, [], False),
        ("POST", 201, [(b"idempotent-replayed", b"true")], False),  # a replay neither
    ],
)
def test_the_trigger_fires_only_on_committed_writes(
    method: str, status: int, headers: list[tuple[bytes, bytes]], fires: bool
) -> None:
    middleware = CrashAfterCommitMiddleware(
        _app(status, headers), CrashAfterCommit(probability=1.0), kill=_kill
    )
    if fires:
        with pytest.raises(Killed):
            _run(middleware, method)
    else:
        sent = _run(middleware, method)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


def test_once_fires_once_and_a_probability_is_drawn_per_response() -> None:
    once_fault, rare_fault = CrashAfterCommit.parse("once"), CrashAfterCommit.parse("0.1")
    assert once_fault is not None
    assert rare_fault is not None
    once = CrashAfterCommitMiddleware(_app(201), once_fault, kill=lambda: None)
    for _ in range(3):
        _run(once, "POST")
    assert once.fired == 1
    draws = iter([0.5, 0.01, 0.2, 0.09])
    rare = CrashAfterCommitMiddleware(
        _app(201),
        rare_fault,
        kill=lambda: None,
        draw=lambda: next(draws),
    )
    for _ in range(4):
        _run(rare, "POST")
    assert rare.fired == 2


@pytest.mark.parametrize("value", ["", "off", "0", None])
def test_unset_or_off_means_no_fault(value: str | None) -> None:
    assert CrashAfterCommit.parse(value) is None


@pytest.mark.parametrize("value", ["sometimes", "1.5", "-0.1", "nan"])
def test_a_bad_value_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="once"):
        CrashAfterCommit.parse(value)
    with pytest.raises(ValueError, match="fault_crash_after_commit"):
        Settings(database_url="postgresql://x@localhost/x", fault_crash_after_commit=value)


def test_settings_default_is_off() -> None:
    assert Settings(database_url="postgresql://x@localhost/x").fault_crash_after_commit is None


# -- a real server that dies after commits ---------------------------------------------------

ARMED = {"RESERVATIONS_FAULT_CRASH_AFTER_COMMIT": "always"}
SMALL_POOL = {"RESERVATIONS_DB_POOL_MIN": "2", "RESERVATIONS_DB_POOL_MAX": "8"}


@pytest.fixture
def crash_database(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("rsv_crash")
    yield url
    pg_server.drop_database(url)


class Crashing:
    """One server process at a time on one database, restarted after each death."""

    def __init__(self, database_url: str, redis: RedisServer, **env: str) -> None:
        self.database_url = database_url
        self.env = {**redis.env(), **SMALL_POOL, **env}
        self.server: LiveServer | None = None
        self.deaths = 0

    def up(self) -> LiveServer:
        if self.server is None or self.server.process.poll() is not None:
            if self.server is not None:
                assert self.server.process.returncode == -9, self.server.process.returncode
                self.deaths += 1
            self.server = start_live_server(self.database_url, **self.env)
        return self.server

    def wait_dead(self) -> None:
        assert self.server is not None
        assert self.server.process.wait(10) == -9  # SIGKILL: the fault, not a clean exit

    def close(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            stop_live_server(self.server)


def rows_per_key(database_url: str) -> dict[str, list[tuple[str, str, int]]]:
    with psycopg.connect(database_url) as conn:
        found = conn.execute(
            "SELECT metadata->>'k', id::text, status, version FROM reservation"
            " WHERE metadata ? 'k' ORDER BY created_at"
        ).fetchall()
    out: dict[str, list[tuple[str, str, int]]] = {}
    for key, rid, status, version in found:
        out.setdefault(key, []).append((rid, status, version))
    return out


def _post(server: LiveServer, token: str, path: str, key: str, body: Any) -> httpx.Response:
    return httpx.post(
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
        timeout=15,
    )


@pytest.mark.slow
def test_a_write_that_crashed_the_server_is_replayed_after_restart(
    crash_database: str, redis_server: RedisServer
) -> None:
    token = create_key(crash_database)
    auth = {"Authorization": f"Bearer {token}"}
    setup = start_live_server(crash_database, **redis_server.env(), **SMALL_POOL)
    try:
        unit = httpx.post(setup.url + "/v1/resources", json={"name": "u"}, headers=auth).json()
        pool = httpx.post(
            setup.url + "/v1/resources", json={"name": "p", "capacity": 3}, headers=auth
        ).json()
    finally:
        stop_live_server(setup)

    crashing = Crashing(crash_database, redis_server, **ARMED)
    try:
        # 1. One create at a time: no answer, the process dies; after a restart the retry
        # gets the original 201, replayed, naming the row the crash left behind.
        for hour in (9, 11):
            key = uuid.uuid4().hex
            body = {
                "resource_id": unit["id"],
                "start": f"2033-05-02T{hour:02d}:00:00Z",
                "end": f"2033-05-02T{hour + 1:02d}:00:00Z",
                "metadata": {"k": key},
            }
            server = crashing.up()
            with pytest.raises(httpx.TransportError):
                _post(server, token, "/v1/reservations", key, body)
            crashing.wait_dead()
            ((rid, status, _),) = rows_per_key(crash_database)[key]  # committed, exactly once
            assert status == "confirmed"
            r = _post(crashing.up(), token, "/v1/reservations", key, body)
            assert r.status_code == 201, r.text
            assert r.headers["idempotent-replayed"] == "true"
            assert r.json()["id"] == rid
            assert r.headers["location"] == f"/v1/reservations/{rid}"
            # The committed row is really there: the same range with a new key is refused.
            other = _post(crashing.up(), token, "/v1/reservations", uuid.uuid4().hex, body)
            assert other.status_code == 409, other.text

        # 2. A confirm of a hold, crashed after its commit, replays its 200.
        key = uuid.uuid4().hex
        held = {
            "resource_id": unit["id"],
            "start": "2033-05-03T09:00:00Z",
            "end": "2033-05-03T10:00:00Z",
            "hold_seconds": 600,
            "metadata": {"k": key},
        }
        with pytest.raises(httpx.TransportError):
            _post(crashing.up(), token, "/v1/reservations", key, held)
        crashing.wait_dead()
        rid = _post(crashing.up(), token, "/v1/reservations", key, held).json()["id"]
        confirm_key = uuid.uuid4().hex
        with pytest.raises(httpx.TransportError):
            _post(crashing.up(), token, f"/v1/reservations/{rid}/confirm", confirm_key, None)
        crashing.wait_dead()
        r = _post(crashing.up(), token, f"/v1/reservations/{rid}/confirm", confirm_key, None)
        assert r.status_code == 200, r.text
        assert r.headers["idempotent-replayed"] == "true"
        assert (r.json()["status"], r.json()["version"]) == ("confirmed", 2)
        assert rows_per_key(crash_database)[key] == [(rid, "confirmed", 2)]

        # 3. Concurrent creates when the process dies: some had committed, some had not.
        # Each client retries with its key until it gets a definite answer; a retry that
        # runs for the first time commits and crashes the server again, and its own retry
        # then replays. Every key ends with exactly one row and the answer naming it.
        bodies = {
            uuid.uuid4().hex: {
                "resource_id": pool["id"],
                "start": f"2033-05-04T{8 + i:02d}:00:00Z",
                "end": f"2033-05-04T{9 + i:02d}:00:00Z",
                "quantity": 1 + i % 3,
                "metadata": {},
            }
            for i in range(5)
        }
        for key, body in bodies.items():
            body["metadata"] = {"k": key}

        async def burst(server: LiveServer, keys: list[str]) -> dict[str, httpx.Response | None]:
            async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=15) as c:

                async def one(key: str) -> httpx.Response | None:
                    try:
                        return await c.post(
                            "/v1/reservations", json=bodies[key], headers={"Idempotency-Key": key}
                        )
                    except httpx.TransportError:
                        return None

                results = await asyncio.gather(*(one(k) for k in keys))
            return dict(zip(keys, results, strict=True))

        answers: dict[str, httpx.Response] = {}
        lost_answers = 0
        # Each round settles at least the write that crashed it, unless a key is still "in use"
        # (the dead process's transaction not yet rolled back: seen through PgBouncer, which
        # resets the server connection a moment after the client is gone). Such a round only
        # waits, so the bound counts rounds generously; the assertions below are the contract.
        for _ in range(4 * len(bodies)):
            pending = [k for k in bodies if k not in answers]
            if not pending:
                break
            in_use = False
            for key, response in asyncio.run(burst(crashing.up(), pending)).items():
                if response is None:
                    lost_answers += 1
                    continue
                if response.status_code == 409 and response.json()["type"].endswith(
                    "idempotency-key-in-use"
                ):
                    lost_answers += 1
                    in_use = True
                    continue
                answers[key] = response
            if crashing.server is not None and crashing.server.process.poll() is None:
                if in_use:
                    time.sleep(0.25)
                continue
            crashing.wait_dead()
        assert set(answers) == set(bodies), "some keys never got a definite answer"
        assert lost_answers >= len(bodies)  # the first burst: the process died under all of them
        stored = rows_per_key(crash_database)
        for key, r in answers.items():
            assert r.status_code == 201, r.text
            assert stored[key] == [(r.json()["id"], "confirmed", 1)], (key, stored.get(key))
        replayed = sum(r.headers.get("idempotent-replayed") == "true" for r in answers.values())
        assert replayed == len(bodies)  # with 'always', a fresh run never gets to answer
        duplicates = {k: v for k, v in stored.items() if len(v) != 1}
        assert duplicates == {}
        print(
            f"server deaths: {crashing.deaths}; keys: {len(stored)}; duplicates: 0; "
            f"transport errors before the definite answers: {lost_answers}"
        )
        assert crashing.deaths >= 5
    finally:
        crashing.close()
