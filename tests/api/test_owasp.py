"""The OWASP API Security Top 10 (2023), item by item: where each is tested. Tests in this
file close the gaps the other files leave; the rest are named where they live.

API1 Broken Object Level Authorization
    Another tenant's id on every resource and reservation route, for every role, answers as an
    id that exists nowhere and changes nothing: test_isolation.py
    (test_other_tenants_ids_are_invisible, test_other_tenants_objects_absent_from_lists).
    A booker sees and changes only its own reservations: test_isolation.py (test_role_matrix,
    test_booker_lists_only_its_own_reservations), test_bookings.py
    (test_bookings_are_visible_to_their_booker_and_the_tenants_admins). Here:
    test_foreign_ids_are_indistinguishable_from_unknown ones on the booking and availability
    routes and on booking a foreign resource, for another tenant's admin and booker, and on
    every reservation and booking route for another booker of the same tenant, compared with
    the database rows; the same for another tenant on approve/decline, waitlist entries
    (and waiting for a foreign resource), webhook endpoints and feeds, and for another booker
    on waitlist entries and approve/decline; test_foreign_ids_filter_lists_to_nothing
    (reservations and waitlist). test_every_id_route_is_in_the_matrix fails when an id route
    in the OpenAPI document has no cell here or in test_isolation.py. The fuzzer's
    object_level_authorization check replays reads as the other tenant and as a second booker
    (tests/fuzz/test_openapi.py).
API2 Broken Authentication
    Missing, malformed, bad-checksum, truncated, unknown, wrong-secret, revoked and expired keys
    get byte-for-byte the same 401 on every route: test_isolation.py
    (test_every_authentication_failure_is_the_same_401). Revocation reaches every process at
    once, the cache never holds a secret: test_cache.py. Here: test_keys_are_stored_hashed,
    test_malformed_keys_are_refused_without_a_database_read,
    test_secrets_are_compared_with_compare_digest.
API3 Broken Object Property Level Authorization
    Server-owned fields on resource and reservation create/patch are refused:
    test_isolation.py (test_server_owned_fields_are_refused). Conflicts name only the
    reservations the caller may see: test_isolation.py. Here: the same on bookings and with
    more fields, checked in the database (test_server_owned_fields_never_reach_the_database),
    and test_responses_carry_only_documented_fields.
API4 Unrestricted Resource Consumption
    Bodies over 1 MiB, announced or chunked: 413 problem+json (test_bad_input.py); rate limits
    per key and tenant, 429 with RateLimit, RateLimit-Policy and Retry-After
    (test_ratelimit.py); the per-tenant live-hold cap (test_hold_limit.py); page size
    `limit` 501 on reservations (test_bad_input.py); metadata over 16 KiB, more than 32 tags
    (test_bad_input.py); series over 1,000 occurrences (test_bookings.py). Here:
    test_documented_caps (the other page sizes, windows, resources per booking, exdates, tag
    filters) and test_one_booker_cannot_take_every_slot. The fuzzer fails any response slower
    than 20 s (max_response_time).
API5 Broken Function Level Authorization
    Bookers and viewers cannot create, change or archive resources; viewers cannot book:
    test_isolation.py (test_role_matrix). Here: test_viewers_cannot_write_bookings,
    test_only_admins_override_rules, test_only_admins_decide_approvals (viewers, the booking's
    own booker and another booker cannot approve or decline),
    test_viewers_cannot_join_or_leave_waitlists, test_there_is_no_key_management_over_http
    (keys are made and revoked with the CLI, on the server). Webhooks and feeds are admin-only:
    test_webhooks.py, test_feeds.py.
API6 Unrestricted Access to Sensitive Business Flows
    Hoarding slots: the booker limit per key or customer (test_policy_rules.py,
    test_bookings.py test_booker_limit_applies_across_a_series; here
    test_one_booker_cannot_take_every_slot), the live-hold cap (test_hold_limit.py), rate
    limits (test_ratelimit.py). Retried bookings do not book twice: Idempotency-Key
    (test_reservations.py, test_bookings.py).
API7 Server Side Request Forgery
    The API fetches nothing a client names (webhooks are issue 9):
    test_the_only_url_a_client_gives_is_a_webhook_endpoints.
API8 Security Misconfiguration
    Here: test_security_headers_on_every_response (errors, 404s, 405s, 413s, 429s, probes,
    documents), the 500's in test_openapi_contract.py; test_no_internals_in_any_response;
    test_no_cors; test_trace_is_not_echoed. Every input the fuzzer sends gets a documented
    status and body (tests/fuzz/test_openapi.py); no input is a 5xx (test_bad_input.py).
API9 Improper Inventory Management
    test_every_served_route_is_documented; /metrics, undocumented on purpose, is refused by
    the public nginx (deploy/nginx.conf, tests/deploy/test_nginx.py).
API10 Unsafe Consumption of APIs
    The API consumes no third-party API. What it reads back from Redis is checked before use:
    a cached key still needs its secret (test_cache.py
    test_a_cached_prefix_with_a_wrong_secret_is_refused), a cached resource is served only to
    its tenant (test_isolation.py reads other tenants' freshly cached resources), and a Redis
    that dies or hangs is survived (tests/faults/test_redis_down.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.tenancy import keys
from reservations.tenancy import service as tenancy
from tests.support.api import Api, Tenant, new_tenant

# test_isolation.py's matrix: another tenant's id on resource and reservation routes, every role.
from tests.support.routes import ID_ROUTES as ISOLATION_ROUTES

PROBLEM = "application/problem+json"
T0, T1 = "2031-06-02T10:00:00Z", "2031-06-02T11:00:00Z"
FREE0, FREE1 = "2031-06-03T10:00:00Z", "2031-06-03T11:00:00Z"
WAIT0, WAIT1 = "2031-06-02T12:00:00Z", "2031-06-02T13:00:00Z"


def _problem(r: httpx.Response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    if slug is not None:
        assert body["type"] == f"/problems/{slug}", body
    return body


def _rows(settings: Settings, sql: str, *params: Any) -> list[Any]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        return [row[0] for row in conn.execute(sql, params).fetchall()]


def _tenant_rows(settings: Settings, t: Tenant) -> dict[str, list[Any]]:
    """Every row the tenant owns that an id route could change, as the database has it."""
    (tenant_id,) = _rows(settings, "SELECT id FROM tenant WHERE name = %s", t.name)
    owned = {
        table: f"SELECT to_jsonb(t) FROM {table} t WHERE tenant_id = %s ORDER BY id"
        for table in (
            "resource",
            "reservation",
            "booking",
            "waitlist_entry",
            "feed",
            "webhook_endpoint",
        )
    }
    # A test message (POST /v1/webhooks/{id}/test) is a delivery row of the endpoint.
    owned["webhook_delivery"] = (
        "SELECT to_jsonb(d) FROM webhook_delivery d JOIN webhook_endpoint e"
        " ON e.id = d.endpoint_id WHERE e.tenant_id = %s ORDER BY d.id"
    )
    return {table: _rows(settings, sql, tenant_id) for table, sql in owned.items()}


# --------------------------------------------------------------------------------------------
# API1: object level authorization


@dataclass
class Victim:
    """A tenant whose booker holds a reservation, a booking, a pending (awaiting approval)
    reservation and a waitlist entry, and whose admin made a webhook endpoint and a feed."""

    tenant: Tenant
    resource: str
    reservation: str
    booking: str
    pending: str
    waiting: str
    webhook: str
    feed: str

    def ids(self) -> dict[str, str]:
        return {
            "rid": self.resource,
            "res": self.reservation,
            "bkg": self.booking,
            "pnd": self.pending,
            "wl": self.waiting,
            "hook": self.webhook,
            "feed": self.feed,
        }


def _made(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def make_victim(t: Tenant) -> Victim:
    resource = t.admin.resource(name="Court")["id"]
    reservation = _made(t.booker.book(resource, T0, T1, hold_seconds=3600, customer="alice"))
    booking = _made(
        t.booker.post(
            "/v1/bookings",
            json={
                "resources": [{"resource_id": resource}],
                "start": "2031-06-04T10:00:00Z",
                "end": "2031-06-04T11:00:00Z",
                "rrule": "FREQ=DAILY;COUNT=3",
                "hold_seconds": 3600,
            },
        )
    )
    approvals = t.admin.resource(name="Approvals", policy={"requires_approval": True})["id"]
    pending = _made(t.booker.book(approvals, T0, T1))
    assert pending["status"] == "pending", pending
    # The booker waits for a range the admin holds.
    _made(t.admin.book(resource, WAIT0, WAIT1))
    waiting = _made(
        t.booker.post("/v1/waitlist", json={"resource_id": resource, "start": WAIT0, "end": WAIT1})
    )
    assert waiting["status"] == "waiting", waiting
    # A public address literal: registration resolves nothing, and no worker delivers.
    webhook = _made(t.admin.post("/v1/webhooks", json={"url": "https://8.8.8.8/owasp"}))
    feed = _made(t.admin.post("/v1/feeds", json={"resource_id": resource}))
    return Victim(
        tenant=t,
        resource=resource,
        reservation=reservation["id"],
        booking=booking["id"],
        pending=pending["id"],
        waiting=waiting["id"],
        webhook=webhook["id"],
        feed=feed["id"],
    )


@dataclass(frozen=True)
class IdRoute:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None


BOOKING_ROUTES = [
    IdRoute("get-booking", "GET", "/v1/bookings/{bkg}"),
    IdRoute("move-booking", "PATCH", "/v1/bookings/{bkg}", {"shift": "PT1H"}),
    IdRoute("confirm-booking", "POST", "/v1/bookings/{bkg}/confirm"),
    IdRoute("extend-booking", "POST", "/v1/bookings/{bkg}/extend", {"hold_seconds": 7200}),
    IdRoute("cancel-booking", "POST", "/v1/bookings/{bkg}/cancel"),
    IdRoute(
        "cancel-booking-occurrence",
        "POST",
        "/v1/bookings/{bkg}/cancel",
        {"scope": "following", "occurrence": "2031-06-05T10:00:00Z"},
    ),
]
RESERVATION_ROUTES = [
    IdRoute("get-reservation", "GET", "/v1/reservations/{res}"),
    IdRoute("patch-reservation", "PATCH", "/v1/reservations/{res}", {"customer": "mallory"}),
    IdRoute(
        "reschedule-reservation", "PATCH", "/v1/reservations/{res}", {"start": FREE0, "end": FREE1}
    ),
    IdRoute("confirm-reservation", "POST", "/v1/reservations/{res}/confirm"),
    IdRoute("extend-reservation", "POST", "/v1/reservations/{res}/extend", {"hold_seconds": 7200}),
    IdRoute("check-in-reservation", "POST", "/v1/reservations/{res}/check-in"),
    IdRoute("cancel-reservation", "POST", "/v1/reservations/{res}/cancel"),
]
# Admin functions on a reservation: the victim's is pending, so one that crossed would
# change it (approved, or declined and its range freed).
DECISION_ROUTES = [
    IdRoute("approve-reservation", "POST", "/v1/reservations/{pnd}/approve"),
    IdRoute("decline-reservation", "POST", "/v1/reservations/{pnd}/decline"),
]
WAITLIST_ROUTES = [
    IdRoute("get-waitlist-entry", "GET", "/v1/waitlist/{wl}"),
    IdRoute("leave-waitlist", "DELETE", "/v1/waitlist/{wl}"),
]
RESOURCE_ROUTES = [
    IdRoute(
        "availability",
        "GET",
        "/v1/resources/{rid}/availability?from=2031-06-02T00:00:00Z&to=2031-06-03T00:00:00Z",
    ),
    IdRoute(
        "book-resource-in-a-booking",
        "POST",
        "/v1/bookings",
        {"resources": [{"resource_id": "{rid}"}], "start": FREE0, "end": FREE1},
    ),
    IdRoute(
        "wait-for-resource",
        "POST",
        "/v1/waitlist",
        {"resource_id": "{rid}", "start": WAIT0, "end": WAIT1},
    ),
]
# The tenant's admin's objects: a booker never reaches them (403 before any lookup).
ADMIN_OBJECT_ROUTES = [
    IdRoute("get-webhook", "GET", "/v1/webhooks/{hook}"),
    IdRoute("patch-webhook", "PATCH", "/v1/webhooks/{hook}", {"enabled": False}),
    IdRoute("delete-webhook", "DELETE", "/v1/webhooks/{hook}"),
    IdRoute("webhook-deliveries", "GET", "/v1/webhooks/{hook}/deliveries"),
    IdRoute("test-webhook", "POST", "/v1/webhooks/{hook}/test"),
    IdRoute("revoke-feed", "DELETE", "/v1/feeds/{feed}"),
]
ADMIN_ONLY = {route.name for route in DECISION_ROUTES + ADMIN_OBJECT_ROUTES}


def _cell(intruder: str, route: IdRoute) -> Any:
    # A booker calling an admin function gets 403 whoever's the id: the role is checked first.
    expected = 403 if intruder.endswith("booker") and route.name in ADMIN_ONLY else 404
    return pytest.param(intruder, route, expected, id=f"{intruder}-{route.name}")


# Another tenant's admin and booker on every id route test_isolation.py does not cover (it
# covers resources and reservations, for every role); another booker of the victim's own
# tenant on every route of what the victim's booker made.
BOLA_CELLS = [
    *(
        _cell(intruder, route)
        for intruder in ("other-tenant-admin", "other-tenant-booker")
        for route in BOOKING_ROUTES
        + DECISION_ROUTES
        + WAITLIST_ROUTES
        + RESOURCE_ROUTES
        + ADMIN_OBJECT_ROUTES
    ),
    *(
        _cell("same-tenant-booker", route)
        for route in BOOKING_ROUTES + RESERVATION_ROUTES + DECISION_ROUTES + WAITLIST_ROUTES
    ),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


def _send(api: Api, route: IdRoute, ids: dict[str, str]) -> httpx.Response:
    kw: dict[str, Any] = {}
    if route.body is not None:
        kw["json"] = _fill(route.body, ids)
    return api.request(route.method, _fill(route.path, ids), **kw)


_VARYING_HEADERS = {"x-request-id", "ratelimit", "ratelimit-policy", "content-length", "date"}


@pytest.mark.parametrize(("intruder", "route", "expected"), BOLA_CELLS)
def test_foreign_ids_are_indistinguishable_from_unknown_ones(
    tenant: Tenant,
    other_tenant: Tenant,
    settings: Settings,
    intruder: str,
    route: IdRoute,
    expected: int,
) -> None:
    victim = make_victim(tenant)
    api = {
        "other-tenant-admin": other_tenant.admin,
        "other-tenant-booker": other_tenant.booker,
        "same-tenant-booker": tenant.another_booker(),
    }[intruder]
    other_tenant.admin.resource(name="The intruder's own room")
    before = _tenant_rows(settings, tenant)
    slug = {403: "forbidden", 404: "not-found"}[expected]

    r = _send(api, route, victim.ids())
    body = _problem(r, expected, slug)

    unknown = {k: str(uuid.uuid4()) for k in victim.ids()}
    control = _send(api, route, unknown)
    control_body = _problem(control, expected, slug)
    assert set(body) == set(control_body)
    for key in ("type", "title", "status"):
        assert body[key] == control_body[key]

    def normalized(detail: str, ids: dict[str, str]) -> str:
        for value in ids.values():
            detail = detail.replace(value, "ID")
        return detail

    assert normalized(body["detail"], victim.ids()) == normalized(control_body["detail"], unknown)
    assert {k for k in r.headers if k not in _VARYING_HEADERS} == {
        k for k in control.headers if k not in _VARYING_HEADERS
    }
    assert _tenant_rows(settings, tenant) == before


@pytest.mark.parametrize("intruder", ["other-tenant-admin", "same-tenant-booker"])
def test_foreign_ids_filter_lists_to_nothing(
    tenant: Tenant, other_tenant: Tenant, intruder: str
) -> None:
    victim = make_victim(tenant)
    api = other_tenant.admin if intruder == "other-tenant-admin" else tenant.another_booker()
    for params in ({"booking_id": victim.booking}, {"resource_id": victim.resource}):
        r = api.get("/v1/reservations", params=params)
        assert r.status_code == 200, r.text
        assert r.json()["items"] == [], params
        assert victim.reservation not in r.text
    waiting = api.get("/v1/waitlist", params={"resource_id": victim.resource})
    assert waiting.status_code == 200, waiting.text
    assert waiting.json()["items"] == []
    assert victim.waiting not in waiting.text
    # The victim's own booker, the control, sees them.
    mine = tenant.booker.get("/v1/reservations", params={"booking_id": victim.booking})
    assert len(mine.json()["items"]) == 3
    mine = tenant.booker.get("/v1/waitlist", params={"resource_id": victim.resource})
    assert [e["id"] for e in mine.json()["items"]] == [victim.waiting]


# Id routes without a same-tenant-booker cell, and why none is needed.
NOT_A_BOOKERS_OBJECT = {
    "/v1/resources/{resource_id}": "the tenant's: every booker reads it, only admins write "
    "(test_isolation.py test_role_matrix)",
    "/v1/resources/{resource_id}/availability": "the tenant's resource, public to its bookers",
    "/v1/webhooks/{webhook_id}": "admin-only (403 to bookers: test_webhooks.py)",
    "/v1/webhooks/{webhook_id}/deliveries": "admin-only (403 to bookers: test_webhooks.py)",
    "/v1/webhooks/{webhook_id}/test": "admin-only (403 to bookers: test_webhooks.py)",
    "/v1/feeds/{feed_id}": "admin-only (403 to bookers: test_feeds.py)",
}
# Id routes outside the matrix altogether, and why.
NOT_TENANT_IDS = {
    "/feeds/{token}.ics": "the token is the credential, not an id: no key, so no tenant or "
    "booker to cross; unknown, revoked and mistyped tokens all get one 404 (test_feeds.py)",
}


def _template_of(path: str, templates: set[str]) -> str | None:
    """The OpenAPI path a concrete route path (with `{rid}`-style fillers) is an instance of."""
    bare = path.split("?")[0]
    for template in templates:
        parts = re.split(r"(\{[^}]*\})", template)
        pattern = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        if re.fullmatch(pattern, bare):
            return template
    return None


def test_every_id_route_is_in_the_matrix(app_client: TestClient) -> None:
    """A new route with an id in its path fails here until the matrix calls it with another
    tenant's id and, where a booker owns the object, another booker's."""
    doc = app_client.get("/openapi.json").json()
    id_routes = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        if "{" in path and path not in NOT_TENANT_IDS
        for method in item
    }
    templates = {path for _, path in id_routes}
    other_tenant: set[tuple[str, str | None]] = {
        (route.method, _template_of(route.path, templates)) for route in ISOLATION_ROUTES
    }
    same_tenant_booker: set[tuple[str, str | None]] = set()
    for cell in BOLA_CELLS:
        intruder, route, _ = cell.values
        covered = same_tenant_booker if intruder == "same-tenant-booker" else other_tenant
        covered.add((route.method, _template_of(route.path, templates)))
    assert sorted(id_routes - other_tenant) == []
    missing = {(m, p) for m, p in id_routes - same_tenant_booker if p not in NOT_A_BOOKERS_OBJECT}
    assert sorted(missing) == []
    # The exemptions name routes that exist.
    assert set(NOT_A_BOOKERS_OBJECT) <= templates
    assert set(NOT_TENANT_IDS) <= set(doc["paths"])


# --------------------------------------------------------------------------------------------
# API2: authentication


TOKEN = re.compile(r"rsv_([0-9A-Za-z]{12})_([0-9A-Za-z]{32})([0-9A-Za-z]{6})")


def test_keys_are_stored_hashed(app_client: TestClient, settings: Settings) -> None:
    """A recognisable prefix (`rsv_`, for secret scanners), a lookup prefix, a 190-bit secret
    and a checksum; the database keeps the prefix and a SHA-256 of the secret, never the
    secret."""
    t = new_tenant(app_client)
    token = t.tokens["admin"]
    match = TOKEN.fullmatch(token)
    assert match, token
    prefix, secret, _ = match.groups()
    (row,) = _rows(settings, "SELECT to_jsonb(k) FROM api_key k WHERE prefix = %s", prefix)
    stored = str(row)
    assert secret not in stored
    assert token not in stored
    assert secret[:12] not in stored  # not even a part of it
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert row["secret_hash"] == "\\x" + digest
    # The key works, so the row is the one it authenticates against.
    assert t.admin.get("/v1/resources").status_code == 200


def test_checksum_catches_every_single_character_change() -> None:
    token = keys.generate().token
    assert keys.parse(token) is not None
    body = token[len("rsv_") :]
    for i, char in enumerate(body):
        if char == "_":
            continue
        other = "A" if char != "A" else "B"
        mutated = "rsv_" + body[:i] + other + body[i + 1 :]
        assert keys.parse(mutated) is None, (i, mutated)


class _NoDatabase:
    """A database that fails the test if anyone reads it."""

    def connection(self) -> Any:
        raise AssertionError("the database was read for a key that cannot be valid")


def test_malformed_keys_are_refused_without_a_database_read() -> None:
    token = keys.generate().token
    bad = [
        "",
        "rsv_",
        "not-a-key",
        token[:-1],
        token + "0",
        token[:-1] + ("a" if token[-1] != "a" else "b"),  # checksum
        token.replace("rsv_", "rsx_"),
        token.upper(),
    ]
    for candidate in bad:
        found = asyncio.run(
            tenancy.authenticate(
                _NoDatabase(),  # type: ignore[arg-type]
                candidate,
                now=Clock().now(),
            )
        )
        assert found is None, candidate
    # The control: a well-formed key does need the database.
    with pytest.raises(AssertionError, match="database was read"):
        asyncio.run(tenancy.authenticate(_NoDatabase(), token, now=Clock().now()))  # type: ignore[arg-type]


def test_secrets_are_compared_with_compare_digest(
    tenant: Tenant, app_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secret's hash is compared with hmac.compare_digest (constant time), and only with
    it: were it `==`, the lying comparator below could not let a wrong secret in."""
    good = tenant.tokens["viewer"]
    prefix = good.split("_")[1]
    wrong_secret = "B" * 32
    wrong = f"rsv_{prefix}_{wrong_secret}{keys._checksum(prefix, wrong_secret)}"
    auth = {"Authorization": f"Bearer {wrong}"}

    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert app_client.get("/v1/resources", headers=auth).status_code == 401
    wrong_hash = hashlib.sha256(wrong_secret.encode()).digest()
    assert any(a == wrong_hash for a, _ in calls), calls

    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: True)
    assert app_client.get("/v1/resources", headers=auth).status_code == 200


# --------------------------------------------------------------------------------------------
# API3: object property level authorization


SERVER_OWNED = {
    "id": str(uuid.uuid4()),
    "tenant_id": str(uuid.uuid4()),
    "created_by": str(uuid.uuid4()),
    "api_key_id": str(uuid.uuid4()),
    "version": 99,
    "status": "confirmed",
    "created_at": "2020-01-01T00:00:00Z",
    "updated_at": "2020-01-01T00:00:00Z",
    "archived_at": "2020-01-01T00:00:00Z",
    "expires_at": "2099-01-01T00:00:00Z",
    "booking_id": str(uuid.uuid4()),
    "reservations": [],
}

PROPERTY_ROUTES = [
    IdRoute("create-resource", "POST", "/v1/resources", {"name": "Sneaky"}),
    IdRoute("patch-resource", "PATCH", "/v1/resources/{rid}", {"name": "Sneaky"}),
    IdRoute(
        "create-reservation",
        "POST",
        "/v1/reservations",
        {"resource_id": "{rid}", "start": FREE0, "end": FREE1, "hold_seconds": 60},
    ),
    IdRoute("patch-reservation", "PATCH", "/v1/reservations/{res}", {"customer": "sneaky"}),
    IdRoute(
        "create-booking",
        "POST",
        "/v1/bookings",
        {"resources": [{"resource_id": "{rid}"}], "start": FREE0, "end": FREE1},
    ),
    IdRoute("move-booking", "PATCH", "/v1/bookings/{bkg}", {"shift": "PT1H"}),
    IdRoute("cancel-booking", "POST", "/v1/bookings/{bkg}/cancel", {"scope": "all"}),
]


@pytest.mark.parametrize("route", PROPERTY_ROUTES, ids=lambda r: r.name)
def test_server_owned_fields_never_reach_the_database(
    tenant: Tenant, settings: Settings, route: IdRoute
) -> None:
    victim = make_victim(tenant)
    before = _tenant_rows(settings, tenant)
    for field, value in SERVER_OWNED.items():
        body = {**_fill(route.body, victim.ids()), field: value}
        r = tenant.admin.request(route.method, _fill(route.path, victim.ids()), json=body)
        problem = _problem(r, 422, "invalid-input")
        assert any(e["field"] == field for e in problem["errors"]), (field, problem)
        # Nested where a client might hide it: inside a booking's resources.
        if route.name == "create-booking":
            nested = _fill(route.body, victim.ids())
            nested["resources"][0][field] = value
            _problem(tenant.admin.post("/v1/bookings", json=nested), 422, "invalid-input")
    assert _tenant_rows(settings, tenant) == before


def test_responses_carry_only_documented_fields(tenant: Tenant, app_client: TestClient) -> None:
    """Nothing internal leaks into a reply: no tenant, no creating key, no archive marker."""
    doc = app_client.get("/openapi.json").json()["components"]["schemas"]
    victim = make_victim(tenant)
    replies = {
        "ResourceRead": tenant.booker.get(f"/v1/resources/{victim.resource}").json(),
        "ReservationRead": tenant.booker.get(f"/v1/reservations/{victim.reservation}").json(),
        "BookingRead": tenant.booker.get(f"/v1/bookings/{victim.booking}").json(),
    }
    internal = {"tenant_id", "created_by", "api_key_id", "archived_at", "secret_hash", "prefix"}
    for schema, reply in replies.items():
        assert set(reply) <= set(doc[schema]["properties"]), (schema, set(reply))
        assert not internal & set(reply), schema
    for item in replies["BookingRead"]["reservations"]:
        assert set(item) <= set(doc["ReservationRead"]["properties"])


# --------------------------------------------------------------------------------------------
# API4 and API6: resource consumption, hoarding


CAPS = [
    (
        "resources-page",
        "GET",
        "/v1/resources",
        {"params": {"limit": 500}},
        {"params": {"limit": 501}},
    ),
    (
        "tag-filters",
        "GET",
        "/v1/resources",
        {"params": {"tag": [f"t{i}" for i in range(32)]}},
        {"params": {"tag": [f"t{i}" for i in range(33)]}},
    ),
    (
        "search-page",
        "POST",
        "/v1/availability/search",
        {"json": {"from": FREE0, "to": FREE1, "limit": 100}},
        {"json": {"from": FREE0, "to": FREE1, "limit": 101}},
    ),
    (
        "search-window",
        "POST",
        "/v1/availability/search",
        {"json": {"from": "2031-06-01T00:00:00Z", "to": "2031-07-02T00:00:00Z"}},
        {"json": {"from": "2031-06-01T00:00:00Z", "to": "2031-07-02T00:00:01Z"}},
    ),
    (
        "availability-window",
        "GET",
        "/v1/resources/{rid}/availability",
        {"params": {"from": "2031-06-01T00:00:00Z", "to": "2031-07-02T00:00:00Z"}},
        {"params": {"from": "2031-06-01T00:00:00Z", "to": "2031-07-02T00:00:01Z"}},
    ),
    (
        "resources-per-booking",
        "POST",
        "/v1/bookings",
        {"json": {"resources": "{ten}", "start": FREE0, "end": FREE1, "hold_seconds": 60}},
        {"json": {"resources": "{eleven}", "start": FREE0, "end": FREE1, "hold_seconds": 60}},
    ),
    (
        "exdates",
        "POST",
        "/v1/bookings",
        {
            "json": {
                "resources": [{"resource_id": "{rid}"}],
                "start": FREE0,
                "end": FREE1,
                "rrule": "FREQ=DAILY;COUNT=2",
                "exdates": [f"2032-01-01T00:{i // 60:02d}:{i % 60:02d}Z" for i in range(366)],
            }
        },
        {
            "json": {
                "resources": [{"resource_id": "{rid}"}],
                "start": FREE0,
                "end": FREE1,
                "rrule": "FREQ=DAILY;COUNT=2",
                "exdates": [f"2032-01-01T00:{i // 60:02d}:{i % 60:02d}Z" for i in range(367)],
            }
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "at_cap", "over_cap"), CAPS, ids=[c[0] for c in CAPS]
)
def test_documented_caps(
    tenant: Tenant,
    name: str,
    method: str,
    path: str,
    at_cap: dict[str, Any],
    over_cap: dict[str, Any],
) -> None:
    """Each cap the API documents: at the cap the request is served, one past it is a 422."""
    rooms = [
        tenant.admin.resource(name=f"R{i}")["id"] for i in range(11 if "per-booking" in name else 1)
    ]

    def prepare(kw: dict[str, Any]) -> dict[str, Any]:
        if "json" not in kw:
            return kw
        body = dict(kw["json"])
        if body.get("resources") == "{ten}":
            body["resources"] = [{"resource_id": r} for r in rooms[:10]]
        elif body.get("resources") == "{eleven}":
            body["resources"] = [{"resource_id": r} for r in rooms]
        return {"json": _fill(body, {"rid": rooms[0]})}

    target = path.format(rid=rooms[0])
    ok = tenant.admin.request(method, target, **prepare(at_cap))
    assert ok.status_code in (200, 201), ok.text
    _problem(tenant.admin.request(method, target, **prepare(over_cap)), 422, "invalid-input")


def test_one_booker_cannot_take_every_slot(tenant: Tenant) -> None:
    """A booker (or a script with its key) trying to hold a whole day of hourly slots gets
    `max_live` of them; everyone else can still book the rest."""
    policy = {"booker_limit": {"max_live": 2, "period": "day"}, "slot_grid_minutes": 60}
    room = tenant.admin.resource(name="Popular", policy=policy)["id"]
    outcomes = []
    for hour in range(8, 16):
        r = tenant.booker.book(
            room, f"2031-06-02T{hour:02d}:00:00Z", f"2031-06-02T{hour + 1:02d}:00:00Z"
        )
        outcomes.append(r.status_code)
        if r.status_code == 422:
            assert r.json()["reason"] == "booker-limit", r.text
    assert outcomes == [201, 201] + [422] * 6
    other = tenant.another_booker()
    assert other.book(room, "2031-06-02T12:00:00Z", "2031-06-02T13:00:00Z").status_code == 201


# --------------------------------------------------------------------------------------------
# API5: function level authorization


def test_viewers_cannot_write_bookings(tenant: Tenant, settings: Settings) -> None:
    victim = make_victim(tenant)
    before = _tenant_rows(settings, tenant)
    path = f"/v1/bookings/{victim.booking}"
    viewer = tenant.viewer
    for r in (
        viewer.post(
            "/v1/bookings",
            json={"resources": [{"resource_id": victim.resource}], "start": FREE0, "end": FREE1},
        ),
        viewer.patch(path, json={"shift": "PT1H"}),
        viewer.post(f"{path}/confirm"),
        viewer.post(f"{path}/extend", json={"hold_seconds": 7200}),
        viewer.post(f"{path}/cancel"),
    ):
        _problem(r, 403, "forbidden")
    assert viewer.get(path).status_code == 200  # reading is its job
    assert _tenant_rows(settings, tenant) == before


def test_only_admins_override_rules(tenant: Tenant, settings: Settings) -> None:
    """`override_rules` books outside the resource's rules: an admin function, even on a
    booker's own reservation."""
    closed = {"weekly_hours": {}}  # never open
    room = tenant.admin.resource(name="Closed", policy=closed)["id"]
    victim = make_victim(tenant)
    before = _tenant_rows(settings, tenant)
    booker = tenant.booker
    for r in (
        booker.book(room, FREE0, FREE1, override_rules=True),
        booker.patch(
            f"/v1/reservations/{victim.reservation}",
            json={"start": FREE0, "end": FREE1, "override_rules": True},
        ),
        booker.post(
            "/v1/bookings",
            json={
                "resources": [{"resource_id": room}],
                "start": FREE0,
                "end": FREE1,
                "override_rules": True,
            },
        ),
        booker.patch(
            f"/v1/bookings/{victim.booking}", json={"shift": "PT1H", "override_rules": True}
        ),
    ):
        _problem(r, 403, "forbidden")
    assert _tenant_rows(settings, tenant) == before
    # The control: the admin may.
    assert tenant.admin.book(room, FREE0, FREE1, override_rules=True).status_code == 201


def test_only_admins_decide_approvals(tenant: Tenant, settings: Settings) -> None:
    """Approve and decline are admin functions: a viewer, the booker whose booking it is and
    another booker of the tenant get 403, with or without If-Match, and it stays pending."""
    victim = make_victim(tenant)
    before = _tenant_rows(settings, tenant)
    path = f"/v1/reservations/{victim.pending}"
    for api in (tenant.viewer, tenant.booker, tenant.another_booker()):
        for action in ("approve", "decline"):
            _problem(api.post(f"{path}/{action}"), 403, "forbidden")
            _problem(api.post(f"{path}/{action}", headers={"If-Match": '"1"'}), 403, "forbidden")
    assert _tenant_rows(settings, tenant) == before
    # The control: the admin may, either way.
    approvals = tenant.admin.get(path).json()["resource_id"]
    other = _made(tenant.booker.book(approvals, FREE0, FREE1))
    approved = tenant.admin.post(f"{path}/approve")
    assert (approved.status_code, approved.json()["status"]) == (200, "confirmed"), approved.text
    declined = tenant.admin.post(f"/v1/reservations/{other['id']}/decline")
    assert (declined.status_code, declined.json()["status"]) == (200, "declined"), declined.text


def test_viewers_cannot_join_or_leave_waitlists(tenant: Tenant, settings: Settings) -> None:
    victim = make_victim(tenant)
    before = _tenant_rows(settings, tenant)
    viewer = tenant.viewer
    join = {"resource_id": victim.resource, "start": WAIT0, "end": WAIT1}
    _problem(viewer.post("/v1/waitlist", json=join), 403, "forbidden")
    _problem(viewer.delete(f"/v1/waitlist/{victim.waiting}"), 403, "forbidden")
    assert viewer.get(f"/v1/waitlist/{victim.waiting}").status_code == 200  # reading is its job
    assert _tenant_rows(settings, tenant) == before


def test_there_is_no_key_management_over_http(tenant: Tenant, app_client: TestClient) -> None:
    paths = app_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if re.search(r"key|tenant|admin|user", p, re.IGNORECASE)]
    for method, path in [
        ("GET", "/v1/keys"),
        ("POST", "/v1/keys"),
        ("POST", "/v1/api-keys"),
        ("GET", "/v1/tenants"),
        ("POST", "/v1/tenants"),
        ("GET", "/admin"),
    ]:
        _problem(tenant.admin.request(method, path, json={"role": "admin"}), 404, "not-found")


# --------------------------------------------------------------------------------------------
# API7: server side request forgery


def test_the_only_url_a_client_gives_is_a_webhook_endpoints(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    urlish = re.compile(r"url|uri|callback|webhook|href|link", re.IGNORECASE)

    def walk(node: Any, where: str) -> Iterator[str]:
        if isinstance(node, dict):
            if node.get("format") in {"uri", "url", "iri", "uri-reference"}:
                yield where
            for key in node.get("properties", {}):
                if urlish.search(key):
                    yield f"{where}.{key}"
            for key, value in node.items():
                yield from walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from walk(value, f"{where}/{i}")

    request_schemas = [
        name
        for name in doc["components"]["schemas"]
        if not name.endswith(("Read", "Page", "Created"))
    ]
    found = [
        hit for name in request_schemas for hit in walk(doc["components"]["schemas"][name], name)
    ]
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                if urlish.search(param["name"]) and not param["name"].endswith("_id"):
                    found.append(param["name"])
    # The one URL a client may give: a webhook endpoint's, held to the public-address rule at
    # registration and again before every delivery (tests/webhooks/test_webhooks.py).
    assert sorted(set(found)) == ["WebhookCreate.url", "WebhookUpdate.url"], found


# --------------------------------------------------------------------------------------------
# API8: security misconfiguration


SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


@pytest.fixture(scope="module")
def quota_of_one(settings: Settings) -> Iterator[TestClient]:
    """An app whose API keys may make one request a minute, for a 429."""
    limited = settings.model_copy(
        update={
            "rate_limit_key_requests": 1,
            "redis_key_prefix": settings.redis_key_prefix + "owasp:",
        }
    )
    with TestClient(create_app(limited, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_security_headers_on_every_response(
    tenant: Tenant, app_client: TestClient, quota_of_one: TestClient
) -> None:
    victim = make_victim(tenant)
    admin, bad = tenant.admin, {"Authorization": "Bearer rsv_nope"}
    responses = {
        "200 list": admin.get("/v1/resources"),
        "201 create": admin.post("/v1/resources", json={"name": "H"}),
        "204 archive": admin.delete(f"/v1/resources/{admin.resource()['id']}"),
        "401": app_client.get("/v1/resources", headers=bad),
        "403": tenant.viewer.post("/v1/resources", json={"name": "H"}),
        "404 id": admin.get(f"/v1/reservations/{uuid.uuid4()}"),
        "404 route": admin.get("/v1/nowhere"),
        "404 no auth": app_client.get("/nowhere"),
        "405": admin.request("PUT", "/v1/resources"),
        "409": admin.book(victim.resource, T0, T1),
        "412": admin.patch(
            f"/v1/resources/{victim.resource}", json={"name": "x"}, headers={"If-Match": '"99"'}
        ),
        "413": admin.post(
            "/v1/resources",
            content=b"{" + b" " * 1_100_000 + b"}",
            headers={"Content-Type": "application/json"},
        ),
        "422": admin.post("/v1/resources", json={}),
        "healthz": app_client.get("/healthz"),
        "readyz": app_client.get("/readyz"),
        "openapi": app_client.get("/openapi.json"),
        "docs": app_client.get("/docs"),
        "metrics": app_client.get("/metrics"),
    }
    t = new_tenant(quota_of_one)
    t.viewer.get("/v1/resources")
    responses["429"] = t.viewer.get("/v1/resources")
    for what, r in responses.items():
        status = what.split()[0]
        if status.isdigit():
            assert r.status_code == int(status), (what, r.status_code, r.text)
        else:
            assert r.status_code == 200, (what, r.text)
        for name, value in SECURITY.items():
            assert r.headers.get(name) == value, (what, name, dict(r.headers))
        assert r.headers.get("x-request-id"), what


LEAKS = re.compile(
    r"Traceback|File \"|site-packages|psycopg|sqlalchemy|pydantic|starlette|uvicorn|asyncio"
    r"|SELECT |INSERT |UPDATE |DELETE FROM| FROM |SQLSTATE|syntax error|\.py\b|line \d+",
)

PROVOKE = [
    ("unknown-route", "GET", "/v1/does-not-exist", {}),
    ("unknown-deep-route", "GET", "/v1/resources/a/b/c/d", {}),
    ("path-traversal", "GET", "/v1/resources/..%2F..%2Fetc%2Fpasswd", {}),
    ("method-not-allowed", "PUT", "/v1/reservations", {}),
    ("bad-uuid", "GET", "/v1/reservations/not-a-uuid", {}),
    ("quote-in-id", "GET", "/v1/resources/1'%20OR%20'1'='1", {}),
    ("quote-in-tag", "GET", "/v1/resources?tag=x'%20OR%201=1--", {}),
    ("quote-in-customer", "GET", "/v1/reservations?customer=%27%3B%20DROP%20TABLE%20x%3B--", {}),
    ("nul-in-query", "GET", "/v1/reservations?customer=a%00b", {}),
    ("bad-cursor", "GET", "/v1/reservations?cursor=%7B%7D", {}),
    ("huge-limit", "GET", "/v1/resources?limit=" + "9" * 400, {}),
    ("huge-capacity", "POST", "/v1/resources", {"content": b'{"name": "R", "capacity": 1e400}'}),
    (
        "huge-integer",
        "POST",
        "/v1/resources",
        {"content": b'{"name": "R", "capacity": ' + b"9" * 4400 + b"}"},
    ),
    (
        "huge-quantity",
        "POST",
        "/v1/reservations",
        {"json": {"resource_id": "{rid}", "start": FREE0, "end": FREE1, "quantity": 10**30}},
    ),
    (
        "far-future",
        "POST",
        "/v1/reservations",
        {
            "json": {
                "resource_id": "{rid}",
                "start": "9999-12-31T23:00:00Z",
                "end": "9999-12-31T23:59:59Z",
            }
        },
    ),
    (
        "offset-overflow",
        "POST",
        "/v1/reservations",
        {"json": {"resource_id": "{rid}", "start": "0001-01-01T00:00:00+23:59", "end": FREE1}},
    ),
    ("not-json", "POST", "/v1/resources", {"content": b"{name: R}"}),
    ("not-utf8", "POST", "/v1/resources", {"content": b'{"name": "\xc3\x28"}'}),
    ("deep-json", "POST", "/v1/resources", {"content": b"[" * 50_000 + b"]" * 50_000}),
    (
        "wrong-content-type",
        "POST",
        "/v1/resources",
        {"content": b"name=R", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ),
    (
        "text-body",
        "POST",
        "/v1/resources",
        {"content": b"R", "headers": {"Content-Type": "text/plain"}},
    ),
    (
        "bad-rrule",
        "POST",
        "/v1/bookings",
        {
            "json": {
                "resources": [{"resource_id": "{rid}"}],
                "start": FREE0,
                "end": FREE1,
                "rrule": "FREQ=SECONDLY;COUNT=99999999999999999999",
            }
        },
    ),
    (
        "bad-if-match",
        "PATCH",
        "/v1/resources/{rid}",
        {"json": {"name": "x"}, "headers": {"If-Match": '"99999999999999999999"'}},
    ),
    (
        "bad-idempotency-key",
        "POST",
        "/v1/reservations",
        {"json": {}, "headers": {"Idempotency-Key": "a b"}},
    ),
    (
        "bad-auth",
        "GET",
        "/v1/resources",
        {"headers": {"Authorization": "Bearer rsv_" + "x" * 5000}},
    ),
]


@pytest.mark.parametrize(("name", "method", "path", "kw"), PROVOKE, ids=[p[0] for p in PROVOKE])
def test_no_internals_in_any_response(
    tenant: Tenant, name: str, method: str, path: str, kw: dict[str, Any]
) -> None:
    """Errors say what to fix, never how the server is built: no stack trace, no SQL, no
    library or file names."""
    rid = tenant.admin.resource()["id"]
    kw = _fill(kw, {"rid": rid}) if "json" in kw else dict(kw)
    if "content" in kw:
        kw.setdefault("headers", {"Content-Type": "application/json"})
    r = tenant.admin.request(method, path.format(rid=rid), **kw)
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code < 400:  # quotes and semicolons are data, bound as parameters
        assert r.json()["items"] == [], r.text
    else:
        assert r.headers["content-type"] == PROBLEM, r.headers
    leak = LEAKS.search(r.text)
    assert leak is None, (leak.group(0) if leak else None, r.text)


def test_no_cors(tenant: Tenant, app_client: TestClient) -> None:
    """No browser on another origin may call the API with a user's key (no CORS headers)."""
    origin = {"Origin": "https://evil.example"}
    r = tenant.viewer.get("/v1/resources", headers=origin)
    assert r.status_code == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]
    pre = app_client.options(
        "/v1/resources",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 405
    assert not [h for h in pre.headers if h.lower().startswith("access-control-")]


def test_trace_is_not_echoed(tenant: Tenant) -> None:
    r = tenant.viewer.request("TRACE", "/v1/resources")
    _problem(r, 405, "method-not-allowed")
    assert tenant.tokens["viewer"] not in r.text


# --------------------------------------------------------------------------------------------
# API9: inventory


def test_every_served_route_is_documented(app_client: TestClient) -> None:
    """What the app serves is what its document lists, under /v1, at the package's version;
    the few routes left out are left out on purpose."""
    from reservations import __version__

    doc = app_client.get("/openapi.json").json()
    documented = {(path, method.upper()) for path, item in doc["paths"].items() for method in item}
    served: set[tuple[str, str]] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            nested = getattr(route, "original_router", None)
            if nested is not None:
                walk(nested.routes)
            elif getattr(route, "methods", None):
                served.update((route.path, m) for m in route.methods if m != "HEAD")

    walk(app_client.app.router.routes)  # type: ignore[attr-defined]
    undocumented = served - documented
    assert undocumented == {
        ("/metrics", "GET"),
        ("/openapi.json", "GET"),
        ("/docs", "GET"),
        ("/docs/oauth2-redirect", "GET"),
        # The booking page (src/reservations/web): HTML for people, not API.
        ("/", "GET"),
        ("/app", "GET"),
        # What each problem `type` URI means (web/problems.py): documentation, not API.
        ("/problems", "GET"),
        ("/problems/{slug}", "GET"),
    }
    assert documented <= served
    # /feeds/{token}.ics: the calendar URL, outside /v1 on purpose (its token is the
    # credential; calendar apps fetch it without an Authorization header).
    assert all(
        p.startswith("/v1/") or p in {"/healthz", "/readyz", "/feeds/{token}.ics"}
        for p, _ in documented
    )
    assert doc["info"]["version"] == __version__
