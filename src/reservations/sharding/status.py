"""`reservations shards status`: the map, what each cluster holds, and what is in doubt."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg_pool import PoolTimeout

from reservations.kit.shardmap import ranges
from reservations.sharding import repository, twophase
from reservations.sharding.router import Shards


@dataclass
class ClusterStatus:
    name: str
    mapped: list[int]
    owned: list[int]
    resources: int
    live_reservations: int
    in_doubt: list[tuple[str, float]] = field(default_factory=list)
    replicas: list[tuple[str, int | None]] = field(default_factory=list)  # (name, bytes behind)

    def lines(self) -> list[str]:
        out = [
            f"cluster {self.name}: logical shards {ranges(self.mapped) or 'none'};"
            f" {self.resources} resources, {self.live_reservations} live reservations;"
            f" {len(self.in_doubt)} in-doubt transactions"
        ]
        if set(self.owned) != set(self.mapped):
            out.append(
                f"  ! holds {ranges(self.owned) or 'none'}, the map says"
                f" {ranges(self.mapped) or 'none'} (a move in progress or interrupted)"
            )
        out += [
            f"  replica {name}: "
            + ("unreachable" if behind is None else f"{behind} bytes of WAL behind")
            for name, behind in self.replicas
        ]
        out += [f"  in doubt: {gid} ({age:.0f} s)" for gid, age in self.in_doubt]
        return out


async def status(shards: Shards) -> list[ClusterStatus]:
    assert shards.map is not None
    doubt = await twophase.in_doubt(shards)
    out = []
    for name, db in shards.clusters.items():
        async with db.connection() as conn:
            owned = await repository.owned(conn)
            count = await repository.counts(conn)
            position = await repository.wal_position(conn)
        lags: list[tuple[str, int | None]] = []
        for replica in db.replicas.replicas if db.replicas is not None else []:
            try:
                async with replica.pool.connection(timeout=2.0) as conn:
                    lags.append((replica.name, await repository.behind(conn, position)))
            except (psycopg.Error, PoolTimeout, OSError):
                lags.append((replica.name, None))
        out.append(
            ClusterStatus(
                name=name,
                mapped=shards.map.shards_of(name),
                owned=owned,
                resources=count.resources,
                live_reservations=count.live_reservations,
                in_doubt=doubt.get(db.name, []),
                replicas=lags,
            )
        )
    return out
