"""Idempotency-Key handling, inside the caller's transaction.

The record is written in the same transaction as the effect, so a request either happened and
left its response behind, or did not happen and left nothing. While one request runs, it holds
a transaction-scoped advisory lock on (API key, Idempotency-Key): a concurrent duplicate fails
`pg_try_advisory_xact_lock` and gets 409 instead of running twice or blocking. Only successful
responses are stored; a failed request changed nothing, so its retry simply runs again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import orjson
from psycopg import AsyncCursor
from psycopg.rows import DictRow

from reservations.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from reservations.kit.db import Conn


@dataclass(frozen=True)
class Reply:
    """A response a service produced: what the endpoint sends and what a replay sends again."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False


@dataclass(frozen=True)
class Idempotency:
    api_key_id: UUID
    key: str
    fingerprint: bytes

    @classmethod
    def of(
        cls, *, api_key_id: UUID, key: str | None, method: str, path: str, payload: object
    ) -> Idempotency | None:
        if key is None:
            return None
        digest = hashlib.sha256()
        digest.update(method.encode())
        digest.update(b"\0")
        digest.update(path.encode())
        digest.update(b"\0")
        digest.update(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS))
        return cls(api_key_id=api_key_id, key=key, fingerprint=digest.digest())

    def _lock_keys(self) -> tuple[int, int]:
        h = hashlib.blake2b(self.api_key_id.bytes + self.key.encode(), digest_size=8).digest()
        return int.from_bytes(h[:4], "big", signed=True), int.from_bytes(h[4:], "big", signed=True)

    async def claim(self, conn: Conn, *, now: datetime, ttl: timedelta) -> Reply | None:
        """Take the key for this transaction. Returns the stored reply when this is a replay."""
        return await (await self.send_claim(conn, now=now, ttl=ttl)).outcome()

    async def send_claim(self, conn: Conn, *, now: datetime, ttl: timedelta) -> Claim:
        """Send the claim's two statements: the try-lock, then the look-up of a stored reply
        (a statement of its own, so its snapshot is taken after the lock is held and sees
        the reply of a request that held it before). In a pipelined transaction they travel
        with what the caller sends next; `Claim.outcome()` reads them."""
        hi, lo = self._lock_keys()
        lock = await conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s::int4, %s::int4) AS got", (hi, lo)
        )
        stored = await conn.execute(
            "SELECT fingerprint, status_code, body, headers FROM idempotency_record"
            " WHERE api_key_id = %s AND key = %s AND created_at > %s",
            (self.api_key_id, self.key, now - ttl),
        )
        return Claim(self, lock, stored)

    async def save(self, conn: Conn, reply: Reply, *, now: datetime) -> None:
        await conn.execute(
            "INSERT INTO idempotency_record"
            " (api_key_id, key, fingerprint, status_code, body, headers, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)"
            " ON CONFLICT (api_key_id, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,"
            " status_code = EXCLUDED.status_code, body = EXCLUDED.body,"
            " headers = EXCLUDED.headers, created_at = EXCLUDED.created_at",
            (
                self.api_key_id,
                self.key,
                self.fingerprint,
                reply.status,
                reply.body,
                orjson.dumps(reply.headers).decode(),
                now,
            ),
        )


@dataclass(frozen=True)
class Claim:
    """The answers to `Idempotency.send_claim`, read by `outcome`."""

    idem: Idempotency
    lock: AsyncCursor[DictRow]
    stored: AsyncCursor[DictRow]

    async def outcome(self) -> Reply | None:
        """Raises IdempotencyKeyInUse if another request holds the key, IdempotencyKeyReused
        if it was used for another request; the stored reply of a replay, else None."""
        row = await self.lock.fetchone()
        if not row or not row["got"]:
            raise IdempotencyKeyInUse(
                "Wait for the first request with this key to finish, then retry with the same "
                "key to receive its result."
            )
        stored = await self.stored.fetchone()
        if stored is None:
            return None
        if bytes(stored["fingerprint"]) != self.idem.fingerprint:
            raise IdempotencyKeyReused(
                "Use a new Idempotency-Key for a different request; a key may only be retried "
                "with exactly the same method, path and body."
            )
        return Reply(
            status=stored["status_code"],
            body=stored["body"],
            headers=dict(stored["headers"]),
            replayed=True,
        )


async def purge_expired(conn: Conn, *, before: datetime, batch: int = 1000) -> int:
    cur = await conn.execute(
        "DELETE FROM idempotency_record WHERE ctid IN (SELECT ctid FROM idempotency_record"
        " WHERE created_at < %s LIMIT %s)",
        (before, batch),
    )
    return cur.rowcount
