"""The availability map: a fast, database-free refusal for creates on a taken range.

Per unit-capacity resource and UTC day, a Redis bitmap of 5-minute granules. A granule's bit is
set only while a *confirmed* reservation's guarded range (`during`, buffers included) covers it
entirely; bits are written after COMMIT and cleared when the reservation is cancelled or moves.
A create is refused from the map only when its own guarded range fully covers a set granule:
then it overlaps a live reservation for certain. The map never accepts anything, so the
database still decides every accept. Holds set no bits (an expired hold must never block
anyone, and the map cannot see a clock run out); they are kept in the details only, so a
refusal can name every range in the way, as the database path does.

Staleness only ever errs one way or is bounded:
- a lost or late *mark* (Redis down, a crash after COMMIT) means no fast refusal: the database
  path answers, correctly;
- a late *mark* of a reservation already cleared is refused by the per-reservation version kept
  beside the bits (a clear records a newer version), so it cannot resurrect;
- a lost *clear* (a crash after COMMIT, a change made outside the API) leaves a stale bit: a
  false refusal until the repair job rebuilds that day from PostgreSQL or the key's TTL ends.
  The repair follows the outbox (reservations/tasks.py `repair_map_changes`): every change
  writes its event in its own transaction, so each committed change's days are rebuilt
  within a round (`RESERVATIONS_AVAILABILITY_MAP_REPAIR_INTERVAL_SECONDS`) of its commit,
  whether its own write here happened or not.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

import orjson

from reservations.availability_map.metrics import AVAILABILITY_MAP_DECISIONS
from reservations.kit.redis import UNAVAILABLE, Client, RedisTier

GRANULE = timedelta(minutes=5)
PER_DAY = int(timedelta(days=1) / GRANULE)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Day repairs sent in one round trip: small enough to end well inside the Redis timeout.
REPAIR_CHUNK = 100

# KEYS: bits, members, details. ARGV: id, version, lo, hi, ttl, detail ('' = not live).
# Bits lo..hi-1 are the granules this version covers (none for a hold).
_PUT = """
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local cv, clo, chi = string.match(cur, '^(%d+):(%d+):(%d+)$')
  if tonumber(cv) >= tonumber(ARGV[2]) then return 0 end
  for i = tonumber(clo), tonumber(chi) - 1 do redis.call('SETBIT', KEYS[1], i, 0) end
end
for i = tonumber(ARGV[3]), tonumber(ARGV[4]) - 1 do redis.call('SETBIT', KEYS[1], i, 1) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[4])
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[3], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[5]) end
return 1
"""

# KEYS: bits, members, details. ARGV: ttl, then (id, version, lo, hi, detail) for every live
# reservation of the day according to PostgreSQL. An entry Redis holds at a newer version than
# the database read is kept (a change committed after that read got there first); members the
# database no longer has live are forgotten with a newer version (so a late mark of theirs stays
# refused). The bits are rebuilt from the result.
_REPAIR = """
local live = {}
for i = 2, #ARGV, 5 do
  live[ARGV[i]] = {ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]}
end
local members = redis.call('HGETALL', KEYS[2])
local final, seen, wrong = {}, {}, 0
for i = 1, #members, 2 do
  local id, cur = members[i], members[i + 1]
  seen[id] = true
  local cv, clo, chi = string.match(cur, '^(%d+):(%d+):(%d+)$')
  local want = live[id]
  if want and tonumber(want[1]) >= tonumber(cv) then
    if want[2] ~= clo or want[3] ~= chi then wrong = wrong + 1 end
    final[id] = {want[1], want[2], want[3]}
    redis.call('HSET', KEYS[3], id, want[4])
  elseif want then
    final[id] = {cv, clo, chi}
  else
    if clo ~= chi or redis.call('HEXISTS', KEYS[3], id) == 1 then wrong = wrong + 1 end
    final[id] = {tostring(tonumber(cv) + 1), '0', '0'}
    redis.call('HDEL', KEYS[3], id)
  end
end
for id, want in pairs(live) do
  if not seen[id] then
    final[id] = {want[1], want[2], want[3]}
    redis.call('HSET', KEYS[3], id, want[4])
    if want[2] ~= want[3] then wrong = wrong + 1 end
  end
end
redis.call('DEL', KEYS[1])
for id, f in pairs(final) do
  redis.call('HSET', KEYS[2], id, f[1] .. ':' .. f[2] .. ':' .. f[3])
  for b = tonumber(f[2]), tonumber(f[3]) - 1 do redis.call('SETBIT', KEYS[1], b, 1) end
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[1]) end
return wrong
"""


def covered(start: datetime, end: datetime) -> dict[int, tuple[int, int]]:
    """The granules [start, end) covers entirely, by day number: {day: (first, last + 1)}."""
    first = -(-(start - _EPOCH) // GRANULE)  # ceil
    last = (end - _EPOCH) // GRANULE  # exclusive
    out: dict[int, tuple[int, int]] = {}
    g = first
    while g < last:
        day = g // PER_DAY
        stop = min(last, (day + 1) * PER_DAY)
        out[day] = (g - day * PER_DAY, stop - day * PER_DAY)
        g = stop
    return out


def day_bounds(day: int) -> tuple[datetime, datetime]:
    start = _EPOCH + timedelta(days=day)
    return start, start + timedelta(days=1)


def touched(start: datetime, end: datetime) -> list[int]:
    """Day numbers [start, end) touches (a change must reach each, marking or clearing)."""
    first = (start - _EPOCH) // timedelta(days=1)
    last = (end - _EPOCH - timedelta(microseconds=1)) // timedelta(days=1)
    return list(range(first, last + 1))


class Booked(Protocol):
    """A reservation row as the map reads it (repository.CHANGED's columns). A protocol: the
    reservations domain's row classes fit it, and the map, a layer below, imports none."""

    @property
    def id(self) -> UUID: ...
    @property
    def resource_id(self) -> UUID: ...
    @property
    def version(self) -> int: ...
    @property
    def pooled(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def start_at(self) -> datetime: ...
    @property
    def end_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def created_by(self) -> UUID: ...
    @property
    def during_start(self) -> datetime: ...
    @property
    def during_end(self) -> datetime: ...


def _detail(row: Booked) -> bytes:
    return orjson.dumps(
        {
            "id": str(row.id),
            "start_at": row.start_at.isoformat(),
            "end_at": row.end_at.isoformat(),
            "during_start": row.during_start.isoformat(),
            "during_end": row.during_end.isoformat(),
            "status": row.status,
            "expires_at": row.expires_at.isoformat() if row.expires_at else None,
            "created_by": str(row.created_by),
        }
    )


@dataclass(frozen=True, slots=True)
class Detail:
    """A live reservation as the map keeps it beside the bits (`_detail`'s JSON), read back
    for a refusal; `resource_id` is the resource whose day holds it."""

    id: UUID
    resource_id: UUID
    start_at: datetime
    end_at: datetime
    during_start: datetime
    during_end: datetime
    status: str
    expires_at: datetime | None
    created_by: UUID

    @classmethod
    def from_json(cls, raw: bytes | str, *, resource_id: UUID) -> Detail:
        d = orjson.loads(raw)
        expires = d["expires_at"]
        return cls(
            id=UUID(d["id"]),
            resource_id=resource_id,
            start_at=datetime.fromisoformat(d["start_at"]),
            end_at=datetime.fromisoformat(d["end_at"]),
            during_start=datetime.fromisoformat(d["during_start"]),
            during_end=datetime.fromisoformat(d["during_end"]),
            status=d["status"],
            expires_at=datetime.fromisoformat(expires) if expires is not None else None,
            created_by=UUID(d["created_by"]),
        )

    def stale(self, now: datetime) -> bool:
        """A hold past its expiry: it blocks no one."""
        return self.status == "held" and self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True, slots=True)
class Change:
    """A reservation after a committed change: what it covers now (nothing unless `live`),
    its details, and the range it had before if it moved (those days must be cleared)."""

    resource_id: UUID
    reservation_id: UUID
    version: int
    start: datetime
    end: datetime
    live: bool
    confirmed: bool
    detail: bytes
    was: tuple[datetime, datetime] | None = None

    def days(self) -> list[int]:
        days = set(touched(self.start, self.end))
        if self.was is not None:
            days.update(touched(*self.was))
        return sorted(days)

    def put_args(self, day: int, ttl: int) -> list[str]:
        """The PUT script's arguments for one day: bits (confirmed only) and details."""
        lo, hi = covered(self.start, self.end).get(day, (0, 0)) if self.confirmed else (0, 0)
        live = self.live and day in touched(self.start, self.end)
        detail = self.detail.decode() if live else ""
        return [str(self.reservation_id), str(self.version), str(lo), str(hi), str(ttl), detail]


def changes(
    rows: Iterable[Booked],
    *,
    live: bool,
    was: dict[UUID, tuple[datetime, datetime]] | None = None,
) -> list[Change]:
    """Map changes for committed rows (which carry repository.CHANGED's columns). Rows of
    pooled resources are never marked (a covered granule there does not mean full), but one
    that stops being live is still cleared: it may carry a mark from when its resource had
    capacity 1. (A capacity change also repairs the resource's days; see resources.service.)"""
    out = []
    for row in rows:
        if live and row.pooled:
            continue
        mark = live
        out.append(
            Change(
                resource_id=row.resource_id,
                reservation_id=row.id,
                version=row.version,
                start=row.during_start,
                end=row.during_end,
                live=mark,
                confirmed=mark and row.status == "confirmed",
                detail=_detail(row) if mark else b"",
                was=(was or {}).get(row.id),
            )
        )
    return out


class AvailabilityMap:
    def __init__(self, tier: RedisTier, *, ttl_seconds: int) -> None:
        self.tier = tier
        self.ttl = ttl_seconds
        self._put: Any = None
        self._repair: Any = None

    def _keys(self, resource_id: UUID, day: int) -> list[str]:
        base = self.tier.key("map", str(resource_id), str(day))
        return [base + ":b", base + ":m", base + ":d"]

    async def refusal(
        self, resource_id: UUID, start: datetime, end: datetime, *, now: datetime
    ) -> list[Detail] | None:
        """The live reservations in the way of guarded range [start, end), if the map is
        certain there are some (the range fully covers a marked granule); else None."""
        spans = covered(start, end)
        if not spans:
            AVAILABILITY_MAP_DECISIONS.labels("pass").inc()
            return None
        days = touched(start, end)

        async def call(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for day, (lo, hi) in spans.items():
                pipe.bitcount(self._keys(resource_id, day)[0], lo, hi - 1, mode="BIT")
            for day in days:
                pipe.hvals(self._keys(resource_id, day)[2])
            return list(await pipe.execute())

        result = await self.tier.run("map_check", call)
        if result is UNAVAILABLE:
            AVAILABILITY_MAP_DECISIONS.labels("unavailable").inc()
            return None
        if not any(result[: len(spans)]):
            AVAILABILITY_MAP_DECISIONS.labels("pass").inc()
            return None
        in_way: dict[UUID, Detail] = {}
        for values in result[len(spans) :]:
            for raw in values:
                d = Detail.from_json(raw, resource_id=resource_id)
                if not d.stale(now) and d.during_start < end and start < d.during_end:
                    in_way[d.id] = d
        if not any(d.status == "confirmed" for d in in_way.values()):
            AVAILABILITY_MAP_DECISIONS.labels(
                "pass"
            ).inc()  # bits without details: let the database say
            return None
        AVAILABILITY_MAP_DECISIONS.labels("refuse").inc()
        return sorted(in_way.values(), key=lambda d: (d.start_at, d.id))

    async def apply(self, changes: Iterable[Change]) -> None:
        """Record committed changes (after COMMIT). Failures are left to the repair job.

        Clears are tried even while Redis is in its cool-down (a lost clear means false
        refusals until the repair job runs); marks are not (a lost mark costs nothing but
        a database round trip)."""
        changes = list(changes)
        ops = [
            (self._keys(ch.resource_id, day), ch.put_args(day, self.ttl))
            for ch in changes
            for day in ch.days()
        ]
        clears = any(not ch.live or ch.was is not None for ch in changes)
        if not ops:
            return

        async def call(client: Client) -> object:
            if self._put is None:
                self._put = client.register_script(_PUT)
            if len(ops) == 1:
                # One EVALSHA (NOSCRIPT loads it and retries). A pipeline would first ask
                # SCRIPT EXISTS for its scripts: one more round trip on every create.
                keys, args = ops[0]
                return [await self._put(keys=keys, args=args, client=client)]
            pipe = client.pipeline(transaction=False)
            for keys, args in ops:
                await self._put(keys=keys, args=args, client=pipe)
            return await pipe.execute()

        await self.tier.run("map_apply", call, essential=clears)

    def _repair_args(self, day: int, live: Sequence[Booked]) -> list[str]:
        args: list[str] = [str(self.ttl)]
        for ch in changes(live, live=True):
            args += [*ch.put_args(day, self.ttl)[:4], ch.detail.decode()]
        return args

    async def repair_day(self, resource_id: UUID, day: int, live: Sequence[Booked]) -> int | None:
        """Rebuild one day of a resource from its live rows (repository.CHANGED columns).
        Returns how many reservations it had wrong, or None if Redis could not be reached."""
        return await self.repair_days([(resource_id, day, live)])

    async def repair_days(self, days: Sequence[tuple[UUID, int, Sequence[Booked]]]) -> int | None:
        """Rebuild (resource, day) entries from their live rows, REPAIR_CHUNK to a round trip.
        Returns how many reservations they had wrong, or None if Redis could not be reached
        (some may have been rebuilt)."""
        wrong = 0
        for lo in range(0, len(days), REPAIR_CHUNK):
            ops = [
                (self._keys(rid, day), self._repair_args(day, live))
                for rid, day, live in days[lo : lo + REPAIR_CHUNK]
            ]

            async def call(client: Client, ops: list[tuple[list[str], list[str]]] = ops) -> int:
                if self._repair is None:
                    self._repair = client.register_script(_REPAIR)
                if len(ops) == 1:
                    keys, args = ops[0]
                    return int(await self._repair(keys=keys, args=args, client=client))
                pipe = client.pipeline(transaction=False)
                for keys, args in ops:
                    await self._repair(keys=keys, args=args, client=pipe)
                return sum(int(n) for n in await pipe.execute())

            result = await self.tier.run("map_repair", call, essential=True)
            if result is UNAVAILABLE:
                return None
            wrong += result
        return wrong

    async def days_in_use(self, resource_id: UUID) -> list[tuple[UUID, int]] | None:
        """The (resource, day) entries the map holds for one resource, or None if Redis could
        not be reached. A SCAN of the whole keyspace (the map keeps no index by resource):
        for the rare change that concerns every day of a resource (a capacity change)."""
        pattern = self.tier.key("map", str(resource_id), "*") + ":m"

        def pair(raw: bytes | str) -> tuple[UUID, int]:
            key = raw.decode() if isinstance(raw, bytes) else raw
            parts = key[len(self.tier.prefix) :].split(":")
            return UUID(parts[1]), int(parts[2])

        out: list[tuple[UUID, int]] = []
        cursor = 0
        while True:

            async def call(client: Client, at: int = cursor) -> tuple[int, list[Any]]:
                found = await client.scan(at, match=pattern, count=1000)
                return int(found[0]), list(found[1])

            result = await self.tier.run("map_scan", call, essential=True)
            if result is UNAVAILABLE:
                return None
            cursor, batch = result
            out += [pair(raw) for raw in batch]
            if cursor == 0:
                return out
