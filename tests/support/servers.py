"""The servers a test session uses and the settings of an app on them: PostgreSQL (PgServer
makes and drops databases on it), Redis/Valkey (a key prefix per worker), and whether every
connection goes through PgBouncer (TEST_PGBOUNCER=1). tests/conftest.py's fixtures start them.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg
from fastapi.testclient import TestClient

from reservations.config import Settings
from reservations.kit import migrate

# TEST_PGBOUNCER=1: every connection of the suite goes through a real PgBouncer in
# transaction mode with fewer server connections than the tests' concurrency.
THROUGH_PGBOUNCER = bool(os.environ.get("TEST_PGBOUNCER"))
if THROUGH_PGBOUNCER:
    os.environ.setdefault("RESERVATIONS_DB_POOLER", "transaction")


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


@dataclass
class RedisServer:
    url: str
    prefix: str

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.url, "RESERVATIONS_REDIS_KEY_PREFIX": self.prefix}


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
