"""Idempotency-Key on every POST, with Stripe's semantics: a request that started to execute
leaves its outcome under its key, success or refusal (a 409 conflict, a 422 rule violation),
and a retry with the key gets that very response again, marked `Idempotent-Replayed: true`;
a request refused before it ran (a malformed body, a 429) leaves nothing, nor does the 409 of
a key still in use. Concurrent duplicates never make two effects (against a live server, with
a control that makes two without a key).

The matrix (`CASES`) has a row per POST route; a guard fails for a POST route without a row,
or whose OpenAPI does not declare the header."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.idempotency import Reply
from reservations.resources import service as resource_service
from tests.support.api import PROBLEM, Api, Tenant, _created, _problem, new_tenant
from tests.support.live import LiveServer
from tests.support.servers import make_settings

DAY = "2033-03-{:02d}T{:02d}:00:00Z"
KEY = "Idempotency-Key"
REPLAYED = "idempotent-replayed"


def at(day: int, hour: int) -> str:
    return DAY.format(day, hour)


def new_key() -> str:
    return f"idem-{secrets.token_hex(8)}"


def one(settings: Settings, sql: str, *params: Any) -> Any:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def records(settings: Settings, key: str) -> int:
    return int(one(settings, "SELECT count(*) FROM idempotency_record WHERE key = %s", key))


def post_routes(app: FastAPI) -> list[APIRoute]:
    """Every POST route of the app, through the routers it includes."""
    found: list[APIRoute] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            if isinstance(route, APIRoute):
                if "POST" in route.methods:
                    found.append(route)
                continue
            nested = getattr(route, "original_router", None)
            if nested is not None:
                walk(nested.routes)

    walk(app.router.routes)
    return found


# --- the matrix: one row per POST route ------------------------------------------------------


@dataclass
class Case:
    """One POST, and how to count its effect: a replay must leave `effects()` unchanged."""

    api: Api
    path: str
    body: dict[str, Any] | None
    effects: Callable[[], int]
    # Confirm and cancel are repeatable by design (a second run changes nothing and answers
    # alike), so they have no control below.
    repeatable: bool = False

    def send(self, key: str | None) -> httpx.Response:
        headers = {KEY: key} if key is not None else {}
        if self.body is None:
            return self.api.post(self.path, headers=headers)
        return self.api.post(self.path, json=self.body, headers=headers)


def _reservation_version(settings: Settings, rid: str) -> Callable[[], int]:
    return lambda: int(one(settings, "SELECT version FROM reservation WHERE id = %s", rid))


def _booking_version(settings: Settings, bid: str) -> Callable[[], int]:
    return lambda: int(one(settings, "SELECT version FROM booking WHERE id = %s", bid))


def _count(settings: Settings, sql: str, *params: Any) -> Callable[[], int]:
    return lambda: int(one(settings, sql, *params))


def create_resource(t: Tenant, s: Settings) -> Case:
    name = f"room-{secrets.token_hex(4)}"
    count = _count(s, "SELECT count(*) FROM resource WHERE name = %s", name)
    return Case(t.admin, "/v1/resources", {"name": name}, count)


def create_reservation(t: Tenant, s: Settings) -> Case:
    room = t.admin.resource()["id"]
    body = {"resource_id": room, "start": at(1, 9), "end": at(1, 10), "hold_seconds": 600}
    count = _count(s, "SELECT count(*) FROM reservation WHERE resource_id = %s", room)
    return Case(t.booker, "/v1/reservations", body, count)


def _held(t: Tenant) -> str:
    room = t.admin.resource()["id"]
    return str(_created(t.booker.book(room, at(1, 9), at(1, 10), hold_seconds=600))["id"])


def confirm_reservation(t: Tenant, s: Settings) -> Case:
    rid = _held(t)
    return Case(
        t.booker, f"/v1/reservations/{rid}/confirm", None, _reservation_version(s, rid), True
    )


def extend_reservation(t: Tenant, s: Settings) -> Case:
    rid = _held(t)
    return Case(
        t.booker,
        f"/v1/reservations/{rid}/extend",
        {"hold_seconds": 1200},
        _reservation_version(s, rid),
    )


def check_in_reservation(t: Tenant, s: Settings) -> Case:
    room = t.admin.resource()["id"]
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)  # check-in is open
    made = _created(t.booker.book(room, soon.isoformat(), (soon + timedelta(hours=1)).isoformat()))
    rid = str(made["id"])
    return Case(
        t.booker, f"/v1/reservations/{rid}/check-in", None, _reservation_version(s, rid), True
    )


def cancel_reservation(t: Tenant, s: Settings) -> Case:
    rid = _held(t)
    return Case(
        t.booker, f"/v1/reservations/{rid}/cancel", None, _reservation_version(s, rid), True
    )


def _pending(t: Tenant) -> str:
    room = t.admin.resource(policy={"requires_approval": True})["id"]
    made = _created(t.booker.book(room, at(1, 9), at(1, 10)))
    assert made["status"] == "pending"
    return str(made["id"])


def approve_reservation(t: Tenant, s: Settings) -> Case:
    rid = _pending(t)
    return Case(t.admin, f"/v1/reservations/{rid}/approve", None, _reservation_version(s, rid))


def decline_reservation(t: Tenant, s: Settings) -> Case:
    rid = _pending(t)
    return Case(t.admin, f"/v1/reservations/{rid}/decline", None, _reservation_version(s, rid))


def _booking_body(room: str, **fields: Any) -> dict[str, Any]:
    return {"resources": [{"resource_id": room}], "start": at(1, 9), "end": at(1, 10), **fields}


def create_booking(t: Tenant, s: Settings) -> Case:
    room = t.admin.resource()["id"]
    count = _count(s, "SELECT count(*) FROM reservation WHERE resource_id = %s", room)
    return Case(t.booker, "/v1/bookings", _booking_body(room, hold_seconds=600), count)


def _held_booking(t: Tenant) -> str:
    room = t.admin.resource()["id"]
    return str(
        _created(t.booker.post("/v1/bookings", json=_booking_body(room, hold_seconds=600)))["id"]
    )


def confirm_booking(t: Tenant, s: Settings) -> Case:
    bid = _held_booking(t)
    return Case(t.booker, f"/v1/bookings/{bid}/confirm", None, _booking_version(s, bid), True)


def extend_booking(t: Tenant, s: Settings) -> Case:
    bid = _held_booking(t)
    body = {"hold_seconds": 1200}
    return Case(t.booker, f"/v1/bookings/{bid}/extend", body, _booking_version(s, bid))


def cancel_booking(t: Tenant, s: Settings) -> Case:
    bid = _held_booking(t)
    return Case(t.booker, f"/v1/bookings/{bid}/cancel", {}, _booking_version(s, bid), True)


def join_waitlist(t: Tenant, s: Settings) -> Case:
    room = t.admin.resource()["id"]
    _created(t.admin.book(room, at(1, 8), at(1, 12)))  # the range is taken: the entry waits
    body = {"resource_id": room, "start": at(1, 9), "end": at(1, 10)}
    count = _count(s, "SELECT count(*) FROM waitlist_entry WHERE resource_id = %s", room)
    return Case(t.booker, "/v1/waitlist", body, count)


def _hook_url() -> str:
    # A public address literal: accepted without DNS; never delivered to (no worker here).
    return f"https://8.8.8.8/hook-{secrets.token_hex(4)}"


def create_webhook(t: Tenant, s: Settings) -> Case:
    url = _hook_url()
    count = _count(s, "SELECT count(*) FROM webhook_endpoint WHERE url = %s", url)
    return Case(t.admin, "/v1/webhooks", {"url": url}, count)


def send_test(t: Tenant, s: Settings) -> Case:
    hook = _created(t.admin.post("/v1/webhooks", json={"url": _hook_url()}))["id"]
    count = _count(s, "SELECT count(*) FROM webhook_delivery WHERE endpoint_id = %s", hook)
    return Case(t.admin, f"/v1/webhooks/{hook}/test", None, count)


def create_feed(t: Tenant, s: Settings) -> Case:
    room = t.admin.resource()["id"]
    count = _count(s, "SELECT count(*) FROM feed WHERE resource_id = %s", room)
    return Case(t.admin, "/v1/feeds", {"resource_id": room}, count)


CASES: dict[str, Callable[[Tenant, Settings], Case]] = {
    f.__name__: f
    for f in (
        create_resource,
        create_reservation,
        confirm_reservation,
        extend_reservation,
        check_in_reservation,
        cancel_reservation,
        approve_reservation,
        decline_reservation,
        create_booking,
        confirm_booking,
        extend_booking,
        cancel_booking,
        join_waitlist,
        create_webhook,
        send_test,
        create_feed,
    )
}
# POSTs that only read (a POST for its body): the header is declared, nothing is kept.
READ_ONLY = {"search_availability"}


def test_every_post_route_declares_the_header_and_has_a_row(app_client: TestClient) -> None:
    app = app_client.app
    assert isinstance(app, FastAPI)
    operations = {
        op["operationId"]: op
        for item in app.openapi()["paths"].values()
        for method, op in item.items()
        if method == "post"
    }
    routes = post_routes(app)
    assert len(routes) >= len(CASES) + len(READ_ONLY)  # the walk found the routers' routes
    missing_header, missing_row = [], []
    for route in routes:
        params = operations[route.name].get("parameters", [])
        header = [p for p in params if p["in"] == "header" and p["name"] == KEY]
        if not header or not header[0].get("description"):
            missing_header.append(route.name)
        if route.name not in CASES and route.name not in READ_ONLY:
            missing_row.append(route.name)
        # what a key adds to a route's answers: 409 idempotency-key-in-use, 422 reused
        if route.name in CASES and not {"409", "422"} <= set(operations[route.name]["responses"]):
            missing_header.append(f"{route.name} (409/422 not documented)")
    assert missing_header == [], f"POST routes without a documented {KEY} header"
    assert missing_row == [], "POST routes without a row in CASES (or READ_ONLY)"
    assert {r.name for r in routes} == set(CASES) | READ_ONLY  # no stale rows either


@pytest.mark.parametrize("route", sorted(CASES))
def test_the_same_key_twice_is_one_effect_and_the_first_reply(
    route: str, tenant: Tenant, settings: Settings
) -> None:
    case = CASES[route](tenant, settings)
    key = new_key()
    first = case.send(key)
    assert first.status_code in (200, 201, 202), first.text
    assert REPLAYED not in first.headers
    done = case.effects()

    again = case.send(key)
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers[REPLAYED] == "true"
    for name in ("content-type", "location", "etag"):
        assert again.headers.get(name) == first.headers.get(name), name
    assert case.effects() == done

    # The control: the same request without the key runs again (another effect or another
    # answer), so the replay above was not merely a second run that happened to agree.
    if case.repeatable:
        return
    plain = case.send(None)
    assert REPLAYED not in plain.headers
    assert case.effects() > done or plain.content != first.content


def test_a_read_only_post_accepts_the_key_and_keeps_nothing(
    tenant: Tenant, settings: Settings
) -> None:
    tenant.admin.resource(tags=["idem-search"])
    body = {"tags": ["idem-search"], "from": at(2, 9), "to": at(2, 10)}
    key = new_key()
    for _ in range(2):
        r = tenant.viewer.post("/v1/availability/search", json=body, headers={KEY: key})
        assert r.status_code == 200, r.text
        assert REPLAYED not in r.headers
    assert records(settings, key) == 0
    bad = tenant.viewer.post("/v1/availability/search", json=body, headers={KEY: "a b"})
    _problem(bad, 422, "invalid-input")


# --- refusals that ran are kept ---------------------------------------------------------------


def _assert_replay_of(again: httpx.Response, first: httpx.Response) -> None:
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["content-type"] == PROBLEM
    assert again.headers[REPLAYED] == "true"


def _rows(settings: Settings, room: str) -> list[str]:
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT status FROM reservation WHERE resource_id = %s ORDER BY created_at", (room,)
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("path", ["/v1/reservations", "/v1/bookings"])
def test_a_conflict_is_replayed_even_once_the_slot_is_free(
    path: str, tenant: Tenant, settings: Settings
) -> None:
    room = tenant.admin.resource()["id"]
    blocker = _created(tenant.admin.book(room, at(3, 9), at(3, 10)))
    if path == "/v1/reservations":
        body: dict[str, Any] = {"resource_id": room, "start": at(3, 9), "end": at(3, 10)}
    else:
        body = {"resources": [{"resource_id": room}], "start": at(3, 9), "end": at(3, 10)}
    key = new_key()
    first = tenant.booker.post(path, json=body, headers={KEY: key})
    _problem(first, 409, "reservation-conflict")
    assert REPLAYED not in first.headers

    cancelled = tenant.admin.post(f"/v1/reservations/{blocker['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    again = tenant.booker.post(path, json=body, headers={KEY: key})
    _assert_replay_of(again, first)
    assert _rows(settings, room) == ["cancelled"]  # nothing booked

    # a conflict changed nothing, so its key takes another request (an alternative it
    # offered, say: tests/alternatives/), whose outcome it keeps from then on
    other = {**body, "end": at(3, 11)}
    booked = tenant.booker.post(path, json=other, headers={KEY: key})
    assert booked.status_code == 201, booked.text
    assert _rows(settings, room) == ["cancelled", "confirmed"]
    _problem(tenant.booker.post(path, json=body, headers={KEY: key}), 422, "idempotency-key-reused")
    assert tenant.booker.post(path, json=other, headers={KEY: key}).headers[REPLAYED] == "true"


def test_a_rule_violation_is_replayed_even_once_the_rule_changes(
    tenant: Tenant, settings: Settings
) -> None:
    room = tenant.admin.resource(policy={"max_duration": "PT1H"})
    body = {"resource_id": room["id"], "start": at(4, 9), "end": at(4, 11)}
    key = new_key()
    first = tenant.booker.post("/v1/reservations", json=body, headers={KEY: key})
    _problem(first, 422, "booking-rule-violated")

    relaxed = tenant.admin.patch(
        f"/v1/resources/{room['id']}", json={"policy": {"max_duration": "PT3H"}}
    )
    assert relaxed.status_code == 200, relaxed.text
    again = tenant.booker.post("/v1/reservations", json=body, headers={KEY: key})
    _assert_replay_of(again, first)
    assert _rows(settings, room["id"]) == []
    fresh = tenant.booker.post("/v1/reservations", json=body, headers={KEY: new_key()})
    assert fresh.status_code == 201, fresh.text


def test_a_refusal_on_a_newly_idempotent_route_is_kept(tenant: Tenant, settings: Settings) -> None:
    """Approving what is not pending (409), then it becomes pending: the key keeps the 409."""
    room = tenant.admin.resource(policy={"requires_approval": True})["id"]
    confirmed = _created(tenant.admin.book(room, at(5, 9), at(5, 10)))
    key = new_key()
    path = f"/v1/reservations/{confirmed['id']}/approve"
    first = tenant.admin.post(path, headers={KEY: key})
    _problem(first, 409, "reservation-not-pending")
    _assert_replay_of(tenant.admin.post(path, headers={KEY: key}), first)
    assert records(settings, key) == 1


def test_a_412_is_kept_for_its_if_match_and_a_fresher_etag_is_another_request(
    tenant: Tenant,
) -> None:
    rid = _held(tenant)
    path = f"/v1/reservations/{rid}/confirm"
    key = new_key()
    stale = {KEY: key, "If-Match": '"7"'}
    first = tenant.booker.post(path, headers=stale)
    _problem(first, 412, "precondition-failed")
    _assert_replay_of(tenant.booker.post(path, headers=stale), first)
    fresh = {KEY: key, "If-Match": '"1"'}
    _problem(tenant.booker.post(path, headers=fresh), 422, "idempotency-key-reused")
    done = tenant.booker.post(path, headers={**fresh, KEY: new_key()})
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "confirmed"


# --- what is not kept -------------------------------------------------------------------------


def test_a_malformed_request_is_not_kept(tenant: Tenant, settings: Settings) -> None:
    key = new_key()
    malformed = {"name": "", "capacity": -1}
    for _ in range(2):
        r = tenant.admin.post("/v1/resources", json=malformed, headers={KEY: key})
        _problem(r, 422, "invalid-input")
        assert REPLAYED not in r.headers
    assert records(settings, key) == 0
    # the key is still free: a well-formed request runs under it, and is what it keeps
    good = {"name": f"room-{secrets.token_hex(4)}"}
    made = tenant.admin.post("/v1/resources", json=good, headers={KEY: key})
    assert made.status_code == 201, made.text
    again = tenant.admin.post("/v1/resources", json=good, headers={KEY: key})
    assert again.headers[REPLAYED] == "true"
    assert again.content == made.content
    assert one(settings, "SELECT count(*) FROM resource WHERE name = %s", good["name"]) == 1


def test_a_key_on_a_body_with_an_integer_past_64_bits_is_a_422_not_a_500(tenant: Tenant) -> None:
    """The schema bounds `hold_seconds` below only; a 70-bit integer is valid JSON that the
    fingerprint must still digest (the fuzzer found the 500), before the service refuses it."""
    room = tenant.admin.resource()
    at = "2031-05-05T10:00:00Z", "2031-05-05T11:00:00Z"
    for path in ("/v1/reservations", "/v1/waitlist"):
        body = {"resource_id": room["id"], "start": at[0], "end": at[1], "hold_seconds": 2**70}
        r = tenant.admin.post(path, json=body, headers={KEY: new_key()})
        _problem(r, 422, "invalid-input")


@pytest.fixture(scope="module")
def limited(database_url: str, settings: Settings) -> Iterator[TestClient]:
    """An app whose keys may make 2 requests per 2 s (one more every second)."""
    tuned = make_settings(
        database_url,
        redis_url=settings.redis_url,
        redis_key_prefix=settings.redis_key_prefix + "idem-rl:",
        rate_limit_key_requests=2,
        rate_limit_tenant_requests=1000,
        rate_limit_window_seconds=2,
    )
    with TestClient(create_app(tuned, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_a_rate_limited_request_is_not_kept(limited: TestClient, settings: Settings) -> None:
    t = new_tenant(limited)
    key = new_key()
    body = {"name": f"room-{secrets.token_hex(4)}"}
    statuses = [t.admin.post("/v1/resources", json=body, headers={KEY: key}) for _ in range(4)]
    refused = [r for r in statuses if r.status_code == 429]
    assert refused, [r.status_code for r in statuses]
    assert all(r.headers["content-type"] == PROBLEM for r in refused)
    assert all(REPLAYED not in r.headers for r in refused)
    made = [r for r in statuses if r.status_code == 201]
    assert len(made) >= 1
    assert all(r.content == made[0].content for r in made)
    # once the quota refills, the key replays what ran (201), never the 429
    time.sleep(1.2)
    again = t.admin.post("/v1/resources", json=body, headers={KEY: key})
    assert again.status_code == 201, again.text
    assert again.headers[REPLAYED] == "true"
    assert again.content == made[0].content
    assert one(settings, "SELECT count(*) FROM resource WHERE name = %s", body["name"]) == 1


@pytest.fixture(scope="module")
def capped(database_url: str, settings: Settings) -> Iterator[TestClient]:
    """An app whose tenants may hold one live hold at a time."""
    tuned = settings.model_copy(update={"max_live_holds_per_tenant": 1})
    with TestClient(create_app(tuned, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_a_429_met_after_the_claim_is_not_kept(capped: TestClient, settings: Settings) -> None:
    """The hold cap is checked inside the booking's transaction, after the key's claim: its
    429 (a "not now") is still not kept, so the retry runs once a hold is gone."""
    t = new_tenant(capped)
    room = t.admin.resource()["id"]
    first_hold = _created(t.booker.book(room, at(6, 9), at(6, 10), hold_seconds=600))
    key = new_key()
    body = {"resource_id": room, "start": at(6, 11), "end": at(6, 12), "hold_seconds": 600}
    r = t.booker.post("/v1/reservations", json=body, headers={KEY: key})
    _problem(r, 429, "hold-limit-reached")
    assert records(settings, key) == 0
    assert t.booker.post(f"/v1/reservations/{first_hold['id']}/cancel").status_code == 200
    retry = t.booker.post("/v1/reservations", json=body, headers={KEY: key})
    assert retry.status_code == 201, retry.text
    assert REPLAYED not in retry.headers


def test_a_server_error_is_not_kept(
    tenant: Tenant, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request that claimed its key and then failed with a 5xx (here: a fault injected
    after its insert) leaves neither its effect nor a record: the retry with the same key
    runs, and is what the key keeps."""

    def broken(read: object) -> Reply:
        raise RuntimeError("injected after the insert")

    name = f"room-{secrets.token_hex(4)}"
    key = new_key()
    made = _count(settings, "SELECT count(*) FROM resource WHERE name = %s", name)
    with monkeypatch.context() as m:
        m.setattr(resource_service, "_created", broken)
        r = tenant.admin.post("/v1/resources", json={"name": name}, headers={KEY: key})
        _problem(r, 500, "internal-error")
    assert records(settings, key) == 0
    assert made() == 0
    retry = tenant.admin.post("/v1/resources", json={"name": name}, headers={KEY: key})
    assert retry.status_code == 201, retry.text
    assert REPLAYED not in retry.headers
    again = tenant.admin.post("/v1/resources", json={"name": name}, headers={KEY: key})
    assert again.headers[REPLAYED] == "true"
    assert again.content == retry.content
    assert made() == 1


# --- secrets in replies are stored sealed ----------------------------------------------------


@pytest.mark.parametrize(("path", "field"), [("/v1/feeds", "token"), ("/v1/webhooks", "secret")])
def test_a_replayed_secret_is_the_same_and_not_stored_in_the_clear(
    path: str, field: str, tenant: Tenant, settings: Settings
) -> None:
    if path == "/v1/feeds":
        body: dict[str, Any] = {"resource_id": tenant.admin.resource()["id"]}
    else:
        body = {"url": _hook_url()}
    key = new_key()
    first = tenant.admin.post(path, json=body, headers={KEY: key})
    assert first.status_code == 201, first.text
    secret = first.json()[field]
    again = tenant.admin.post(path, json=body, headers={KEY: key})
    assert again.headers[REPLAYED] == "true"
    assert again.content == first.content
    assert not [h for h in again.headers if h.startswith("idempotency")]
    stored = one(
        settings, "SELECT body || headers::text FROM idempotency_record WHERE key = %s", key
    )
    assert secret not in stored
    assert first.json()["id"] in stored


# --- concurrent duplicates --------------------------------------------------------------------


def _race(server: LiveServer, token: str, body: dict[str, Any], key: str | None) -> list[Any]:
    """Eight clients send the same POST /v1/resources at once."""
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers[KEY] = key
    barrier = threading.Barrier(8)
    answers: list[Any] = [None] * 8

    def client(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            barrier.wait()
            answers[i] = http.post("/v1/resources", json=body, headers=headers)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return answers


def test_concurrent_duplicates_make_one_effect(
    live_server: LiveServer, tenant: Tenant, settings: Settings
) -> None:
    token = tenant.tokens["admin"]
    # The control: without a key, the same burst makes a resource per request.
    control = {"name": f"race-{secrets.token_hex(4)}"}
    answers = _race(live_server, token, control, None)
    assert [r.status_code for r in answers] == [201] * 8
    assert one(settings, "SELECT count(*) FROM resource WHERE name = %s", control["name"]) == 8

    for _ in range(3):
        body = {"name": f"race-{secrets.token_hex(4)}"}
        answers = _race(live_server, token, body, new_key())
        made = [r for r in answers if r.status_code == 201]
        in_use = [r for r in answers if r.status_code == 409]
        assert len(made) + len(in_use) == 8, [(r.status_code, r.text) for r in answers]
        assert all(r.json()["type"] == "/problems/idempotency-key-in-use" for r in in_use)
        assert len({r.content for r in made}) == 1
        assert sum(REPLAYED not in r.headers for r in made) == 1  # one ran, the rest replayed
        assert one(settings, "SELECT count(*) FROM resource WHERE name = %s", body["name"]) == 1
