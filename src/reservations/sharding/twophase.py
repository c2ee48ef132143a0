"""Two-phase commit across shard clusters, with a durable decision log and recovery.

The coordinator (the API process serving the request) opens one transaction per cluster,
does the work, PREPAREs every one, then records the decision `commit` in the catalog's
`twophase_decision`, and only then COMMITs PREPARED on each. The decision row is the commit
point: once it is in, every participant will commit; before it, none will.

If the coordinator dies in between, the prepared transactions stay (holding their rows and
locks) until the recovery job finds them older than RESERVATIONS_TWOPHASE_RECOVER_AFTER_SECONDS.
It inserts `abort` unless a decision exists (whoever inserts first decides: a coordinator that
comes back late finds `abort` and rolls back), and applies the decision that stands to each
prepared transaction. So every cross-shard booking ends whole or absent.

If the coordinator cannot tell whether its decision was written (the catalog connection broke
mid-insert), it leaves everything prepared for recovery rather than guess.

The operator must allow prepared transactions on every shard cluster
(`max_prepared_transactions` at least the API's connection pool size per instance times the
instances; the embedded servers set 64).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

from reservations.errors import BookingContended
from reservations.kit.db import Conn, Database, Effect, keep_failure, owned, run_effects
from reservations.sharding import metrics, repository
from reservations.sharding.router import Shards

log = logging.getLogger(__name__)

GID_PREFIX = "rsv2pc:"
# Tests only: where the coordinator kills itself (or stops itself with SIGSTOP) to leave a
# cross-shard transaction in doubt. Never set in production.
ENV_FAULT = "RESERVATIONS_FAULT_TWOPHASE"
FAULT_POINTS = frozenset({"after-prepare", "after-decision", "mid-commit", "before-fence"})


def fault_point(name: str) -> None:
    """Die (or, for 'before-fence', pause) here when the test fault names this point."""
    if os.environ.get(ENV_FAULT) != name:
        return
    log.warning("fault injection: %s at %s", "pausing" if name == "before-fence" else "dying", name)
    if name == "before-fence":
        os.kill(os.getpid(), signal.SIGSTOP)  # the test sends SIGCONT
    else:
        os.kill(os.getpid(), signal.SIGKILL)


class TwoPhase:
    """`async with TwoPhase(shards, gid, clusters) as conns:` gives one open transaction per
    cluster; `await tx.commit()` inside the block commits them all or none. Leaving the
    block without committing rolls every participant back, but for a failure that a
    participant's recorder keeps (kit/db.py `on_failure`: the coordinator's
    Idempotency-Key claim, on the home cluster) and that comes before PREPARE: that
    participant alone commits its record, one-phase (nothing else of the booking is in it
    after its savepoint), and every other one rolls back. Like kit/db.py's `Unit`, it is a
    unit of work: effects registered with `after_commit` run once `commit()` has committed
    and the block has ended, never otherwise."""

    def __init__(self, shards: Shards, gid: str, clusters: list[str]) -> None:
        self.shards = shards
        self.gid = GID_PREFIX + gid
        self.clusters = sorted(clusters)
        self.conns: dict[str, Conn] = {}
        self._held: list[tuple[Database, Conn]] = []
        self._owned = contextlib.ExitStack()
        self._prepared = False
        self._finished = False
        self._committed = False
        self._effects: list[Effect] = []

    def after_commit(self, effect: Effect) -> None:
        """Run `effect` once every participant has committed and the block has ended."""
        self._effects.append(effect)

    async def __aenter__(self) -> Self:
        try:
            for name in self.clusters:
                db = self.shards.by_name(name)
                conn = await db.pool.getconn()
                self._held.append((db, conn))
                await conn.set_autocommit(False)
                await conn.tpc_begin(f"{self.gid}:{name}")
                self._owned.enter_context(owned(conn))
                await db.set_locals(conn)
                self.conns[name] = conn
        except BaseException:
            await self._rollback()
            await self._give_back()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._finished:
                if exc is not None and not self._prepared:
                    await self._keep_failure(exc)
                await self._rollback()
        finally:
            await self._give_back()
        if self._committed:
            await run_effects(self._effects)

    async def _keep_failure(self, exc: BaseException) -> None:
        for name, conn in list(self.conns.items()):
            if not await keep_failure(conn, exc, None):
                continue
            try:
                await conn.tpc_commit()  # one-phase: this participant was never prepared
            except psycopg.Error as err:
                log.warning("2PC %s: the failure's record on %s: %r", self.gid, name, err)
            del self.conns[name]
            return

    async def commit(self) -> None:
        self._prepared = True
        for conn in self.conns.values():
            await conn.tpc_prepare()
        fault_point("after-prepare")
        try:
            async with self.shards.catalog.connection() as conn:
                decided = await repository.decide(
                    conn, gid=self.gid, decision="commit", participants=self.clusters
                )
        except psycopg.Error:
            self._finished = True  # unknown whether it is in: recovery decides, not us
            log.warning("2PC %s: decision not confirmed; left to recovery", self.gid)
            raise
        if decided != "commit":
            metrics.TWOPHASE.labels("aborted", "recovery").inc()
            raise BookingContended(
                "The booking took too long across database clusters and was rolled back."
            )
        fault_point("after-decision")
        self._finished = True
        for i, (name, conn) in enumerate(self.conns.items()):
            try:
                await conn.tpc_commit()
            except psycopg.Error as exc:  # decided: recovery finishes it
                log.warning("2PC %s: COMMIT PREPARED on %s failed: %r", self.gid, name, exc)
            if i == 0:
                fault_point("mid-commit")
        self._committed = True
        metrics.TWOPHASE.labels("committed", "coordinator").inc()

    async def _rollback(self) -> None:
        for name, conn in self.conns.items():
            try:
                await conn.tpc_rollback()
            except psycopg.Error as exc:  # a broken connection: its work is gone or prepared
                log.info("2PC %s: rollback on %s: %r", self.gid, name, exc)

    async def _give_back(self) -> None:
        self._owned.close()
        for db, conn in self._held:
            try:
                if not conn.closed:
                    await conn.set_autocommit(True)
            except psycopg.Error:
                await conn.close()
            await db.pool.putconn(conn)
        self._held.clear()


async def recover(shards: Shards, *, older_than: float) -> dict[str, int]:
    """Resolve every prepared cross-shard transaction older than `older_than` seconds:
    commit it if its decision is `commit`, else record `abort` and roll it back. Returns how
    many were committed and aborted."""
    done = {"committed": 0, "aborted": 0}
    for db in shards.databases():
        async with db.connection() as conn:
            rows = await repository.prepared(conn, GID_PREFIX)
        metrics.TWOPHASE_IN_DOUBT.labels(db.name).set(len(rows))
        for row in rows:
            if row.age < older_than:
                continue
            gid = row.gid.rsplit(":", 1)[0]
            async with shards.catalog.connection() as conn:
                decided = await repository.decide(conn, gid=gid, decision="abort", participants=[])
            verb = "COMMIT PREPARED" if decided == "commit" else "ROLLBACK PREPARED"
            async with db.connection() as conn:
                try:
                    await conn.execute(sql.SQL(verb + " {}").format(sql.Literal(row.gid)))
                except psycopg.errors.UndefinedObject:
                    continue  # finished by someone else meanwhile
            outcome = "committed" if decided == "commit" else "aborted"
            done[outcome] += 1
            metrics.TWOPHASE.labels(outcome, "recovery").inc()
            log.warning("2PC recovery: %s %s on %s", outcome, row.gid, db.name)
    return done


async def in_doubt(shards: Shards) -> dict[str, list[tuple[str, float]]]:
    """Prepared cross-shard transactions per cluster, with their age in seconds."""
    out: dict[str, list[tuple[str, float]]] = {}
    for db in shards.databases():
        async with db.connection() as conn:
            out[db.name] = [(r.gid, r.age) for r in await repository.prepared(conn, GID_PREFIX)]
    return out
