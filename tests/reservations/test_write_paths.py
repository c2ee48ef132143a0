"""The write-path matrix: every route that makes or changes a live reservation, against every
rule admission enforces (reservations/admission.py; the rules: tests/support/admission_rules.py,
a booking across clusters against the same rules: tests/sharding/test_spanning.py). Like the
OWASP matrix for id routes, a guard fails the build when a write route the app serves has no
row here (with a control that adds one).

Each case sets up what the route needs on a resource without rules, then gives the resource
the rule's policy, then makes the write that breaks it: every route must refuse with the
same 422 (`reason` and `violations`) a direct create gets, and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.admission_rules import RULE, RULES, Rule, at, iso
from tests.support.admission_rules import ok as _ok
from tests.support.admission_rules import refused as _refused
from tests.support.api import Api, Tenant
from tests.support.mcp import mcp_call

# --- the routes: each sets up with `good` and returns the write of `bad` ---------------------

Write = Callable[[dict[str, Any]], httpx.Response]  # extra body fields -> the response


def _create(api: Api, room: str, rule: Rule) -> Write:
    return lambda extra: api.book(room, *rule.bad, **extra)


def _booking(api: Api, room: str, rule: Rule) -> Write:
    start, end = rule.bad
    body = {"resources": [{"resource_id": room}], "start": start, "end": end}
    return lambda extra: api.post("/v1/bookings", json={**body, **extra})


def _pool_create(api: Api, room: str, rule: Rule) -> Write:
    """A pool whose only resource is the room: refused as a direct create of the room."""
    start, end = rule.bad
    body = {"pool": {"resource_ids": [room]}, "start": start, "end": end}
    return lambda extra: api.post("/v1/reservations", json={**body, **extra})


def _pool_booking(api: Api, room: str, rule: Rule) -> Write:
    start, end = rule.bad
    body = {"resources": [{"pool": {"resource_ids": [room]}}], "start": start, "end": end}
    return lambda extra: api.post("/v1/bookings", json={**body, **extra})


def _patch(api: Api, room: str, rule: Rule) -> Write:
    made = _ok(api.book(room, *rule.good))
    start, end = rule.bad
    path = f"/v1/reservations/{made['id']}"
    return lambda extra: api.patch(path, json={"start": start, "end": end, **extra})


def _booking_move(api: Api, room: str, rule: Rule) -> Write:
    start, end = rule.good
    made = _ok(
        api.post(
            "/v1/bookings", json={"resources": [{"resource_id": room}], "start": start, "end": end}
        )
    )
    bad_start, bad_end = (datetime.fromisoformat(t) for t in rule.bad)
    body = {
        "shift": iso(bad_start - datetime.fromisoformat(start)),
        "duration": iso(bad_end - bad_start),
    }
    return lambda extra: api.patch(f"/v1/bookings/{made['id']}", json={**body, **extra})


def _waitlist(api: Api, room: str, rule: Rule) -> Write:
    start, end = rule.bad
    body = {"resource_id": room, "start": start, "end": end}
    return lambda extra: api.post("/v1/waitlist", json={**body, **extra})


ROUTES: dict[str, Callable[[Api, str, Rule], Write]] = {
    "POST /v1/reservations": _create,
    "POST /v1/bookings": _booking,
    "PATCH /v1/reservations/{reservation_id}": _patch,
    "PATCH /v1/bookings/{booking_id}": _booking_move,
    "POST /v1/waitlist": _waitlist,
    # Other ways in to a route above: the same route, another shape of its body.
    "POST /v1/reservations with a pool": _pool_create,
    "POST /v1/bookings with a pool": _pool_booking,
}

# Every write route of the app, with the test that holds it to admission or why it makes and
# changes no live reservation. A new write route without its line here fails the guard below.
WRITE_ROUTES = {
    **{
        route.split(" with ")[0]: "the rule matrix (test_every_write_route_refuses_every_rule)"
        for route in ROUTES
    },
    "POST /v1/reservations/{reservation_id}/confirm": "test_approval_on_every_path",
    "POST /v1/bookings/{booking_id}/confirm": "test_approval_on_every_path",
    "POST /v1/reservations/{reservation_id}/approve": "test_approval_on_every_path (admins)",
    "POST /v1/reservations/{reservation_id}/extend": "test_extend_on_every_path",
    "POST /v1/bookings/{booking_id}/extend": "test_extend_on_every_path",
    "POST /v1/reservations/{reservation_id}/cancel": "frees a range; the promotion it starts: "
    "test_promotion_asks_the_rules_of_now",
    "POST /v1/reservations/{reservation_id}/decline": "frees a range; promotion as for cancel",
    "POST /v1/reservations/{reservation_id}/check-in": "marks a confirmed row checked in; its "
    "range, terms and status stay (tests/reservations/test_check_in.py)",
    "POST /v1/bookings/{booking_id}/cancel": "frees ranges; promotion as for cancel",
    "DELETE /v1/waitlist/{entry_id}": "leaves the queue; no reservation",
    "POST /v1/resources": "makes a resource, no reservation",
    "PATCH /v1/resources/{resource_id}": "policy and capacity: binds later writes (capacity "
    "below what is booked is refused, tests/reservations/test_capacity.py); its "
    "affected=flag|cancel makes no row live: a flag changes no status or range, a cancel "
    "goes through the cancel of a reservation (status.cancel_locked) and its promotion, "
    "as for cancel (tests/resources/test_policy_changes.py)",
    "DELETE /v1/resources/{resource_id}": "archives; refused while future reservations live",
    "POST /v1/availability/search": "a read (free-slot search)",
    "POST /v1/webhooks": "no reservation",
    "PATCH /v1/webhooks/{webhook_id}": "no reservation",
    "DELETE /v1/webhooks/{webhook_id}": "no reservation",
    "POST /v1/webhooks/{webhook_id}/test": "no reservation",
    "POST /v1/feeds": "no reservation",
    "DELETE /v1/feeds/{feed_id}": "no reservation",
    # The MCP endpoint (docs/agents.md), outside the OpenAPI document: its hold_slot is the
    # normal create (test_the_mcp_hold_refuses_every_rule), cancel_hold the normal cancel.
    "POST /mcp": "test_the_mcp_hold_refuses_every_rule",
    "DELETE /mcp": "ends an MCP session (stateless: none kept); no reservation",
}
# Served outside the OpenAPI document (an MCP client reads the tools' schemas instead).
UNDOCUMENTED = {"POST /mcp", "DELETE /mcp"}


WRITES = ("POST", "PUT", "PATCH", "DELETE")


def served_writes(app: Any) -> set[str]:
    """Every write route the app serves, read from its routes (through the routers it
    includes), not from its OpenAPI document: a route left out of the document
    (include_in_schema=False) is still found."""
    found: set[str] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            nested = getattr(route, "original_router", None)
            if nested is not None:
                walk(nested.routes)
            for method in getattr(route, "methods", None) or ():
                if method in WRITES:
                    found.add(f"{method} {route.path}")

    walk(app.router.routes)
    return found


def unlisted(app: Any) -> tuple[list[str], list[str]]:
    """The write routes without a row here, and the rows of routes the app no longer has."""
    found = served_writes(app)
    return sorted(found - set(WRITE_ROUTES)), sorted(set(WRITE_ROUTES) - found)


def test_every_write_route_has_its_row(app_client: TestClient) -> None:
    missing, stale = unlisted(app_client.app)
    assert not missing, f"write routes without a row in the write-path matrix: {missing}"
    assert not stale, f"rows for routes the app no longer has: {stale}"
    # The document lists the same writes (tests/api/test_owasp.py holds it to every route).
    doc = app_client.get("/openapi.json").json()
    documented = {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in WRITES
    }
    assert documented == set(WRITE_ROUTES) - UNDOCUMENTED


def test_the_guard_fails_for_a_new_write_route(settings: Settings) -> None:
    """The control for the guard above: an app with two write routes more, one of them left
    out of the OpenAPI document, fails it for both."""
    app = create_app(settings, Clock())

    async def teleport(reservation_id: str) -> dict[str, str]:
        return {"id": reservation_id}

    app.add_api_route("/v1/reservations/{reservation_id}/teleport", teleport, methods=["POST"])
    app.add_api_route(
        "/v1/reservations/{reservation_id}/move", teleport, methods=["PUT"], include_in_schema=False
    )
    missing, stale = unlisted(app)
    assert missing == [
        "POST /v1/reservations/{reservation_id}/teleport",
        "PUT /v1/reservations/{reservation_id}/move",
    ]
    assert stale == []


def _reasons(r: httpx.Response) -> list[str]:
    return [v["reason"] for v in r.json()["violations"]]


@pytest.mark.parametrize("rule", RULES, ids=str)
@pytest.mark.parametrize("route", list(ROUTES))
def test_every_write_route_refuses_every_rule(tenant: Tenant, route: str, rule: Rule) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    if rule.before is not None:
        _ok(booker.book(room, *rule.before))
    write = ROUTES[route](booker, room, rule)
    _ok(admin.patch(f"/v1/resources/{room}", json={"policy": rule.policy}), 200)
    listed = admin.get("/v1/reservations", params={"resource_id": room}).json()["items"]
    r = write({})
    if route == "POST /v1/waitlist" and rule.counted:
        # Waiting is allowed; the limit binds when the entry's turn comes (now: it is free).
        assert _ok(r)["status"] == "waiting", r.text
    else:
        _refused(r, rule)
        assert admin.get("/v1/waitlist", params={"resource_id": room}).json()["items"] == []
        # The same refusal a direct create of the range gets: every violation, in order (their
        # details may name the current time), or the same field errors.
        direct = booker.book(room, *rule.bad)
        _refused(direct, rule)
        if rule.problem == "booking-rule-violated":
            assert _reasons(r) == _reasons(direct), (r.text, direct.text)
        else:
            assert r.json()["errors"] == direct.json()["errors"], (r.text, direct.text)
    # Nothing changed: the same rows, at the same versions.
    assert admin.get("/v1/reservations", params={"resource_id": room}).json()["items"] == listed


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_the_mcp_hold_refuses_every_rule(
    app_client: TestClient, tenant: Tenant, rule: Rule
) -> None:
    """The MCP tool hold_slot (an agent key) is refused by admission with the same problem a
    direct create gets (as a tool error), and changes nothing."""
    admin = tenant.admin
    room = admin.resource()["id"]
    agent = Api(app_client, tenant.tokens["agent"])
    if rule.before is not None:  # the agent's own row the hold would add to
        start, end = rule.before
        body = {"resource_id": room, "start": start, "end": end, "hold_seconds": 900}
        _ok(agent.post("/v1/reservations", json=body, headers={"Idempotency-Key": "before"}))
    _ok(admin.patch(f"/v1/resources/{room}", json={"policy": rule.policy}), 200)
    listed = admin.get("/v1/reservations", params={"resource_id": room}).json()["items"]
    start, end = rule.bad
    args = {"reservation": {"resource_id": room, "start": start, "end": end}}
    result = mcp_call(app_client, tenant.tokens["agent"], "hold_slot", args)
    assert result.is_error, result.structured_content
    problem = dict(result.structured_content or {})
    bad = {"resource_id": room, "start": start, "end": end, "hold_seconds": 900}
    direct = agent.post("/v1/reservations", json=bad, headers={"Idempotency-Key": "direct"})
    _refused(direct, rule)
    assert problem["type"] == direct.json()["type"] == f"/problems/{rule.problem}"
    if rule.problem == "booking-rule-violated":
        assert [v["reason"] for v in problem["violations"]] == _reasons(direct)
    else:
        assert problem["errors"] == direct.json()["errors"]
    assert admin.get("/v1/reservations", params={"resource_id": room}).json()["items"] == listed


def test_a_booking_of_several_resources_refuses_as_a_create_of_one(tenant: Tenant) -> None:
    """Two resources that both refuse the range (a start in the past binds every resource):
    the booking's `violations` are those a direct create on the first gets, not each
    resource's in turn (the first occurrence's per-resource reasons are in `occurrences`)."""
    admin, booker = tenant.admin, tenant.booker
    rooms = [admin.resource()["id"] for _ in range(2)]
    rule = RULE["in-the-past"]
    start, end = rule.bad
    body = {"resources": [{"resource_id": r} for r in rooms], "start": start, "end": end}
    r = booker.post("/v1/bookings", json=body)
    _refused(r, rule)
    direct = booker.book(rooms[0], start, end)
    _refused(direct, rule)
    assert _reasons(r) == _reasons(direct) == ["in-the-past"], r.text
    assert {x["resource_id"] for x in r.json()["occurrences"][0]["reasons"]} == set(rooms)


@pytest.mark.parametrize("rule", [r for r in RULES if r.problem != "invalid-input"], ids=str)
@pytest.mark.parametrize("route", list(ROUTES))
def test_admins_may_override_every_rule(tenant: Tenant, route: str, rule: Rule) -> None:
    admin = tenant.admin
    room = admin.resource()["id"]
    if rule.before is not None:
        _ok(admin.book(room, *rule.before))
    write = ROUTES[route](admin, room, rule)
    _ok(admin.patch(f"/v1/resources/{room}", json={"policy": rule.policy}), 200)
    r = write({"override_rules": True})
    if route == "POST /v1/waitlist":  # waiting is for bookable ranges: no override there
        assert r.status_code == 422, r.text
    else:
        assert r.status_code in (200, 201), r.text
    assert (
        tenant.booker.post(
            "/v1/reservations",
            json={
                "resource_id": room,
                "start": rule.bad[0],
                "end": rule.bad[1],
                "override_rules": True,
            },
        ).json()["type"]
        == "/problems/forbidden"
    )


def test_a_customer_change_counts_for_the_new_customer(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource(
        policy={"booker_limit": {"max_live": 1, "period": "day", "per": "customer"}}
    )["id"]
    _ok(booker.book(room, at(8), at(9), customer="ada"))
    other = _ok(booker.book(room, at(10), at(11), customer="bob"))
    r = booker.patch(f"/v1/reservations/{other['id']}", json={"customer": "ada"})
    _refused(r, RULE["booker-limit"])
    assert booker.get(f"/v1/reservations/{other['id']}").json()["customer"] == "bob"
    # Another day is another period: the same change is admitted there.
    later = _ok(booker.book(room, at(10, days=1), at(11, days=1), customer="bob"))
    assert _ok(booker.patch(f"/v1/reservations/{later['id']}", json={"customer": "ada"}), 200)


def test_more_units_than_the_resource_has_on_every_path_that_asks_for_units(
    tenant: Tenant,
) -> None:
    """Quantity is admission's too (`check_quantity`): every route that takes a quantity
    refuses more units than the resource has with a direct create's 422, and writes nothing.
    (PATCH of a reservation or a booking cannot change a quantity.)"""
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource(capacity=2)["id"]
    start, end = at(10), at(11)
    writes = {
        "POST /v1/reservations": lambda: booker.book(room, start, end, quantity=3),
        "POST /v1/bookings": lambda: booker.post(
            "/v1/bookings",
            json={"resources": [{"resource_id": room, "quantity": 3}], "start": start, "end": end},
        ),
        "POST /v1/waitlist": lambda: booker.post(
            "/v1/waitlist",
            json={"resource_id": room, "start": start, "end": end, "quantity": 3},
        ),
    }
    assert set(writes) <= set(ROUTES)
    for route, write in writes.items():
        r = write()
        assert (r.status_code, r.json()["type"]) == (422, "/problems/invalid-input"), route
        assert r.json()["errors"] == [
            {"field": "quantity", "in": "body", "message": "at most 2"}
        ], (route, r.text)
    assert admin.get("/v1/reservations", params={"resource_id": room}).json()["items"] == []
    assert admin.get("/v1/waitlist", params={"resource_id": room}).json()["items"] == []


def test_lengthening_a_started_reservation_is_not_booking_the_past(
    tenant: Tenant, clock: Any
) -> None:
    """A change that keeps the start is not asked when the start may lie: extending a
    reservation that has begun is allowed; moving its start into the past is not."""
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource(policy={"min_notice": "PT1H"})["id"]
    made = _ok(booker.book(room, at(10), at(11)))
    clock.advance(datetime.fromisoformat(at(10.5)) - datetime.now(UTC))
    path = f"/v1/reservations/{made['id']}"
    assert _ok(booker.patch(path, json={"end": at(12)}), 200)["end"] == at(12)
    _refused(booker.patch(path, json={"start": at(9.5)}), RULE["in-the-past"])


def _approval_room(tenant: Tenant) -> str:
    return str(tenant.admin.resource(policy={"requires_approval": True})["id"])


def test_extend_on_every_path(tenant: Tenant, clock: Any) -> None:
    """An extension asks admission (Change.extend) on both paths: a pending row is no hold
    (409, an admin's decision ends its window), the hold's total life bounds it (422, the
    same message), and rules added since do not refuse it (it keeps the range it holds, as
    a confirm does)."""
    admin, booker = tenant.admin, tenant.booker
    pending_room = _approval_room(tenant)
    pending = _ok(booker.book(pending_room, at(10), at(11)))
    pending_booking = _ok(
        booker.post(
            "/v1/bookings",
            json={"resources": [{"resource_id": pending_room}], "start": at(12), "end": at(13)},
        )
    )
    room = admin.resource()["id"]
    hold = _ok(booker.book(room, at(10), at(11), hold_seconds=600))
    body = {"resources": [{"resource_id": room}], "start": at(12), "end": at(13)}
    booking = _ok(booker.post("/v1/bookings", json={**body, "hold_seconds": 600}))
    _ok(
        admin.patch(f"/v1/resources/{room}", json={"policy": RULE["in-blackout"].policy}), 200
    )  # blackout
    paths = (f"/v1/reservations/{hold['id']}", f"/v1/bookings/{booking['id']}")
    for path in (f"/v1/reservations/{pending['id']}", f"/v1/bookings/{pending_booking['id']}"):
        r = booker.post(f"{path}/extend", json={"hold_seconds": 1200})
        assert (r.status_code, r.json()["type"]) == (409, "/problems/reservation-not-held"), r.text
    clock.advance(timedelta(seconds=300))
    for path in paths:  # a day's life from creation: 86,100 seconds are left, not 86,400
        r = booker.post(f"{path}/extend", json={"hold_seconds": 86_400})
        assert (r.status_code, r.json()["type"]) == (422, "/problems/invalid-input"), r.text
        assert "86400 seconds from its creation" in r.json()["detail"], r.text
        _ok(booker.post(f"{path}/extend", json={"hold_seconds": 1200}), 200)


def test_approval_on_every_path(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = _approval_room(tenant)
    # Creates by a booker are pending, on every create path.
    made = _ok(booker.book(room, at(10), at(11)))
    assert made["status"] == "pending"
    booking = _ok(
        booker.post(
            "/v1/bookings",
            json={"resources": [{"resource_id": room}], "start": at(12), "end": at(13)},
        )
    )
    assert {r["status"] for r in booking["reservations"]} == {"pending"}
    # A booker cannot confirm a pending booking, on either path.
    for path in (f"/v1/reservations/{made['id']}", f"/v1/bookings/{booking['id']}"):
        r = booker.post(f"{path}/confirm")
        assert (r.status_code, r.json()["type"]) == (409, "/problems/approval-required"), r.text
        assert booker.post(f"{path}/approve").status_code in (403, 404, 405)
    # Approved, then moved by the booker: back to pending (an admin approved the old range).
    assert _ok(admin.post(f"/v1/reservations/{made['id']}/approve"), 200)["status"] == "confirmed"
    moved = _ok(booker.patch(f"/v1/reservations/{made['id']}", json={"end": at(11.5)}), 200)
    assert moved["status"] == "pending", moved
    assert moved["expires_at"] is not None
    # ... also when only the customer changes ...
    assert _ok(admin.post(f"/v1/reservations/{made['id']}/approve"), 200)["status"] == "confirmed"
    edited = _ok(booker.patch(f"/v1/reservations/{made['id']}", json={"customer": "x"}), 200)
    assert edited["status"] == "pending", edited
    # ... and on a booking's move.
    _ok(admin.post(f"/v1/bookings/{booking['id']}/confirm"), 200)
    shifted = _ok(booker.patch(f"/v1/bookings/{booking['id']}", json={"shift": "PT1H"}), 200)
    assert {r["status"] for r in shifted["reservations"]} == {"pending"}
    # An admin's move keeps an approved booking confirmed.
    _ok(admin.post(f"/v1/bookings/{booking['id']}/confirm"), 200)
    kept = _ok(admin.patch(f"/v1/bookings/{booking['id']}", json={"shift": "PT1H"}), 200)
    assert {r["status"] for r in kept["reservations"]} == {"confirmed"}


def test_a_hold_on_a_resource_that_comes_to_need_approval_is_confirmed_by_an_admin(
    tenant: Tenant,
) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    hold = _ok(booker.book(room, at(10), at(11), hold_seconds=600))
    _ok(admin.patch(f"/v1/resources/{room}", json={"policy": {"requires_approval": True}}), 200)
    r = booker.post(f"/v1/reservations/{hold['id']}/confirm")
    assert (r.status_code, r.json()["type"]) == (409, "/problems/approval-required"), r.text
    assert _ok(admin.post(f"/v1/reservations/{hold['id']}/confirm"), 200)["status"] == "confirmed"


def test_a_waitlist_promotion_on_an_approval_resource_is_pending(tenant: Tenant) -> None:
    """The defect this gate was built for: joining the waitlist of a free range made a plain
    hold at once, which the booker could confirm without any admin."""
    booker = tenant.booker
    room = _approval_room(tenant)
    entry = _ok(
        booker.post("/v1/waitlist", json={"resource_id": room, "start": at(10), "end": at(11)})
    )
    assert entry["status"] == "promoted"
    hold = booker.get(f"/v1/reservations/{entry['reservation_id']}").json()
    assert hold["status"] == "pending"
    r = booker.post(f"/v1/reservations/{hold['id']}/confirm")
    assert (r.status_code, r.json()["type"]) == (409, "/problems/approval-required"), r.text


PROMOTION_RULES = [
    r for r in RULES if r.reason not in ("in-the-past", "longer-than-the-system-allows")
]


@pytest.mark.parametrize("rule", PROMOTION_RULES, ids=str)
def test_promotion_asks_the_rules_of_now(tenant: Tenant, rule: Rule) -> None:
    """An entry joined while its range was bookable; then the policy changed; then the range
    is freed. The entry is not promoted against the policy of now."""
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    if rule.before is not None:
        _ok(booker.book(room, *rule.before))
    blocker = _ok(admin.book(room, *rule.bad))
    entry = _ok(
        booker.post(
            "/v1/waitlist", json={"resource_id": room, "start": rule.bad[0], "end": rule.bad[1]}
        )
    )
    assert entry["status"] == "waiting"
    _ok(admin.patch(f"/v1/resources/{room}", json={"policy": rule.policy}), 200)
    _ok(admin.post(f"/v1/reservations/{blocker['id']}/cancel"), 200)
    after = booker.get(f"/v1/waitlist/{entry['id']}").json()
    assert after["status"] in ("waiting", "lapsed"), after
    assert after["reservation_id"] is None
    mine = booker.get("/v1/reservations", params={"resource_id": room}).json()["items"]
    assert [m["start"] for m in mine if m["status"] != "cancelled"] == (
        [rule.before[0]] if rule.before else []
    )


def test_promotion_without_the_policy_change_promotes(tenant: Tenant) -> None:
    """The control for the test above: the same steps with the policy left alone promote."""
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    blocker = _ok(admin.book(room, at(10), at(11)))
    entry = _ok(
        booker.post("/v1/waitlist", json={"resource_id": room, "start": at(10), "end": at(11)})
    )
    _ok(admin.post(f"/v1/reservations/{blocker['id']}/cancel"), 200)
    assert booker.get(f"/v1/waitlist/{entry['id']}").json()["status"] == "promoted"
