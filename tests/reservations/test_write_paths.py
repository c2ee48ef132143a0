"""The write-path matrix: every route that makes or changes a live reservation, against every
rule admission enforces (reservations/admission.py). Like the OWASP matrix for id routes, a
guard fails the build when a write route of the app has no row here.

Each case sets up what the route needs on a resource without rules, then gives the resource
the rule's policy, then makes the write that breaks it: every route must refuse with the
same 422 (`reason` and `violations`) a direct create gets, and change nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.api import Api, Tenant

# A Monday ten to sixteen days ahead of real time, at midnight UTC (resources default to UTC).
_soon = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=10)
DAY = _soon + timedelta(days=(7 - _soon.weekday()) % 7)
WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def at(hour: float, days: int = 0) -> str:
    return (DAY + timedelta(days=days, hours=hour)).isoformat().replace("+00:00", "Z")


def iso(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    return f"-PT{-secs}S" if secs < 0 else f"PT{secs}S"


@dataclass(frozen=True)
class Rule:
    """A policy and a range that breaks it (`reason`: what every route must answer), with a
    harmless range to set things up in before the policy applies."""

    reason: str
    policy: dict[str, Any]
    bad: tuple[str, str]
    good: tuple[str, str] = (at(10, days=1), at(11, days=1))
    before: tuple[str, str] | None = None  # the booker's row the write would add to
    problem: str = "booking-rule-violated"
    counted: bool = False  # needs the locked rows (a waitlist join is judged at promotion)

    def __str__(self) -> str:
        return self.reason


RULES = [
    Rule(
        "outside-opening-hours",
        {"weekly_hours": {d: [{"start": "09:00", "end": "17:00"}] for d in WEEK}},
        (at(18), at(19)),
    ),
    Rule(
        "in-blackout",
        {"blackouts": [{"start": at(0), "end": at(24), "reason": "works"}]},
        (at(10), at(11)),
    ),
    Rule("off-grid", {"slot_grid_minutes": 30}, (at(10 + 1 / 6), at(11 + 1 / 6))),
    Rule("too-short", {"min_duration": "PT1H"}, (at(10), at(10.5))),
    Rule("too-long", {"max_duration": "PT1H"}, (at(10), at(12))),
    Rule("too-soon", {"min_notice": "P30D"}, (at(10), at(11))),
    Rule("too-far-ahead", {"max_advance": "P5D"}, (at(10), at(11))),
    Rule("in-the-past", {}, (at(10, days=-20), at(11, days=-20))),
    Rule(
        "booker-limit",
        {"booker_limit": {"max_live": 1, "period": "day"}},
        (at(10), at(11)),
        before=(at(8), at(9)),
        counted=True,
    ),
    Rule("longer-than-the-system-allows", {}, (at(10), at(10, days=40)), problem="invalid-input"),
]


def _ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json())


def _refused(r: httpx.Response, rule: Rule) -> None:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"/problems/{rule.problem}", body
    if rule.problem == "booking-rule-violated":
        assert body["reason"] == rule.reason, body
        assert rule.reason in {v["reason"] for v in body["violations"]}, body


# --- the routes: each sets up with `good` and returns the write of `bad` ---------------------

Write = Callable[[dict[str, Any]], httpx.Response]  # extra body fields -> the response


def _create(api: Api, room: str, rule: Rule) -> Write:
    return lambda extra: api.book(room, *rule.bad, **extra)


def _booking(api: Api, room: str, rule: Rule) -> Write:
    start, end = rule.bad
    body = {"resources": [{"resource_id": room}], "start": start, "end": end}
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
}

# Every write route of the app, with the test that holds it to admission or why it makes and
# changes no live reservation. A new write route without its line here fails the guard below.
WRITE_ROUTES = {
    **{route: "the rule matrix (test_every_write_route_refuses_every_rule)" for route in ROUTES},
    "POST /v1/reservations/{reservation_id}/confirm": "test_approval_on_every_path",
    "POST /v1/bookings/{booking_id}/confirm": "test_approval_on_every_path",
    "POST /v1/reservations/{reservation_id}/approve": "test_approval_on_every_path (admins)",
    "POST /v1/reservations/{reservation_id}/extend": "test_extend_on_every_path",
    "POST /v1/bookings/{booking_id}/extend": "test_extend_on_every_path",
    "POST /v1/reservations/{reservation_id}/cancel": "frees a range; the promotion it starts: "
    "test_promotion_asks_the_rules_of_now",
    "POST /v1/reservations/{reservation_id}/decline": "frees a range; promotion as for cancel",
    "POST /v1/bookings/{booking_id}/cancel": "frees ranges; promotion as for cancel",
    "DELETE /v1/waitlist/{entry_id}": "leaves the queue; no reservation",
    "POST /v1/resources": "makes a resource, no reservation",
    "PATCH /v1/resources/{resource_id}": "policy and capacity: binds later writes (capacity "
    "below what is booked is refused, tests/reservations/test_capacity.py)",
    "DELETE /v1/resources/{resource_id}": "archives; refused while future reservations live",
    "POST /v1/availability/search": "a read (free-slot search)",
    "POST /v1/webhooks": "no reservation",
    "PATCH /v1/webhooks/{webhook_id}": "no reservation",
    "DELETE /v1/webhooks/{webhook_id}": "no reservation",
    "POST /v1/webhooks/{webhook_id}/test": "no reservation",
    "POST /v1/feeds": "no reservation",
    "DELETE /v1/feeds/{feed_id}": "no reservation",
}


def test_every_write_route_has_its_row(app_client: TestClient) -> None:
    # The document lists every served route (tests/api/test_owasp.py holds it to that).
    doc = app_client.get("/openapi.json").json()
    found = {
        f"{method.upper()} {path}"
        for path, item in doc["paths"].items()
        for method in item
        if method.upper() in ("POST", "PUT", "PATCH", "DELETE")
    }
    missing = sorted(found - set(WRITE_ROUTES))
    assert not missing, f"write routes without a row in the write-path matrix: {missing}"
    stale = sorted(set(WRITE_ROUTES) - found)
    assert not stale, f"rows for routes the app no longer has: {stale}"


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
    # Nothing changed: the same rows, at the same versions.
    assert admin.get("/v1/reservations", params={"resource_id": room}).json()["items"] == listed


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
    _refused(r, RULES[8])
    assert booker.get(f"/v1/reservations/{other['id']}").json()["customer"] == "bob"
    # Another day is another period: the same change is admitted there.
    later = _ok(booker.book(room, at(10, days=1), at(11, days=1), customer="bob"))
    assert _ok(booker.patch(f"/v1/reservations/{later['id']}", json={"customer": "ada"}), 200)


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
    _refused(booker.patch(path, json={"start": at(9.5)}), RULES[7])


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
    _ok(admin.patch(f"/v1/resources/{room}", json={"policy": RULES[1].policy}), 200)  # blackout
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
