"""Redlock with fencing tokens (kit/redlock.py) against three real Valkey nodes."""

from __future__ import annotations

import asyncio
import secrets
from itertools import pairwise

from reservations.kit.redlock import Redlock
from tests.support.sharding import Topology


def _lock(topology: Topology, urls: list[str] | None = None, ttl_ms: int = 2000) -> Redlock:
    return Redlock(urls or topology.redlock, ttl_ms=ttl_ms, prefix=f"rl-{secrets.token_hex(3)}:")


def test_one_holder_at_a_time_and_tokens_only_grow(topology: Topology) -> None:
    async def run() -> None:
        lock = _lock(topology)
        try:
            first = await lock.acquire(["r1", "r2"], wait=0)
            assert first is not None
            assert 0 < first.remaining() <= 2.0
            # Overlapping names are refused while it is held; disjoint ones are not.
            assert await lock.acquire(["r2", "r3"], wait=0.2) is None
            other = await lock.acquire(["r3"], wait=0)
            assert other is not None
            await first.release()
            second = await lock.acquire(["r2", "r1"], wait=0)
            assert second is not None
            assert second.tokens["r1"] > first.tokens["r1"]
            assert second.tokens["r2"] > first.tokens["r2"]
            await second.release()
            await other.release()
        finally:
            await lock.close()

    asyncio.run(run())


def test_a_majority_is_enough_and_a_minority_is_not(topology: Topology) -> None:
    dead = "redis://127.0.0.1:1/0"  # nothing listens there

    async def run() -> None:
        lock = _lock(topology, [*topology.redlock[:2], dead])
        try:
            lease = await lock.acquire(["m"], wait=0)
            assert lease is not None  # two of three
            await lease.release()
        finally:
            await lock.close()
        minority = _lock(topology, [topology.redlock[0], dead, dead])
        try:
            assert await minority.acquire(["m"], wait=0.1) is None
        finally:
            await minority.close()

    asyncio.run(run())


def test_a_lease_expires_and_the_next_holder_gets_a_newer_token(topology: Topology) -> None:
    async def run() -> None:
        lock = _lock(topology, ttl_ms=200)
        try:
            first = await lock.acquire(["e"], wait=0)
            assert first is not None
            await asyncio.sleep(0.3)  # never released: it expires by itself
            assert first.remaining() < 0
            second = await lock.acquire(["e"], wait=0)
            assert second is not None
            assert second.tokens["e"] > first.tokens["e"]
            # The first holder's late release does not free the second's lock.
            await first.release()
            assert await lock.acquire(["e"], wait=0) is None
            await second.release()
        finally:
            await lock.close()

    asyncio.run(run())


def test_racers_never_overlap(topology: Topology) -> None:
    """Twenty tasks take the same two names and record when they held them: no two
    holdings overlap, and each holder's tokens are above the previous holder's."""

    async def run() -> None:
        lock = _lock(topology)
        held: list[tuple[float, float, int]] = []
        loop = asyncio.get_running_loop()

        async def racer() -> None:
            lease = await lock.acquire(["x", "y"], wait=10)
            assert lease is not None
            start = loop.time()
            await asyncio.sleep(0.01)
            held.append((start, loop.time(), lease.tokens["x"]))
            await lease.release()

        try:
            await asyncio.gather(*(racer() for _ in range(20)))
        finally:
            await lock.close()
        held.sort()
        for (_s1, e1, t1), (s2, _e2, t2) in pairwise(held):
            assert e1 <= s2, "two holders at once"
            assert t2 > t1

    asyncio.run(run())
