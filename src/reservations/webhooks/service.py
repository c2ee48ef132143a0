"""Webhook endpoint use cases (admin keys): register, read, change, delete, read the
delivery log, queue a test message. Each function owns its transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from reservations.context import Context
from reservations.errors import InvalidInput, NotFound, PreconditionFailed
from reservations.kit.db import Conn, Database
from reservations.kit.idempotency import Idempotency, Reply, claim, record
from reservations.kit.ids import uuid7
from reservations.kit.pagination import (
    decode_id_cursor,
    decode_positions,
    encode_cursor,
    encode_positions,
    merged,
)
from reservations.tenancy.service import Principal
from reservations.webhooks import addresses, copies, messages, repository, signing
from reservations.webhooks.repository import AttemptRow, EndpointRow
from reservations.webhooks.schemas import (
    AttemptPage,
    AttemptRead,
    TestMessage,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookRead,
    WebhookUpdate,
)

ADMIN_DISABLED = "Disabled by an admin (PATCH enabled=false)."


def _read(row: EndpointRow) -> WebhookRead:
    return WebhookRead.model_validate(row, from_attributes=True)


def _not_found(endpoint_id: UUID) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id} in your tenant.")


def _bad_url(message: str) -> InvalidInput:
    return InvalidInput(
        f"The url {message}.",
        errors=[{"field": "url", "in": "body", "message": message}],
    )


async def check_url(svc: Context, url: str) -> None:
    """The URL's form, and unless private receivers are allowed, that its host resolves to
    public addresses only (422 naming `url` otherwise). Delivery checks again."""
    allow = svc.settings.webhooks_allow_private
    try:
        target = addresses.parse(url, allow_private=allow)
    except ValueError as exc:
        raise _bad_url(str(exc)) from None
    if not allow:
        try:
            await addresses.public_addresses(target)
        except addresses.AddressRefused as exc:
            raise _bad_url(str(exc)) from None


async def create(
    svc: Context, caller: Principal, body: WebhookCreate, idem: Idempotency | None
) -> Reply:
    """Register an endpoint; the reply (201, with the signing secret, which a stored reply
    keeps only sealed) is the one an Idempotency-Key replays."""
    await check_url(svc, body.url)
    secret = signing.new_secret()
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        row = await repository.insert_endpoint(
            conn,
            endpoint_id=uuid7(),
            tenant_id=caller.tenant_id,
            url=body.url,
            description=body.description,
            event_types=body.event_types,
            secret=secret,
            now=now,
        )
        created = WebhookCreated(**_read(row).model_dump(), secret=secret)
        reply = Reply(
            status=201,
            body=created.model_dump_json(),
            headers={"ETag": f'"{created.version}"', "Location": f"/v1/webhooks/{created.id}"},
            secret=secret,
        )
        await record(idem, conn, reply, now=now)
    if svc.shards.sharded:
        await copies.push(svc)
    return reply


async def get(svc: Context, caller: Principal, endpoint_id: UUID) -> WebhookRead:
    row = await svc.db.read(
        lambda conn: repository.get_endpoint(
            conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id
        )
    )
    if row is None:
        raise _not_found(endpoint_id)
    return _read(row)


async def list_page(
    svc: Context, caller: Principal, *, limit: int, cursor: str | None
) -> WebhookPage:
    after = None
    if cursor is not None:
        after = decode_id_cursor(cursor)
    rows = await svc.db.read(
        lambda conn: repository.page_endpoints(
            conn, tenant_id=caller.tenant_id, after=after, limit=limit + 1
        )
    )
    items = [_read(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return WebhookPage(items=items, next_cursor=next_cursor)


async def update(
    svc: Context,
    caller: Principal,
    endpoint_id: UUID,
    body: WebhookUpdate,
    expected_version: int | None,
) -> WebhookRead:
    changes: dict[str, Any] = {
        k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None
    }
    if "url" in changes:
        await check_url(svc, changes["url"])
    if changes.get("enabled") is False:
        changes["disabled_reason"] = ADMIN_DISABLED
    async with svc.db.transaction() as conn:
        row = await repository.update_endpoint(
            conn,
            tenant_id=caller.tenant_id,
            endpoint_id=endpoint_id,
            changes=changes,
            expected_version=expected_version,
            now=svc.clock.now(),
        )
        if row is None:
            current = await repository.get_endpoint(
                conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id
            )
            if current is None:
                raise _not_found(endpoint_id)
            raise PreconditionFailed(
                f"The endpoint is at version {current.version}; fetch it again and retry.",
                current_version=current.version,
            )
        if changes.get("enabled") is True:
            await repository.resume_deliveries(conn, endpoint_id=endpoint_id)
    if svc.shards.sharded:
        await copies.push(svc, resumed=endpoint_id if changes.get("enabled") is True else None)
    return _read(row)


async def delete(svc: Context, caller: Principal, endpoint_id: UUID) -> None:
    async with svc.db.transaction() as conn:
        if not await repository.delete_endpoint(
            conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id
        ):
            raise _not_found(endpoint_id)
    if svc.shards.sharded:
        await copies.push(svc)


async def send_test(
    svc: Context, caller: Principal, endpoint_id: UUID, idem: Idempotency | None
) -> Reply:
    """Queue a `webhook.test` message; the worker delivers it like any other (signed,
    retried, logged), as soon as the endpoint is enabled. 202 with the message."""
    now = svc.clock.now()
    async with svc.db.transaction() as conn:
        if replay := await claim(idem, conn, now=now, ttl=svc.settings.idempotency_ttl):
            return replay
        if (
            await repository.get_endpoint(conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id)
            is None
        ):
            raise _not_found(endpoint_id)
        row = await repository.insert_test_message(
            conn, delivery_id=uuid7(), endpoint_id=endpoint_id
        )
        message = TestMessage(
            message_id=messages.message_id(row.id),
            status=row.status,
            created_at=row.created_at,
        )
        reply = Reply(status=202, body=message.model_dump_json())
        await record(idem, conn, reply, now=now)
    return reply


async def attempts(
    svc: Context, caller: Principal, endpoint_id: UUID, *, limit: int, cursor: str | None
) -> AttemptPage:
    before = decode_positions(cursor)
    found = await svc.db.read(
        lambda conn: repository.get_endpoint(
            conn, tenant_id=caller.tenant_id, endpoint_id=endpoint_id
        )
    )
    if found is None:
        raise _not_found(endpoint_id)
    # The catalog's log (test messages), and each cluster's (its events' messages).
    databases = [svc.db, *copies.clusters(svc)]

    def read(db: Database) -> Callable[[Conn], Awaitable[list[AttemptRow]]]:
        return lambda conn: repository.attempts_page(
            conn, endpoint_id=endpoint_id, before=before.get(db.name), limit=limit + 1
        )

    pages = [[(db.name, r) for r in await db.read(read(db))] for db in databases]
    tagged = merged(
        pages, key=lambda t: (t[1].attempted_at, t[1].id), limit=limit + 1, reverse=True
    )
    rows = [r for _, r in tagged]
    items = [
        AttemptRead(
            id=r.id,
            message_id=messages.message_id(r.delivery_id),
            event_id=messages.event_id(r.event_txid, r.event_id),
            event_type=r.event_type,
            resource_id=r.resource_id,
            resource_seq=r.resource_seq,
            attempt=r.attempt,
            outcome=r.outcome,
            message_status=r.delivery_status,
            status_code=r.status_code,
            latency_ms=r.latency_ms,
            error=r.error,
            attempted_at=r.attempted_at,
            next_attempt_at=r.next_attempt_at,
        )
        for r in rows[:limit]
    ]
    for name, r in tagged[:limit]:
        before[name] = r.id
    next_cursor = encode_positions(before) if len(rows) > limit else None
    return AttemptPage(items=items, next_cursor=next_cursor)
