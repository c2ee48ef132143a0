"""The races' fixtures: a live server whose guard is disabled, for the controls."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.servers import PgServer


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
