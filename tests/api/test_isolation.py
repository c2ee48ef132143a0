"""Tenant and role isolation on every route, authentication failures, what conflicts reveal,
and server-owned fields.

A key sees its own tenant only: another tenant's ids answer exactly as an id that does not
exist (404, same body shape), and nothing of the other tenant changes. Within a tenant, admin
does everything, a booker books and sees or changes only its own reservations, a viewer only
reads. Every way of failing authentication answers the same 401.
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from reservations.tenancy import keys
from reservations.tenancy import service as tenancy
from tests.support.api import Api, Tenant
from tests.support.routes import FREE_END, FREE_START, ID_ROUTES, Route, fill

PROBLEM = "application/problem+json"
START, END = "2031-03-01T10:00:00Z", "2031-03-01T11:00:00Z"


# --------------------------------------------------------------------------------------------
# helpers


def _portal(client: TestClient, func: Any, /, **kwargs: Any) -> Any:
    return client.portal.call(functools.partial(func, **kwargs))  # type: ignore[union-attr]


def _db(client: TestClient) -> Any:
    return client.app.state.services.db  # type: ignore[attr-defined]


def create_key(
    client: TestClient,
    tenant: str,
    role: tenancy.Role,
    expires_at: datetime | None = None,
) -> tenancy.CreatedKey:
    created: tenancy.CreatedKey = _portal(
        client,
        tenancy.create_key,
        db=_db(client),
        tenant=tenant,
        role=role,
        expires_at=expires_at,
    )
    return created


def revoke_key(client: TestClient, prefix: str) -> None:
    cache = client.app.state.services.key_cache  # type: ignore[attr-defined]
    _portal(client, tenancy.revoke_key, db=_db(client), prefix=prefix, cache=cache)


def assert_problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["content-type"] == PROBLEM, r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["type"].startswith("/problems/")
    assert isinstance(body.get("detail"), str)
    assert body["detail"].strip()
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    return body


@dataclass
class World:
    """A tenant with a resource and a future hold created by its booker."""

    tenant: Tenant
    resource: dict[str, Any]
    reservation: dict[str, Any]

    @property
    def rid(self) -> str:
        return str(self.resource["id"])

    @property
    def bid(self) -> str:
        return str(self.reservation["id"])

    def snapshot(self) -> dict[str, Any]:
        """Everything of this tenant, as its admin sees it (ids, versions, statuses, fields)."""
        admin = self.tenant.admin
        resources = admin.get("/v1/resources", params={"limit": 500})
        reservations = admin.get("/v1/reservations", params={"limit": 500})
        for r in (resources, reservations):
            assert r.status_code == 200, r.text
        return {"resources": resources.json(), "reservations": reservations.json()}

    def current(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """This world's resource and reservation as they are now."""
        snap = self.snapshot()
        (resource,) = [i for i in snap["resources"]["items"] if i["id"] == self.rid]
        (reservation,) = [i for i in snap["reservations"]["items"] if i["id"] == self.bid]
        return resource, reservation


def make_world(t: Tenant) -> World:
    resource = t.admin.resource(name="Court 1", tags=["outdoor"])
    r = t.booker.book(resource["id"], START, END, hold_seconds=3600, customer="c-1")
    assert r.status_code == 201, r.text
    return World(tenant=t, resource=resource, reservation=r.json())


@pytest.fixture
def own(tenant: Tenant) -> World:
    return make_world(tenant)


@pytest.fixture
def victim(other_tenant: Tenant) -> World:
    return make_world(other_tenant)


# --------------------------------------------------------------------------------------------
# every route that takes an id, against another tenant's objects


def cross_tenant_expectation(role: str, route: Route) -> int:
    if role == "viewer" and route.write:
        return 403
    if role == "booker" and route.admin_only:
        return 403
    return 404


CROSS_CELLS = [
    pytest.param(role, route, cross_tenant_expectation(role, route), id=f"{role}-{route.name}")
    for role in ("admin", "booker", "viewer")
    for route in ID_ROUTES
]


def _send(api: Api, route: Route, ids: dict[str, str]) -> httpx.Response:
    path = fill(route.path, ids)
    if route.body is None:
        return api.request(route.method, path)
    return api.request(route.method, path, json=fill(route.body, ids))


@pytest.mark.parametrize(("role", "route", "expected"), CROSS_CELLS)
def test_other_tenants_ids_are_invisible(
    tenant: Tenant, victim: World, role: str, route: Route, expected: int
) -> None:
    tenant.admin.resource(name="My own room")  # the attacker's tenant is not empty
    before = victim.snapshot()
    api: Api = getattr(tenant, role)

    r = _send(api, route, {"rid": victim.rid, "bid": victim.bid})
    body = assert_problem(r, expected)

    # Exactly what an id that exists nowhere gets: nothing tells the two apart.
    unknown = {"rid": str(uuid.uuid4()), "bid": str(uuid.uuid4())}
    control = _send(api, route, unknown)
    control_body = assert_problem(control, expected)
    for key in ("type", "title", "status"):
        assert body[key] == control_body[key]
    normalized = body["detail"].replace(victim.rid, "ID").replace(victim.bid, "ID")
    control_detail = (
        control_body["detail"].replace(unknown["rid"], "ID").replace(unknown["bid"], "ID")
    )
    assert normalized == control_detail
    assert set(body) == set(control_body)

    assert victim.snapshot() == before


@pytest.mark.parametrize("role", ["admin", "booker", "viewer"])
def test_other_tenants_objects_absent_from_lists(tenant: Tenant, victim: World, role: str) -> None:
    mine = tenant.admin.resource(name="Mine")
    api: Api = getattr(tenant, role)

    resources = api.get("/v1/resources", params={"limit": 500})
    assert resources.status_code == 200, resources.text
    ids = [item["id"] for item in resources.json()["items"]]
    assert ids == [mine["id"]]
    assert victim.rid not in resources.text

    tagged = api.get("/v1/resources", params={"tag": "outdoor"})
    assert tagged.status_code == 200
    assert tagged.json()["items"] == []

    for params in (
        {},
        {"resource_id": victim.rid},
        {"customer": "c-1"},
        {"from": "2031-03-01T00:00:00Z", "to": "2031-03-02T00:00:00Z"},
        {"status": ["held", "confirmed", "cancelled", "expired"]},
    ):
        r = api.get("/v1/reservations", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [], params
        assert victim.bid not in r.text


# --------------------------------------------------------------------------------------------
# the role matrix inside one tenant


ROLES = ("admin", "booker", "viewer", "other_booker")


def _caller(world: World, role: str, other_booker: Api) -> Api:
    return other_booker if role == "other_booker" else getattr(world.tenant, role)


MATRIX_ROUTES: list[tuple[Route, dict[str, int]]] = [
    (
        Route("create-resource", "POST", "/v1/resources", {"name": "New room"}, write=True),
        {"admin": 201, "booker": 403, "viewer": 403, "other_booker": 403},
    ),
    (
        Route("list-resources", "GET", "/v1/resources"),
        {"admin": 200, "booker": 200, "viewer": 200, "other_booker": 200},
    ),
    (
        Route("get-resource", "GET", "/v1/resources/{rid}"),
        {"admin": 200, "booker": 200, "viewer": 200, "other_booker": 200},
    ),
    (
        Route("patch-resource", "PATCH", "/v1/resources/{rid}", {"name": "Renamed"}, write=True),
        {"admin": 200, "booker": 403, "viewer": 403, "other_booker": 403},
    ),
    (
        Route(
            "delete-resource",
            "DELETE",
            "/v1/resources/{rid}?cancel_reservations=true",
            write=True,
        ),
        {"admin": 204, "booker": 403, "viewer": 403, "other_booker": 403},
    ),
    (
        Route(
            "create-reservation",
            "POST",
            "/v1/reservations",
            {"resource_id": "{rid}", "start": FREE_START, "end": FREE_END},
            write=True,
        ),
        {"admin": 201, "booker": 201, "viewer": 403, "other_booker": 201},
    ),
    (
        Route("list-reservations", "GET", "/v1/reservations"),
        {"admin": 200, "booker": 200, "viewer": 200, "other_booker": 200},
    ),
    (
        Route("get-reservation", "GET", "/v1/reservations/{bid}"),
        {"admin": 200, "booker": 200, "viewer": 200, "other_booker": 404},
    ),
    (
        Route(
            "patch-reservation",
            "PATCH",
            "/v1/reservations/{bid}",
            {"customer": "changed"},
            write=True,
        ),
        {"admin": 200, "booker": 200, "viewer": 403, "other_booker": 404},
    ),
    (
        Route(
            "reschedule-reservation",
            "PATCH",
            "/v1/reservations/{bid}",
            {"start": FREE_START, "end": FREE_END},
            write=True,
        ),
        {"admin": 200, "booker": 200, "viewer": 403, "other_booker": 404},
    ),
    (
        Route("confirm-reservation", "POST", "/v1/reservations/{bid}/confirm", write=True),
        {"admin": 200, "booker": 200, "viewer": 403, "other_booker": 404},
    ),
    (
        Route(
            "extend-reservation",
            "POST",
            "/v1/reservations/{bid}/extend",
            {"hold_seconds": 7200},
            write=True,
        ),
        {"admin": 200, "booker": 200, "viewer": 403, "other_booker": 404},
    ),
    (
        # The victim's reservation is a hold in 2031: reached, and refused as one (409).
        Route("check-in-reservation", "POST", "/v1/reservations/{bid}/check-in", write=True),
        {"admin": 409, "booker": 409, "viewer": 403, "other_booker": 404},
    ),
    (
        Route("cancel-reservation", "POST", "/v1/reservations/{bid}/cancel", write=True),
        {"admin": 200, "booker": 200, "viewer": 403, "other_booker": 404},
    ),
]

MATRIX_CELLS = [
    pytest.param(route, role, expected[role], id=f"{route.name}-{role}")
    for route, expected in MATRIX_ROUTES
    for role in ROLES
]


def _check_effect(world: World, route: Route, r: httpx.Response, before: dict[str, Any]) -> None:
    """A granted call did what it says, seen through the admin."""
    admin = world.tenant.admin
    name = route.name
    if name == "create-resource":
        assert admin.get(f"/v1/resources/{r.json()['id']}").status_code == 200
        return
    if name == "delete-resource":
        assert admin.get(f"/v1/resources/{world.rid}").status_code == 404
        assert admin.get(f"/v1/reservations/{world.bid}").json()["status"] == "cancelled"
        return
    if name == "create-reservation":
        created = admin.get(f"/v1/reservations/{r.json()['id']}")
        assert created.status_code == 200
        assert created.json()["status"] == "confirmed"
        return
    if route.method == "GET":
        assert world.snapshot() == before  # reads change nothing
        return
    resource, reservation = world.current()
    (old_resource,) = [i for i in before["resources"]["items"] if i["id"] == world.rid]
    if name == "patch-resource":
        assert resource["name"] == "Renamed"
        assert resource["version"] == old_resource["version"] + 1
    elif name == "patch-reservation":
        assert reservation["customer"] == "changed"
    elif name == "reschedule-reservation":
        assert reservation["start"].startswith("2031-03-02T10:00:00")
    elif name == "confirm-reservation":
        assert reservation["status"] == "confirmed"
    elif name == "cancel-reservation":
        assert reservation["status"] == "cancelled"
    elif name == "extend-reservation":
        assert reservation["status"] == "held"
        assert reservation["expires_at"] > world.reservation["expires_at"]
    else:
        raise AssertionError(name)


@pytest.mark.parametrize(("route", "role", "expected"), MATRIX_CELLS)
def test_role_matrix(own: World, route: Route, role: str, expected: int) -> None:
    other_booker = own.tenant.another_booker()
    api = _caller(own, role, other_booker)
    before = own.snapshot()

    r = _send(api, route, {"rid": own.rid, "bid": own.bid})

    if expected >= 400:
        slug = {403: "forbidden", 404: "not-found", 409: "check-in-refused"}[expected]
        assert_problem(r, expected, slug)
        assert own.snapshot() == before
        return
    assert r.status_code == expected, r.text
    if expected != 204:
        assert r.headers["content-type"] == "application/json"
    _check_effect(own, route, r, before)


def test_booker_lists_only_its_own_reservations(own: World) -> None:
    t = own.tenant
    other_booker = t.another_booker()
    theirs = other_booker.book(own.rid, FREE_START, FREE_END)
    assert theirs.status_code == 201, theirs.text
    admins = t.admin.book(own.rid, "2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z")
    assert admins.status_code == 201, admins.text

    def listed(api: Api, **params: Any) -> set[str]:
        r = api.get("/v1/reservations", params=params)
        assert r.status_code == 200, r.text
        return {item["id"] for item in r.json()["items"]}

    everything = {own.bid, theirs.json()["id"], admins.json()["id"]}
    assert listed(t.admin) == everything
    assert listed(t.viewer) == everything
    assert listed(t.booker) == {own.bid}
    assert listed(other_booker) == {theirs.json()["id"]}
    assert listed(other_booker, resource_id=own.rid) == {theirs.json()["id"]}
    assert listed(other_booker, customer="c-1") == set()
    assert listed(t.booker, status="confirmed") == set()

    # Another booker's reservation and an admin's one are not the booker's to see.
    for api, hidden in ((t.booker, theirs.json()["id"]), (t.booker, admins.json()["id"])):
        assert_problem(api.get(f"/v1/reservations/{hidden}"), 404, "not-found")


def test_resource_deleted_by_admin_is_gone_for_every_role(own: World) -> None:
    t = own.tenant
    r = t.admin.delete(f"/v1/resources/{own.rid}", params={"cancel_reservations": "true"})
    assert r.status_code == 204, r.text
    for api in (t.admin, t.booker, t.viewer):
        assert_problem(api.get(f"/v1/resources/{own.rid}"), 404, "not-found")
    for api in (t.admin, t.booker):
        assert_problem(api.book(own.rid, FREE_START, FREE_END), 404, "not-found")
    # Its reservation stays readable (cancelled) by those who could see it.
    assert t.booker.get(f"/v1/reservations/{own.bid}").json()["status"] == "cancelled"


# --------------------------------------------------------------------------------------------
# authentication: every failure looks the same


def _bad_checksum(token: str) -> str:
    last = token[-1]
    return token[:-1] + ("a" if last != "a" else "b")


def _wrong_secret(token: str) -> str:
    prefix = token.split("_")[1]
    secret = "A" * 32
    return f"rsv_{prefix}_{secret}{keys._checksum(prefix, secret)}"


CREDENTIALS = [
    "missing-header",
    "empty-header",
    "scheme-only",
    "wrong-scheme-basic",
    "wrong-scheme-token",
    "no-scheme",
    "malformed-key",
    "key-with-bad-checksum",
    "truncated-key",
    "key-with-trailing-garbage",
    "unknown-well-formed-key",
    "real-prefix-wrong-secret",
    "revoked-key",
    "expired-key",
    "expired-by-clock",
]


def _authorization(kind: str, t: Tenant, client: TestClient, clock: Any) -> dict[str, str]:
    good = t.tokens["admin"]
    if kind == "missing-header":
        return {}
    header = {
        "empty-header": "",
        "scheme-only": "Bearer",
        "wrong-scheme-basic": f"Basic {good}",
        "wrong-scheme-token": f"Token {good}",
        "no-scheme": good,
        "malformed-key": "Bearer not-an-api-key",
        "key-with-bad-checksum": f"Bearer {_bad_checksum(good)}",
        "truncated-key": f"Bearer {good[:-1]}",
        "key-with-trailing-garbage": f"Bearer {good}x",
        "unknown-well-formed-key": f"Bearer {keys.generate().token}",
        "real-prefix-wrong-secret": f"Bearer {_wrong_secret(good)}",
    }.get(kind)
    if header is not None:
        return {"Authorization": header}

    if kind == "revoked-key":
        created = create_key(client, t.name, tenancy.Role.admin)
        auth = {"Authorization": f"Bearer {created.token}"}
        assert client.get("/v1/resources", headers=auth).status_code == 200
        revoke_key(client, created.prefix)
        return auth
    if kind == "expired-key":
        past = datetime.now(UTC) - timedelta(seconds=1)
        created = create_key(client, t.name, tenancy.Role.admin, expires_at=past)
        return {"Authorization": f"Bearer {created.token}"}
    if kind == "expired-by-clock":
        soon = datetime.now(UTC) + timedelta(hours=1)
        created = create_key(client, t.name, tenancy.Role.admin, expires_at=soon)
        auth = {"Authorization": f"Bearer {created.token}"}
        assert client.get("/v1/resources", headers=auth).status_code == 200
        clock.advance(timedelta(hours=2))
        return auth
    raise AssertionError(kind)


AUTH_ROUTES = [
    Route("list-resources", "GET", "/v1/resources"),
    Route("create-resource", "POST", "/v1/resources", {"name": "x"}, write=True),
    Route("get-resource", "GET", "/v1/resources/{rid}"),
    Route("patch-resource", "PATCH", "/v1/resources/{rid}", {"name": "x"}, write=True),
    Route("delete-resource", "DELETE", "/v1/resources/{rid}?cancel_reservations=true", write=True),
    Route(
        "create-reservation",
        "POST",
        "/v1/reservations",
        {"resource_id": "{rid}", "start": FREE_START, "end": FREE_END},
        write=True,
    ),
    Route("list-reservations", "GET", "/v1/reservations"),
    Route("get-reservation", "GET", "/v1/reservations/{bid}"),
    Route("patch-reservation", "PATCH", "/v1/reservations/{bid}", {"customer": "x"}, write=True),
    Route("confirm-reservation", "POST", "/v1/reservations/{bid}/confirm", write=True),
    Route("cancel-reservation", "POST", "/v1/reservations/{bid}/cancel", write=True),
]


@pytest.fixture(scope="module")
def reference_401(app_client: TestClient) -> httpx.Response:
    r = app_client.get("/v1/resources")
    assert_problem(r, 401, "unauthenticated")
    return r


@pytest.mark.parametrize("kind", CREDENTIALS)
def test_every_authentication_failure_is_the_same_401(
    own: World,
    app_client: TestClient,
    clock: Any,
    reference_401: httpx.Response,
    kind: str,
) -> None:
    """Each way of failing, on every route: byte-for-byte the same 401, nothing changed."""
    before = own.snapshot()
    headers = _authorization(kind, own.tenant, app_client, clock)
    ids = {"rid": own.rid, "bid": own.bid}
    for route in AUTH_ROUTES:
        kw: dict[str, Any] = {"headers": headers}
        if route.body is not None:
            kw["json"] = fill(route.body, ids)
        r = app_client.request(route.method, fill(route.path, ids), **kw)

        assert_problem(r, 401, "unauthenticated")
        assert r.content == reference_401.content, route.name
        assert r.headers["www-authenticate"] == reference_401.headers["www-authenticate"]
        assert r.headers["www-authenticate"].lower().startswith("bearer")
    clock.offset = type(clock.offset)(0)  # the snapshot's own keys must not look expired
    assert own.snapshot() == before


def test_lowercase_bearer_scheme_is_accepted(own: World, app_client: TestClient) -> None:
    """The control for the table above: the same token, well presented, works."""
    token = own.tenant.tokens["viewer"]
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = app_client.get("/v1/resources", headers={"Authorization": f"{scheme} {token}"})
        assert r.status_code == 200, (scheme, r.text)


# --------------------------------------------------------------------------------------------
# what a conflict tells about reservations the caller may not see


@pytest.mark.parametrize(
    ("who", "sees_id"),
    [("owner", True), ("other_booker", False), ("admin", True)],
)
def test_create_conflict_names_only_visible_reservations(
    own: World, who: str, sees_id: bool
) -> None:
    api = _caller(own, "booker" if who == "owner" else who, own.tenant.another_booker())
    r = api.book(own.rid, "2031-03-01T10:30:00Z", "2031-03-01T11:30:00Z")
    body = assert_problem(r, 409, "reservation-conflict")
    (item,) = body["conflicts"]
    assert item["start"].startswith("2031-03-01T10:00:00")
    assert item["end"].startswith("2031-03-01T11:00:00")
    assert item["status"] == "held"
    if sees_id:
        assert item["id"] == own.bid
    else:
        assert "id" not in item
        assert own.bid not in r.text
        assert "c-1" not in r.text  # nor the customer


@pytest.mark.parametrize(
    ("who", "sees_id"),
    [("owner", True), ("other_booker", False), ("admin", True)],
)
def test_reschedule_conflict_names_only_visible_reservations(
    own: World, who: str, sees_id: bool
) -> None:
    api = _caller(own, "booker" if who == "owner" else who, own.tenant.another_booker())
    mine = api.book(own.rid, FREE_START, FREE_END)
    assert mine.status_code == 201, mine.text
    r = api.patch(
        f"/v1/reservations/{mine.json()['id']}",
        json={"start": "2031-03-01T10:30:00Z", "end": "2031-03-01T11:30:00Z"},
    )
    body = assert_problem(r, 409, "reservation-conflict")
    (item,) = body["conflicts"]
    assert item["start"].startswith("2031-03-01T10:00:00")
    if sees_id:
        assert item["id"] == own.bid
    else:
        assert "id" not in item
        assert own.bid not in r.text


# --------------------------------------------------------------------------------------------
# fields the server owns cannot be sent


SERVER_OWNED = {
    "tenant_id": str(uuid.uuid4()),
    "status": "confirmed",
    "version": 99,
    "created_by": str(uuid.uuid4()),
    "id": str(uuid.uuid4()),
    "created_at": "2020-01-01T00:00:00Z",
}

WRITE_BODIES = [
    Route("create-resource", "POST", "/v1/resources", {"name": "Sneaky"}),
    Route("patch-resource", "PATCH", "/v1/resources/{rid}", {"name": "Sneaky"}),
    Route(
        "create-reservation",
        "POST",
        "/v1/reservations",
        {"resource_id": "{rid}", "start": FREE_START, "end": FREE_END},
    ),
    Route("patch-reservation", "PATCH", "/v1/reservations/{bid}", {"customer": "sneaky"}),
]


@pytest.mark.parametrize("field", list(SERVER_OWNED))
@pytest.mark.parametrize("route", WRITE_BODIES, ids=lambda r: r.name)
def test_server_owned_fields_are_refused(own: World, route: Route, field: str) -> None:
    before = own.snapshot()
    ids = {"rid": own.rid, "bid": own.bid}
    body = {**fill(route.body, ids), field: SERVER_OWNED[field]}
    r = own.tenant.admin.request(route.method, fill(route.path, ids), json=body)

    problem = assert_problem(r, 422, "invalid-input")
    assert field in problem["detail"]
    named = [e for e in problem["errors"] if e["field"] == field]
    assert named, problem["errors"]
    assert named[0]["in"] == "body"
    assert own.snapshot() == before
