"""Database access: one async pool per primary, the unit of work, and the advisory lock.

Connections run in autocommit so a single read costs one round trip; writes go through
`Database.transaction()`, owned by exactly one service function per use case. Nothing here
keeps session state between transactions (no plain SET, no session advisory locks, no
LISTEN), so the same code works through PgBouncer in transaction mode; with
`RESERVATIONS_DB_POOLER=transaction` it also drops what a transaction-mode pooler cannot
carry (startup options, prepared statements) and sets its timeouts per transaction.

Every write transaction tells the database who acts (`reservations.actor`: the caller's API
key id, or `system:<job>` for background work) and the request id, as transaction-local
settings (so they cannot leak to the next user of a pooled connection); the audit triggers
(migration 0007) read them. Whoever authenticates a request, or starts a job, sets `ACTOR`
(see `acting_as`); nothing else has to pass it along.

The unit of work (`Database.unit`) is one transaction and what is to happen once it has
committed: a use case registers its effects outside PostgreSQL (the availability map, the
resource cache, waitlist promotion, counters) with `unit.after_commit(...)` inside the block,
and the owner runs them after COMMIT, or drops them when the block raises. Nobody places an
effect by hand after a block, so none is forgotten on one path or run for a rolled-back change.

A transaction may keep a record of its own failure (`on_failure`): the Idempotency-Key's
claim uses it to leave the refusal of a request under its key, in the transaction that holds
the key's lock, so no duplicate can run between the failure and its record.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, LiteralString, Protocol, TypeAlias, TypeVar

import psycopg
from psycopg import AsyncPipeline, pq, sql
from psycopg.abc import Params
from psycopg.rows import DictRow, class_row, dict_row, scalar_row
from psycopg_pool import AsyncConnectionPool

from reservations.config import Settings
from reservations.kit.consistency import CURRENT
from reservations.kit.http import REQUEST_ID
from reservations.kit.replicas import Replicas, stop_task

Conn = psycopg.AsyncConnection[DictRow]
INTRANS, INERROR = pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR
T = TypeVar("T")
R = TypeVar("R")  # a row class (see `fetch_one`)
V = TypeVar("V")  # a column's type (see `fetch_value`)
Statement: TypeAlias = LiteralString | sql.SQL | sql.Composed
log = logging.getLogger(__name__)

# Who the current request or job acts as: an API key id, or "system:<job>". Per task, like the
# request id: set by authentication, read by every transaction the request opens.
ACTOR: ContextVar[str | None] = ContextVar("actor", default=None)


@contextmanager
def acting_as(actor: str) -> Iterator[None]:
    """Transactions opened inside this block are recorded as done by `actor`."""
    token = ACTOR.set(actor)
    try:
        yield
    finally:
        ACTOR.reset(token)


# See `on_failure`: what the block of a transaction wants done if it raises.
Recorder = Callable[[Conn, BaseException], Awaitable[bool]]


# The statements a unit of work sends with BEGIN, made for its connection (`Database.unit`).
First = Callable[[Conn], list[sql.Composed | sql.SQL]]

# What a unit of work does once it has committed (`Unit.after_commit`).
Effect = Callable[[], Awaitable[object]]


@dataclass(eq=False)
class Unit:
    """One transaction (`conn`) and what is to happen only once it has committed."""

    conn: Conn
    recorder: Recorder | None = None
    kept: BaseException | None = None
    effects: list[Effect] = field(default_factory=list)
    # Writes whose results nobody reads, sent in COMMIT's round trip (`with_commit`); None
    # where the owner sends COMMIT some other way (sharding's TwoPhase).
    last: list[sql.Composed | sql.SQL] | None = None
    # The results of the statements sent with BEGIN (`Database.unit(first=...)`).
    first: psycopg.AsyncCursor[DictRow] | None = None

    def after_commit(self, effect: Effect) -> None:
        """Run `effect` after COMMIT, in the order registered; never if the block raises."""
        self.effects.append(effect)

    async def run_effects(self) -> None:
        """The owner's last step after COMMIT (see `run_effects`)."""
        effects, self.effects = self.effects, []
        await run_effects(effects)


class AfterCommit(Protocol):
    """A unit of work: `Unit`, or sharding's TwoPhase for a transaction across clusters."""

    def after_commit(self, effect: Effect) -> None: ...


async def run_effects(effects: list[Effect]) -> None:
    """Run a committed unit's effects in order. One that fails is logged and the rest still
    run: the change is committed, and what effects keep (the availability map, caches, the
    waitlist) has its own repair in the worker."""
    for effect in effects:
        try:
            await effect()
        except Exception:
            log.exception("an effect after COMMIT failed: %r", effect)


# The transactions open now, by connection: a `Unit` is registered exactly as long as its
# transaction (`owned`), so nothing registered can outlive it on a pooled connection.
_UNITS: weakref.WeakKeyDictionary[Conn, Unit] = weakref.WeakKeyDictionary()


@contextmanager
def owned(conn: Conn) -> Iterator[Unit]:
    """For the owner of a transaction on `conn` (`Database.unit`, sharding's TwoPhase): for
    the block, `on_failure` registrations on `conn` belong to it."""
    unit = Unit(conn)
    _UNITS[conn] = unit
    try:
        yield unit
    finally:
        if _UNITS.get(conn) is unit:
            del _UNITS[conn]


async def with_commit(conn: Conn, statement: sql.Composed | sql.SQL) -> None:
    """Run `statement` (no parameters: values as `sql.Literal`) in the transaction open on
    `conn`: sent together with its COMMIT, one round trip for both, when its owner is a
    `Database.unit`; at once otherwise. For a write nothing reads before COMMIT; its error
    (like COMMIT's) rolls the transaction back and is raised by the block's end."""
    unit = _UNITS.get(conn)
    if unit is not None and unit.last is not None:
        unit.last.append(statement)
    else:
        await conn.execute(statement, prepare=False)


def on_failure(conn: Conn, recorder: Recorder) -> bool:
    """If the block of the transaction open on `conn` raises, first run
    `recorder(conn, error)`. A recorder that returns True has made the transaction fit to
    COMMIT (rolled back to a savepoint of its own and written the failure's record): the
    owner then commits, and raises the error after COMMIT. False, or a database error in the
    recorder, and the transaction rolls back as it would have. One recorder per transaction;
    returns False (nothing registered) when no owner tracks a transaction on `conn`."""
    unit = _UNITS.get(conn)
    if unit is None:
        return False
    unit.recorder = recorder
    return True


async def keep_failure(conn: Conn, error: BaseException, pipeline: AsyncPipeline | None) -> bool:
    """For a transaction's owner whose block raised `error`: runs the recorder registered
    on `conn` (once). True when the transaction is to commit and `error` to be raised after;
    `pipeline` when the transaction is pipelined (its statements' errors surface here)."""
    unit = _UNITS.get(conn)
    if unit is None or unit.recorder is None:
        return False
    recorder, unit.recorder = unit.recorder, None
    if unit.last is not None:
        unit.last.clear()  # the block's last writes: never sent, and undone with it
    try:
        if pipeline is not None:
            # What the block left in flight arrives first (its error too, already met by
            # the block or not): the transaction is then merely open or aborted.
            with contextlib.suppress(psycopg.Error):
                await pipeline.sync()
        if not await recorder(conn, error):
            return False
        if pipeline is not None:
            await pipeline.sync()
    except psycopg.Error as exc:
        log.warning("the failure %r could not be recorded: %r", error, exc)
        return False
    unit.kept = error
    return True


class Database:
    def __init__(
        self,
        url: str,
        settings: Settings,
        *,
        name: str = "primary",
        replica_urls: list[str] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.pooled = settings.db_pooler == "transaction"
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if self.pooled:
            # PgBouncer (1.18) refuses the `options` startup parameter and hands each
            # transaction to any server connection: no session settings, no prepared
            # statements; the timeouts are set per transaction instead.
            kwargs["prepare_threshold"] = None
            self._local_timeouts = (
                str(settings.statement_timeout_ms),
                str(settings.lock_timeout_ms),
            )
        else:
            kwargs["prepare_threshold"] = settings.db_prepare_threshold or None
            kwargs["options"] = (
                f"-c TimeZone=UTC -c statement_timeout={settings.statement_timeout_ms}"
                f" -c lock_timeout={settings.lock_timeout_ms}"
                " -c idle_in_transaction_session_timeout=60000"
            )
        self.pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=settings.db_pool_min,
            max_size=max(settings.db_pool_max, settings.db_pool_min),
            kwargs=kwargs,
            open=False,
            timeout=10.0,
            name=name,
        )
        urls = settings.replica_urls if replica_urls is None else replica_urls
        self.replicas = Replicas(urls, kwargs, settings, database=name) if urls else None
        self._health: asyncio.Task[None] | None = None
        # Run first in every transaction of this handle (see `hooked`).
        self._on_begin: Callable[[Conn], Awaitable[None]] | None = None

    def hooked(self, on_begin: Callable[[Conn], Awaitable[None]]) -> Database:
        """This database (same pool) with `on_begin` run at the start of every transaction
        opened through the returned handle; the sharding router's shard guard uses it. Only
        the original handle opens and closes the pool."""
        view = copy.copy(self)
        view._on_begin = on_begin
        return view

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30.0)
        if self.replicas is not None:
            await self.replicas.open()
            self._health = asyncio.create_task(self.replicas.check_forever(self.pool))

    async def close(self) -> None:
        await stop_task(self._health)
        if self.replicas is not None:
            await self.replicas.close()
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Conn]:
        """An autocommit connection to the primary: each statement is its own transaction."""
        async with self.pool.connection() as conn:
            yield conn

    async def read(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run a read that tolerates staleness (lists, gets, availability, search) on an
        autocommit connection: a replica fresh enough for this request, else the primary. The
        read may run twice (a replica that fails or freezes midway is abandoned for the
        primary), so `work` must only read. Never for a read that decides an accept."""
        if self.replicas is not None:
            return await self.replicas.read(self.pool, work)
        async with self.pool.connection() as conn:
            return await work(conn)

    @asynccontextmanager
    async def unit(
        self, *, first: First | None = None, generic_plans: bool = False
    ) -> AsyncIterator[Unit]:
        """The unit of work: a transaction that commits when the block ends and rolls back
        if it raises; then, once committed and the connection is back in the pool, the
        effects the block registered (`Unit.after_commit`). With replicas, the WAL position
        after COMMIT becomes the response's consistency token. The actor and request id of
        the current task go with it (see the module's doc).

        Round trips are what a write costs the API most (BENCHMARKS.md, "The write cost"):
        BEGIN goes with the transaction's locals and with `first(conn)` (statements without
        parameters, values as `sql.Literal`; their results in `unit.first`), and the block's
        last writes (`with_commit`) with COMMIT. Each statement keeps its own snapshot.

        `generic_plans`: the block's prepared statements run on their generic plan, never
        re-planned per call (PostgreSQL otherwise keeps re-planning a statement whose
        custom plans look cheaper: the pre-check of a create over the partitions cost
        0.3-0.6 ms of planning for 0.1 ms of work).

        A block that raises rolls back, unless a recorder registered with `on_failure`
        keeps a record of the failure: then it commits that, and the error is raised after
        COMMIT (the block's effects are dropped: its work was undone)."""
        async with self.pool.connection() as conn:
            with owned(conn) as unit:
                unit.last = []
                async with self._begun(conn, unit, first, generic_plans):
                    yield unit
            if self.replicas is not None and (state := CURRENT.get()) is not None:
                cur = await conn.execute("SELECT pg_current_wal_lsn()::text AS lsn")
                row = await cur.fetchone()
                if row is not None:
                    state.wrote(self.name, row["lsn"])
            if unit.kept is not None:  # committed with its record (`on_failure`)
                raise unit.kept
        await unit.run_effects()

    @asynccontextmanager
    async def _begun(
        self, conn: Conn, unit: Unit, first: First | None, generic_plans: bool
    ) -> AsyncIterator[None]:
        """BEGIN (with the locals, the shard guard and `first`), the block, then its last
        writes with COMMIT; ROLLBACK if any of it fails, unless the failure is kept."""
        try:
            opening = [sql.SQL("BEGIN"), *self.local_settings(conn, generic_plans=generic_plans)]
            sent = sql.SQL("; ").join(first(conn)) if first is not None else None
            if self._on_begin is None and sent is not None:
                opening.append(sent)
            cur = await conn.execute(sql.SQL("; ").join(opening), prepare=False)
            if self._on_begin is not None:
                await self._on_begin(conn)
                if sent is not None:
                    cur = await conn.execute(sent, prepare=False)
            else:
                for _ in range(len(opening) - 1):
                    cur.nextset()
            unit.first = cur if first is not None else None
            try:
                yield
            except BaseException as exc:
                if not await keep_failure(conn, exc, None):
                    raise
            last = unit.last or []
            await conn.execute(sql.SQL("; ").join([*last, sql.SQL("COMMIT")]), prepare=False)
        except BaseException:
            # A failed statement's transaction is aborted, or the block raised with it open.
            # Either way it ends here (unless the connection is gone: the pool discards it).
            if conn.pgconn.transaction_status in (INTRANS, INERROR):
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()
            raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Conn]:
        """A unit of work (`unit`) for a block that has no effects after COMMIT."""
        async with self.unit() as unit:
            yield unit.conn

    def local_settings(
        self, conn: Conn, *, generic_plans: bool = False
    ) -> list[sql.Composed | sql.SQL]:
        """The transaction-local settings a write transaction starts with: its actor and
        request id (and behind a pooler its timeouts and zone), as a statement without
        parameters, or none."""
        actor, request_id = ACTOR.get() or "", REQUEST_ID.get() or ""
        pairs: list[str] = []
        if self.pooled:
            # TimeZone too: interval arithmetic on timestamptz (a 'P1D' buffer) uses the
            # session zone, and the code's arithmetic is UTC.
            pairs += ["statement_timeout", self._local_timeouts[0]]
            pairs += ["lock_timeout", self._local_timeouts[1], "TimeZone", "UTC"]
        if self.pooled or actor or request_id:
            pairs += ["reservations.actor", actor, "reservations.request_id", request_id]
        if generic_plans:
            pairs += ["plan_cache_mode", "force_generic_plan"]
        if not pairs:
            return []
        calls = ", ".join(["set_config(%s, %s, true)"] * (len(pairs) // 2))
        return [bound(conn, "SELECT " + calls, pairs)]

    async def set_locals(self, conn: Conn) -> None:
        """`local_settings` on a transaction begun elsewhere (sharding's TwoPhase)."""
        for statement in self.local_settings(conn):
            await conn.execute(statement, prepare=False)

    async def ping(self) -> bool:
        try:
            async with self.pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
            return True
        except (psycopg.Error, TimeoutError, OSError):
            return False


@asynccontextmanager
async def pipelined(conn: Conn) -> AsyncIterator[None]:
    """A transaction in pipeline mode: one round trip per result the block waits for,
    instead of one per statement.

    In pipeline mode `execute` sends a statement without waiting for its answer; reading a
    result (`fetchone`...) waits for it and for everything sent before it. The statements
    stay separate statements, each with its own snapshot, in the order sent, so locking and
    visibility are what they are without the pipeline. An error is raised by the read that
    meets it (the first failed statement's error: the server skips the rest until the
    pipeline's Sync), at the latest by COMMIT's, which the pipeline's end waits for.

    psycopg's own `transaction()` inside a pipeline syncs after BEGIN and again before
    COMMIT (two more round trips), hence BEGIN and COMMIT by hand here."""
    try:
        async with conn.pipeline() as pipeline:
            await conn.execute("BEGIN", prepare=False)
            try:
                yield
            except BaseException as exc:
                if not await keep_failure(conn, exc, pipeline):
                    raise
            await conn.execute("COMMIT", prepare=False)
    except BaseException:
        # The pipeline's end has synced it: a failed statement's transaction is now merely
        # aborted, or the block raised with the transaction still open. Either way it ends
        # here (unless the connection is gone: the pool then discards it).
        if conn.pgconn.transaction_status in (INTRANS, INERROR):
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()
        raise


def bound(conn: Conn, query: LiteralString, params: Params) -> sql.SQL:
    """`query` with `params` bound in as literals, by psycopg's own quoting for `conn`: a
    statement without parameters, which can share a round trip with others (BEGIN's,
    COMMIT's). One adapter context for all the values: a third of what composing each as a
    `sql.Literal` costs."""
    return sql.SQL(psycopg.AsyncClientCursor(conn).mogrify(query, params))


async def lock_resource(conn: Conn, key: int) -> None:
    """Serialize writers of one resource until this transaction ends.

    Not the guarantee (the exclusion constraint is) but what keeps racing inserts into the
    constraint's GiST index from deadlocking each other (see DESIGN.md)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s::int8)", (key,))


# Typed reads. A repository names the row it returns as a frozen dataclass whose fields are
# exactly the statement's column names (psycopg's `class_row` passes them as keyword
# arguments, so a SELECT list and its dataclass that disagree fail at the first read), or
# the type of the one value it reads. A cursor-level row factory, so the pool's default
# (dict rows, for code not yet typed) is left alone; works in pipeline mode too.


async def fetch_one(
    conn: Conn, row: type[R], query: Statement, params: Params | None = None
) -> R | None:
    """The first row of `query` as a `row`, or None when there is none."""
    async with conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def fetch_all(
    conn: Conn, row: type[R], query: Statement, params: Params | None = None
) -> list[R]:
    """Every row of `query`, each a `row`."""
    async with conn.cursor(row_factory=class_row(row)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


def _checked(kind: type[V], value: object) -> V | None:
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__} from the database, got {type(value).__name__}")
    return value


async def fetch_value(
    conn: Conn, kind: type[V], query: Statement, params: Params | None = None
) -> V | None:
    """The first column of the first row of `query` (a `kind`, checked), or None when there
    is no row or the value is NULL."""
    async with conn.cursor(row_factory=scalar_row) as cur:
        await cur.execute(query, params)
        return _checked(kind, await cur.fetchone())


async def fetch_values(
    conn: Conn, kind: type[V], query: Statement, params: Params | None = None
) -> list[V]:
    """The first column of every row of `query`, each a `kind` (checked; NULLs left out)."""
    async with conn.cursor(row_factory=scalar_row) as cur:
        await cur.execute(query, params)
        values = [_checked(kind, v) for v in await cur.fetchall()]
    return [v for v in values if v is not None]
