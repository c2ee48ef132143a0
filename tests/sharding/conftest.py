"""Three real PostgreSQL clusters (the embedded server, each in its own directory, with
max_prepared_transactions set the way `serve` sets it), a catalog database, and three real
Valkey nodes for Redlock, started once per test session (per xdist worker)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.kit import migrate
from reservations.kit.clock import Clock
from reservations.kit.embedded import EmbeddedPostgres
from reservations.kit.embedded_valkey import EmbeddedValkey
from tests.support.api import Tenant, new_tenant
from tests.support.sharding import CLUSTERS, Topology, _database

# These tests start their own servers (embedded PostgreSQL 18 and Valkey) whatever
# TEST_DATABASE_URL says; CI's second pass (PostgreSQL 15, Redis 7, PgBouncer) would only
# repeat the first pass's run of them.
SECOND_PASS = bool(os.environ.get("TEST_DATABASE_URL"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not SECOND_PASS:
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(
        reason="sharding tests run in the first pass only: they start their own clusters"
    )
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def topology() -> Iterator[Topology]:
    tmp = Path(tempfile.mkdtemp(prefix="rsv-shards-"))
    servers = [EmbeddedPostgres(tmp / name) for name in CLUSTERS]
    valkeys = [EmbeddedValkey(tmp / f"vk{i}") for i in range(3)]
    try:
        urls = {name: pg.start() for name, pg in zip(CLUSTERS, servers, strict=True)}
        admin = _database(urls["a"], "postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "catalog"')
        catalog = _database(urls["a"], "catalog")
        for url in [catalog, *urls.values()]:
            migrate.upgrade(url)
        redlock = [vk.start() for vk in valkeys]
        yield Topology(catalog=catalog, clusters=urls, redlock=redlock, cache=redlock[0])
    finally:
        for vk in valkeys:
            vk.stop()
        for pg in servers:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def sharded_client(topology: Topology) -> Iterator[TestClient]:
    app = create_app(topology.settings(shard_map_refresh_seconds=1), Clock())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def tenant(sharded_client: TestClient) -> Tenant:
    return new_tenant(sharded_client)
