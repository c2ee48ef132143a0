"""Authentication cost with and without the Redis key cache, and the rate-limit check's cost.

Starts an embedded PostgreSQL and an embedded Valkey (unix socket) in a temporary directory,
or uses DATABASE_URL / REDIS_URL if set, then times `authenticate` in one event loop:

    .venv/bin/python -m bench.auth_latency [N]

Prints the median and p99 per call in microseconds. Single client, no concurrency: this is
the per-request latency each path adds, not throughput.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from reservations.config import Settings
from reservations.kit import migrate
from reservations.kit.db import Database
from reservations.kit.embedded import EmbeddedPostgres
from reservations.kit.embedded_valkey import EmbeddedValkey
from reservations.kit.ratelimit import RateLimiter
from reservations.kit.redis import RedisTier
from reservations.tenancy import service as tenancy
from reservations.tenancy.cache import KeyCache
from reservations.tenancy.limits import CallerLimits


async def timed(n: int, call: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    for _ in range(200):
        await call()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


async def run(db_url: str, redis_url: str, n: int) -> None:
    settings = Settings(database_url=db_url, redis_url=redis_url, db_pool_min=1, db_pool_max=2)
    db = Database(db_url, settings)
    await db.open()
    tier = RedisTier.from_settings(settings)
    await tier.open()
    try:
        created = await tenancy.create_key(db, tenant="bench", role=tenancy.Role.admin)
        cache = KeyCache(tier, ttl_seconds=60)
        limits = CallerLimits(RateLimiter(tier), settings)
        now = datetime.now(UTC)
        principal = await tenancy.authenticate(db, created.token, now=now)
        assert principal is not None

        rows = {
            "authenticate, no cache (PostgreSQL read)": lambda: tenancy.authenticate(
                db, created.token, now=now
            ),
            "authenticate, cache hit (Redis GET)": lambda: tenancy.authenticate(
                db, created.token, now=now, cache=cache
            ),
            "rate-limit check (EVALSHA, 2 buckets)": lambda: limits.charge(principal),
        }
        for name, call in rows.items():
            median, p99 = await timed(n, call)
            print(f"{name:<44} median {median:7.0f} µs   p99 {p99:7.0f} µs")
    finally:
        await tier.close()
        await db.close()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 5000
    tmp = Path(tempfile.mkdtemp(prefix="rsv-bench-auth-"))
    pg = valkey = None
    try:
        db_url = os.environ.get("DATABASE_URL")
        if not db_url:
            pg = EmbeddedPostgres(tmp)
            db_url = pg.start()
        migrate.upgrade(db_url)
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            valkey = EmbeddedValkey(tmp)
            redis_url = valkey.start()
        asyncio.run(run(db_url, redis_url, n))
    finally:
        if valkey:
            valkey.stop()
        if pg:
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
