"""The API as the tests drive it: a client bound to one key (Api), a tenant with a key per role
(Tenant, new_tenant), readers of its answers (_created, _problem) and of the database behind it
(_db), and the event stream's frames (sse_frames)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
from fastapi.testclient import TestClient

from reservations.config import Settings
from reservations.tenancy import service as tenancy


class Api:
    """A TestClient bound to one API key."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token
        self.headers = {"Authorization": f"Bearer {token}"}

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def resource(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "Room", **fields}
        r = self.post("/v1/resources", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def book(self, resource_id: str, start: str, end: str, **fields: Any) -> httpx.Response:
        return self.post(
            "/v1/reservations",
            json={"resource_id": resource_id, "start": start, "end": end, **fields},
        )


@dataclass
class Tenant:
    name: str
    admin: Api
    booker: Api
    viewer: Api
    tokens: dict[str, str]

    def another_booker(self) -> Api:
        created = self.admin.client.portal.call(  # type: ignore[union-attr]
            _create_key, self.admin.client, self.name, tenancy.Role.booker
        )
        return Api(self.admin.client, created)


async def _create_key(client: TestClient, tenant: str, role: tenancy.Role) -> str:
    db = client.app.state.services.db  # type: ignore[attr-defined]
    created = await tenancy.create_key(db, tenant=tenant, role=role)
    return created.token


def new_tenant(client: TestClient) -> Tenant:
    name = f"tenant-{secrets.token_hex(4)}"
    tokens = {
        role.value: client.portal.call(_create_key, client, name, role)  # type: ignore[union-attr]
        for role in tenancy.Role
    }
    return Tenant(
        name=name,
        admin=Api(client, tokens["admin"]),
        booker=Api(client, tokens["booker"]),
        viewer=Api(client, tokens["viewer"]),
        tokens=tokens,
    )


PROBLEM = "application/problem+json"


def _problem(r: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"/problems/{slug}", body
    assert body["status"] == status
    return body


def _created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    return dict(r.json())


def _db(settings: Settings, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql, params).fetchall()


async def sse_frames(c: httpx.AsyncClient, n: int, **kw: Any) -> list[dict[str, str]]:
    """The first `n` frames with an id of /v1/events/stream (fields by name)."""
    got: list[dict[str, str]] = []
    async with c.stream("GET", "/v1/events/stream", **kw) as s:
        assert s.status_code == 200
        frame: dict[str, str] = {}
        async for line in s.aiter_lines():
            if line == "":
                if "id" in frame:
                    got.append(frame)
                    if len(got) >= n:
                        return got
                frame = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                frame[field] = value
    return got
