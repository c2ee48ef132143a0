"""Creates from a pool over HTTP: the strategies' orders, busy resources skipped, the refusal
that names every resource, the bounds, and Idempotency-Key replays (docs/pools.md)."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from reservations.catalog.repository import ResourceRow
from reservations.context import Context
from reservations.reservations import pools, service
from reservations.reservations.pool_model import MAX_POOL, Pool, PoolStrategy, tried_order
from reservations.reservations.schemas import ReservationCreate
from reservations.tenancy.service import authenticate
from tests.support.api import Api, Tenant, _created, _db, _problem


def at(hour: int, day: int = 3, minute: int = 0) -> str:
    return f"2031-05-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def rooms(api: Api, n: int, *, tag: str | None = None, **fields: Any) -> tuple[str, list[str]]:
    """n resources sharing a fresh tag (named so that their name order is their index)."""
    tag = tag or f"pool-{secrets.token_hex(4)}"
    ids = [api.resource(name=f"Room {i:02d}", tags=[tag, "room"], **fields)["id"] for i in range(n)]
    return tag, ids


def pool_book(api: Api, pool: dict[str, Any], start: str, end: str, **kw: Any) -> Any:
    headers = kw.pop("headers", {})
    return api.post(
        "/v1/reservations", json={"pool": pool, "start": start, "end": end, **kw}, headers=headers
    )


def test_first_free_books_in_pool_order_and_skips_the_busy(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, 3)
    pool = {"tags": [tag, "room"]}
    first = _created(pool_book(booker, pool, at(10), at(11)))
    assert first["resource_id"] == ids[0]
    assert first["pool"] == {"strategy": "first_free", "size": 3, "tried": 1}
    second = _created(pool_book(booker, pool, at(10), at(11)))
    assert second["resource_id"] == ids[1]
    assert second["pool"]["tried"] == 2
    # The reservation as read later is an ordinary one: no `pool` member.
    assert "pool" not in booker.get(f"/v1/reservations/{second['id']}").json()
    # resource_ids give the order (and narrow the pool).
    third = _created(pool_book(booker, {"resource_ids": [ids[2], ids[0]]}, at(12), at(13)))
    assert third["resource_id"] == ids[2]


def test_a_full_pool_is_refused_naming_every_resource(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, 2)
    early = admin.resource(name="Room 99", tags=[tag], policy={"max_advance": "P1D"})["id"]
    for rid in ids:
        _created(admin.book(rid, at(9), at(12)))
    body = _problem(pool_book(booker, {"tags": [tag]}, at(10), at(11)), 409, "pool-exhausted")
    got = {c["resource_id"]: c for c in body["candidates"]}
    assert list(got) == [*ids, early]  # all tried, in pool order
    for rid in ids:
        assert got[rid]["type"] == "/problems/reservation-conflict"
        assert got[rid]["status"] == 409
        # In the booker's view: the admin's reservations carry no id.
        assert [set(c) for c in got[rid]["conflicts"]] == [{"start", "end", "status"}]
    assert got[early]["type"] == "/problems/booking-rule-violated"
    assert got[early]["reason"] == "too-far-ahead"
    assert "2 are booked" in body["detail"]
    # Nothing was written.
    listed = admin.get("/v1/reservations", params={"resource_id": early}).json()["items"]
    assert listed == []


def test_when_every_resource_breaks_its_rules_the_refusal_is_the_rules(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, 2, policy={"max_advance": "P1D"})
    body = _problem(
        pool_book(booker, {"tags": [tag]}, at(10), at(11)), 422, "booking-rule-violated"
    )
    direct = _problem(booker.book(ids[0], at(10), at(11)), 422, "booking-rule-violated")
    assert body["reason"] == direct["reason"] == "too-far-ahead"
    assert [v["reason"] for v in body["violations"]] == [v["reason"] for v in direct["violations"]]
    assert [c["resource_id"] for c in body["candidates"]] == ids


def test_bad_pools_are_422s_that_say_what_to_change(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, 1, capacity=2)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"pool": {"tags": ["no-such-tag"]}}, "matches no resource"),
        ({"pool": {"tags": [tag], "min_capacity": 3}}, "matches no resource"),
        ({"pool": {"tags": [tag]}, "quantity": 3}, "matches no resource"),
        ({"pool": {}}, "a pool needs"),
        ({"pool": {"tags": [tag]}, "resource_id": ids[0]}, "not both"),
        ({"pool": {"resource_ids": [ids[0], ids[0]]}}, "once"),
        ({"pool": {"tags": [tag], "strategy": "random"}}, "strategy"),
    ]
    for extra, said in cases:
        r = booker.post("/v1/reservations", json={"start": at(10), "end": at(11), **extra})
        body = _problem(r, 422, "invalid-input")
        assert said in r.text, (extra, r.text)
        assert body["errors"]
    # Another tenant's resources are not in anyone's pool.
    other_ids = {"pool": {"resource_ids": ids}, "start": at(10), "end": at(11)}
    assert admin.post("/v1/reservations", json=other_ids).status_code == 201


def test_the_pool_size_is_capped(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, MAX_POOL + 1)
    r = pool_book(booker, {"tags": [tag]}, at(10), at(11))
    body = _problem(r, 422, "invalid-input")
    assert f"more than {MAX_POOL}" in body["detail"]
    assert body["errors"][0]["field"] == "pool"
    # Narrowed below the cap, it books.
    _created(pool_book(booker, {"tags": [tag], "resource_ids": ids[:2]}, at(10), at(11)))


def test_least_busy_picks_the_resource_with_the_fewest_booked_hours(tenant: Tenant) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, 3)
    _created(admin.book(ids[0], at(6), at(9)))  # 3 h the same day
    _created(admin.book(ids[1], at(7), at(8)))  # 1 h
    _created(admin.book(ids[2], at(14, day=1), at(20, day=1)))  # 6 h, outside the 24 h window
    made = _created(pool_book(booker, {"tags": [tag], "strategy": "least_busy"}, at(10), at(11)))
    assert made["resource_id"] == ids[2]
    made = _created(pool_book(booker, {"tags": [tag], "strategy": "least_busy"}, at(12), at(13)))
    assert made["resource_id"] == ids[1]  # ids[2] now has 1 h, as ids[1]: pool order breaks it


def test_round_robin_moves_on_and_a_retry_with_the_key_books_nothing_more(
    tenant: Tenant, settings: Any
) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag, ids = rooms(admin, 3)
    pool = {"tags": [tag], "strategy": "round_robin"}
    chosen = [
        _created(pool_book(booker, pool, at(10, day=d), at(11, day=d)))["resource_id"]
        for d in (1, 2, 3, 4)
    ]
    assert chosen == [ids[0], ids[1], ids[2], ids[0]]
    key = {"Idempotency-Key": f"pool-{secrets.token_hex(4)}"}
    made = _created(pool_book(booker, pool, at(10, day=5), at(11, day=5), headers=key))
    again = pool_book(booker, pool, at(10, day=5), at(11, day=5), headers=key)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == made  # the same reservation, the pool's note included
    rows = _db(
        settings,
        "SELECT count(*) FROM reservation WHERE resource_id = ANY(%s::uuid[]) AND start_at = %s",
        ids,
        at(10, day=5),
    )
    assert rows == [(1,)]
    # The same key with another pool is another request.
    other = pool_book(
        booker,
        {**pool, "min_capacity": 1, "tags": [tag, "room"]},
        at(10, day=5),
        at(11, day=5),
        headers=key,
    )
    _problem(other, 422, "idempotency-key-reused")


@pytest.mark.parametrize("hold", [None, 300])
def test_a_pool_create_is_held_or_confirmed_as_asked(tenant: Tenant, hold: int | None) -> None:
    tag, _ = rooms(tenant.admin, 1)
    extra = {"hold_seconds": hold} if hold else {}
    made = _created(pool_book(tenant.booker, {"tags": [tag]}, at(15), at(16), **extra))
    assert made["status"] == ("held" if hold else "confirmed")


def test_round_robin_is_even_over_1000_bookings(app_client: TestClient, tenant: Tenant) -> None:
    """1,000 creates from one round-robin pool of 5, eight at a time, through the service
    layer (the HTTP tests above cover the route); one slot in ten has one resource booked
    already, so some picks move on. Each resource's share is within 1.2 of every other's."""
    tag, ids = rooms(tenant.admin, 5)
    services: Context = app_client.app.state.services  # type: ignore[attr-defined]
    base = datetime(2032, 1, 1, tzinfo=UTC)
    rng = random.Random(19)
    busy = {n: rng.choice(ids) for n in range(1000) if rng.random() < 0.1}

    def slot(n: int) -> tuple[datetime, datetime]:
        return base + timedelta(hours=n), base + timedelta(hours=n, minutes=30)

    async def run() -> Counter[str]:
        caller = await authenticate(services.db, tenant.tokens["admin"], now=services.clock.now())
        assert caller is not None
        for n, rid in busy.items():
            start, end = slot(n)
            body = ReservationCreate(resource_id=UUID(rid), start=start, end=end)
            await service.create(services, caller, body, None)
        pool = Pool(tags=[tag], strategy=PoolStrategy.round_robin)
        chosen: Counter[str] = Counter()

        async def book(n: int) -> None:
            start, end = slot(n)
            body = ReservationCreate(pool=pool, start=start, end=end)
            reply = await pools.create(services, caller, body, None)
            chosen[json.loads(reply.body)["resource_id"]] += 1

        for first in range(0, 1000, 8):
            await asyncio.gather(*(book(n) for n in range(first, min(first + 8, 1000))))
        return chosen

    chosen = app_client.portal.call(run)  # type: ignore[union-attr]
    assert sum(chosen.values()) == 1000
    assert set(chosen) == set(ids)
    assert max(chosen.values()) / min(chosen.values()) <= 1.2, chosen


def _row(name: str) -> ResourceRow:
    now = datetime(2031, 1, 1, tzinfo=UTC)
    return ResourceRow(
        id=uuid4(),
        name=name,
        capacity=1,
        timezone="UTC",
        tags=["t"],
        metadata={},
        policy={},
        version=1,
        created_at=now,
        updated_at=now,
    )


@given(
    names=st.lists(st.text("ab", min_size=1, max_size=3), min_size=1, max_size=8),
    turn=st.integers(min_value=0, max_value=10**6),
    hours=st.lists(st.integers(min_value=0, max_value=48), min_size=8, max_size=8),
    strategy=st.sampled_from(list(PoolStrategy)),
)
def test_every_strategy_tries_every_member_once_in_its_order(
    names: list[str], turn: int, hours: list[int], strategy: PoolStrategy
) -> None:
    members = [_row(n) for n in names]
    pool = Pool(tags=["t"], strategy=strategy)
    by_name = sorted(members, key=lambda r: (r.name, str(r.id)))
    busy = {r.id: timedelta(hours=h) for r, h in zip(members, hours, strict=False)}
    order = tried_order(pool, members, turn=turn, busy=busy)
    assert sorted(r.id for r in order) == sorted(r.id for r in members)  # each once
    if strategy is PoolStrategy.first_free:
        assert order == by_name
    elif strategy is PoolStrategy.round_robin:
        at = turn % len(members)
        assert order == by_name[at:] + by_name[:at]
    else:
        keys = [(busy[r.id], by_name.index(r)) for r in order]
        assert keys == sorted(keys)
    # resource_ids give the pool order.
    given_order = Pool(resource_ids=[r.id for r in reversed(members)])
    assert tried_order(given_order, members) == list(reversed(members))
