"""API keys are revoked, never deleted (migration 0011): the rows that name the key they were
written with (a reservation's `created_by`, an Idempotency-Key's record) rely on that instead
of a foreign key, which cost every concurrent create a MultiXact on the key's row."""

from __future__ import annotations

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors as pg_errors

from reservations.tenancy import keys
from tests.support.api import Tenant


def _key_id(database_url: str, token: str) -> str:
    prefix = keys.parse(token)[0]  # type: ignore[index]
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id FROM api_key WHERE prefix = %s", (prefix,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(
    "statement",
    ["DELETE FROM api_key WHERE id = %s", "TRUNCATE api_key CASCADE"],
    ids=["delete", "truncate"],
)
def test_a_key_cannot_be_deleted(
    app_client: TestClient, tenant: Tenant, database_url: str, statement: str
) -> None:
    key_id = _key_id(database_url, tenant.admin.token)
    with psycopg.connect(database_url) as conn, pytest.raises(pg_errors.RestrictViolation):
        conn.execute(statement, (key_id,) if "%s" in statement else None)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM api_key WHERE id = %s", (key_id,)).fetchone()
    assert row == (1,)
