"""Idempotency-Key handling, inside the caller's transaction (Stripe's semantics).

The record is written in the same transaction as the effect, so a request either happened and
left its response behind, or did not happen and left nothing. While one request runs, it holds
a transaction-scoped advisory lock on (API key, Idempotency-Key): a concurrent duplicate fails
`pg_try_advisory_xact_lock` and gets 409 instead of running twice or blocking.

Every request that got past its claim leaves its outcome: the service saves a success; a
refusal (a 4xx domain error, see `errors.recorded_error`) is saved by the claim's recorder,
which the transaction runs when its block raises (kit/db.py `on_failure`): back to the
savepoint the claim set right after the lock and the look-up, the problem reply saved under the
key, COMMIT, then the error goes to the client as usual. So a retry of a 409 conflict gets the
409 again even once the slot is free: its client was told the slot is taken. Not kept (the
retry runs again): refusals before the claim (malformed input, authentication, quotas), 429s,
5xx, and the "not now" conflicts (idempotency-key-in-use, booking-contended). Nor is a refusal
decided after the transaction ended: a create whose insert met the exclusion constraint on
both of its attempts (a double race) raises its 409 outside them, unrecorded.

A kept 409 `reservation-conflict` or 422 `booking-rule-violated` changed nothing and came
with alternatives (reservations/alternatives): the key then goes to the next *different*
request that uses it (its outcome replaces the refusal under the key), so a client books an
alternative with the key it already sent; the same request again still replays the refusal.

A secret in a reply (a feed's token, a webhook's signing secret) is not stored as it is: it
is sealed with a pad derived from the caller's own bearer token, which the database holds
only as a hash (`Reply.secret`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from uuid import UUID

import orjson
from psycopg import AsyncCursor, sql
from psycopg.rows import DictRow

from reservations.errors import (
    PROBLEM_JSON,
    DomainError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    recorded_error,
    reopens_key,
)
from reservations.kit.db import Conn, Database, bound, on_failure, with_commit

# Set by the claim right after the key's lock and look-up; a recorded failure rolls back to it.
_SAVEPOINT = "idempotency_claim"
# Where a stored reply keeps its sealed secret (never sent: the replay unseals it), and what
# stands for the secret in the stored body: a character JSON always escapes, so it cannot
# occur in a JSON body otherwise.
_SEALED = "Idempotency-Sealed-Secret"
_PLACEHOLDER = "\x01"


@dataclass(frozen=True)
class Reply:
    """A response a service produced: what the endpoint sends and what a replay sends again."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    replayed: bool = False
    # A secret that occurs in the body (a token shown once): stored sealed, see `_sealed`.
    secret: str | None = field(default=None, repr=False)

    @classmethod
    def problem(cls, error: DomainError) -> Reply:
        """The reply the error handler sends for `error` (errors.py), as stored under a key."""
        body = bytes(error.response().body).decode()
        return cls(error.status, body, {"Content-Type": PROBLEM_JSON, **error.headers})

    def _sealed(self, seal_key: bytes) -> Reply:
        """This reply with its secret replaced in the body by a placeholder and kept in a
        header only as secret XOR HMAC-SHA512(seal key, random salt): without the caller's
        bearer token, the stored record does not give the secret away."""
        if self.secret is None:
            return self
        salt = secrets.token_bytes(16)
        plain = self.secret.encode()
        sealed = bytes(a ^ b for a, b in zip(plain, _pad(seal_key, salt, len(plain)), strict=True))
        headers = {**self.headers, _SEALED: f"{salt.hex()}.{sealed.hex()}"}
        return replace(self, body=self.body.replace(self.secret, _PLACEHOLDER), headers=headers)

    def _unsealed(self, seal_key: bytes) -> Reply:
        if _SEALED not in self.headers:
            return self
        headers = dict(self.headers)
        salt_hex, sealed_hex = headers.pop(_SEALED).split(".")
        sealed = bytes.fromhex(sealed_hex)
        pad = _pad(seal_key, bytes.fromhex(salt_hex), len(sealed))
        secret = bytes(a ^ b for a, b in zip(sealed, pad, strict=True)).decode()
        return replace(self, body=self.body.replace(_PLACEHOLDER, secret), headers=headers)


def _pad(seal_key: bytes, salt: bytes, size: int) -> bytes:
    pad = hmac.new(seal_key, b"reservations/idempotency-seal\0" + salt, hashlib.sha512).digest()
    if size > len(pad):
        raise ValueError("a sealed secret is at most 64 bytes")
    return pad[:size]


@dataclass(frozen=True)
class Idempotency:
    api_key_id: UUID
    key: str
    fingerprint: bytes
    # The caller's bearer token: seals a reply's secret (`Reply.secret`); never stored.
    seal_key: bytes = field(default=b"", repr=False)
    # Whether a refusal after the claim is kept under the key. A create from a pool claims
    # the key once per resource it tries: a refusal there is one resource's, not the
    # request's outcome (reservations/pools.py).
    keep_refusals: bool = True

    @classmethod
    def of(
        cls,
        *,
        api_key_id: UUID,
        key: str | None,
        method: str,
        path: str,
        payload: object,
        precondition: str | None = None,
        seal_key: bytes = b"",
    ) -> Idempotency | None:
        """`precondition`: the request's If-Match, part of what makes it the same request
        (a refusal is kept: a 412 retried with a fresher ETag under the same key is another
        request, 422 idempotency-key-reused, not the 412 again)."""
        if key is None:
            return None
        digest = hashlib.sha256()
        digest.update(method.encode())
        digest.update(b"\0")
        digest.update(path.encode())
        digest.update(b"\0")
        digest.update(_canonical(payload))
        if precondition is not None:
            digest.update(b"\0If-Match\0" + precondition.encode())
        return cls(api_key_id=api_key_id, key=key, fingerprint=digest.digest(), seal_key=seal_key)

    def anchor(self) -> UUID:
        """An id derived from the key alone, for a create whose new id would otherwise pick
        its shard at random (`uuid7_beside(idem.anchor())`): every retry with the key then
        lands on the cluster that holds the key's record."""
        return UUID(bytes=hashlib.blake2b(self.api_key_id.bytes + self.key.encode()).digest()[:16])

    def _lock_keys(self) -> tuple[int, int]:
        h = hashlib.blake2b(self.api_key_id.bytes + self.key.encode(), digest_size=8).digest()
        return int.from_bytes(h[:4], "big", signed=True), int.from_bytes(h[4:], "big", signed=True)

    def claim_statements(self, conn: Conn, *, now: datetime, ttl: timedelta) -> sql.SQL:
        """The claim, as statements without parameters (one round trip, and they may go
        with BEGIN: kit/db.py `Database.unit(first=...)`): the try-lock, then the look-up
        of a stored reply (a statement of its own, so its snapshot is taken after the lock
        is held and sees the reply of a request that held it before), then the savepoint a
        recorded failure returns to. `claimed` reads their results."""
        hi, lo = self._lock_keys()
        return bound(
            conn,
            "SELECT pg_try_advisory_xact_lock(%s::int4, %s::int4) AS got;"
            " SELECT fingerprint, status_code, body, headers FROM idempotency_record"
            " WHERE api_key_id = %s AND key = %s AND created_at > %s;"
            " SAVEPOINT idempotency_claim",  # the savepoint `_SAVEPOINT` names
            (hi, lo, self.api_key_id, self.key, now - ttl),
        )

    async def claim(self, conn: Conn, *, now: datetime, ttl: timedelta) -> Reply | None:
        """Take the key for this transaction (one round trip). Returns the stored reply when
        this is a replay; else, from here on, a refusal the block raises is kept under the
        key (see the module's doc)."""
        cur = await conn.execute(self.claim_statements(conn, now=now, ttl=ttl), prepare=False)
        return await self.claimed(conn, cur, now=now)

    async def claimed(
        self, conn: Conn, results: AsyncCursor[DictRow], *, now: datetime
    ) -> Reply | None:
        """The claim's outcome from its statements' `results`: raises IdempotencyKeyInUse
        if another request holds the key, IdempotencyKeyReused if it was used for another
        request; the stored reply of a replay, else None (the key is this transaction's,
        and a refusal its block raises will be kept)."""
        row = await results.fetchone()
        if not row or not row["got"]:
            raise IdempotencyKeyInUse(
                "Wait for the first request with this key to finish, then retry with the same "
                "key to receive its result."
            )
        results.nextset()
        stored = await results.fetchone()
        fresh = stored is None or (
            bytes(stored["fingerprint"]) != self.fingerprint
            and reopens_key(stored["status_code"], stored["body"])
        )
        if fresh:
            if self.keep_refusals:
                on_failure(conn, partial(self._record_failure, now=now))
            return None
        assert stored is not None
        if bytes(stored["fingerprint"]) != self.fingerprint:
            raise IdempotencyKeyReused(
                "Use a new Idempotency-Key for a different request; a key may only be retried "
                "with exactly the same method, path, body and If-Match."
            )
        return Reply(
            status=stored["status_code"],
            body=stored["body"],
            headers=dict(stored["headers"]),
            replayed=True,
        )._unsealed(self.seal_key)

    async def _record_failure(self, conn: Conn, error: BaseException, *, now: datetime) -> bool:
        """The transaction's recorder (kit/db.py `on_failure`): undo what the request did
        after its claim and keep its refusal under the key; False if it is not to be kept."""
        refusal = recorded_error(error)
        if refusal is None:
            return False
        await conn.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}", prepare=False)
        await self.save(conn, Reply.problem(refusal), now=now)
        return True

    async def save(self, conn: Conn, reply: Reply, *, now: datetime) -> None:
        """Leave `reply` under the key, in the transaction open on `conn` (with its COMMIT:
        nothing reads it before)."""
        reply = reply._sealed(self.seal_key)
        await with_commit(
            conn,
            bound(
                conn,
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
            ),
        )


async def claim(
    idem: Idempotency | None, conn: Conn, *, now: datetime, ttl: timedelta
) -> Reply | None:
    """`idem.claim(...)`, and None without a key."""
    return None if idem is None else await idem.claim(conn, now=now, ttl=ttl)


async def record(idem: Idempotency | None, conn: Conn, reply: Reply, *, now: datetime) -> None:
    """`idem.save(...)`: the reply the request's transaction leaves under its key."""
    if idem is not None:
        await idem.save(conn, reply, now=now)


async def amend(db: Database, idem: Idempotency | None, reply: Reply) -> None:
    """Replace the reply saved under the key by the one the request finally sends, for a
    use case that completes its reply after its transaction (a waitlist entry promoted at
    once). Until then a duplicate replays the first one: the same object, seen earlier."""
    if idem is None:
        return
    sealed = reply._sealed(idem.seal_key)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE idempotency_record SET status_code = %s, body = %s, headers = %s::jsonb"
            " WHERE api_key_id = %s AND key = %s AND fingerprint = %s",
            (
                sealed.status,
                sealed.body,
                orjson.dumps(sealed.headers).decode(),
                idem.api_key_id,
                idem.key,
                idem.fingerprint,
            ),
        )


async def purge_expired(conn: Conn, *, before: datetime, batch: int = 1000) -> int:
    cur = await conn.execute(
        "DELETE FROM idempotency_record WHERE ctid IN (SELECT ctid FROM idempotency_record"
        " WHERE created_at < %s LIMIT %s)",
        (before, batch),
    )
    return cur.rowcount


def _canonical(payload: object) -> bytes:
    """The body's bytes for the fingerprint, keys sorted. A JSON integer past 64 bits (which
    a schema-valid body may hold until the service refuses it with a 422) is more than orjson
    writes; the standard library writes those."""
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
