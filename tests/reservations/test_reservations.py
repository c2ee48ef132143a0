"""Reservations over HTTP: create and hold, read and list, reschedule, confirm and cancel,
expiry, idempotency, metrics and the OpenAPI document."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.localtime import describe_instant
from reservations.reservations.tasks import sweep_expired
from tests.support.api import PROBLEM, Api, Tenant, _created, _db, _problem


def at(day: int, hour: int, minute: int = 0) -> str:
    """A far-future instant (June 2030), so real time never interferes."""
    return f"2030-06-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _rows_for(settings: Settings, resource_id: str) -> list[tuple[Any, ...]]:
    return _db(
        settings,
        "SELECT id, status FROM reservation WHERE resource_id = %s ORDER BY start_at",
        resource_id,
    )


def _list_all(api: Api, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        r = api.get("/v1/reservations", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["id"] for i in items]


# --- create ------------------------------------------------------------------------------


def test_create_confirmed(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    r = tenant.booker.book(
        room["id"],
        "2030-06-01T12:00:00+02:00",
        "2030-06-01T08:30:00-05:00",
        customer="cust-42",
        metadata={"note": "window seat", "n": [1, 2]},
    )
    body = _created(r)
    assert r.headers["location"] == f"/v1/reservations/{body['id']}"
    assert r.headers["etag"] == '"1"'
    assert body["status"] == "confirmed"
    assert body["version"] == 1
    assert body["resource_id"] == room["id"]
    assert body["start"] == "2030-06-01T10:00:00Z"
    assert body["end"] == "2030-06-01T13:30:00Z"
    assert body["expires_at"] is None
    assert body["quantity"] == 1
    assert body["customer"] == "cust-42"
    assert body["metadata"] == {"note": "window seat", "n": [1, 2]}
    assert body["created_at"].endswith("Z")
    assert body["updated_at"].endswith("Z")


def test_create_held(tenant: Tenant, clock: Clock) -> None:
    room = tenant.admin.resource()
    before = clock.now()
    r = tenant.booker.book(room["id"], at(1, 10), at(1, 11), hold_seconds=300)
    after = clock.now()
    body = _created(r)
    assert body["status"] == "held"
    assert body["expires_at"].endswith("Z")
    expires = ts(body["expires_at"])
    assert before + timedelta(seconds=300) <= expires <= after + timedelta(seconds=300)


def test_create_held_uses_the_app_clock(tenant: Tenant, clock: Clock) -> None:
    room = tenant.admin.resource()
    clock.advance(timedelta(days=3))
    r = tenant.booker.book(room["id"], at(1, 10), at(1, 11), hold_seconds=60)
    expires = ts(_created(r)["expires_at"])
    real = datetime.now(UTC)
    assert expires - real > timedelta(days=3) - timedelta(seconds=10)


def test_create_validation_errors(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    rid = room["id"]
    cases = [
        {"resource_id": rid, "start": "2030-06-01T10:00:00", "end": at(1, 11)},  # naive
        {"resource_id": rid, "start": "2030-06-01", "end": at(1, 11)},  # bare date
        {"resource_id": rid, "start": at(1, 11), "end": at(1, 11)},  # empty
        {"resource_id": rid, "start": at(1, 12), "end": at(1, 11)},  # reversed
        {"resource_id": rid, "start": at(1, 10), "end": "2030-08-01T10:00:00Z"},  # too long
        {"resource_id": rid, "start": at(1, 10), "end": at(1, 11), "hold_seconds": 0},
        {"resource_id": rid, "start": at(1, 10), "end": at(1, 11), "hold_seconds": 86_401},
        {"resource_id": rid, "start": at(1, 10), "end": at(1, 11), "quantity": 2},
        {"resource_id": rid, "start": at(1, 10), "end": at(1, 11), "bogus": 1},
        {"resource_id": "nope", "start": at(1, 10), "end": at(1, 11)},
    ]
    for body in cases:
        _problem(tenant.booker.post("/v1/reservations", json=body), 422, "invalid-input")
    _problem(tenant.booker.book(str(UUID(int=7)), at(1, 10), at(1, 11)), 404, "not-found")
    _problem(tenant.viewer.book(rid, at(1, 10), at(1, 11)), 403, "forbidden")
    assert tenant.admin.get("/v1/reservations").json()["items"] == []


def test_other_tenants_resource_is_404(tenant: Tenant, other_tenant: Tenant) -> None:
    room = tenant.admin.resource()
    _problem(other_tenant.booker.book(room["id"], at(1, 10), at(1, 11)), 404, "not-found")


def test_half_open_back_to_back(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    _created(tenant.booker.book(room["id"], at(1, 10), at(1, 11)))
    _created(tenant.booker.book(room["id"], at(1, 11), at(1, 12)))
    _created(tenant.booker.book(room["id"], at(1, 9), at(1, 10), hold_seconds=600))
    items = tenant.booker.get("/v1/reservations", params={"resource_id": room["id"]}).json()
    assert [(i["start"], i["end"]) for i in items["items"]] == [
        (at(1, 9), at(1, 10)),
        (at(1, 10), at(1, 11)),
        (at(1, 11), at(1, 12)),
    ]


def test_overlap_is_409_with_conflicts(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()
    first = _created(tenant.booker.book(room["id"], at(1, 10), at(1, 11)))
    second = _created(tenant.booker.book(room["id"], at(1, 12), at(1, 13), hold_seconds=600))

    clash = tenant.booker.book(room["id"], at(1, 10, 30), at(1, 12, 30))
    body = _problem(clash, 409, "reservation-conflict")
    assert body["conflicts"] == [
        {"start": at(1, 10), "end": at(1, 11), "status": "confirmed", "id": first["id"]},
        {"start": at(1, 12), "end": at(1, 13), "status": "held", "id": second["id"]},
    ]
    # someone else's booking: the range is named, the id is not
    other = tenant.another_booker()
    body = _problem(other.book(room["id"], at(1, 9), at(1, 10, 1)), 409, "reservation-conflict")
    assert body["conflicts"] == [{"start": at(1, 10), "end": at(1, 11), "status": "confirmed"}]
    # containing and contained ranges conflict too
    _problem(tenant.booker.book(room["id"], at(1, 8), at(1, 14)), 409, "reservation-conflict")
    _problem(
        tenant.booker.book(room["id"], at(1, 10, 15), at(1, 10, 45)), 409, "reservation-conflict"
    )
    assert len(_rows_for(settings, room["id"])) == 2


def test_a_conflicts_times_are_in_utc_and_the_resources_zone(tenant: Tenant) -> None:
    """A person in Berlin reads 10:00, not 08:00; a program reads `conflicts` (RFC 3339)."""
    room = tenant.admin.resource(timezone="Europe/Berlin")
    start, end = "2031-07-01T08:00:00Z", "2031-07-01T09:00:00Z"  # 10:00-11:00 CEST
    first = _created(tenant.booker.book(room["id"], start, end))
    said = "2031-07-01 08:00\N{EN DASH}09:00 UTC (10:00\N{EN DASH}11:00 Europe/Berlin)"
    body = _problem(tenant.booker.book(room["id"], start, end), 409, "reservation-conflict")
    assert said in body["detail"], body["detail"]
    later = _created(tenant.booker.book(room["id"], "2031-07-01T10:00:00Z", "2031-07-01T11:00:00Z"))
    moved = tenant.booker.patch(f"/v1/reservations/{later['id']}", json={"start": start})
    assert said in _problem(moved, 409, "reservation-conflict")["detail"]
    # A UTC resource's times are said once.
    utc = tenant.admin.resource(timezone="UTC")
    _created(tenant.booker.book(utc["id"], start, end))
    detail = _problem(tenant.booker.book(utc["id"], start, end), 409, "reservation-conflict")[
        "detail"
    ]
    assert "2031-07-01 08:00\N{EN DASH}09:00 UTC." in detail, detail
    assert first["id"]


# --- read and list -----------------------------------------------------------------------


def test_get_with_etag_and_visibility(tenant: Tenant, other_tenant: Tenant) -> None:
    room = tenant.admin.resource()
    created = _created(tenant.booker.book(room["id"], at(2, 10), at(2, 11)))
    path = f"/v1/reservations/{created['id']}"

    r = tenant.booker.get(path)
    assert r.status_code == 200, r.text
    assert r.json() == created
    assert r.headers["etag"] == '"1"'
    assert tenant.viewer.get(path).json() == created
    assert tenant.admin.get(path).json() == created

    _problem(tenant.another_booker().get(path), 404, "not-found")
    _problem(other_tenant.admin.get(path), 404, "not-found")
    _problem(tenant.admin.get(f"/v1/reservations/{UUID(int=5)}"), 404, "not-found")
    _problem(tenant.admin.get("/v1/reservations/xyz"), 422, "invalid-input")


def test_list_filters(tenant: Tenant, clock: Clock) -> None:
    a = tenant.admin.resource(name="A")["id"]
    b = tenant.admin.resource(name="B")["id"]
    bk = tenant.booker
    a1 = _created(bk.book(a, at(3, 9), at(3, 10)))  # ends exactly at the window's start
    a2 = _created(bk.book(a, at(3, 10), at(3, 11), customer="bob"))
    a3 = _created(bk.book(a, at(3, 11), at(3, 12), hold_seconds=3600))  # crosses the window end
    b1 = _created(bk.book(b, at(3, 9, 30), at(3, 10, 30), customer="alice"))  # crosses start
    b2 = _created(bk.book(b, at(3, 12), at(3, 13)))  # starts after the window
    b3 = _created(bk.book(b, at(3, 11, 30), at(3, 11, 45), customer="alice"))  # starts at `to`
    assert bk.post(f"/v1/reservations/{b2['id']}/cancel").status_code == 200

    everything = _list_all(bk)
    assert _ids(everything) == [a1["id"], b1["id"], a2["id"], a3["id"], b3["id"], b2["id"]]

    assert _ids(_list_all(bk, resource_id=a)) == [a1["id"], a2["id"], a3["id"]]
    assert _ids(_list_all(bk, resource_id=b)) == [b1["id"], b3["id"], b2["id"]]

    window = {"from": at(3, 10), "to": at(3, 11, 30)}
    assert _ids(_list_all(bk, **window)) == [b1["id"], a2["id"], a3["id"]]
    assert _ids(_list_all(bk, resource_id=a, **window)) == [a2["id"], a3["id"]]
    assert _ids(_list_all(bk, **{"from": at(3, 12)})) == [b2["id"]]
    assert _ids(_list_all(bk, to=at(3, 10))) == [a1["id"], b1["id"]]
    # offsets in the window are honoured
    offsets = {"from": "2030-06-03T12:00:00+02:00", "to": "2030-06-03T13:00:00+02:00"}
    assert _ids(_list_all(bk, **offsets)) == [b1["id"], a2["id"]]

    assert _ids(_list_all(bk, status="held")) == [a3["id"]]
    assert _ids(_list_all(bk, status="cancelled")) == [b2["id"]]
    assert _ids(_list_all(bk, status=["held", "cancelled"])) == [a3["id"], b2["id"]]
    assert _ids(_list_all(bk, status="confirmed", resource_id=a)) == [a1["id"], a2["id"]]
    assert _list_all(bk, status="expired") == []

    assert _ids(_list_all(bk, customer="alice")) == [b1["id"], b3["id"]]
    assert _ids(_list_all(bk, customer="bob", **window)) == [a2["id"]]
    assert _list_all(bk, customer="nobody") == []

    # visibility: bookers see their own, admins and viewers see the tenant's
    assert _list_all(tenant.another_booker()) == []
    assert _ids(_list_all(tenant.viewer)) == _ids(everything)
    assert _ids(_list_all(tenant.admin)) == _ids(everything)

    # a hold past its expiry lists as expired, not held
    clock.advance(timedelta(seconds=3601))
    assert _list_all(bk, status="held") == []
    expired = _list_all(bk, status="expired")
    assert _ids(expired) == [a3["id"]]
    assert expired[0]["status"] == "expired"


def test_a_window_finds_reservations_longer_than_any_before_them(tenant: Tenant) -> None:
    """Lists reach back from a window's start by the tenant's longest reservation, kept on
    write: a longer one created or rescheduled later still shows in a window it crosses."""
    a = tenant.admin.resource(name="A")["id"]
    b = tenant.admin.resource(name="B")["id"]
    bk = tenant.booker
    short = _created(bk.book(a, at(20, 9), at(20, 9, 30)))
    window = {"from": at(25, 0), "to": at(26, 0)}
    assert _list_all(bk, **window) == []

    long = _created(bk.book(b, at(5, 0), at(29, 0)))  # 24 days, crosses the window
    assert _ids(_list_all(bk, **window)) == [long["id"]]
    assert _ids(_list_all(bk, resource_id=b, **window)) == [long["id"]]

    r = bk.patch(
        f"/v1/reservations/{short['id']}",
        json={"start": "2030-05-30T09:00:00Z", "end": at(27, 9)},  # 28 days, crosses it
        headers={"If-Match": f'"{short["version"]}"'},
    )
    assert r.status_code == 200, r.text
    assert _ids(_list_all(bk, **window)) == [short["id"], long["id"]]
    assert _ids(_list_all(bk, resource_id=a, **window)) == [short["id"]]


def test_list_errors(tenant: Tenant) -> None:
    _problem(
        tenant.admin.get("/v1/reservations", params={"from": at(3, 12), "to": at(3, 12)}),
        422,
        "invalid-input",
    )
    _problem(
        tenant.admin.get("/v1/reservations", params={"from": "2030-06-03T12:00:00"}),
        422,
        "invalid-input",
    )
    _problem(tenant.admin.get("/v1/reservations", params={"status": "live"}), 422, "invalid-input")
    _problem(
        tenant.admin.get("/v1/reservations", params={"cursor": "eyJ4Ijox"}), 422, "invalid-input"
    )
    _problem(tenant.admin.get("/v1/reservations", params={"limit": 0}), 422, "invalid-input")


def test_list_ordering_and_pagination(tenant: Tenant) -> None:
    rooms = [tenant.admin.resource(name=f"R{i}")["id"] for i in range(4)]
    made: list[dict[str, Any]] = []
    # several reservations share a start, so the id breaks ties (and page boundaries cut ties)
    for hour in (14, 9, 11):
        for room in rooms:
            made.append(_created(tenant.booker.book(room, at(4, hour), at(4, hour + 1))))
    expected = sorted(made, key=lambda m: (ts(m["start"]), UUID(m["id"])))

    for limit in (1, 3, 5, 12, 50):
        pages: list[list[str]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            body = tenant.booker.get("/v1/reservations", params=params).json()
            pages.append(_ids(body["items"]))
            cursor = body["next_cursor"]
            if cursor is None:
                break
            assert len(body["items"]) == limit
        flat = [i for p in pages for i in p]
        assert flat == _ids(expected), f"limit={limit}"
        assert all(pages), f"empty page with limit={limit}"
        assert len(pages) == -(-len(made) // limit)

    # the cursor carries the filter's position, not the filter: the filter is sent again
    first = tenant.booker.get("/v1/reservations", params={"limit": 2, "resource_id": rooms[0]})
    rest = tenant.booker.get(
        "/v1/reservations",
        params={"limit": 2, "resource_id": rooms[0], "cursor": first.json()["next_cursor"]},
    )
    got = _ids(first.json()["items"]) + _ids(rest.json()["items"])
    assert got == [m["id"] for m in expected if m["resource_id"] == rooms[0]]
    assert rest.json()["next_cursor"] is None


# --- patch -------------------------------------------------------------------------------


def test_reschedule_to_free_range(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    res = _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11)))
    path = f"/v1/reservations/{res['id']}"
    r = tenant.booker.patch(path, json={"start": at(5, 14), "end": "2030-06-05T17:00:00+02:00"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["start"], body["end"]) == (at(5, 14), at(5, 15))
    assert body["version"] == 2
    assert r.headers["etag"] == '"2"'
    assert body["status"] == "confirmed"
    got = tenant.booker.get(path)
    assert got.json() == body
    assert got.headers["etag"] == '"2"'
    # the old range is free again, the new one is taken
    _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11)))
    _problem(tenant.booker.book(room["id"], at(5, 14), at(5, 15)), 409, "reservation-conflict")

    # only one end moves
    r = tenant.booker.patch(path, json={"end": at(5, 16)})
    assert r.status_code == 200, r.text
    assert (r.json()["start"], r.json()["end"]) == (at(5, 14), at(5, 16))
    assert r.json()["version"] == 3


def test_reschedule_onto_overlap_is_409_and_unchanged(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    blocker = _created(tenant.booker.book(room["id"], at(5, 12), at(5, 13)))
    res = _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11)))
    path = f"/v1/reservations/{res['id']}"
    body = _problem(
        tenant.booker.patch(path, json={"start": at(5, 11), "end": at(5, 12, 30)}),
        409,
        "reservation-conflict",
    )
    assert body["conflicts"] == [
        {"start": at(5, 12), "end": at(5, 13), "status": "confirmed", "id": blocker["id"]}
    ]
    after = tenant.booker.get(path)
    assert after.json() == res
    assert after.headers["etag"] == '"1"'
    # back-to-back with the blocker is fine
    r = tenant.booker.patch(path, json={"start": at(5, 11), "end": at(5, 12)})
    assert r.status_code == 200, r.text


def test_reschedule_overlapping_only_itself(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    _created(tenant.booker.book(room["id"], at(5, 12), at(5, 13)))
    res = _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11)))
    path = f"/v1/reservations/{res['id']}"
    r = tenant.booker.patch(path, json={"start": at(5, 10, 30), "end": at(5, 11, 30)})
    assert r.status_code == 200, r.text
    assert (r.json()["start"], r.json()["end"]) == (at(5, 10, 30), at(5, 11, 30))
    r = tenant.booker.patch(path, json={"start": at(5, 9), "end": at(5, 12)})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3


def test_reschedule_held_keeps_hold(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    res = _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11), hold_seconds=600))
    r = tenant.booker.patch(
        f"/v1/reservations/{res['id']}", json={"start": at(5, 12), "end": at(5, 13)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "held"
    assert r.json()["expires_at"] == res["expires_at"]


def test_patch_if_match(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    res = _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11)))
    path = f"/v1/reservations/{res['id']}"
    ok = tenant.booker.patch(path, json={"customer": "c1"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200, ok.text
    assert ok.headers["etag"] == '"2"'

    stale = tenant.booker.patch(
        path, json={"start": at(5, 14), "end": at(5, 15)}, headers={"If-Match": '"1"'}
    )
    assert _problem(stale, 412, "precondition-failed")["current_version"] == 2
    unchanged = tenant.booker.get(path).json()
    assert (unchanged["start"], unchanged["version"]) == (at(5, 10), 2)
    stale_edit = tenant.booker.patch(path, json={"customer": "c2"}, headers={"If-Match": '"1"'})
    assert _problem(stale_edit, 412, "precondition-failed")["current_version"] == 2
    assert tenant.booker.get(path).json()["customer"] == "c1"

    r = tenant.booker.patch(
        path, json={"start": at(5, 14), "end": at(5, 15)}, headers={"If-Match": ok.headers["etag"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3
    r = tenant.booker.patch(path, json={"customer": "c3"}, headers={"If-Match": "*"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4


def test_patch_metadata_and_customer(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    res = _created(
        tenant.booker.book(room["id"], at(5, 10), at(5, 11), customer="a", metadata={"x": 1})
    )
    path = f"/v1/reservations/{res['id']}"
    r = tenant.booker.patch(path, json={"metadata": {"y": [1, 2]}, "customer": "b"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"] == {"y": [1, 2]}
    assert body["customer"] == "b"
    assert body["version"] == 2
    assert (body["start"], body["end"]) == (res["start"], res["end"])
    assert tenant.booker.get(path).json() == body

    r = tenant.booker.patch(path, json={"customer": None})
    assert r.status_code == 200, r.text
    assert r.json()["customer"] is None
    assert r.json()["metadata"] == {"y": [1, 2]}

    _problem(tenant.booker.patch(path, json={"status": "cancelled"}), 422, "invalid-input")
    _problem(tenant.booker.patch(path, json={"end": at(5, 9)}), 422, "invalid-input")
    _problem(tenant.viewer.patch(path, json={"customer": "v"}), 403, "forbidden")
    _problem(tenant.another_booker().patch(path, json={"customer": "v"}), 404, "not-found")
    assert tenant.booker.get(path).json()["version"] == 3


def test_reschedule_cancelled_is_409(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    res = _created(tenant.booker.book(room["id"], at(5, 10), at(5, 11)))
    path = f"/v1/reservations/{res['id']}"
    cancelled = tenant.booker.post(f"{path}/cancel").json()
    _problem(
        tenant.booker.patch(path, json={"start": at(5, 12), "end": at(5, 13)}),
        409,
        "reservation-not-live",
    )
    assert tenant.booker.get(path).json() == cancelled
    # the range it did not move to is still free
    _created(tenant.booker.book(room["id"], at(5, 12), at(5, 13)))


# --- confirm and cancel ------------------------------------------------------------------


def test_confirm_and_cancel_flow(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(6, 10), at(6, 11), hold_seconds=600))
    path = f"/v1/reservations/{held['id']}"

    r = tenant.booker.post(f"{path}/confirm")
    assert r.status_code == 200, r.text
    confirmed = r.json()
    assert confirmed["status"] == "confirmed"
    assert confirmed["expires_at"] is None
    assert confirmed["version"] == 2
    assert r.headers["etag"] == '"2"'

    again = tenant.booker.post(f"{path}/confirm")
    assert again.status_code == 200, again.text
    assert again.json() == confirmed

    r = tenant.booker.post(f"{path}/cancel")
    assert r.status_code == 200, r.text
    cancelled = r.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["version"] == 3
    assert r.headers["etag"] == '"3"'

    again = tenant.booker.post(f"{path}/cancel")
    assert again.status_code == 200, again.text
    assert again.json() == cancelled

    _problem(tenant.booker.post(f"{path}/confirm"), 409, "reservation-not-live")
    assert tenant.booker.get(path).json() == cancelled
    # a cancelled reservation frees its range
    _created(tenant.booker.book(room["id"], at(6, 10), at(6, 11)))


def test_cancel_a_hold(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(6, 10), at(6, 11), hold_seconds=600))
    r = tenant.booker.post(f"/v1/reservations/{held['id']}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert r.json()["expires_at"] is None
    _created(tenant.booker.book(room["id"], at(6, 10), at(6, 11)))


def test_confirm_cancel_if_match_and_access(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(6, 10), at(6, 11), hold_seconds=600))
    path = f"/v1/reservations/{held['id']}"
    tenant.booker.patch(path, json={"customer": "x"})
    stale = tenant.booker.post(f"{path}/confirm", headers={"If-Match": '"1"'})
    assert _problem(stale, 412, "precondition-failed")["current_version"] == 2
    assert tenant.booker.get(path).json()["status"] == "held"
    stale = tenant.booker.post(f"{path}/cancel", headers={"If-Match": '"1"'})
    assert _problem(stale, 412, "precondition-failed")["current_version"] == 2
    _problem(tenant.viewer.post(f"{path}/confirm"), 403, "forbidden")
    _problem(tenant.another_booker().post(f"{path}/cancel"), 404, "not-found")
    _problem(tenant.booker.post(f"/v1/reservations/{UUID(int=9)}/confirm"), 404, "not-found")
    assert tenant.booker.get(path).json()["status"] == "held"
    ok = tenant.booker.post(f"{path}/confirm", headers={"If-Match": '"2"'})
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "confirmed"


def test_confirm_after_expiry_is_409(tenant: Tenant, clock: Clock) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(6, 10), at(6, 11), hold_seconds=60))
    path = f"/v1/reservations/{held['id']}"
    clock.advance(timedelta(seconds=61))
    _problem(tenant.booker.post(f"{path}/confirm"), 409, "hold-expired")
    got = tenant.booker.get(path).json()
    assert got["status"] == "expired"
    _problem(tenant.booker.post(f"{path}/cancel"), 409, "hold-expired")


def test_times_in_hold_messages_are_in_utc_and_the_resources_zone(
    tenant: Tenant, clock: Clock
) -> None:
    """An expired hold (confirm, cancel, extend) and a pending booking a booker tries to
    confirm name their expiry in UTC and in the resource's zone."""
    room = tenant.admin.resource(timezone="Europe/Berlin")
    held = _created(tenant.booker.book(room["id"], at(7, 10), at(7, 11), hold_seconds=60))
    path = f"/v1/reservations/{held['id']}"
    expiry = describe_instant(ts(held["expires_at"]), "Europe/Berlin")
    assert expiry.endswith(" Europe/Berlin)"), expiry
    clock.advance(timedelta(seconds=61))
    for step, body in (("confirm", None), ("cancel", None), ("extend", {"hold_seconds": 60})):
        refused = _problem(tenant.booker.post(f"{path}/{step}", json=body), 409, "hold-expired")
        assert f"The hold expired at {expiry};" in refused["detail"], (step, refused)
    approvals = tenant.admin.resource(timezone="Europe/Berlin", policy={"requires_approval": True})
    pending = _created(tenant.booker.book(approvals["id"], at(7, 10), at(7, 11)))
    until = describe_instant(ts(pending["expires_at"]), "Europe/Berlin")
    refused = _problem(
        tenant.booker.post(f"/v1/reservations/{pending['id']}/confirm"), 409, "approval-required"
    )
    assert f"it keeps its range until {until}." in refused["detail"], refused


# --- expiry ------------------------------------------------------------------------------


def test_expired_hold_never_blocks_a_create(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(7, 10), at(7, 11), hold_seconds=60))
    _problem(tenant.booker.book(room["id"], at(7, 10), at(7, 11)), 409, "reservation-conflict")
    clock.advance(timedelta(seconds=61))
    other = tenant.another_booker()
    new = _created(other.book(room["id"], at(7, 10, 30), at(7, 11, 30)))
    assert new["status"] == "confirmed"
    old = tenant.booker.get(f"/v1/reservations/{held['id']}").json()
    assert old["status"] == "expired"
    assert dict(_rows_for(settings, room["id"])) == {
        UUID(held["id"]): "expired",
        UUID(new["id"]): "confirmed",
    }


def test_expired_hold_never_blocks_a_reschedule(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(7, 10), at(7, 11), hold_seconds=60))
    mine = _created(tenant.booker.book(room["id"], at(7, 14), at(7, 15)))
    path = f"/v1/reservations/{mine['id']}"
    _problem(
        tenant.booker.patch(path, json={"start": at(7, 10), "end": at(7, 11)}),
        409,
        "reservation-conflict",
    )
    clock.advance(timedelta(seconds=61))
    r = tenant.booker.patch(path, json={"start": at(7, 10), "end": at(7, 11)})
    assert r.status_code == 200, r.text
    assert (r.json()["start"], r.json()["end"]) == (at(7, 10), at(7, 11))
    assert tenant.booker.get(f"/v1/reservations/{held['id']}").json()["status"] == "expired"
    assert dict(_rows_for(settings, room["id"])) == {
        UUID(held["id"]): "expired",
        UUID(mine["id"]): "confirmed",
    }


def test_sweeper_expires_due_holds(
    tenant: Tenant, clock: Clock, settings: Settings, app_client: TestClient
) -> None:
    room = tenant.admin.resource()
    short = _created(tenant.booker.book(room["id"], at(8, 10), at(8, 11), hold_seconds=60))
    long = _created(tenant.booker.book(room["id"], at(8, 12), at(8, 13), hold_seconds=3600))
    confirmed = _created(tenant.booker.book(room["id"], at(8, 14), at(8, 15)))

    def status_of(rid: str) -> tuple[str, int]:
        ((status, version),) = _db(
            settings, "SELECT status, version FROM reservation WHERE id = %s", rid
        )
        return status, version

    clock.advance(timedelta(seconds=61))
    assert status_of(short["id"]) == ("held", 1)  # nothing has swept yet
    swept = app_client.portal.call(sweep_expired, app_client.app.state.services)  # type: ignore[union-attr, attr-defined]
    assert swept >= 1
    assert status_of(short["id"]) == ("expired", 2)
    assert status_of(long["id"]) == ("held", 1)
    assert status_of(confirmed["id"]) == ("confirmed", 1)
    got = tenant.booker.get(f"/v1/reservations/{short['id']}")
    assert got.json()["status"] == "expired"
    assert got.headers["etag"] == '"2"'
    # a second sweep finds nothing of ours to do
    app_client.portal.call(sweep_expired, app_client.app.state.services)  # type: ignore[union-attr, attr-defined]
    assert status_of(short["id"]) == ("expired", 2)
    assert status_of(long["id"]) == ("held", 1)


# --- idempotency -------------------------------------------------------------------------


def _key() -> str:
    return f"test-{secrets.token_hex(8)}"


def test_idempotent_create_replays(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()
    key = _key()
    body = {"resource_id": room["id"], "start": at(9, 10), "end": at(9, 11), "customer": "c"}
    first = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers

    replay = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    assert replay.status_code == 201, replay.text
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["location"] == first.headers["location"]
    assert replay.headers["etag"] == first.headers["etag"]
    assert len(_rows_for(settings, room["id"])) == 1

    # the same body written differently (key order, offset) is the same request
    same = {
        "customer": "c",
        "end": "2030-06-09T13:00:00+02:00",
        "start": at(9, 10),
        "resource_id": room["id"],
    }
    again = tenant.booker.post("/v1/reservations", json=same, headers={"Idempotency-Key": key})
    assert again.status_code == 201, again.text
    assert again.content == first.content
    assert len(_rows_for(settings, room["id"])) == 1

    different = {**body, "start": at(9, 12), "end": at(9, 13)}
    r = tenant.booker.post("/v1/reservations", json=different, headers={"Idempotency-Key": key})
    _problem(r, 422, "idempotency-key-reused")
    assert len(_rows_for(settings, room["id"])) == 1
    # and the key still replays the original
    replay = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    assert replay.content == first.content


def test_idempotency_key_is_per_api_key(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()
    key = _key()
    body = {"resource_id": room["id"], "start": at(9, 10), "end": at(9, 11)}
    first = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text

    # a different body with that key from another API key is a fresh request, not a reuse
    other = tenant.another_booker()
    elsewhere = {**body, "start": at(9, 12), "end": at(9, 13)}
    r = other.post("/v1/reservations", json=elsewhere, headers={"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    # and the same key and body from a third API key runs on its own: it meets the first booking
    clash = tenant.another_booker().post(
        "/v1/reservations", json=body, headers={"Idempotency-Key": key}
    )
    _problem(clash, 409, "reservation-conflict")
    assert "idempotent-replayed" not in clash.headers
    assert len(_rows_for(settings, room["id"])) == 2


def test_refusal_is_stored_under_its_key(tenant: Tenant, settings: Settings) -> None:
    """A request that ran and was refused keeps its refusal under its key (Stripe's rule):
    its client was told the slot is taken, so a retry must not book it later. More in
    tests/kit/test_idempotency.py."""
    room = tenant.admin.resource()
    blocker = _created(tenant.admin.book(room["id"], at(9, 10), at(9, 11)))
    key = _key()
    body = {"resource_id": room["id"], "start": at(9, 10), "end": at(9, 11)}
    r = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    _problem(r, 409, "reservation-conflict")
    assert tenant.admin.post(f"/v1/reservations/{blocker['id']}/cancel").status_code == 200

    retry = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    _problem(retry, 409, "reservation-conflict")
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == r.content
    assert sorted(s for _, s in _rows_for(settings, room["id"])) == ["cancelled"]

    # a 404 is kept too: the key then belongs to that request
    key2 = _key()
    missing = {**body, "resource_id": str(UUID(int=3))}
    r = tenant.booker.post("/v1/reservations", json=missing, headers={"Idempotency-Key": key2})
    _problem(r, 404, "not-found")
    again = tenant.booker.post("/v1/reservations", json=missing, headers={"Idempotency-Key": key2})
    _problem(again, 404, "not-found")
    assert again.headers["idempotent-replayed"] == "true"
    r = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key2})
    _problem(r, 422, "idempotency-key-reused")


def test_idempotent_confirm_and_cancel(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    held = _created(tenant.booker.book(room["id"], at(9, 10), at(9, 11), hold_seconds=600))
    path = f"/v1/reservations/{held['id']}"
    ckey, xkey = _key(), _key()

    first = tenant.booker.post(f"{path}/confirm", headers={"Idempotency-Key": ckey})
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "confirmed"
    replay = tenant.booker.post(f"{path}/confirm", headers={"Idempotency-Key": ckey})
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["etag"] == first.headers["etag"]

    cancelled = tenant.booker.post(f"{path}/cancel", headers={"Idempotency-Key": xkey})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["version"] == 3
    replay = tenant.booker.post(f"{path}/cancel", headers={"Idempotency-Key": xkey})
    assert replay.status_code == 200
    assert replay.content == cancelled.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert tenant.booker.get(path).json()["version"] == 3

    # the confirm key replays its stored answer even now the reservation is cancelled
    replay = tenant.booker.post(f"{path}/confirm", headers={"Idempotency-Key": ckey})
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["idempotent-replayed"] == "true"
    assert tenant.booker.get(path).json()["status"] == "cancelled"

    # a key belongs to one request: another path with it is a reuse
    _problem(
        tenant.booker.post(f"{path}/cancel", headers={"Idempotency-Key": ckey}),
        422,
        "idempotency-key-reused",
    )
    body = {"resource_id": room["id"], "start": at(9, 12), "end": at(9, 13)}
    _problem(
        tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": xkey}),
        422,
        "idempotency-key-reused",
    )
    _problem(
        tenant.booker.post(f"{path}/cancel", headers={"Idempotency-Key": "has space"}),
        422,
        "invalid-input",
    )


def test_idempotency_concurrent_same_key(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()

    def send(key: str, body: dict[str, Any], barrier: threading.Barrier) -> httpx.Response:
        barrier.wait(timeout=10)
        return tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})

    # a few bursts, each on its own slot and key: one burst alone may not interleave
    for burst, hour in enumerate((10, 12, 14)):
        key = _key()
        body = {"resource_id": room["id"], "start": at(10, hour), "end": at(10, hour + 1)}
        barrier = threading.Barrier(10)
        with ThreadPoolExecutor(max_workers=10) as pool:
            futures = [pool.submit(send, key, body, barrier) for _ in range(10)]
            replies = [f.result() for f in futures]

        seen = [(r.status_code, r.headers.get("idempotent-replayed"), r.text) for r in replies]
        originals = [
            r for r in replies if r.status_code == 201 and "idempotent-replayed" not in r.headers
        ]
        assert len(originals) == 1, seen
        for r in replies:
            if r.status_code == 201:
                assert r.content == originals[0].content, seen
            else:
                _problem(r, 409, "idempotency-key-in-use")
        rows = _rows_for(settings, room["id"])
        assert len(rows) == burst + 1
        assert originals[0].json()["id"] in {str(rid) for rid, _ in rows}

        # afterwards every retry is a replay
        replay = send(key, body, threading.Barrier(1))
        assert replay.status_code == 201
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.content == originals[0].content


def test_idempotency_concurrent_same_key_on_confirm(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()

    def send(path: str, key: str, barrier: threading.Barrier) -> httpx.Response:
        barrier.wait(timeout=10)
        return tenant.booker.post(path, headers={"Idempotency-Key": key})

    for day in (20, 21, 22):
        held = _created(tenant.booker.book(room["id"], at(day, 10), at(day, 11), hold_seconds=600))
        path = f"/v1/reservations/{held['id']}/confirm"
        key = _key()
        barrier = threading.Barrier(10)
        with ThreadPoolExecutor(max_workers=10) as pool:
            futures = [pool.submit(send, path, key, barrier) for _ in range(10)]
            replies = [f.result() for f in futures]

        seen = [(r.status_code, r.headers.get("idempotent-replayed"), r.text) for r in replies]
        originals = [
            r for r in replies if r.status_code == 200 and "idempotent-replayed" not in r.headers
        ]
        assert len(originals) == 1, seen
        assert originals[0].json()["status"] == "confirmed"
        for r in replies:
            if r.status_code == 200:
                assert r.content == originals[0].content, seen
            else:
                _problem(r, 409, "idempotency-key-in-use")
        ((status, version),) = _db(
            settings, "SELECT status, version FROM reservation WHERE id = %s", held["id"]
        )
        assert (status, version) == ("confirmed", 2)


def test_idempotency_keys_expire_after_24_hours(
    tenant: Tenant, clock: Clock, settings: Settings
) -> None:
    room = tenant.admin.resource()
    key = _key()
    body = {"resource_id": room["id"], "start": at(11, 10), "end": at(11, 11)}
    first = tenant.booker.post("/v1/reservations", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 201, first.text

    clock.advance(timedelta(hours=23))
    other = {**body, "start": at(11, 12), "end": at(11, 13)}
    r = tenant.booker.post("/v1/reservations", json=other, headers={"Idempotency-Key": key})
    _problem(r, 422, "idempotency-key-reused")

    clock.advance(timedelta(hours=2))
    r = tenant.booker.post("/v1/reservations", json=other, headers={"Idempotency-Key": key})
    assert r.status_code == 201, r.text
    assert "idempotent-replayed" not in r.headers
    assert len(_rows_for(settings, room["id"])) == 2
    # the key now belongs to the new request
    again = tenant.booker.post("/v1/reservations", json=other, headers={"Idempotency-Key": key})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == r.content


# --- metrics and OpenAPI -----------------------------------------------------------------


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics(tenant: Tenant, app_client: TestClient) -> None:
    room = tenant.admin.resource()
    before = _samples(app_client)
    made = [_created(tenant.booker.book(room["id"], at(12, h), at(12, h + 1))) for h in (9, 10, 11)]
    _created(tenant.booker.book(room["id"], at(12, 14), at(12, 15), hold_seconds=60))
    _problem(tenant.booker.book(room["id"], at(12, 9), at(12, 10)), 409, "reservation-conflict")
    tenant.booker.get(f"/v1/reservations/{made[0]['id']}")
    after = _samples(app_client)

    def delta(name: str, **labels: str) -> float:
        k = (name, tuple(sorted(labels.items())))
        return after.get(k, 0.0) - before.get(k, 0.0)

    assert delta("reservations_created_total", status="confirmed") == 3
    assert delta("reservations_created_total", status="held") == 1
    # Refused before any lock: by the availability map (Redis) or the database's pre-check.
    refused = delta("reservations_conflicts_total", stage="precheck")
    assert refused + delta("reservations_conflicts_total", stage="map") == 1
    assert delta("http_requests_total", route="/v1/reservations", method="POST", status="201") == 4
    assert delta("http_requests_total", route="/v1/reservations", method="POST", status="409") == 1
    assert (
        delta(
            "http_requests_total",
            route="/v1/reservations/{reservation_id}",
            method="GET",
            status="200",
        )
        == 1
    )
    text = app_client.get("/metrics").text
    assert made[0]["id"] not in text
    assert room["id"] not in text


def test_openapi_document(app_client: TestClient) -> None:
    r = app_client.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    operations = [
        (path, method, op)
        for path, item in doc["paths"].items()
        if path.startswith("/v1/")
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    documented = {(p, m) for p, m, _ in operations}
    for path, method in [
        ("/v1/resources", "post"),
        ("/v1/resources", "get"),
        ("/v1/resources/{resource_id}", "get"),
        ("/v1/resources/{resource_id}", "patch"),
        ("/v1/resources/{resource_id}", "delete"),
        ("/v1/reservations", "post"),
        ("/v1/reservations", "get"),
        ("/v1/reservations/{reservation_id}", "get"),
        ("/v1/reservations/{reservation_id}", "patch"),
        ("/v1/reservations/{reservation_id}/confirm", "post"),
        ("/v1/reservations/{reservation_id}/cancel", "post"),
    ]:
        assert (path, method) in documented
    for path, method, op in operations:
        problem_4xx = [
            code
            for code, resp in op.get("responses", {}).items()
            if code.startswith("4") and PROBLEM in resp.get("content", {})
        ]
        assert problem_4xx, f"{method.upper()} {path} documents no 4xx problem+json"
    assert "Problem" in doc["components"]["schemas"]

    docs = app_client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
