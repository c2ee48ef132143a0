"""Migration 0003 converts a populated, unpartitioned reservation table in place (and back),
keeping every row as it was and every guard working. Runs on whichever PostgreSQL the suite
uses: the embedded 18, and 15 in CI's second run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from reservations.kit import migrate
from tests.support.servers import PgServer, _with_database

T0 = datetime(2031, 3, 2, 9, tzinfo=UTC)


@pytest.fixture
def url_at_0002(pg_server: PgServer) -> Iterator[str]:
    name = f"rsv_migrate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(pg_server.admin_url, name)
    migrate.upgrade(url, "0002")
    yield url
    pg_server.drop_database(url)


def _seed(conn: psycopg.Connection[Any]) -> dict[str, uuid.UUID]:
    ids = {name: uuid.uuid4() for name in ("tenant", "key", "room", "hall", "booking")}
    conn.execute("INSERT INTO tenant (id, name) VALUES (%s, 'migrating')", (ids["tenant"],))
    conn.execute(
        "INSERT INTO api_key (id, tenant_id, prefix, secret_hash, role)"
        " VALUES (%s, %s, 'rsv_mig', '\\x00', 'admin')",
        (ids["key"], ids["tenant"]),
    )
    for name, capacity, policy in (("room", 1, '{"buffer_after": "PT15M"}'), ("hall", 5, "{}")):
        conn.execute(
            "INSERT INTO resource (id, tenant_id, name, capacity, timezone, policy,"
            " created_at, updated_at) VALUES (%s, %s, %s, %s, 'Europe/Paris', %s, now(), now())",
            (ids[name], ids["tenant"], name, capacity, policy),
        )
    conn.execute(
        "INSERT INTO booking (id, tenant_id, timezone, mode, created_by, created_at, updated_at)"
        " VALUES (%s, %s, 'UTC', 'all-or-nothing', %s, now(), now())",
        (ids["booking"], ids["tenant"], ids["key"]),
    )
    # 200 unit-resource rows (every status, buffers in `during`, some in the booking) and
    # 100 pooled rows stacked up to the hall's capacity.
    for n in range(200):
        start = T0 + timedelta(hours=2 * n)
        status = ("confirmed", "held", "cancelled", "expired")[n % 4]
        _insert(conn, ids, ids["room"], start, status, booking=n % 10 == 0)
    for n in range(100):
        _insert(conn, ids, ids["hall"], T0 + timedelta(hours=n // 5), "confirmed", quantity=1)
    return ids


def _insert(
    conn: psycopg.Connection[Any],
    ids: dict[str, uuid.UUID],
    resource: uuid.UUID,
    start: datetime,
    status: str,
    *,
    booking: bool = False,
    quantity: int = 1,
    hours: float = 1,
) -> None:
    end = start + timedelta(hours=hours)
    conn.execute(
        "INSERT INTO reservation (id, tenant_id, resource_id, booking_id, start_at, end_at,"
        " during, status, quantity, expires_at, customer, metadata, created_by, created_at,"
        " updated_at) SELECT %(id)s, %(tenant)s, r.id, %(booking)s, %(s)s, %(e)s,"
        " tstzrange(%(s)s, %(e)s + coalesce((r.policy->>'buffer_after')::interval, '0')),"
        " %(status)s, %(q)s, %(expires)s, 'cust', '{\"n\": 1}', %(key)s, now(), now()"
        " FROM resource r WHERE r.id = %(resource)s",
        {
            "id": uuid.uuid4(),
            "tenant": ids["tenant"],
            "booking": ids["booking"] if booking else None,
            "s": start,
            "e": end,
            "status": status,
            "q": quantity,
            "expires": start if status == "held" else None,
            "key": ids["key"],
            "resource": resource,
        },
    )


_ROWS = (
    "SELECT id, tenant_id, resource_id, booking_id, start_at, end_at, during, status, quantity,"
    " expires_at, customer, metadata, version, created_by, created_at, updated_at, pooled"
    " FROM reservation ORDER BY id"
)


def _guards_hold(conn: psycopg.Connection[Any], ids: dict[str, uuid.UUID]) -> None:
    """An overlapping live row on the unit resource and a sixth unit on the hall are both
    refused; a row next to the last one is taken."""
    with pytest.raises(pg_errors.ExclusionViolation), conn.transaction():
        _insert(conn, ids, ids["room"], T0 + timedelta(minutes=30), "confirmed")
    with pytest.raises(pg_errors.ExclusionViolation), conn.transaction():
        _insert(conn, ids, ids["hall"], T0, "confirmed")
    with conn.transaction():
        _insert(conn, ids, ids["room"], T0 + timedelta(hours=1000), "confirmed")


def _kind(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute(
        "SELECT relkind::text FROM pg_class WHERE relname = 'reservation'"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_0003_converts_a_populated_table_in_place_and_back(url_at_0002: str) -> None:
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
        before = conn.execute(_ROWS).fetchall()
        assert len(before) == 300
        assert sum(row[-1] for row in before) == 100  # the hall's rows are pooled
        assert _kind(conn) == "r"

    migrate.upgrade(url_at_0002, "0003")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert _kind(conn) == "p"
        assert conn.execute(_ROWS).fetchall() == before
        parts = conn.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'reservation'::regclass"
        ).fetchone()
        assert parts == (16,)
        # Each resource's rows sit in exactly one partition.
        spread = conn.execute(
            "SELECT resource_id, count(DISTINCT tableoid) FROM reservation GROUP BY 1"
        ).fetchall()
        assert {n for _, n in spread} == {1}
        guards = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'x'"
            " AND conname LIKE 'reservation_p%%_no_overlap'"
        ).fetchone()
        assert guards == (16,)
        _guards_hold(conn, ids)
        after = conn.execute(_ROWS).fetchall()

    migrate.downgrade(url_at_0002, "0002")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert _kind(conn) == "r"
        assert conn.execute(_ROWS).fetchall() == after
        with pytest.raises(pg_errors.ExclusionViolation) as caught, conn.transaction():
            _insert(conn, ids, ids["room"], T0 + timedelta(minutes=30), "confirmed")
        assert caught.value.diag.constraint_name == "reservation_no_overlap"

    migrate.upgrade(url_at_0002)
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute(_ROWS).fetchall() == after


def _longest(conn: psycopg.Connection[Any], ids: dict[str, uuid.UUID]) -> Any:
    row = conn.execute(
        "SELECT longest FROM reservation_span WHERE tenant_id = %s", (ids["tenant"],)
    ).fetchone()
    return row[0] if row else None


def test_0009_keeps_each_tenants_longest_reservation(url_at_0002: str) -> None:
    """The backfill finds the longest row already there; the trigger widens the bound for a
    longer insert or reschedule and leaves it for a shorter one."""
    far = T0 + timedelta(hours=5000)
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)  # one-hour rows
    migrate.upgrade(url_at_0002, "0008")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        _insert(conn, ids, ids["room"], far, "cancelled", hours=50)

    migrate.upgrade(url_at_0002, "0009")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert _longest(conn, ids) == timedelta(hours=50)
        _insert(conn, ids, ids["room"], far + timedelta(hours=100), "confirmed", hours=60.5)
        assert _longest(conn, ids) == timedelta(hours=60, minutes=30)
        _insert(conn, ids, ids["room"], far + timedelta(hours=200), "confirmed", hours=2)
        assert _longest(conn, ids) == timedelta(hours=60, minutes=30)
        conn.execute(
            "UPDATE reservation SET end_at = start_at + interval '70 hours',"
            " during = tstzrange(start_at, start_at + interval '70 hours')"
            " WHERE start_at = %s",
            (far + timedelta(hours=200),),
        )
        assert _longest(conn, ids) == timedelta(hours=70)

    migrate.downgrade(url_at_0002, "0008")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('reservation_span')").fetchone() == (None,)
    migrate.upgrade(url_at_0002)
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert _longest(conn, ids) == timedelta(hours=70)


def _last_event(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT type, during, was_during, data ? 'during' OR data ? 'was_during'"
        " FROM event ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_0012_events_carry_the_ranges_the_map_repair_reads(url_at_0002: str) -> None:
    """A reservation event records its guarded range, and the one it left when it moved, as
    columns (not in `data`, which clients see); other events still append with five
    arguments; the map repair's position starts after what was there. And back."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0011")
    far = T0 + timedelta(hours=3000)
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        _insert(conn, ids, ids["room"], far - timedelta(hours=10), "confirmed")
    migrate.upgrade(url_at_0002, "0012")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        position = conn.execute(
            "SELECT after_txid::text::bigint, after_id FROM outbox_position"
            " WHERE reader = 'availability_map'"
        ).fetchone()
        newest = conn.execute(
            "SELECT txid::text::bigint FROM event ORDER BY event.txid DESC LIMIT 1"
        ).fetchone()
        assert position is not None
        assert newest is not None
        assert position[0] > newest[0]  # everything already there counts as read
        _insert(conn, ids, ids["room"], far, "confirmed")
        kind, during, was, in_data = _last_event(conn)
        # The room's 15-minute buffer after is in the guarded range.
        assert (kind, during.lower, during.upper, was, in_data) == (
            "reservation.created",
            far,
            far + timedelta(hours=1, minutes=15),
            None,
            False,
        )
        moved = far + timedelta(hours=5)
        conn.execute(
            "UPDATE reservation SET start_at = %(s)s, end_at = %(e)s,"
            " during = tstzrange(%(s)s, %(e)s + interval '15 minutes'),"
            " version = version + 1 WHERE start_at = %(was)s",
            {"s": moved, "e": moved + timedelta(hours=1), "was": far},
        )
        kind, during, was, in_data = _last_event(conn)
        assert (kind, during.lower, was.lower, was.upper, in_data) == (
            "reservation.rescheduled",
            moved,
            far,
            far + timedelta(hours=1, minutes=15),
            False,
        )
        conn.execute(
            "UPDATE reservation SET status = 'cancelled', version = version + 1"
            " WHERE start_at = %s",
            (moved,),
        )
        kind, during, was, _ = _last_event(conn)
        assert (kind, during.lower, was) == ("reservation.cancelled", moved, None)
        conn.execute(
            "SELECT event_append(%s, %s, 'waitlist.promoted', %s, '{}'::jsonb)",
            (ids["tenant"], ids["room"], uuid.uuid4()),
        )
        assert _last_event(conn)[:3] == ("waitlist.promoted", None, None)

    migrate.downgrade(url_at_0002, "0010")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('outbox_position')").fetchone() == (None,)
        _insert(conn, ids, ids["room"], far + timedelta(hours=10), "confirmed")
        row = conn.execute("SELECT type FROM event ORDER BY id DESC LIMIT 1").fetchone()
        assert row == ("reservation.created",)
    migrate.upgrade(url_at_0002)


def test_0013_keeps_each_pools_turn_per_tenant(url_at_0002: str) -> None:
    """The round-robin turn: one row per tenant and pool, moved on by the upsert the pools
    use (reservations/pool_repository.py), unknown tenants refused. And back."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0013")
    upsert = (
        "INSERT INTO pool_turn (tenant_id, pool_key, turn, updated_at) VALUES (%s, %s, 1, now())"
        " ON CONFLICT (tenant_id, pool_key) DO UPDATE SET turn = pool_turn.turn + 1"
        " RETURNING turn - 1"
    )
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        turns = [conn.execute(upsert, (ids["tenant"], "k")).fetchone() for _ in range(3)]
        assert turns == [(0,), (1,), (2,)]
        assert conn.execute(upsert, (ids["tenant"], "other")).fetchone() == (0,)
        with pytest.raises(pg_errors.ForeignKeyViolation):
            conn.execute(upsert, (uuid.uuid4(), "k"))
    migrate.downgrade(url_at_0002, "0012")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('pool_turn')").fetchone() == (None,)
    migrate.upgrade(url_at_0002)
