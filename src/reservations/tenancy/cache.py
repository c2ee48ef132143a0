"""The API-key lookup cache in Redis, so authentication need not read PostgreSQL each time.

An entry is keyed by the key's public prefix and holds what the `api_key` row says: tenant,
key id, role, expiry, and the SHA-256 of the secret (never the secret), so a hit still checks
the presented secret exactly as the database path does.

Revocation writes a tombstone after the revoking transaction commits. A tombstone answers
"refused" and, because entries are only ever added with SET NX, it also stops a request that
read the row just before the revocation from re-filling a stale entry afterwards. The TTL is
the backstop for the one case no invalidation covers: a revocation made while this Redis was
unreachable from the revoking process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import orjson

from reservations.kit.metrics import CACHE_LOOKUPS
from reservations.kit.redis import UNAVAILABLE, Client, RedisTier
from reservations.tenancy.repository import KeyCheckRow

_TOMBSTONE = b"revoked"


@dataclass(frozen=True)
class KeyRecord:
    """What authentication needs from an `api_key` row."""

    tenant_id: UUID
    api_key_id: UUID
    role: str
    secret_hash: bytes
    expires_at: datetime | None
    revoked: bool

    @classmethod
    def from_row(cls, row: KeyCheckRow) -> KeyRecord:
        return cls(
            tenant_id=row.tenant_id,
            api_key_id=row.id,
            role=row.role,
            secret_hash=row.secret_hash,
            expires_at=row.expires_at,
            revoked=row.revoked_at is not None,
        )

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "t": str(self.tenant_id),
                "k": str(self.api_key_id),
                "r": self.role,
                "h": self.secret_hash.hex(),
                "e": self.expires_at.isoformat() if self.expires_at else None,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> KeyRecord:
        d = orjson.loads(raw)
        return cls(
            tenant_id=UUID(d["t"]),
            api_key_id=UUID(d["k"]),
            role=d["r"],
            secret_hash=bytes.fromhex(d["h"]),
            expires_at=datetime.fromisoformat(d["e"]) if d["e"] else None,
            revoked=False,
        )


REVOKED = KeyRecord(
    tenant_id=UUID(int=0), api_key_id=UUID(int=0), role="", secret_hash=b"", expires_at=None,
    revoked=True,
)  # fmt: skip


class KeyCache:
    def __init__(self, tier: RedisTier, *, ttl_seconds: int) -> None:
        self.tier = tier
        self.ttl = ttl_seconds

    def _key(self, prefix: str) -> str:
        return self.tier.key("apikey", prefix)

    async def get(self, prefix: str) -> KeyRecord | None:
        """The cached record (REVOKED for a tombstone), or None: read the database."""
        key = self._key(prefix)

        async def call(client: Client) -> bytes | None:
            raw = await client.get(key)
            return raw if isinstance(raw, bytes | None) else raw.encode()

        raw = await self.tier.run("api_key_get", call)
        if raw is UNAVAILABLE:
            CACHE_LOOKUPS.labels("api_key", "error").inc()
            return None
        if raw is None:
            CACHE_LOOKUPS.labels("api_key", "miss").inc()
            return None
        CACHE_LOOKUPS.labels("api_key", "hit").inc()
        if raw == _TOMBSTONE:
            return REVOKED
        try:
            return KeyRecord.decode(raw)
        except (ValueError, KeyError, TypeError):
            return None  # an entry this version cannot read: the database decides

    async def fill(self, prefix: str, record: KeyRecord) -> None:
        if record.revoked:
            return
        key, value = self._key(prefix), record.encode()

        async def call(client: Client) -> object:
            return await client.set(key, value, ex=self.ttl, nx=True)

        await self.tier.run("api_key_fill", call)

    async def invalidate(self, prefix: str) -> bool:
        """After a revocation commits: refuse the key from now on. False if Redis could not
        be told (the TTL then bounds how long a cached entry may still be used)."""
        key = self._key(prefix)

        async def call(client: Client) -> object:
            return await client.set(key, _TOMBSTONE, ex=max(self.ttl, 1))

        return await self.tier.run("api_key_invalidate", call, essential=True) is not UNAVAILABLE
