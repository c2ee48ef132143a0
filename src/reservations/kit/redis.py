"""The Redis/Valkey client and the one guard every Redis call goes through.

Redis is an accelerator, never the truth: when it is down, slow or restarting, every caller
gets `UNAVAILABLE` instead of an exception and takes its database path. The guard counts each
failure in `redis_errors_total`, logs at most once per `LOG_EVERY` seconds, and after a failure
skips Redis for `COOL_DOWN` seconds (counted in `redis_skipped_total`) so a dead server costs
requests nothing instead of a timeout each. After the cool-down the next call tries again;
redis-py's pool drops broken connections and opens new ones, so a restarted server is picked
up without any help.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from reservations.config import Settings
from reservations.kit.metrics import REDIS_ERRORS, REDIS_SKIPPED

log = logging.getLogger(__name__)

T = TypeVar("T")
Client = aioredis.Redis

COOL_DOWN = 1.0
LOG_EVERY = 30.0


class Unavailable(enum.Enum):
    """What a guarded call returns when Redis could not answer."""

    UNAVAILABLE = "unavailable"


UNAVAILABLE = Unavailable.UNAVAILABLE


class RedisTier:
    """Owns the client (created in the app's lifespan by `open`) and guards every call."""

    def __init__(self, url: str | None, *, timeout: float = 0.25, prefix: str = "rsv:") -> None:
        self.url = url
        self.timeout = timeout
        self.prefix = prefix
        self.client: Client | None = None
        self._down_until = 0.0
        self._last_log = 0.0
        self._suppressed = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisTier:
        url = None if settings.redis_disabled else settings.redis_url
        return cls(url, timeout=settings.redis_timeout_ms / 1000, prefix=settings.redis_key_prefix)

    @classmethod
    def disabled(cls) -> RedisTier:
        return cls(None)

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def open(self) -> None:
        """Create the client. Connects lazily: a Redis that is down at start-up is no error."""
        if self.url is None or self.client is not None:
            return
        self.client = aioredis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # One immediate retry on a broken connection: after a Redis restart the first use
            # of a pooled connection fails and the retry opens a fresh one. No retry on a
            # timeout: against a hung server it would only double the wait.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            health_check_interval=30,
            max_connections=256,
        )

    async def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def run(
        self, op: str, call: Callable[[Client], Awaitable[T]], *, essential: bool = False
    ) -> T | Unavailable:
        """Run one Redis operation, or return UNAVAILABLE without raising.

        `essential` calls (invalidations) are tried even during the cool-down: skipping one
        would leave a stale entry until its TTL."""
        client = self.client
        if client is None:
            return UNAVAILABLE
        if not essential and time.monotonic() < self._down_until:
            REDIS_SKIPPED.labels(op).inc()
            return UNAVAILABLE
        try:
            # The socket timeout bounds each read; this bounds the whole call (connect, retry).
            return await asyncio.wait_for(call(client), timeout=self.timeout * 3)
        except (RedisError, OSError, TimeoutError, RuntimeError) as exc:
            # RuntimeError: under uvloop, a connection the server resets as it opens (Valkey
            # killed or restarting) fails redis-py's first write with "unable to perform
            # operation on <TCPTransport closed=True>" instead of an OSError
            # (tests/faults/test_redis_reset.py).
            self._failed(op, exc)
            return UNAVAILABLE

    def _failed(self, op: str, exc: BaseException) -> None:
        REDIS_ERRORS.labels(op).inc()
        now = time.monotonic()
        self._down_until = now + COOL_DOWN
        if now - self._last_log >= LOG_EVERY:
            more = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
            log.warning("Redis unavailable during %s, using the database: %r%s", op, exc, more)
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    async def ping(self) -> str:
        """'ok', 'unavailable' or 'disabled', for /readyz (reported, never required)."""
        if not self.enabled:
            return "disabled"
        result = await self.run("ping", lambda c: c.ping(), essential=True)
        return "ok" if result is True else "unavailable"
