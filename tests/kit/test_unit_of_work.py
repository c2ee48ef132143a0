"""The unit of work (kit/db.py `Database.unit`): effects registered with `after_commit` run
once the transaction has committed, and never when it rolls back."""

from __future__ import annotations

import asyncio
import contextlib
from uuid import uuid4

import pytest
from psycopg import sql

from reservations.config import Settings
from reservations.kit.db import Database, on_failure, with_commit


async def _seen(db: Database, marker: str) -> bool:
    """Whether another connection sees the row `marker` (i.e. it was committed)."""
    async with db.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM uow_probe WHERE marker = %s", (marker,))
        return await cur.fetchone() is not None


async def _scenario(settings: Settings, *, fail: bool, last: bool) -> list[bool]:
    """Insert a marker row in a unit whose effect records whether the row is visible from
    another connection when the effect runs; the block raises when `fail`. With `last` the
    row goes with COMMIT (`with_commit`)."""
    db = Database(settings.database_url or "", settings)
    await db.open()
    ran: list[bool] = []
    marker = str(uuid4())
    try:
        async with db.connection() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS uow_probe (marker text PRIMARY KEY)")

        async def effect() -> None:
            ran.append(await _seen(db, marker))

        async def block() -> None:
            async with db.unit() as unit:
                if last:
                    insert = sql.SQL("INSERT INTO uow_probe VALUES ({})").format(
                        sql.Literal(marker)
                    )
                    await with_commit(unit.conn, insert)
                else:
                    await unit.conn.execute("INSERT INTO uow_probe VALUES (%s)", (marker,))
                unit.after_commit(effect)
                if fail:
                    raise RuntimeError("the block fails after registering its effect")

        with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
            await block()
        assert await _seen(db, marker) is not fail
    finally:
        await db.close()
    return ran


@pytest.mark.parametrize("last", [False, True])
def test_effect_runs_after_commit(settings: Settings, last: bool) -> None:
    # Ran once, and by then the row was visible to another connection: after COMMIT.
    assert asyncio.run(_scenario(settings, fail=False, last=last)) == [True]


@pytest.mark.parametrize("last", [False, True])
def test_effect_skipped_when_the_block_raises(settings: Settings, last: bool) -> None:
    assert asyncio.run(_scenario(settings, fail=True, last=last)) == []


def test_effect_skipped_when_a_kept_failure_commits(settings: Settings) -> None:
    """A recorder (`on_failure`, the Idempotency-Key's) commits the record of a failure: the
    block's own work was undone, so its effects must not run either."""

    async def main() -> list[str]:
        db = Database(settings.database_url or "", settings)
        await db.open()
        ran: list[str] = []

        async def keep(conn: object, error: BaseException) -> bool:
            return True  # nothing to undo in this test: commit, then raise `error`

        async def effect() -> None:
            ran.append("ran")

        async def block() -> None:
            async with db.unit() as unit:
                on_failure(unit.conn, keep)  # type: ignore[arg-type]
                unit.after_commit(effect)
                raise RuntimeError("refused")

        try:
            with pytest.raises(RuntimeError, match="refused"):
                await block()
        finally:
            await db.close()
        return ran

    assert asyncio.run(main()) == []


def test_a_failing_effect_does_not_stop_the_others(settings: Settings) -> None:
    async def main() -> list[str]:
        db = Database(settings.database_url or "", settings)
        await db.open()
        ran: list[str] = []

        async def broken() -> None:
            raise ValueError("Redis went away")

        async def fine() -> None:
            ran.append("fine")

        try:
            async with db.unit() as unit:
                unit.after_commit(broken)
                unit.after_commit(fine)
        finally:
            await db.close()
        return ran

    assert asyncio.run(main()) == ["fine"]
