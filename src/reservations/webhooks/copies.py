"""Webhook endpoints with shard clusters: each cluster has its own outbox, so each keeps a
copy of every endpoint and fans out and delivers its own events (the workers run a
dispatcher per database). The catalog's row is the endpoint: the API changes it there and
pushes the change to every cluster at once; each cluster's dispatcher syncs again every
SYNC_SECONDS, so a cluster that was down catches up.
A copy starts receiving with the snapshot of its own insert on that cluster.

An endpoint that fails on one cluster is disabled in the catalog (and so everywhere); PATCH
enabled=true resets every copy's failure streak and makes its waiting messages due."""

from __future__ import annotations

import logging
from uuid import UUID

import psycopg

from reservations.context import Context
from reservations.kit.db import Database
from reservations.webhooks import repository

log = logging.getLogger(__name__)

SYNC_SECONDS = 5.0


def clusters(svc: Context) -> list[Database]:
    """The databases other than the catalog that hold events."""
    return [db for db in svc.shards.databases() if db is not svc.shards.catalog]


async def sync(svc: Context, db: Database) -> int:
    async with svc.shards.catalog.connection() as conn:
        rows = await repository.all_endpoints(conn)
    async with db.transaction() as conn:
        return await repository.sync_copies(conn, rows)


async def push(svc: Context, *, resumed: UUID | None = None) -> None:
    """After a change in the catalog: sync every cluster now (a cluster that cannot be
    reached catches up on its next dispatcher round); `resumed`: an endpoint re-enabled."""
    for db in clusters(svc):
        try:
            await sync(svc, db)
            if resumed is not None:
                async with db.transaction() as conn:
                    await repository.reset_streak(conn, endpoint_id=resumed)
                    await repository.resume_deliveries(conn, endpoint_id=resumed)
        except (psycopg.Error, OSError) as exc:
            log.warning("webhook endpoints not synced to %s yet: %r", db.name, exc)


async def disable_everywhere(svc: Context, endpoint_id: UUID, reason: str) -> None:
    """A cluster's dispatcher disabled its copy: the endpoint itself is disabled."""
    async with svc.shards.catalog.transaction() as conn:
        await repository.disable_endpoint(conn, endpoint_id=endpoint_id, reason=reason)
