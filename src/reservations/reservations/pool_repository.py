"""SQL for pools (reservations/pools.py): the round-robin turn, and the guard that keeps
two requests with one Idempotency-Key apart when a pool spans database clusters."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from reservations.kit.db import Conn, fetch_value


async def next_turn(conn: Conn, *, tenant_id: UUID, pool_key: str, now: datetime) -> int:
    """Move the pool's round-robin counter on by one and return the turn it was at (0 for
    a new pool). Its own short transaction: concurrent creates each get their own turn. It
    commits without waiting for the WAL flush (`synchronous_commit` off for it alone): a
    turn lost in a crash only moves the rotation back by one."""
    turn = await fetch_value(
        conn,
        int,
        "INSERT INTO pool_turn (tenant_id, pool_key, turn, updated_at)"
        " SELECT %s, %s, 1, %s FROM (SELECT set_config('synchronous_commit', 'off', true)) s"
        " ON CONFLICT (tenant_id, pool_key) DO UPDATE"
        " SET turn = pool_turn.turn + 1, updated_at = EXCLUDED.updated_at"
        " RETURNING turn - 1",
        (tenant_id, pool_key, now),
    )
    assert turn is not None
    return turn


async def try_guard(conn: Conn, *, hi: int, lo: int) -> bool:
    """Take a transaction-scoped advisory lock if free (never waits)."""
    got = await fetch_value(
        conn, bool, "SELECT pg_try_advisory_xact_lock(%s::int4, %s::int4)", (hi, lo)
    )
    return bool(got)
