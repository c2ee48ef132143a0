"""Which database holds what: the catalog, and each resource's cluster.

Unsharded (no RESERVATIONS_SHARDS), every resource lives on the catalog database and this is
a pass-through. Sharded, a resource's cluster follows from its id through the shard map the
catalog holds (kit/shardmap.py); every write transaction on a resource starts with the
cluster's shard guard (waits while a move holds the shard, refuses if it is not here), and
the tenant and API key the rows refer to are mirrored onto the cluster first (the catalog
authenticates; a cluster only needs the rows for its foreign keys).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar
from uuid import UUID

import psycopg

from reservations.config import Settings
from reservations.kit.db import Conn, Database
from reservations.kit.replicas import stop_task
from reservations.kit.shardmap import ShardMap, parse
from reservations.sharding import metrics, repository

log = logging.getLogger(__name__)
T = TypeVar("T")

NOT_HERE = "RS001"
STALE_TOKEN = "RS002"  # noqa: S105 (an SQLSTATE)


def sqlstate(exc: BaseException) -> str | None:
    return exc.sqlstate if isinstance(exc, psycopg.Error) else None


class Shards:
    def __init__(self, catalog: Database, settings: Settings) -> None:
        self.catalog = catalog
        self.settings = settings
        self.map: ShardMap | None = parse(settings.shards) if settings.shards else None
        self.clusters: dict[str, Database] = {}
        if self.map is not None:
            for name, url in self.map.clusters.items():
                self.clusters[name] = (
                    catalog
                    if url == catalog.url
                    else Database(
                        url,
                        settings,
                        name=f"shard-{name}",
                        replica_urls=list(self.map.replicas.get(name, ())),
                    )
                )
        # Keys already mirrored per cluster: a memo of idempotent work, nothing that several
        # instances must agree on (a miss costs one upsert).
        self._mirrored: set[tuple[str, UUID]] = set()
        self._refresher: asyncio.Task[None] | None = None

    @property
    def has_replicas(self) -> bool:
        return self.map is not None and any(self.map.replicas.values())

    @property
    def sharded(self) -> bool:
        return self.map is not None

    def databases(self) -> list[Database]:
        """Every database that holds resources: the clusters, or the catalog alone."""
        if not self.clusters:
            return [self.catalog]
        seen: dict[int, Database] = {}
        for db in self.clusters.values():
            seen.setdefault(id(db), db)
        return list(seen.values())

    def of(self, ident: UUID) -> Database:
        """The database of a resource, or of anything created beside one."""
        if self.map is None:
            return self.catalog
        return self.clusters[self.map.cluster_of(ident)]

    def logical(self, ident: UUID) -> int:
        return 0 if self.map is None else self.map.logical_of(ident)

    def cluster_name(self, ident: UUID) -> str:
        return "main" if self.map is None else self.map.cluster_of(ident)

    def group(self, idents: Iterable[UUID]) -> dict[str, list[UUID]]:
        """Ids by cluster name, clusters in name order, ids in the order given."""
        out: dict[str, list[UUID]] = {}
        for ident in idents:
            out.setdefault(self.cluster_name(ident), []).append(ident)
        return dict(sorted(out.items()))

    def by_name(self, name: str) -> Database:
        return self.catalog if self.map is None else self.clusters[name]

    async def open(self) -> None:
        for db in self.databases():
            if db is not self.catalog:
                await db.open()
        if self.map is not None:
            await self.load(seed=True)
            self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        await stop_task(self._refresher)
        for db in self.databases():
            if db is not self.catalog:
                await db.close()

    async def load(self, *, seed: bool = False) -> None:
        """Read the shard map from the catalog (writing the configured one on first start),
        and give every logical shard that no cluster holds to the cluster the map names."""
        assert self.map is not None
        async with self.catalog.transaction() as conn:
            if seed:
                await repository.seed_map(conn, self.map.assignment)
            assignment = await repository.load_map(conn)
        self.map = self.map.with_assignment(assignment)
        if seed:
            await self._claim_unowned()

    async def _claim_unowned(self) -> None:
        assert self.map is not None
        held: set[int] = set()
        for db in self.databases():
            async with db.connection() as conn:
                held.update(await repository.owned(conn))
        for name, db in self.clusters.items():
            missing = [n for n in self.map.shards_of(name) if n not in held]
            if missing:
                async with db.transaction() as conn:
                    await repository.claim(conn, missing)
                log.info("cluster %s now holds logical shards %s", name, missing)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.shard_map_refresh_seconds)
            try:
                await self.load()
            except (psycopg.Error, OSError) as exc:
                log.warning("shard map refresh failed: %r", exc)

    def bind(self, ident: UUID, api_key_id: UUID | None = None) -> Database:
        """`ident`'s database, whose every transaction starts with the shard guard and,
        given `api_key_id`, has that key and its tenant mirrored there (for the foreign keys
        of the rows it writes). A guard refusal surfaces as a psycopg error with SQLSTATE
        RS001; the app answers it with 503 shard-moving (see `refused`)."""
        db = self.of(ident)
        if self.map is None:
            return db
        shard = self.map.logical_of(ident)

        async def begin(conn: Conn) -> None:
            metrics.SHARD_WRITES.labels(db.name).inc()
            if api_key_id is not None:
                await self.mirror(db, api_key_id)
            await repository.guard(conn, shard)

        return db.hooked(begin)

    async def refused(self, detail: str) -> None:
        """A cluster refused a write for a shard it does not hold: re-read the map so the
        client's retry goes where the shard is now."""
        log.info("shard guard refused a write (%s); re-reading the shard map", detail)
        metrics.SHARD_REFUSALS.inc()
        if self.map is not None:
            await self.load()

    async def guard(self, conn: Conn, ident: UUID) -> None:
        """The shard guard for one more resource in an open transaction (bookings)."""
        if self.map is not None:
            await repository.guard(conn, self.map.logical_of(ident))

    async def mirror(self, db: Database, api_key_id: UUID) -> None:
        if db is self.catalog or (db.name, api_key_id) in self._mirrored:
            return
        async with self.catalog.connection() as conn:
            row = await repository.tenancy_rows(conn, api_key_id)
        if row is None:
            return
        async with db.transaction() as conn:
            await repository.mirror_tenancy(conn, row)
        self._mirrored.add((db.name, api_key_id))

    async def gather(self, work: Callable[[Conn], Awaitable[T]]) -> list[T]:
        """Run a read on every database that holds resources, in parallel."""
        return list(await asyncio.gather(*(db.read(work) for db in self.databases())))
