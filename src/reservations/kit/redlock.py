"""Redlock over independent Redis/Valkey nodes, with a fencing token per lock name.

The published algorithm (https://redis.io/docs/latest/develop/use/patterns/distributed-locks/):
try every node with a short timeout, count the lock as held when a majority granted it within
its validity time (TTL minus the time spent acquiring minus clock drift), release on every node
otherwise. Two choices on top:

- **Several names at once.** A booking locks all its resources. Each node grants all names or
  none, in one script that looks at them in sorted order; contenders that split the nodes
  between them both fall short of a majority, release, and retry after a random pause.
- **Fencing tokens.** Redlock alone cannot stop a holder that pauses past its validity from
  writing after someone else took the lock; the store must refuse it. With the lock, every
  node returns its counter per name; the token is above the highest counter of the majority
  (and not below the clock in microseconds, so losing the counters cannot make tokens go
  backwards), and is written back to a majority before it is handed out. Any two majorities
  share a node, so the next holder reads at least this token and gets a larger one. The
  shards refuse a token older than the newest they saw (`fence_check`, migration 0008).

Not the correctness guarantee (each shard's exclusion constraint is): it keeps cross-shard
contenders apart so they neither abort each other's prepared transactions nor wait on each
other's row locks across clusters.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS: n lock keys (sorted), then their n fence keys. ARGV: owner value, TTL in ms.
# Grants all locks or none; returns the fence counters.
_ACQUIRE = """
local n = #KEYS / 2
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then return false end
end
local counters = {}
for i = 1, n do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  counters[i] = redis.call('GET', KEYS[n + i]) or '0'
end
return counters
"""

# KEYS: fence keys; ARGV: one token per key. Raise each counter to its token.
_FENCE = """
for i = 1, #KEYS do
  local current = tonumber(redis.call('GET', KEYS[i]) or '0')
  if current < tonumber(ARGV[i]) then redis.call('SET', KEYS[i], ARGV[i]) end
end
return 1
"""

# KEYS: lock keys; ARGV[1]: owner value. Delete the locks this owner holds.
_RELEASE = """
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then n = n + redis.call('DEL', KEYS[i]) end
end
return n
"""

CLOCK_DRIFT = 0.01  # of the TTL, plus 2 ms, as the algorithm suggests


@dataclass
class Lease:
    """Locks held on a majority: until `valid_until` (monotonic clock), with one fencing
    token per name."""

    names: list[str]
    owner: str
    tokens: dict[str, int]
    valid_until: float
    _lock: Redlock = field(repr=False)

    def remaining(self) -> float:
        return self.valid_until - time.monotonic()

    async def release(self) -> None:
        await self._lock.release(self)


class Redlock:
    def __init__(
        self,
        urls: list[str],
        *,
        ttl_ms: int = 10_000,
        prefix: str = "rsv:",
        timeout: float = 0.05,
    ) -> None:
        if len(urls) < 3:
            raise ValueError("Redlock needs at least 3 independent Redis/Valkey nodes")
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        self.quorum = len(urls) // 2 + 1
        self.nodes = [
            aioredis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                decode_responses=True,
            )
            for url in urls
        ]
        self._acquire = [n.register_script(_ACQUIRE) for n in self.nodes]
        self._fence = [n.register_script(_FENCE) for n in self.nodes]
        self._release = [n.register_script(_RELEASE) for n in self.nodes]

    async def close(self) -> None:
        for node in self.nodes:
            await node.aclose()

    def _keys(self, names: list[str]) -> tuple[list[str], list[str]]:
        return (
            [f"{self.prefix}lock:{n}" for n in names],
            [f"{self.prefix}fence:{n}" for n in names],
        )

    async def acquire(self, names: list[str], *, wait: float = 2.0) -> Lease | None:
        """Lock every name (sorted, deduplicated), retrying with random pauses for up to
        `wait` seconds; None if a majority could not be had in time."""
        names = sorted(set(names))
        deadline = time.monotonic() + wait
        while True:
            lease = await self._try(names)
            if lease is not None:
                return lease
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(random.uniform(0.005, 0.05))  # noqa: S311 (jitter)

    async def _try(self, names: list[str]) -> Lease | None:
        locks, fences = self._keys(names)
        owner = os.urandom(16).hex()
        started = time.monotonic()

        async def grant(i: int) -> list[str] | None:
            try:
                got = await self._acquire[i](keys=[*locks, *fences], args=[owner, self.ttl_ms])
            except (RedisError, OSError):
                return None
            return None if got is None else list(got)

        answers = [a for a in await asyncio.gather(*(grant(i) for i in range(len(self.nodes))))]
        granted = [i for i, a in enumerate(answers) if a is not None]
        ttl = self.ttl_ms / 1000
        drift = ttl * CLOCK_DRIFT + 0.002
        if len(granted) >= self.quorum:
            floor = time.time_ns() // 1000
            tokens = {
                name: max(floor, 1 + max(int(answers[i][k]) for i in granted))  # type: ignore[index]
                for k, name in enumerate(names)
            }
            args = [tokens[n] for n in names]

            async def fence(i: int) -> bool:
                try:
                    await self._fence[i](keys=fences, args=args)
                except (RedisError, OSError):
                    return False
                return True

            fenced = sum(await asyncio.gather(*(fence(i) for i in granted)))
            valid_until = started + ttl - drift
            if fenced >= self.quorum and time.monotonic() < valid_until:
                return Lease(names, owner, tokens, valid_until, self)
        await self._release_all(locks, owner)
        return None

    async def release(self, lease: Lease) -> None:
        await self._release_all(self._keys(lease.names)[0], lease.owner)

    async def _release_all(self, locks: list[str], owner: str) -> None:
        async def one(i: int) -> None:
            try:
                await self._release[i](keys=locks, args=[owner])
            except (RedisError, OSError) as exc:  # it expires by itself
                log.debug("redlock release on node %d failed: %r", i, exc)

        await asyncio.gather(*(one(i) for i in range(len(self.nodes))))
