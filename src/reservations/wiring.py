"""Builds the context (context.py) the app, the CLI and the worker run use cases in: the
shard router, Redlock, the Redis tier's components, and the hooks that connect domains
without importing each other (the waitlist's promotion on freed ranges). The one module
besides app.py, cli.py and worker.py that may import every domain."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from reservations.availability_map.store import AvailabilityMap
from reservations.catalog.cache import ResourceCache
from reservations.config import Settings
from reservations.context import Context
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.kit.ratelimit import RateLimiter
from reservations.kit.redis import RedisTier
from reservations.kit.redlock import Redlock
from reservations.sharding.router import Shards
from reservations.tenancy.cache import KeyCache
from reservations.tenancy.limits import CallerLimits
from reservations.waitlist import promotion

log = logging.getLogger(__name__)


def build(settings: Settings, db: Database, clock: Clock, *, redis: bool = False) -> Context:
    """The context around the catalog database `db`. With `redis`, the Redis tier and what
    uses it (nothing connects until `opened`); without, the database alone (CLI commands)."""
    shards = Shards(db, settings)
    context = Context(
        settings=settings,
        db=db,
        clock=clock,
        shards=shards,
        redlock=_redlock(settings, shards),
        on_freed=[promotion.promote],
    )
    if redis:
        _add_redis(context, settings)
    return context


def _redlock(settings: Settings, shards: Shards) -> Redlock | None:
    if len(shards.databases()) <= 1:
        return None
    urls = settings.redlock_url_list
    if len(urls) < 3:
        raise ValueError(
            "RESERVATIONS_REDLOCK_URLS must name at least 3 independent Redis/Valkey "
            "nodes when RESERVATIONS_SHARDS has more than one cluster (bookings that "
            f"span clusters lock with Redlock); got {len(urls)}"
        )
    return Redlock(urls, ttl_ms=settings.redlock_ttl_ms, prefix=settings.redis_key_prefix)


def _add_redis(context: Context, settings: Settings) -> None:
    if settings.redis_url is None:
        log.warning(
            "REDIS_URL is not set: running without the cache tier. 'reservations serve' starts "
            "an embedded Valkey; set REDIS_URL=none to silence this."
        )
    tier = RedisTier.from_settings(settings)
    context.redis = tier
    if not tier.enabled:
        return
    if settings.api_key_cache_ttl_seconds > 0:
        context.key_cache = KeyCache(tier, ttl_seconds=settings.api_key_cache_ttl_seconds)
    if settings.resource_cache_ttl_seconds > 0:
        context.resource_cache = ResourceCache(
            tier, ttl_seconds=settings.resource_cache_ttl_seconds
        )
    if settings.availability_map_enabled:
        context.availability_map = AvailabilityMap(
            tier, ttl_seconds=settings.availability_map_ttl_seconds
        )
    if settings.rate_limit_enabled:
        context.limits = CallerLimits(RateLimiter(tier), settings)


@asynccontextmanager
async def opened(context: Context) -> AsyncIterator[Context]:
    """The context with its shard clusters and Redis tier open (the catalog database is its
    owner's to open), closed again after the block."""
    await context.shards.open()
    await context.redis.open()
    try:
        yield context
    finally:
        await context.redis.close()
        if context.redlock is not None:
            await context.redlock.close()
        await context.shards.close()
