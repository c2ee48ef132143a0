"""`reservations shards status`: the map, what each cluster holds, and what is in doubt."""

from __future__ import annotations

from dataclasses import dataclass, field

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
        out.append(
            ClusterStatus(
                name=name,
                mapped=shards.map.shards_of(name),
                owned=owned,
                resources=int(count["resources"]),
                live_reservations=int(count["live_reservations"]),
                in_doubt=doubt.get(db.name, []),
            )
        )
    return out
