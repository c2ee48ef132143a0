"""A create that meets an archive: the INSERT takes the resource's lock in its trigger
(migration 0011), after the lock-free pre-check has read the resource as live. The trigger's
own read of the resource, after the lock, refuses the row; the create answers 404 and leaves
nothing live on the archived resource.

Control: with the trigger as it was before (no check of `archived_at` after the lock), the
same interleaving books the archived resource: the check, not timing, is what holds."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest

import reservations
from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.race import _resource, create_key, live_rows
from tests.support.servers import PgServer

MIGRATION = (
    Path(reservations.__file__).parent / "migrations" / "versions" / "0011_insert_without_lock.py"
)


def _waiting_for_a_lock(database_url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the create never waited for the resource's lock")


def _create_during_archive(server: LiveServer) -> tuple[int, int]:
    """Archive the resource in an open transaction holding its lock, as the archive does;
    send a create, wait until it waits for the lock, commit the archive. Returns the create's
    status and the live rows left on the resource."""
    token = create_key(server.database_url)
    rid = asyncio.run(_resource(server, token, name="archived midway"))
    with psycopg.connect(server.database_url) as archiver:
        archiver.execute("SELECT pg_advisory_xact_lock(resource_lock_key(%s))", (rid,))
        archiver.execute("UPDATE resource SET archived_at = now() WHERE id = %s", (rid,))
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(
                httpx.post,
                f"{server.url}/v1/reservations",
                json={
                    "resource_id": rid,
                    "start": "2033-03-01T10:00:00Z",
                    "end": "2033-03-01T11:00:00Z",
                },
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            _waiting_for_a_lock(server.database_url)
            archiver.commit()
            status = sent.result().status_code
    return status, live_rows(server.database_url, rid)


@pytest.mark.slow
def test_a_create_that_waited_for_an_archive_is_404_and_books_nothing(
    live_server: LiveServer,
) -> None:
    assert _create_during_archive(live_server) == (404, 0)


@pytest.fixture
def unchecked_archive_server(pg_server: PgServer) -> Iterator[LiveServer]:
    """A server whose trigger does not read `archived_at` after the lock (before 0011)."""
    spec = importlib.util.spec_from_file_location("migration_0011", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    url = pg_server.create_database("rsv_control_archive")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(migration.BEFORE_0011)
    server = start_live_server(url)
    yield server
    stop_live_server(server)
    pg_server.drop_database(url)


@pytest.mark.slow
def test_control_without_the_check_the_archived_resource_is_booked(
    unchecked_archive_server: LiveServer,
) -> None:
    assert _create_during_archive(unchecked_archive_server) == (201, 1)
