"""Driving the MCP server (reservations/mcp) in-process with the SDK's client, on the test
app's event loop (where its database pool lives)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from mcp import Client
from mcp_types import CallToolResult

from reservations.context import Context
from reservations.mcp import server as mcp_server


def mcp_calls(
    client: TestClient, token: str, calls: list[tuple[str, dict[str, Any]]]
) -> list[CallToolResult]:
    """The tool calls, in order, by one client acting as `token`."""

    async def work() -> list[CallToolResult]:
        svc: Context = client.app.state.services  # type: ignore[attr-defined]
        async with Client(mcp_server.build(svc, token=token)) as c:
            return [await c.call_tool(name, args) for name, args in calls]

    result: list[CallToolResult] = client.portal.call(work)  # type: ignore[union-attr]
    return result


def mcp_call(client: TestClient, token: str, name: str, args: dict[str, Any]) -> CallToolResult:
    return mcp_calls(client, token, [(name, args)])[0]
