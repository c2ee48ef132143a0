"""/mcp over streamable HTTP, inside the API's app: the same API key header as the HTTP API
(401 problem+json before the MCP layer sees an unauthenticated request), stateless (any
instance answers any call; nothing is kept between requests) and JSON replies.

The MCP SDK is imported, and its transport started, on the first authenticated call, not
with the app: the SDK costs seconds of import that every start of the API (and every test
server) would otherwise pay. The transport's task then lives until the app's lifespan ends.

DNS-rebinding protection (the SDK's Host/Origin check) is off: calls carry an API key in
`Authorization`, which a browser never adds by itself, so a rebound page cannot act."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from starlette.types import Receive, Scope, Send

from reservations.context import Context
from reservations.errors import DomainError
from reservations.mcp.callers import bearer, caller_of

PATH = "/mcp"
METHODS = ["GET", "POST", "DELETE"]


class _Handler(Protocol):
    async def handle_request(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class Endpoint:
    """The ASGI app at /mcp: the caller's key checked, then the MCP transport."""

    def __init__(self, svc: Context) -> None:
        self.svc = svc
        self._manager: _Handler | None = None
        self._starting = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """For the app's lifespan: stops the transport (if a call started it) at the end."""
        try:
            yield
        finally:
            if self._task is not None:
                self._stop.set()
                await self._task

    async def _started(self) -> _Handler:
        async with self._starting:
            if self._manager is not None:
                return self._manager
            from mcp.server.transport_security import TransportSecuritySettings

            from reservations.mcp import server

            mcp_server = server.build(self.svc)
            mcp_server.streamable_http_app(
                stateless_http=True,
                json_response=True,
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            )
            manager = mcp_server.session_manager
            ready = asyncio.Event()

            async def serve() -> None:
                async with manager.run():
                    ready.set()
                    await self._stop.wait()

            self._task = task = asyncio.create_task(serve())
            waiting = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():  # the transport did not start: say why (a 500, logged)
                waiting.cancel()
                self._task = None
                task.result()
            self._manager = manager
            return manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            await caller_of(self.svc, bearer(headers), charge=False)
        except DomainError as refused:
            await refused.response()(scope, receive, send)
            return
        manager = await self._started()
        await manager.handle_request(scope, receive, send)
