"""Use cases for tenants and keys (the CLI's `keys` commands and the first-start bootstrap)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from uuid import UUID

from reservations.kit.db import Database
from reservations.kit.ids import uuid7
from reservations.tenancy import keys, repository
from reservations.tenancy.cache import KeyCache, KeyRecord
from reservations.tenancy.repository import ListedKeyRow


class Role(StrEnum):
    admin = "admin"
    booker = "booker"
    viewer = "viewer"
    # An assistant booking for a person: searches and holds, never confirms, approves or
    # overrides rules, sees only its own reservations; a person confirms (docs/agents.md).
    agent = "agent"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, the key (bookers and agents own what their key created) and
    its role. `confirming`: the one reservation a signed confirm link lets this key confirm
    though another key made it (reservations/links.py); None otherwise."""

    tenant_id: UUID
    api_key_id: UUID
    role: Role
    confirming: UUID | None = None

    def sees_all(self) -> bool:
        return self.role in (Role.admin, Role.viewer)

    def owner(self) -> UUID | None:
        """The creator a query must filter by: bookers and agents see only their own (a key
        confirming through a link, that reservation too); None for the rest."""
        return None if self.sees_all() or self.confirming is not None else self.api_key_id


@dataclass(frozen=True)
class CreatedKey:
    token: str
    tenant: str
    role: Role
    prefix: str


@dataclass(frozen=True)
class RevokedKey:
    """A revocation: the key, when, and whether Redis was told (None: no cache to tell)."""

    prefix: str
    revoked_at: datetime
    cache_invalidated: bool | None


async def create_key(
    db: Database,
    *,
    tenant: str,
    role: Role,
    label: str = "",
    expires_at: datetime | None = None,
) -> CreatedKey:
    new = keys.generate()
    async with db.transaction() as conn:
        row = await repository.find_tenant(conn, tenant)
        if row is None:
            row = await repository.insert_tenant(conn, tenant_id=uuid7(), name=tenant)
        await repository.insert_key(
            conn,
            key_id=uuid7(),
            tenant_id=row.id,
            prefix=new.prefix,
            secret_hash=new.secret_hash,
            role=role.value,
            label=label,
            expires_at=expires_at,
        )
    return CreatedKey(token=new.token, tenant=tenant, role=role, prefix=new.prefix)


async def bootstrap_default(db: Database) -> CreatedKey | None:
    """On the very first start (no tenant at all), create tenant `default` with an admin key."""
    async with db.connection() as conn:
        if await repository.count_tenants(conn) > 0:
            return None
    return await create_key(db, tenant="default", role=Role.admin, label="first start")


async def list_keys(db: Database, tenant: str | None) -> list[ListedKeyRow]:
    async with db.connection() as conn:
        return await repository.list_keys(conn, tenant)


async def revoke_key(db: Database, prefix: str, *, cache: KeyCache | None) -> RevokedKey | None:
    """Revoke a key. `cache` is required (None only where no API process caches keys): with
    it, the key is refused from the next request on in every API process sharing the Redis.
    `cache_invalidated` in the result says whether Redis was told (if not, cached copies live
    until their TTL)."""
    async with db.transaction() as conn:
        row = await repository.revoke_key(conn, prefix=prefix, at=datetime.now(UTC))
    if row is None:
        return None
    # After COMMIT: invalidating earlier would let a concurrent request re-cache the row as
    # it was before the revocation.
    invalidated = await cache.invalidate(prefix) if cache else None
    return RevokedKey(prefix=row.prefix, revoked_at=row.revoked_at, cache_invalidated=invalidated)


async def authenticate(
    db: Database, token: str, *, now: datetime, cache: KeyCache | None = None
) -> Principal | None:
    parsed = keys.parse(token)
    if parsed is None:
        return None
    prefix, secret = parsed
    record = await cache.get(prefix) if cache else None
    if record is None:
        async with db.connection() as conn:
            row = await repository.key_by_prefix(conn, prefix)
        if row is None:
            return None
        record = KeyRecord.from_row(row)
        if cache:
            await cache.fill(prefix, record)
    if record.revoked or not keys.secret_matches(secret, record.secret_hash):
        return None
    if record.expires_at and record.expires_at <= now:
        return None
    return Principal(
        tenant_id=record.tenant_id, api_key_id=record.api_key_id, role=Role(record.role)
    )
