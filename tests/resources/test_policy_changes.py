"""Policy changes that know what they break (PATCH /v1/resources/{id} with `dry_run` and
`affected`): the preview lists exactly the future live reservations a create would be
refused (by admission's own `screen`, and by the brute-force policy model), with a create's
words; `flag` marks them (a filter, an event, the reservation's `flagged`), `cancel` cancels
them through the cancel of a reservation (events, the waitlist); `keep` changes nothing of
what was; bad input is a 4xx problem; the work is bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from reservations.context import Context
from reservations.errors import BookingRuleViolated
from reservations.kit.clock import Clock
from reservations.reservations import admission
from reservations.tenancy.service import Principal, Role
from tests.support.admission_rules import DAY, at
from tests.support.api import Api, Tenant, _created, _problem, new_tenant
from tests.support.policy_model import ZONES, models, wall_of
from tests.support.servers import wait_for_earlier_transactions

# Rules on when a booking is made: not asked of bookings already made (policy/standing.py).
WHEN_BOOKED = {"too-soon", "too-far-ahead", "in-the-past"}
H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture(scope="module")
def org(app_client: TestClient) -> Tenant:
    return new_tenant(app_client)


def _blackout(start: str, end: str, reason: str = "works") -> dict[str, Any]:
    return {"blackouts": [{"start": start, "end": end, "reason": reason}]}


def _patch(api: Api, room: str, body: dict[str, Any], **params: Any) -> Any:
    return api.patch(f"/v1/resources/{room}", json=body, params=params)


def _events(org: Tenant, subject: str) -> list[dict[str, Any]]:
    wait_for_earlier_transactions(org.admin.client)
    r = org.admin.get("/v1/events", params={"limit": 500})
    return [e for e in r.json()["items"] if e["subject_id"] == subject]


# --- the preview agrees with admission: a property over generated policies ---------------

# Ranges around DAY (a Monday 10-16 days ahead, UTC midnight), on a resource with room for
# all of them: whole and odd minutes, short and long, across midnights.
RANGES = [
    (DAY + 9 * H, DAY + 10 * H),
    (DAY + 9 * H + 7 * M, DAY + 9 * H + 52 * M),
    (DAY + 11 * H + 30 * M, DAY + 13 * H + 30 * M),
    (DAY + 23 * H + 30 * M, DAY + 24 * H + 30 * M),
    (DAY + 2 * H, DAY + 2 * H + 45 * M),
    (DAY + 14 * H, DAY + 14 * H + 15 * M),
    (DAY + 6 * H, DAY + 18 * H),
    (DAY + 30 * H, DAY + 31 * H),
    (DAY + 40 * H + 20 * M, DAY + 42 * H),
    (DAY - 3 * H, DAY - 1 * H),
    (DAY + 20 * H + 5 * M, DAY + 21 * H + 35 * M),
    (DAY + 50 * H, DAY + 53 * H),
]


@pytest.fixture(scope="module")
def stage(org: Tenant) -> dict[str, Any]:
    """A resource with bookings held and confirmed, one cancelled and one under way (neither
    may ever be listed)."""
    room = org.admin.resource(name="Stage", capacity=50)["id"]
    iso = [(s.isoformat(), e.isoformat()) for s, e in RANGES]
    live = {}
    for i, (s, e) in enumerate(iso):
        extra = {"hold_seconds": 86_400} if i % 4 == 1 else {}
        made = _created(org.admin.book(room, s, e, **extra))
        live[made["id"]] = RANGES[i]
    gone = _created(org.admin.book(room, *iso[0]))
    assert org.admin.post(f"/v1/reservations/{gone['id']}/cancel").status_code == 200
    now = datetime.now(UTC)
    ongoing = _created(
        org.admin.book(
            room,
            (now - H).isoformat(),
            (now + 2 * H).isoformat(),
            override_rules=True,
        )
    )
    return {"room": room, "live": live, "never": {gone["id"], ongoing["id"]}}


@st.composite
def changes(draw: st.DrawFn) -> tuple[str, Any]:
    zone = draw(st.sampled_from(ZONES))
    local = wall_of(DAY, zone).date()
    days = [local + timedelta(days=i) for i in range(-1, 4)]
    return zone, draw(models(window_start=DAY, days=days))


@settings(max_examples=40, deadline=None)
@given(change=changes())
def test_the_preview_lists_exactly_what_a_create_would_be_refused(
    app_client: TestClient, org: Tenant, stage: dict[str, Any], change: tuple[str, Any]
) -> None:
    """Every listed reservation is refused by admission's `screen` under the new policy and
    zone, with the same violations word for word (the rules on when to book aside); every
    future live one not listed is admitted; the brute-force model agrees on the reasons."""
    zone, model = change
    policy = model.policy()
    r = _patch(
        org.admin,
        stage["room"],
        {"timezone": zone, "policy": policy.model_dump(mode="json", exclude_defaults=True)},
        dry_run="true",
        limit=500,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dry_run"] is True
    report = body["affected"]
    listed = {item["id"]: item for item in report["items"]}
    assert report["total"] == len(listed)
    assert report["complete"] is True
    assert not (set(listed) & stage["never"])
    svc: Context = app_client.app.state.services  # type: ignore[attr-defined]
    target = admission.Target(id=stage["room"], capacity=50, zone=zone, policy=policy)
    actor = Principal(tenant_id=stage["room"], api_key_id=stage["room"], role=Role.admin)
    now = datetime.now(UTC)
    gate = admission.Gate(actor=actor, change=admission.Change.create, now=now)
    for rid, (start, end) in stage["live"].items():
        candidate = admission.Candidate(
            resource=target, start=start, end=end, owner=actor.api_key_id, customer=None
        )
        try:
            admission.screen(svc, gate, candidate)
            refused: list[dict[str, str]] = []
        except BookingRuleViolated as exc:
            refused = [v for v in exc.extra["violations"] if v["reason"] not in WHEN_BOOKED]
        if refused:
            assert rid in listed, (start, end, refused)
            assert listed[rid]["violations"] == refused
            assert listed[rid]["reason"] == refused[0]["reason"]
        else:
            assert rid not in listed, (start, end, listed[rid])
        expected = model.violations(zone, start, end, now) - WHEN_BOOKED
        assert {v["reason"] for v in refused} == expected


# --- flag ---------------------------------------------------------------------------------


def test_flag_marks_them_lists_them_emits_and_a_move_clears_it(org: Tenant, clock: Clock) -> None:
    admin, booker = org.admin, org.booker
    room = admin.resource(name="Flagged room")["id"]
    a = _created(booker.book(room, at(10), at(11)))
    b = _created(booker.book(room, at(12), at(13), hold_seconds=3600))
    c = _created(booker.book(room, at(15), at(16)))
    change = _blackout(at(9.5), at(12.5))
    r = _patch(admin, room, {"policy": change}, affected="flag")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["policy"]["blackouts"][0]["reason"] == "works"
    assert r.headers["ETag"] == f'"{body["version"]}"'
    report = body["affected"]
    assert (report["action"], report["total"], report["examined"]) == ("flag", 2, 3)
    assert [i["id"] for i in report["items"]] == [a["id"], b["id"]]
    assert [i["status"] for i in report["items"]] == ["confirmed", "held"]

    # Listed with a filter; what the reservation says is what a create of its range is told.
    flagged = admin.get("/v1/reservations", params={"resource_id": room, "flagged": "true"})
    assert [x["id"] for x in flagged.json()["items"]] == [a["id"], b["id"]]
    unflagged = admin.get("/v1/reservations", params={"resource_id": room, "flagged": "false"})
    assert [x["id"] for x in unflagged.json()["items"]] == [c["id"]]
    refusal = _problem(admin.book(room, at(10), at(11)), 422, "booking-rule-violated")
    seen = booker.get(f"/v1/reservations/{a['id']}").json()
    assert seen["status"] == "confirmed"
    assert seen["flagged"]["violations"] == refusal["violations"]
    assert seen["flagged"]["reason"] == refusal["reason"] == "in-blackout"
    assert report["items"][0]["violations"] == refusal["violations"]
    assert booker.get(f"/v1/reservations/{c['id']}").json()["flagged"] is None

    # One event each, saying why; the same change again flags nothing twice.
    events = _events(org, a["id"])
    assert [e["type"] for e in events][-1] == "reservation.flagged"
    assert events[-1]["data"]["flagged"]["violations"] == refusal["violations"]
    again = _patch(admin, room, {"policy": change}, affected="flag")
    assert again.json()["affected"]["total"] == 2
    assert [e["type"] for e in _events(org, b["id"])].count("reservation.flagged") == 1

    # Moved (admission judged the new range), it is no longer flagged.
    moved = booker.patch(f"/v1/reservations/{a['id']}", json={"start": at(17), "end": at(18)})
    assert moved.status_code == 200, moved.text
    assert moved.json()["flagged"] is None


# --- cancel -------------------------------------------------------------------------------


def test_cancel_goes_through_the_cancel_path_and_the_waitlist_is_promoted(
    org: Tenant, clock: Clock
) -> None:
    admin, booker = org.admin, org.booker
    room = admin.resource(name="Cancelled room")["id"]
    short = _created(booker.book(room, at(10), at(11)))
    kept = _created(booker.book(room, at(13), at(15)))
    waiting = admin.post("/v1/waitlist", json={"resource_id": room, "start": at(10), "end": at(12)})
    assert waiting.status_code == 201, waiting.text
    r = _patch(admin, room, {"policy": {"min_duration": "PT2H"}}, affected="cancel")
    assert r.status_code == 200, r.text
    report = r.json()["affected"]
    assert (report["action"], report["total"]) == ("cancel", 1)
    assert report["items"][0]["reason"] == "too-short"

    gone = admin.get(f"/v1/reservations/{short['id']}").json()
    assert gone["status"] == "cancelled"
    assert gone["flagged"]["reason"] == "too-short"  # the cancelled row says why
    assert admin.get(f"/v1/reservations/{kept['id']}").json()["status"] == "confirmed"
    types = [e["type"] for e in _events(org, short["id"])]
    assert types[-2:] == ["reservation.flagged", "reservation.cancelled"]
    # The freed range went to the waitlist, as after any cancel.
    entry = admin.get(f"/v1/waitlist/{waiting.json()['id']}").json()
    assert entry["status"] == "promoted", entry
    promoted = admin.get(f"/v1/reservations/{entry['reservation_id']}").json()
    assert (promoted["status"], promoted["start"][:16]) == ("held", at(10)[:16])
    audit = admin.get("/v1/audit", params={"object_id": short["id"]}).json()["items"]
    assert audit[0]["after"]["status"] == "cancelled"
    # Applying it again cancels nothing more.
    again = _patch(admin, room, {"policy": {"min_duration": "PT2H"}}, affected="cancel")
    assert again.json()["affected"]["total"] == 0


# --- keep, and the dry run ----------------------------------------------------------------


def test_keep_is_the_change_as_it_always_was(org: Tenant, clock: Clock) -> None:
    admin = org.admin
    room = admin.resource(name="Kept room")
    made = _created(admin.book(room["id"], at(10), at(11)))
    for params in ({}, {"affected": "keep"}):
        r = _patch(admin, room["id"], {"policy": _blackout(at(9), at(12))}, **params)
        assert r.status_code == 200, r.text
        assert set(r.json()) == set(room)  # a resource, nothing more
    seen = admin.get(f"/v1/reservations/{made['id']}").json()
    assert (seen["status"], seen["flagged"]) == ("confirmed", None)
    assert "reservation.flagged" not in [e["type"] for e in _events(org, made["id"])]


def test_a_dry_run_pages_its_list_and_changes_nothing(org: Tenant, clock: Clock) -> None:
    admin = org.admin
    room = admin.resource(name="Previewed room", policy={"requires_approval": True})
    ids = [_created(org.booker.book(room["id"], at(h), at(h + 1)))["id"] for h in range(8, 13)]
    change = {"policy": {"requires_approval": True, **_blackout(at(0), at(24))}}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"dry_run": "true", "affected": "cancel", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        r = _patch(admin, room["id"], change, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["resource"]["version"] == room["version"]
        assert body["resource"]["policy"]["blackouts"][0]["reason"] == "works"
        assert body["affected"]["total"] == 5
        assert {i["status"] for i in body["affected"]["items"]} == {"pending"}
        seen += [i["id"] for i in body["affected"]["items"]]
        cursor = body["affected"]["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    after = admin.get(f"/v1/resources/{room['id']}").json()
    assert after == room  # not changed, not even its version
    assert {
        r["status"]
        for r in admin.get("/v1/reservations", params={"resource_id": room["id"]}).json()["items"]
    } == {"pending"}


def test_bad_input_is_a_4xx_problem(org: Tenant, other_tenant: Tenant, clock: Clock) -> None:
    admin = org.admin
    room = admin.resource(name="Refusing room")
    path = f"/v1/resources/{room['id']}"
    body = {"policy": _blackout(at(9), at(12))}
    bad = admin.patch(path, json=body, params={"affected": "delete"})
    problem = _problem(bad, 422, "invalid-input")
    assert problem["errors"][0]["field"] == "affected"
    _problem(admin.patch(path, json=body, params={"dry_run": "maybe"}), 422, "invalid-input")
    _problem(admin.patch(path, json=body, params={"cursor": "abc"}), 422, "invalid-input")
    _problem(
        admin.patch(path, json=body, params={"affected": "flag", "cursor": "x"}),
        422,
        "invalid-input",
    )
    _problem(
        admin.patch(path, json=body, params={"dry_run": "true", "cursor": "x"}),
        422,
        "invalid-input",
    )
    _problem(
        admin.patch(path, json=body, params={"dry_run": "true", "limit": 0}), 422, "invalid-input"
    )
    _problem(org.booker.patch(path, json=body, params={"dry_run": "true"}), 403, "forbidden")
    _problem(
        other_tenant.admin.patch(path, json=body, params={"dry_run": "true"}), 404, "not-found"
    )
    _problem(
        other_tenant.admin.patch(path, json=body, params={"affected": "flag"}), 404, "not-found"
    )
    stale = admin.patch(path, json=body, params={"dry_run": "true"}, headers={"If-Match": '"99"'})
    _problem(stale, 412, "precondition-failed")
    assert admin.get(path).json() == room


def test_the_work_is_bounded(org: Tenant, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """More live reservations than a change examines: it says how far it looked; more to
    cancel than one change cancels: refused before anything is written."""
    monkeypatch.setattr("reservations.resources.affected.MAX_EXAMINED", 3)
    monkeypatch.setattr("reservations.resources.affected.MAX_CANCELLED", 2)
    admin = org.admin
    room = admin.resource(name="Busy room")
    made = [_created(admin.book(room["id"], at(h), at(h + 1))) for h in range(8, 12)]
    change = {"policy": _blackout(at(0), at(24))}
    r = _patch(admin, room["id"], change, dry_run="true")
    report = r.json()["affected"]
    assert (report["complete"], report["examined"], report["total"]) == (False, 3, 3)
    assert report["horizon"] == made[3]["start"]
    _problem(
        _patch(admin, room["id"], change, dry_run="true", affected="cancel"), 422, "invalid-input"
    )
    refused = _problem(_patch(admin, room["id"], change, affected="cancel"), 422, "invalid-input")
    assert "at most 2" in refused["detail"]
    assert admin.get(f"/v1/resources/{room['id']}").json() == room
    flagged = _patch(admin, room["id"], change, affected="flag").json()["affected"]
    assert (flagged["complete"], flagged["total"]) == (False, 3)
