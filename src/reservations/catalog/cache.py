"""Resource metadata (capacity, time zone, policy, version) cached in Redis for the paths that
must not touch PostgreSQL: the fast rejection of a create, and reads.

Writes are versioned: an entry is replaced only by a higher `version` (a Lua compare-and-set),
so a slow request that read version 3 cannot put it back over version 4 that a PATCH wrote
after its commit. Archiving writes a versioned tombstone. A TTL bounds what a lost update
(a process that died between COMMIT and the cache write) can leave behind."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from reservations.catalog.repository import ResourceRow
from reservations.kit.metrics import CACHE_LOOKUPS
from reservations.kit.redis import UNAVAILABLE, Client, RedisTier

# KEYS[1] entry; ARGV: version, payload, ttl. Replaces only an older (or no) entry.
_PUT = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'EX', ARGV[3])
return 1
"""


def _encode(row: ResourceRow, tenant_id: UUID) -> dict[str, Any]:
    """The entry's JSON: the row but its version (the entry's prefix), with its tenant."""
    return {
        "id": row.id,
        "name": row.name,
        "capacity": row.capacity,
        "timezone": row.timezone,
        "tags": row.tags,
        "metadata": row.metadata,
        "policy": row.policy,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "tenant_id": str(tenant_id),
    }


def _decode(entry: dict[str, Any], version: int) -> ResourceRow:
    return ResourceRow(
        id=UUID(entry["id"]),
        name=entry["name"],
        capacity=entry["capacity"],
        timezone=entry["timezone"],
        tags=entry["tags"],
        metadata=entry["metadata"],
        policy=entry["policy"],
        version=version,
        created_at=datetime.fromisoformat(entry["created_at"]),
        updated_at=datetime.fromisoformat(entry["updated_at"]),
    )


class ResourceCache:
    def __init__(self, tier: RedisTier, *, ttl_seconds: int) -> None:
        self.tier = tier
        self.ttl = ttl_seconds
        self._script: Any = None

    def _key(self, resource_id: UUID) -> str:
        return self.tier.key("res", str(resource_id))

    async def get(self, tenant_id: UUID, resource_id: UUID) -> ResourceRow | None:
        """The cached live resource of this tenant, or None (unknown, archived, another
        tenant's, or Redis unavailable: ask the database)."""
        key = self._key(resource_id)
        raw = await self.tier.run("resource_get", lambda c: c.get(key))
        if raw is UNAVAILABLE:
            CACHE_LOOKUPS.labels("resource", "error").inc()
            return None
        if raw is None:
            CACHE_LOOKUPS.labels("resource", "miss").inc()
            return None
        CACHE_LOOKUPS.labels("resource", "hit").inc()
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        version, _, payload = data.partition(b"|")
        entry: dict[str, Any] = orjson.loads(payload)
        if entry.get("archived") or entry.get("tenant_id") != str(tenant_id):
            return None
        try:
            return _decode(entry, int(version))
        except (ValueError, KeyError, TypeError):
            return None  # an entry this version cannot read: the database decides

    async def put(self, row: ResourceRow, *, tenant_id: UUID, essential: bool = False) -> None:
        """After COMMIT (`essential`: tried even in Redis's cool-down, a lost write-through
        would serve the old version until the TTL) or after a read: offer this version."""
        await self._put(row.id, row.version, _encode(row, tenant_id), essential=essential)

    async def archived(self, resource_id: UUID, version: int) -> None:
        await self._put(resource_id, version, {"archived": True}, essential=True)

    async def _put(
        self, resource_id: UUID, version: int, payload: dict[str, Any], *, essential: bool = False
    ) -> None:
        key = self._key(resource_id)
        try:
            data = orjson.dumps(payload, default=str)
        except TypeError:
            # Metadata with an integer beyond 64 bits, stored before the API refused them
            # (kit/fields.py): not cached, its reads go to PostgreSQL.
            return

        async def call(client: Client) -> object:
            if self._script is None:
                self._script = client.register_script(_PUT)
            return await self._script(keys=[key], args=[version, data, self.ttl])

        await self.tier.run("resource_put", call, essential=essential)
