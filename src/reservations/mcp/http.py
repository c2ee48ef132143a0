"""/mcp over streamable HTTP, inside the API's app: the same API key header as the HTTP API
(401 problem+json before the MCP layer sees an unauthenticated request), stateless (any
instance answers any call; nothing is kept between requests) and JSON replies.

DNS-rebinding protection (the SDK's Host/Origin check) is off: calls carry an API key in
`Authorization`, which a browser never adds by itself, so a rebound page cannot act."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from reservations.context import Context
from reservations.errors import DomainError
from reservations.mcp import server

PATH = "/mcp"
METHODS = ["GET", "POST", "DELETE"]


class Endpoint:
    """The ASGI app at /mcp: the caller's key checked, then the MCP transport."""

    def __init__(self, svc: Context) -> None:
        self.svc = svc
        mcp_server = server.build(svc)
        mcp_server.streamable_http_app(
            stateless_http=True,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager: StreamableHTTPSessionManager = mcp_server.session_manager

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The transport's task group, for the app's lifespan."""
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            await server.caller_of(self.svc, server.bearer(headers), charge=False)
        except DomainError as refused:
            await refused.response()(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)
