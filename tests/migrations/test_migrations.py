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


def test_0013_check_in_and_no_shows(url_at_0002: str) -> None:
    """The check-in column reads through `reservation_all`, a check-in is its own event with
    `checked_in_at` in the data, `no_show` is a status the constraint takes (and frees the
    range); downgraded, no-shows read as cancelled and the column is gone."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0013")
    far = T0 + timedelta(hours=4000)
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        _insert(conn, ids, ids["room"], far, "confirmed")
        conn.execute(
            "UPDATE reservation SET checked_in_at = %s, version = version + 1 WHERE start_at = %s",
            (far, far),
        )
        kind, data = conn.execute(
            "SELECT type, data->>'checked_in_at' FROM event ORDER BY id DESC LIMIT 1"
        ).fetchone() or (None, None)
        assert kind == "reservation.checked_in"
        assert data is not None
        assert conn.execute(
            "SELECT checked_in_at FROM reservation_all WHERE start_at = %s", (far,)
        ).fetchone() == (far,)
        conn.execute(
            "UPDATE reservation SET status = 'no_show', version = version + 1 WHERE start_at = %s",
            (far,),
        )
        assert conn.execute("SELECT type FROM event ORDER BY id DESC LIMIT 1").fetchone() == (
            "reservation.no_show",
        )
        _insert(conn, ids, ids["room"], far, "confirmed")  # the range is free again
        with pytest.raises(pg_errors.CheckViolation):
            conn.execute("UPDATE reservation SET status = 'gone' WHERE start_at = %s", (far,))
    migrate.downgrade(url_at_0002, "0012")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        statuses = conn.execute(
            "SELECT status FROM reservation WHERE start_at = %s ORDER BY status", (far,)
        ).fetchall()
        assert statuses == [("cancelled",), ("confirmed",)]
        assert conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'checked_in_at'"
        ).fetchone() == (0,)
    migrate.upgrade(url_at_0002)


def test_0014_reminders_are_recorded_once(url_at_0002: str) -> None:
    """A reminder is one row per reservation, kind and instant (a second insert is a no-op);
    and back."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0014")
    insert = (
        "INSERT INTO reminder_sent (reservation_id, resource_id, kind, at, sent_at)"
        " VALUES (%s, %s, 'PT1H', %s, now()) ON CONFLICT DO NOTHING"
    )
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        one = uuid.uuid4()
        assert conn.execute(insert, (one, ids["room"], T0)).rowcount == 1
        assert conn.execute(insert, (one, ids["room"], T0)).rowcount == 0
        assert conn.execute(insert, (one, ids["room"], T0 + timedelta(hours=1))).rowcount == 1
    migrate.downgrade(url_at_0002, "0013")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('reminder_sent')").fetchone() == (None,)
    migrate.upgrade(url_at_0002)


def test_0015_flags_a_reservation_with_its_event_and_a_move_clears_it(url_at_0002: str) -> None:
    """Setting a flag writes `reservation.flagged` (its `data` says why; other events' `data`
    has no `flagged`), setting the same violations again writes nothing, a move clears the
    flag (a rescheduled event), the view and the history carry the columns. And back."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0015")
    far = T0 + timedelta(hours=4000)
    why = '[{"reason": "in-blackout", "detail": "the resource is blacked out"}]'
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        _insert(conn, ids, ids["room"], far, "confirmed")
        assert conn.execute(
            "SELECT data ? 'flagged' FROM event ORDER BY id DESC LIMIT 1"
        ).fetchone() == (False,)
        flag = (
            "UPDATE reservation SET flagged_at = now(), flagged_violations = %s::jsonb,"
            " version = version + 1 WHERE start_at = %s"
        )
        conn.execute(flag, (why, far))
        kind, data = conn.execute(
            "SELECT type, data FROM event ORDER BY id DESC LIMIT 1"
        ).fetchone()
        assert kind == "reservation.flagged"
        assert data["flagged"]["violations"][0]["reason"] == "in-blackout"
        events = conn.execute("SELECT count(*) FROM event").fetchone()
        conn.execute(flag, (why, far))  # the same violations: no second event
        assert conn.execute("SELECT count(*) FROM event").fetchone() == events
        flagged = conn.execute(
            "SELECT count(*) FROM reservation_all WHERE flagged_at IS NOT NULL"
        ).fetchone()
        assert flagged == (1,)
        moved = far + timedelta(hours=5)
        conn.execute(
            "UPDATE reservation SET start_at = %(s)s, end_at = %(e)s,"
            " during = tstzrange(%(s)s, %(e)s + interval '15 minutes'),"
            " version = version + 1 WHERE start_at = %(was)s",
            {"s": moved, "e": moved + timedelta(hours=1), "was": far},
        )
        row = conn.execute(
            "SELECT flagged_at, flagged_violations FROM reservation WHERE start_at = %s", (moved,)
        ).fetchone()
        assert row == (None, None)
        assert _last_event(conn)[0] == "reservation.rescheduled"
        history = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name ="
            " 'reservation_history' AND column_name LIKE 'flagged%%'"
        ).fetchone()
        assert history == (2,)

    migrate.downgrade(url_at_0002, "0014")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        _insert(conn, ids, ids["room"], far + timedelta(hours=20), "confirmed")
        assert _last_event(conn)[0] == "reservation.created"
        gone = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE column_name LIKE 'flagged%%'"
        ).fetchone()
        assert gone == (0,)
    migrate.upgrade(url_at_0002)


def test_0016_agent_keys_and_the_confirm_guard(url_at_0002: str) -> None:
    """0016 lets a key be an `agent` and refuses (RS003) a row turning confirmed with an agent
    key as the actor, or made by an agent without a person's key as the actor; a person's
    key confirms it. Before 0013 the role is refused; the downgrade revokes agent keys."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0015")
    agent = uuid.uuid4()
    add_agent = (
        "INSERT INTO api_key (id, tenant_id, prefix, secret_hash, role)"
        " VALUES (%s, %s, 'rsv_agt', '\\x00', 'agent')"
    )
    with (
        psycopg.connect(url_at_0002, autocommit=True) as conn,
        pytest.raises(pg_errors.CheckViolation),
    ):
        conn.execute(add_agent, (agent, ids["tenant"]))
    migrate.upgrade(url_at_0002, "0016")
    far = T0 + timedelta(hours=5000)
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        conn.execute(add_agent, (agent, ids["tenant"]))
        ids_agent = {**ids, "key": agent}
        _insert(conn, ids_agent, ids["room"], far, "held")
        confirm = (
            "UPDATE reservation SET status = 'confirmed', expires_at = NULL,"
            " version = version + 1 WHERE start_at = %s"
        )

        def as_actor(actor: str, statement: str, *params: Any) -> str | None:
            try:
                with conn.transaction():
                    conn.execute("SELECT set_config('reservations.actor', %s, true)", (actor,))
                    conn.execute(statement, params)  # type: ignore[arg-type]
            except psycopg.Error as refused:
                return refused.sqlstate
            return None

        assert as_actor(str(agent), confirm, far) == "RS003"  # the agent itself
        assert as_actor("", confirm, far) == "RS003"  # nobody: not a person's key
        assert as_actor("system:job", confirm, far) == "RS003"
        # An agent may not insert a confirmed row either, even of another key's making.
        later = far + timedelta(hours=2)
        insert = (
            "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during,"
            " status, created_by, created_at, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, tstzrange(%s, %s + interval '75 minutes'),"
            " 'confirmed', %s, now(), now())"
        )
        end = later + timedelta(hours=1)
        row = (uuid.uuid4(), ids["tenant"], ids["room"], later, end, later, later, ids["key"])
        assert as_actor(str(agent), insert, *row) == "RS003"
        assert as_actor(str(ids["key"]), confirm, far) is None  # the control: a person confirms
        assert as_actor(str(ids["key"]), insert, *row) is None
        status = conn.execute("SELECT status FROM reservation WHERE start_at = %s", (far,))
        assert status.fetchone() == ("confirmed",)

    migrate.downgrade(url_at_0002, "0015")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        key = conn.execute(
            "SELECT role, revoked_at IS NOT NULL FROM api_key WHERE id = %s", (agent,)
        )
        assert key.fetchone() == ("viewer", True)
    migrate.upgrade(url_at_0002)


def test_0017_feeds_say_what_they_show_and_may_have_a_tag(url_at_0002: str) -> None:
    """Feeds made before are events feeds; a tag is a third target, of free/busy only, and a
    key's feed stays of events. Back down, free/busy feeds go and the old check returns."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0016")

    def feed(conn: psycopg.Connection[Any], columns: str, *values: Any) -> None:
        marks = ", ".join(["%s"] * len(values))
        conn.execute(
            f"INSERT INTO feed (id, tenant_id, prefix, secret_hash, created_by, created_at,"
            f" {columns}) VALUES (%s, %s, %s, '\\x00', %s, now(), {marks})",
            (uuid.uuid4(), ids["tenant"], uuid.uuid4().hex[:12], ids["key"], *values),
        )

    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        feed(conn, "resource_id", ids["room"])
    migrate.upgrade(url_at_0002, "0017")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT content, tag FROM feed").fetchall() == [("events", None)]
        feed(conn, "resource_id, content", ids["room"], "freebusy")
        feed(conn, "tag, content", "rooms", "freebusy")
        for columns, values in (
            ("tag", ("rooms",)),  # a tag's feed is free/busy
            ("api_key_id, content", (ids["key"], "freebusy")),  # a key's is events
            ("resource_id, tag, content", (ids["room"], "rooms", "freebusy")),  # one target
            ("resource_id, content", (ids["room"], "agenda")),
        ):
            with pytest.raises(pg_errors.CheckViolation):
                feed(conn, columns, *values)
    migrate.downgrade(url_at_0002, "0016")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM feed").fetchone() == (1,)
        with pytest.raises(pg_errors.CheckViolation):
            feed(conn, "resource_id, api_key_id", ids["room"], ids["key"])
    migrate.upgrade(url_at_0002)


def test_0018_keeps_each_pools_turn_per_tenant(url_at_0002: str) -> None:
    """The round-robin turn: one row per tenant and pool, moved on by the upsert the pools
    use (reservations/pool_repository.py), unknown tenants refused. And back."""
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        ids = _seed(conn)
    migrate.upgrade(url_at_0002, "0018")
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
    migrate.downgrade(url_at_0002, "0017")
    with psycopg.connect(url_at_0002, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('pool_turn')").fetchone() == (None,)
    migrate.upgrade(url_at_0002)
