"""The MCP surface (docs/agents.md), driven by the SDK's own client: in-process against the
app's context, and over streamable HTTP against the real app under uvicorn. An agent key
searches and holds; a person confirms through the confirm link; the agent cannot confirm,
approve or override, neither over MCP nor over HTTP nor in the database."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

import anyio
import httpx
import httpx2
import psycopg
import pytest
from fastapi.testclient import TestClient
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from reservations.tenancy import service as tenancy
from tests.support.admission_rules import at
from tests.support.api import Api, Tenant, new_tenant
from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.mcp import mcp_calls
from tests.support.race import create_key
from tests.support.servers import RedisServer

T = TypeVar("T")
CAP = 2  # the live server's RESERVATIONS_AGENT_MAX_LIVE_HOLDS


@asynccontextmanager
async def _over_http(url: str, token: str) -> Any:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as c:
        yield c


def _data(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def _problem(result: CallToolResult) -> dict[str, Any]:
    assert result.is_error, result.structured_content
    body = dict(result.structured_content or {})
    # The same body as text, for clients that read content only.
    assert json.loads(result.content[0].text) == body  # type: ignore[union-attr]
    return body


def _hold_args(room: str, start: str, end: str, **more: Any) -> dict[str, Any]:
    return {"reservation": {"resource_id": room, "start": start, "end": end, **more}}


@pytest.fixture(scope="module")
def shop(app_client: TestClient) -> Tenant:
    return new_tenant(app_client)


@pytest.fixture(scope="module")
def live(database_url: str, redis_server: RedisServer) -> Iterator[LiveServer]:
    server = start_live_server(
        database_url,
        **redis_server.env(),
        RESERVATIONS_CONFIRM_LINK_SECRET="s" * 32,
        RESERVATIONS_AGENT_MAX_LIVE_HOLDS=str(CAP),
        RESERVATIONS_DB_POOL_MIN="2",
        RESERVATIONS_DB_POOL_MAX="8",
    )
    yield server
    stop_live_server(server)


def test_search_hold_and_a_person_confirms_in_process(app_client: TestClient, shop: Tenant) -> None:
    admin, agent = shop.admin, shop.tokens["agent"]
    room = admin.resource(name="Blue", tags=["meeting"])["id"]
    search = {"search": {"from": at(9), "to": at(12), "duration": "PT1H", "tags": ["meeting"]}}
    found, held, again, mine = mcp_calls(
        app_client,
        agent,
        [
            ("search_free_slots", search),
            ("hold_slot", _hold_args(room, at(9), at(10))),
            ("hold_slot", _hold_args(room, at(9), at(10))),  # the retried call
            ("list_my_holds", {}),
        ],
    )
    assert room in [hit["resource"]["id"] for hit in _data(found)["items"]]
    hold = _data(held)
    assert hold["reservation"]["status"] == "held"
    assert hold["expires_at"]
    assert hold["replayed"] is False
    assert _data(again)["replayed"] is True
    assert _data(again)["reservation"]["id"] == hold["reservation"]["id"]
    assert [r["id"] for r in _data(mine)["items"]] == [hold["reservation"]["id"]]
    rows = admin.get("/v1/reservations", params={"resource_id": room}).json()["items"]
    assert len(rows) == 1  # the retry booked nothing more

    # A person with a booker key opens the link: the booking page confirms through the
    # normal confirm route, with the link's token.
    link = hold["confirm_link"]
    assert link.startswith("/app?confirm=")
    token = link.split("=", 1)[1]
    rid = hold["reservation"]["id"]
    person = shop.booker
    assert person.post(f"/v1/reservations/{rid}/confirm").status_code == 404  # not theirs
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (
        person.post(f"/v1/reservations/{rid}/confirm", params={"confirm_token": forged}).status_code
        == 403
    )
    r = person.post(f"/v1/reservations/{rid}/confirm", params={"confirm_token": token})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "confirmed"
    # The link is for that reservation only.
    other = shop.admin.book(room, at(11), at(12), hold_seconds=600).json()["id"]
    assert (
        person.post(
            f"/v1/reservations/{other}/confirm", params={"confirm_token": token}
        ).status_code
        == 403
    )


def test_refusals_are_problem_bodies(app_client: TestClient, shop: Tenant) -> None:
    admin, agent = shop.admin, shop.tokens["agent"]
    room = admin.resource(
        name="Hours", policy={"weekly_hours": {"mon": [{"start": "09:00", "end": "17:00"}]}}
    )["id"]
    direct = admin.book(room, at(18), at(19))  # the refusal a direct create gets
    assert direct.status_code == 422
    held, retried, why, override = mcp_calls(
        app_client,
        agent,
        [
            ("hold_slot", _hold_args(room, at(18), at(19))),
            ("hold_slot", _hold_args(room, at(18), at(19))),  # the refusal, replayed
            ("explain_time", {"resource_id": room, "start": at(18), "end": at(19)}),
            ("hold_slot", _hold_args(room, at(10), at(11), override_rules=True)),
        ],
    )
    problem = _problem(held)
    assert problem["type"] == direct.json()["type"] == "/problems/booking-rule-violated"
    assert problem["reason"] == direct.json()["reason"] == "outside-opening-hours"
    assert problem["violations"] == direct.json()["violations"]
    assert _problem(retried) == problem
    explained = _data(why)
    assert explained["bookable"] is False
    assert explained["refusal"]["reason"] == "outside-opening-hours"
    assert {u["reason"] for u in explained["unavailable"]} == {"outside-opening-hours"}
    assert _problem(override)["type"] == "/problems/forbidden"


def test_an_agent_key_never_confirms_approves_or_overrides_over_http(shop: Tenant) -> None:
    admin, agent = shop.admin, Api(shop.admin.client, shop.tokens["agent"])
    room = admin.resource(name="Green")["id"]
    idem = {"Idempotency-Key": str(uuid.uuid4())}

    def book(start: str, end: str, headers: dict[str, str], **more: Any) -> httpx.Response:
        body = {"resource_id": room, "start": start, "end": end, **more}
        return agent.post("/v1/reservations", json=body, headers=headers)

    # Every agent write needs an Idempotency-Key; a hold, not a confirmed booking.
    r = book(at(9), at(10), {}, hold_seconds=600)
    assert (r.status_code, r.json()["errors"][0]["field"]) == (422, "Idempotency-Key")
    assert book(at(9), at(10), idem).json()["type"] == "/problems/forbidden"
    held = book(at(9), at(10), {"Idempotency-Key": str(uuid.uuid4())}, hold_seconds=600)
    assert held.status_code == 201, held.text
    rid = held.json()["id"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    for path in ("confirm", "approve"):
        r = agent.post(f"/v1/reservations/{rid}/{path}", headers=key)
        assert r.status_code == 403, r.text
    r = book(at(11), at(12), key, hold_seconds=60, override_rules=True)
    assert r.status_code == 403
    # Others' details: the agent lists only its own.
    admin.book(room, at(13), at(14), customer="ada@example.com")
    listed = agent.get("/v1/reservations", params={"resource_id": room}).json()["items"]
    assert [r["id"] for r in listed] == [rid]
    assert admin.get(f"/v1/reservations/{rid}").json()["status"] == "held"


def _sqlstate(conn: psycopg.Connection[Any], actor: str, statement: str, rid: str) -> str | None:
    """The SQLSTATE `statement` fails with when run as `actor` (None: it succeeded; rolled
    back either way)."""
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('reservations.actor', %s, true)", (actor,))
            conn.execute(statement, (rid,))  # type: ignore[arg-type]
            raise _RolledBack
    except psycopg.Error as refused:
        return refused.sqlstate
    except _RolledBack:
        return None


class _RolledBack(Exception):
    pass


def test_the_database_refuses_a_confirm_by_an_agent(settings: Any, shop: Tenant) -> None:
    """The guard below the API (migration 0016): an UPDATE to confirmed with an agent key as
    the transaction's actor is refused; the control: the same UPDATE as the admin key."""
    admin, agent = shop.admin, Api(shop.admin.client, shop.tokens["agent"])
    room = admin.resource(name="Sql")["id"]
    body = {"resource_id": room, "start": at(15), "end": at(16), "hold_seconds": 600}
    made = agent.post(
        "/v1/reservations", json=body, headers={"Idempotency-Key": str(uuid.uuid4())}
    ).json()
    url = settings.database_url
    with psycopg.connect(url, autocommit=True) as conn:
        keys = dict(
            conn.execute(
                "SELECT k.role, k.id::text FROM api_key k JOIN tenant t ON t.id = k.tenant_id"
                " WHERE t.name = %s",
                (shop.name,),
            ).fetchall()
        )
        confirm = "UPDATE reservation SET status = 'confirmed', expires_at = NULL WHERE id = %s"
        for actor in (keys["agent"], ""):  # as the agent, and as no key at all
            assert _sqlstate(conn, actor, confirm, made["id"]) == "RS003"
        with conn.transaction():  # the control: a person's key may
            conn.execute("SELECT set_config('reservations.actor', %s, true)", (keys["admin"],))
            conn.execute(confirm, (made["id"],))
    assert admin.get(f"/v1/reservations/{made['id']}").json()["status"] == "confirmed"


def test_over_http_search_hold_confirm_and_a_retry(live: LiveServer, shop: Tenant) -> None:
    admin = shop.admin
    room = admin.resource(name="Loopback", tags=["desk"])["id"]
    agent = shop.tokens["agent"]

    async def work() -> tuple[dict[str, Any], ...]:
        async with _over_http(live.url, agent) as c:
            found = await c.call_tool(
                "resource_slots",
                {"resource_id": room, "start": at(9), "end": at(12), "duration": "PT1H"},
            )
            args = _hold_args(room, at(9), at(10))
            held = await c.call_tool("hold_slot", {**args, "idempotency_key": "retry-me"})
            again = await c.call_tool("hold_slot", {**args, "idempotency_key": "retry-me"})
            return _data(found), _data(held), _data(again)

    found, held, again = anyio.run(work)
    assert found["slots"][0]["start"].startswith(at(9)[:16])
    assert again["reservation"]["id"] == held["reservation"]["id"]
    assert again["replayed"]
    token = held["confirm_link"].split("=", 1)[1]
    with httpx.Client(base_url=live.url, timeout=10) as http:
        r = http.post(
            f"/v1/reservations/{held['reservation']['id']}/confirm",
            params={"confirm_token": token},
            headers={"Authorization": f"Bearer {shop.tokens['booker']}"},
        )
        assert r.status_code == 200, r.text
        # The endpoint takes the same key header as the API: none, 401 problem.
        r = http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"


def _agent_key(client: TestClient, tenant: str) -> str:
    async def make() -> str:
        db = client.app.state.services.db  # type: ignore[attr-defined]
        return (await tenancy.create_key(db, tenant=tenant, role=tenancy.Role.agent)).token

    token: str = client.portal.call(make)  # type: ignore[union-attr]
    return token


async def _race(url: str, holds: list[tuple[str, dict[str, Any]]]) -> list[CallToolResult]:
    """Each (key, hold_slot arguments) from its own connected client, the calls sent together
    once every client is connected."""
    results: list[CallToolResult | None] = [None] * len(holds)
    ready, go = anyio.Event(), anyio.Event()
    connected = 0

    async def one(i: int, token: str, args: dict[str, Any]) -> None:
        nonlocal connected
        async with _over_http(url, token) as c:
            connected += 1
            if connected == len(holds):
                ready.set()
            await go.wait()
            results[i] = await c.call_tool("hold_slot", args)

    async with anyio.create_task_group() as tg:
        for i, (token, args) in enumerate(holds):
            tg.start_soon(one, i, token, args)
        await ready.wait()
        go.set()
    return [r for r in results if r is not None]


def test_an_agent_holds_any_free_resource_of_a_pool(app_client: TestClient, shop: Tenant) -> None:
    """hold_slot takes the create's `pool` as the HTTP API does (docs/pools.md): the first
    free desk is held, the next call the other, and the third finds the pool exhausted."""
    desks = [shop.admin.resource(name=f"Desk {i}", tags=["agent-desk"])["id"] for i in (1, 2)]
    pool = {"tags": ["agent-desk"], "strategy": "first_free"}
    args = {"reservation": {"pool": pool, "start": at(9, days=2), "end": at(10, days=2)}}
    # Three calls (three keys: one derived from the same arguments would replay the first).
    calls = [("hold_slot", {**args, "idempotency_key": f"desk-{i}"}) for i in range(3)]
    results = mcp_calls(app_client, shop.tokens["agent"], calls)
    held = [_data(r)["reservation"]["resource_id"] for r in results[:2]]
    assert sorted(held) == sorted(desks)
    assert results[2].is_error
    assert _problem(results[2])["type"] == "/problems/pool-exhausted"


def test_two_agents_racing_for_one_slot_get_one_hold(
    live: LiveServer, app_client: TestClient, shop: Tenant
) -> None:
    """The same two racing agents on two different slots both hold, so a single winner below
    is not the harness; and the exclusion constraint is the guard (the control below, without
    it, holds one slot twice)."""
    room = shop.admin.resource(name="Contested")["id"]
    agents = [_agent_key(app_client, shop.name) for _ in range(2)]
    apart = [(a, _hold_args(room, at(9 + i), at(10 + i))) for i, a in enumerate(agents)]
    assert [r.is_error for r in anyio.run(_race, live.url, apart)] == [False, False]
    same = [(a, _hold_args(room, at(14), at(15))) for a in agents]
    results = anyio.run(_race, live.url, same)
    assert sorted(r.is_error for r in results) == [False, True]
    loser = next(r for r in results if r.is_error)
    assert _problem(loser)["type"] == "/problems/reservation-conflict"
    live_rows = shop.admin.get(
        "/v1/reservations", params={"resource_id": room, "status": ["held"]}
    ).json()["items"]
    assert len(live_rows) == 3


def test_control_without_the_constraint_racing_agents_hold_one_slot_twice(
    unguarded_server: LiveServer,
) -> None:
    """The control of the race above with the guard gone: on a database without the
    exclusion constraint, agents racing hold_slot for one slot hold it more than once (a few
    tries, each on a fresh slot: one burst may not overlap)."""
    admin = create_key(unguarded_server.database_url)
    agents = [create_key(unguarded_server.database_url, tenancy.Role.agent) for _ in range(6)]
    with httpx.Client(base_url=unguarded_server.url, timeout=30) as http:
        made = http.post(
            "/v1/resources",
            json={"name": "Unguarded"},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert made.status_code == 201, made.text
    room = made.json()["id"]
    held = []
    for hour in (9, 11, 13, 15):
        same = [(a, _hold_args(room, at(hour, days=3), at(hour + 1, days=3))) for a in agents]
        held.append(sum(not r.is_error for r in anyio.run(_race, unguarded_server.url, same)))
        if held[-1] > 1:
            break
    assert max(held) > 1, f"expected a double hold without the guard, got {held}"


def test_an_agents_racing_holds_never_pass_its_cap(
    live: LiveServer, app_client: TestClient, shop: Tenant
) -> None:
    """CAP + 3 holds of one agent key on as many resources, sent together: exactly CAP are
    held (the key's lock makes the count exact); the rest get 429 hold-limit-reached. The
    control: a second agent key of the same tenant still holds (the cap is per key)."""
    agent = _agent_key(app_client, shop.name)
    rooms = [shop.admin.resource(name=f"Cap {i}")["id"] for i in range(CAP + 3)]
    results = anyio.run(_race, live.url, [(agent, _hold_args(r, at(9), at(10))) for r in rooms])
    refused = [_problem(r) for r in results if r.is_error]
    assert len(results) - len(refused) == CAP
    assert {p["type"] for p in refused} == {"/problems/hold-limit-reached"}
    assert refused[0]["scope"] == "api-key"
    other = _agent_key(app_client, shop.name)
    assert not anyio.run(_race, live.url, [(other, _hold_args(rooms[0], at(11), at(12)))])[
        0
    ].is_error


def test_reservations_mcp_over_stdio(database_url: str, shop: Tenant) -> None:
    """`reservations mcp` as an assistant starts it: a subprocess speaking MCP on stdio,
    every call acting as the key it was given."""
    room = shop.admin.resource(name="Stdio")["id"]
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "DATABASE_URL": database_url,
        "REDIS_URL": "none",
        "RESERVATIONS_MCP_KEY": shop.tokens["agent"],
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "reservations", "mcp", "--no-migrate"], env=env
    )

    async def work() -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        async with Client(params) as c:
            names = [t.name for t in (await c.list_tools()).tools]
            held = _data(await c.call_tool("hold_slot", _hold_args(room, at(9), at(10))))
            mine = _data(await c.call_tool("list_my_holds", {}))
            return names, held, mine

    names, held, mine = anyio.run(work)
    assert sorted(names) == sorted(
        [
            "search_free_slots",
            "resource_slots",
            "explain_time",
            "hold_slot",
            "list_my_holds",
            "cancel_hold",
        ]
    )
    assert held["reservation"]["id"] in [r["id"] for r in mine["items"]]


def test_cancel_hold_cancels_the_agents_own_holds_only(
    app_client: TestClient, shop: Tenant
) -> None:
    admin, agent = shop.admin, shop.tokens["agent"]
    room = admin.resource(name="Cancel")["id"]
    theirs = admin.book(room, at(12), at(13), hold_seconds=600).json()["id"]
    (held,) = mcp_calls(app_client, agent, [("hold_slot", _hold_args(room, at(9), at(10)))])
    rid = _data(held)["reservation"]["id"]
    cancelled, again, other, mine = mcp_calls(
        app_client,
        agent,
        [
            ("cancel_hold", {"reservation_id": rid}),
            ("cancel_hold", {"reservation_id": rid}),  # a retry: the same answer
            ("cancel_hold", {"reservation_id": theirs}),
            ("list_my_holds", {}),
        ],
    )
    assert _data(cancelled)["status"] == "cancelled"
    assert _data(again) == _data(cancelled)
    assert _problem(other)["type"] == "/problems/not-found"  # not the agent's to see
    assert rid not in [r["id"] for r in _data(mine)["items"]]
    assert admin.get(f"/v1/reservations/{theirs}").json()["status"] == "held"


def test_an_expired_confirm_link_is_refused(
    app_client: TestClient, shop: Tenant, clock: Any
) -> None:
    room = shop.admin.resource(name="Late")["id"]
    args = _hold_args(room, at(9), at(10), hold_seconds=3600)
    (held,) = mcp_calls(app_client, shop.tokens["agent"], [("hold_slot", args)])
    hold = _data(held)
    token = hold["confirm_link"].split("=", 1)[1]
    rid = hold["reservation"]["id"]
    clock.offset = timedelta(days=1, seconds=1)  # past the link's day (and the hold's hour)
    r = shop.booker.post(f"/v1/reservations/{rid}/confirm", params={"confirm_token": token})
    assert r.status_code == 403
    assert "expired" in r.json()["detail"]
