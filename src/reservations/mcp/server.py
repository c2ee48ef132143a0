"""The MCP server: its tools, who calls them, and their refusals as tool errors.

Who calls: over HTTP, the `Authorization: Bearer <key>` of each request (the same API keys,
checked the same way as the HTTP API, rate limits included); over stdio, the one key the
process was started with. Every tool call acts as that key (the audit log's actor).

A refusal is the HTTP API's problem body (type, title, status, detail, and reason,
violations, conflicts, alternatives... when the error has them), returned as a tool error
(`isError`) with the body as structured content and as JSON text, so an agent can act on it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated
from uuid import UUID

import orjson
from mcp.server.mcpserver import Context as ToolContext
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from reservations import __version__
from reservations.availability.schemas import SearchRequest
from reservations.context import Context
from reservations.errors import DomainError
from reservations.kit.fields import Duration, Timestamp
from reservations.mcp import tools
from reservations.mcp.callers import bearer, caller_of
from reservations.reservations.schemas import ReservationCreate
from reservations.tenancy.service import Principal

INSTRUCTIONS = """Book resources for people, safely. You can search free time, explain why a
time is not bookable, hold a slot, and list or cancel your own holds. You cannot confirm: a
hold returns a confirm link; give it to the person, who confirms it with their own key.
Refusals are problem objects (type, title, status, detail, reason, violations, alternatives):
read `reason` and `violations` and try another time instead of retrying the same call."""

IdemKeyArg = Annotated[
    str | None,
    Field(
        default=None,
        min_length=1,
        max_length=255,
        pattern="^[!-~]{1,255}$",
        description="Optional: makes the call safe to retry. Without one, a key derived from "
        "your key and the arguments is used, so a retried call never books twice.",
    ),
]


def _result(model: BaseModel) -> CallToolResult:
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return CallToolResult(
        content=[TextContent(type="text", text=orjson.dumps(data).decode())],
        structured_content=data,
    )


def _problem(error: DomainError | tools.Replayed) -> CallToolResult:
    body = tools.problem_body(error)
    return CallToolResult(
        content=[TextContent(type="text", text=orjson.dumps(body).decode())],
        structured_content=body,
        is_error=True,
    )


def build(svc: Context, *, token: str | None = None) -> MCPServer:
    """The server over `svc`. `token`: the key of a stdio server (HTTP calls bring theirs)."""
    server: MCPServer = MCPServer(
        name="reservations",
        title="Reservations",
        version=__version__,
        instructions=INSTRUCTIONS,
        # The SDK calls logging.basicConfig with this level (a no-op where logging is set up).
        log_level="WARNING",
    )

    async def run(
        ctx: ToolContext,
        call: Callable[[Principal, bytes], Awaitable[BaseModel]],
    ) -> CallToolResult:
        headers = ctx.headers
        key = bearer(headers) if headers is not None else token
        try:
            caller = await caller_of(svc, key)
            return _result(await call(caller, (key or "").encode()))
        except (DomainError, tools.Replayed) as refused:
            return _problem(refused)

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    writes = ToolAnnotations(read_only_hint=False, idempotent_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    async def search_free_slots(search: SearchRequest, ctx: ToolContext) -> CallToolResult:
        """Resources with free time: with `tags`, any resource carrying all of them (a pool
        of interchangeable resources); with `duration`, the earliest free slot of that length
        in [from, to). Same as POST /v1/availability/search."""
        return await run(ctx, lambda caller, _: tools.search(svc, caller, search))

    @server.tool(annotations=read_only)
    async def resource_slots(
        resource_id: UUID,
        start: Timestamp,
        end: Timestamp,
        ctx: ToolContext,
        duration: Duration | None = None,
        quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 1,
    ) -> CallToolResult:
        """One resource's bookable slots of `duration` (ISO 8601, e.g. PT1H) and free spans
        in [start, end). Same as GET /v1/resources/{id}/availability."""
        return await run(
            ctx,
            lambda caller, _: tools.resource_slots(
                svc, caller, resource_id, start, end, duration, quantity
            ),
        )

    @server.tool(annotations=read_only)
    async def explain_time(
        resource_id: UUID,
        start: Timestamp,
        end: Timestamp,
        ctx: ToolContext,
        quantity: Annotated[int, Field(ge=1, le=1_000_000)] = 1,
    ) -> CallToolResult:
        """Why [start, end) on a resource is or is not bookable: the refusal a hold would get
        (reason, violations: closed hours, blackout, notice, grid, duration...) and every
        unavailable range in it with its reason."""
        return await run(
            ctx, lambda caller, _: tools.explain(svc, caller, resource_id, start, end, quantity)
        )

    @server.tool(annotations=writes)
    async def hold_slot(
        reservation: ReservationCreate, ctx: ToolContext, idempotency_key: IdemKeyArg = None
    ) -> CallToolResult:
        """Hold [start, end) on a resource for a person (`hold_seconds`, default 900). Returns
        the hold, its expiry and a confirm link: give the link to the person, who confirms
        with their own key. Agents never confirm."""
        return await run(
            ctx, lambda caller, seal: tools.hold(svc, caller, reservation, idempotency_key, seal)
        )

    @server.tool(annotations=read_only)
    async def list_my_holds(
        ctx: ToolContext, limit: Annotated[int, Field(ge=1, le=500)] = 50
    ) -> CallToolResult:
        """Your live holds (held, or pending an admin's approval), earliest first."""
        return await run(ctx, lambda caller, _: tools.my_holds(svc, caller, limit))

    @server.tool(annotations=writes)
    async def cancel_hold(
        reservation_id: UUID, ctx: ToolContext, idempotency_key: IdemKeyArg = None
    ) -> CallToolResult:
        """Cancel one of your holds and free its time (cancelling again changes nothing)."""
        return await run(
            ctx,
            lambda caller, seal: tools.cancel(svc, caller, reservation_id, idempotency_key, seal),
        )

    return server
