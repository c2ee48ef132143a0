"""SIGTERM to the production command (`reservations serve --no-worker --no-migrate`) while
requests are in flight: they complete with their normal status, the port refuses new
connections at once, and the process exits within the drain bound.

The requests are held in flight deterministically: the test takes `LOCK TABLE reservation IN
EXCLUSIVE MODE` (reads pass, inserts wait), sends a burst of creates, waits until PostgreSQL
shows every one of them waiting for a lock, and only then sends SIGTERM. It releases the lock
after checking that new connections are refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.live import admin_token, free_port
from tests.support.race import _http, overlapping_pairs
from tests.support.servers import PgServer, RedisServer

pytestmark = pytest.mark.slow

FREE = 8  # creates on eight resources of their own: all 201
RIVALS = 8  # overlapping creates on one more resource: one 201, seven 409


@pytest.fixture
def fresh_database(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database("rsv_graceful")
    yield url
    pg_server.drop_database(url)


def serve(database_url: str, redis: RedisServer, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        **redis.env(),
        "RESERVATIONS_DB_POOL_MIN": "4",
        "RESERVATIONS_DB_POOL_MAX": str(FREE + RIVALS + 2),
    }
    command = [sys.executable, "-m", "reservations", "serve", "--no-worker", "--no-migrate"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    process.kill()
    raise AssertionError("serve did not become ready in 30 s:\n" + log.read_text())


def waiting_for_locks(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def refuses_connections(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


Conns = list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]


async def send_all(port: int, requests: list[bytes]) -> Conns:
    # Keep the writers: a collected StreamWriter closes its connection.
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in requests]
    for (_, writer), raw in zip(conns, requests, strict=True):
        writer.write(raw)
        await writer.drain()
    return conns


async def statuses(conns: Conns) -> list[int]:
    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        response = await asyncio.wait_for(reader.read(), timeout=30)
        writer.close()
        return int(response.split(b" ", 2)[1]) if response else -1  # -1: closed, no reply

    return list(await asyncio.gather(*(one(r, w) for r, w in conns)))


def test_sigterm_drains_in_flight_requests_then_exits(
    fresh_database: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    log = tmp_path / "serve.log"
    process, url = serve(fresh_database, redis_server, log)
    port = int(url.rsplit(":", 1)[1])
    try:
        token = admin_token(fresh_database)
        auth = {"Authorization": f"Bearer {token}"}
        resources = [
            httpx.post(url + "/v1/resources", json={"name": f"r{i}"}, headers=auth).json()["id"]
            for i in range(FREE + 1)
        ]
        bodies = [
            {"resource_id": r, "start": "2033-01-10T10:00:00Z", "end": "2033-01-10T11:00:00Z"}
            for r in resources[:FREE]
        ] + [
            {
                "resource_id": resources[FREE],
                "start": f"2033-01-10T10:{5 * i:02d}:00Z",
                "end": f"2033-01-10T11:{5 * i:02d}:00Z",
            }
            for i in range(RIVALS)
        ]
        requests = [_http("POST", "/v1/reservations", token, body) for body in bodies]

        loop = asyncio.new_event_loop()
        with psycopg.connect(fresh_database) as locker:
            locker.execute("LOCK TABLE reservation IN EXCLUSIVE MODE")
            conns = loop.run_until_complete(send_all(port, requests))
            with psycopg.connect(fresh_database, autocommit=True) as watcher:
                deadline = time.monotonic() + 10
                while waiting_for_locks(watcher) < len(requests):
                    assert time.monotonic() < deadline, "the creates never reached the lock"
                    time.sleep(0.02)

            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            while not refuses_connections(port):
                assert time.monotonic() - signalled < 2, "still accepting 2 s after SIGTERM"
                time.sleep(0.02)
            refused_after = time.monotonic() - signalled
            assert process.poll() is None, "exited with requests in flight"
            time.sleep(0.5)  # draining: the creates still wait for the lock
            assert process.poll() is None
            assert refuses_connections(port)
        # The lock is released (the transaction ended): the creates go on.
        codes = loop.run_until_complete(statuses(conns))
        loop.close()
        code = process.wait(timeout=15)
        exited_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    print(
        f"in flight at SIGTERM: {len(requests)}; refused new connections after "
        f"{1000 * refused_after:.0f} ms; statuses {sorted(codes)}; exit code {code} after "
        f"{exited_after:.2f} s"
    )
    assert sorted(codes) == [201] * (FREE + 1) + [409] * (RIVALS - 1), codes
    with psycopg.connect(fresh_database) as conn:
        row = conn.execute(
            "SELECT count(*) FROM reservation WHERE status IN ('held', 'confirmed')"
        ).fetchone()
    assert row is not None
    assert row[0] == FREE + 1
    assert overlapping_pairs(fresh_database) == 0
    # uvicorn re-raises SIGTERM after draining; `serve` (cli._exit_on_signal) turns it into
    # SystemExit(0), so the embedded servers, if any, are stopped on the way out and the stop
    # counts as a success. A crash or a kill would be anything else.
    assert code == 0, (code, log.read_text())
    assert exited_after < 10, exited_after
    output = log.read_text()
    assert "Waiting for connections to close" in output, output  # uvicorn drained them
    assert "Finished server process" in output, output
