"""Bookings whose item names a pool: a series on one resource of it (same_resource) or spread
over it, a group with a fixed resource, the refusals, and a replay by key (docs/pools.md)."""

from __future__ import annotations

import secrets
from typing import Any

from tests.support.api import Api, Tenant, _created, _problem


def at(hour: int, day: int) -> str:
    return f"2031-07-{day:02d}T{hour:02d}:00:00Z"


def pool_of(api: Api, n: int) -> tuple[str, list[str]]:
    tag = f"bp-{secrets.token_hex(4)}"
    return tag, [api.resource(name=f"Room {i}", tags=[tag])["id"] for i in range(n)]


def series(tag: str, **extra: Any) -> dict[str, Any]:
    # Three daily occurrences: July 1, 2 and 3, 10:00-11:00 UTC.
    return {
        "resources": [{"pool": {"tags": [tag]}}],
        "start": at(10, 1),
        "end": at(11, 1),
        "rrule": "FREQ=DAILY;COUNT=3",
        "timezone": "UTC",
        **extra,
    }


def placed(booking: dict[str, Any]) -> list[str]:
    return [r["resource_id"] for r in sorted(booking["reservations"], key=lambda r: r["start"])]


def test_same_resource_keeps_the_series_on_one_resource(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = pool_of(admin, 3)
    _created(admin.book(ids[0], at(10, 2), at(11, 2)))  # the first room is busy on day 2
    made = _created(booker.post("/v1/bookings", json=series(tag, same_resource=True)))
    assert placed(made) == [ids[1]] * 3


def test_without_same_resource_each_occurrence_takes_the_first_free(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = pool_of(admin, 3)
    _created(admin.book(ids[0], at(10, 2), at(11, 2)))
    made = _created(booker.post("/v1/bookings", json=series(tag)))
    assert placed(made) == [ids[0], ids[1], ids[0]]
    assert [o["outcome"] for o in made["report"]] == ["booked"] * 3
    # Everything now busy on day 1 and 3 but ids[2]: a second series spreads over what is left.
    again = _created(booker.post("/v1/bookings", json=series(tag)))
    assert placed(again) == [ids[1], ids[2], ids[1]]


def test_a_full_pool_refuses_the_booking(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = pool_of(admin, 2)
    for rid in ids:
        _created(admin.book(rid, at(10, 2), at(11, 2)))
    body = _problem(
        booker.post("/v1/bookings", json=series(tag, same_resource=True)), 409, "pool-exhausted"
    )
    assert [c["resource_id"] for c in body["candidates"]] == ids
    assert all(c["type"] == "/problems/reservation-conflict" for c in body["candidates"])
    # Spread: the day no resource takes is named, on each resource.
    body = _problem(booker.post("/v1/bookings", json=series(tag)), 409, "reservation-conflict")
    (failed,) = body["occurrences"]
    assert failed["start"].startswith("2031-07-02")
    assert {r["resource_id"] for r in failed["reasons"]} == set(ids)
    # skip-conflicts books the rest.
    made = _created(booker.post("/v1/bookings", json=series(tag, mode="skip-conflicts")))
    assert placed(made) == [ids[0], ids[0]]
    assert assert_nothing_more(admin, ids)


def assert_nothing_more(admin: Api, ids: list[str]) -> bool:
    counts = [
        len(admin.get("/v1/reservations", params={"resource_id": rid}).json()["items"])
        for rid in ids
    ]
    assert counts == [3, 1], counts
    return True


def test_a_group_with_a_fixed_resource_and_a_pool(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = pool_of(admin, 2)
    projector = admin.resource(name="Projector")["id"]
    _created(admin.book(ids[0], at(9, 5), at(12, 5)))
    body = {
        "resources": [{"resource_id": projector}, {"pool": {"tags": [tag]}}],
        "start": at(10, 5),
        "end": at(11, 5),
    }
    key = {"Idempotency-Key": f"bp-{secrets.token_hex(4)}"}
    made = _created(booker.post("/v1/bookings", json=body, headers=key))
    assert sorted(placed(made)) == sorted([projector, ids[1]])
    again = booker.post("/v1/bookings", json=body, headers=key)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == made["id"]
    # A pool item naming only the fixed resource is empty; two pool items are refused.
    only = {**body, "resources": [{"resource_id": ids[1]}, {"pool": {"resource_ids": [ids[1]]}}]}
    _problem(booker.post("/v1/bookings", json=only), 422, "invalid-input")
    two = {**body, "resources": [{"pool": {"tags": [tag]}}, {"pool": {"tags": ["x"]}}]}
    r = booker.post("/v1/bookings", json=two)
    _problem(r, 422, "invalid-input")
    assert "one item of a booking may name a pool" in r.text
