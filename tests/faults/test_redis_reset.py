"""A Redis connection reset the moment it opens must read as "Redis unavailable", never as an
exception out of the guard.

Found by the storm (tests/storm): while Valkey was SIGKILLed and restarted, three requests got
a 500. Under uvloop (uvicorn's loop whenever it is installed, as with `uvicorn[standard]`), a
connection the server resets right after accepting it makes redis-py write its first command
(HELLO) to a transport uvloop has already closed, and uvloop raises `RuntimeError: unable to
perform operation on <TCPTransport closed=True ...>; the handler is closed` instead of an
OSError; the standard asyncio loop raises a ConnectionError there. `RedisTier.run` caught only
RedisError, OSError and TimeoutError, so the RuntimeError reached the API's 500 handler.

The server here accepts and resets (SO_LINGER 0) every connection, which reproduces it in a
few percent of calls."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from reservations.kit.redis import UNAVAILABLE, RedisTier

uvloop = pytest.importorskip("uvloop", reason="uvloop comes with uvicorn[standard]")

CALLS = 400


async def _resetting_server() -> tuple[int, asyncio.Task[None], socket.socket]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept_and_reset() -> None:
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    return listener.getsockname()[1], asyncio.create_task(accept_and_reset()), listener


async def _hammer() -> Counter[str]:
    port, server, listener = await _resetting_server()
    tier = RedisTier(f"redis://127.0.0.1:{port}/0", timeout=0.25)
    await tier.open()
    seen: Counter[str] = Counter()

    async def one() -> None:
        try:
            # essential: tried even during the cool-down, so every call reaches the socket.
            result = await tier.run("get", lambda c: c.get("k"), essential=True)
        except Exception as exc:  # what the guard let through
            seen[type(exc).__name__] += 1
        else:
            seen["unavailable" if result is UNAVAILABLE else "answer"] += 1

    try:
        for _ in range(CALLS // 20):
            await asyncio.gather(*(one() for _ in range(20)))
    finally:
        server.cancel()
        listener.close()
        await tier.close()
    return seen


def _run_with(runner: Callable[[Coroutine[Any, Any, Counter[str]]], Counter[str]]) -> Counter[str]:
    return runner(_hammer())


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_connection_reset_at_connect_is_unavailable_not_an_exception(loop: str) -> None:
    seen = _run_with(uvloop.run if loop == "uvloop" else asyncio.run)
    print(f"{loop}: {dict(seen)}")
    assert seen == Counter({"unavailable": CALLS}), seen
