"""Pooled capacity over HTTP and in the database itself: quantities, the sweep over partial
overlaps, availability's `remaining`, capacity changes, and the guards without the app."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.api import Api, Tenant, _created, _db, _problem


def at(hour: int, minute: int = 0, day: int = 3) -> str:
    return f"2030-06-{day:02d}T{hour:02d}:{minute:02d}:00Z"


def set_capacity(api: Api, rid: str, capacity: int, **headers: str) -> Any:
    return api.patch(f"/v1/resources/{rid}", json={"capacity": capacity}, headers=headers)


def capacity_of(api: Api, rid: str) -> tuple[int, int]:
    body = api.get(f"/v1/resources/{rid}").json()
    return body["capacity"], body["version"]


def cancel(api: Api, rid: str) -> None:
    assert api.post(f"/v1/reservations/{rid}/cancel").status_code == 200


def test_quantities_fill_the_pool(tenant: Tenant, settings: Settings) -> None:
    pool = tenant.admin.resource(name="Desks", capacity=3)
    rid, bk = pool["id"], tenant.booker
    two = _created(bk.book(rid, at(10), at(11), quantity=2))
    assert two["quantity"] == 2
    one = _created(bk.book(rid, at(10, 30), at(11, 30)))
    body = _problem(bk.book(rid, at(10, 45), at(12)), 409, "reservation-conflict")
    assert "All 3 units" in body["detail"]
    assert {c["id"] for c in body["conflicts"]} == {two["id"], one["id"]}
    # where only the single unit is used, two more fit; after the pair ends, three
    _created(bk.book(rid, at(11), at(11, 30), quantity=2))
    _created(bk.book(rid, at(11, 30), at(12), quantity=3))
    _problem(bk.book(rid, at(11, 59), at(12, 1)), 409, "reservation-conflict")
    body = _problem(bk.book(rid, at(13), at(14), quantity=4), 422, "invalid-input")
    assert body["errors"][0]["field"] == "quantity"
    assert len(_db(settings, "SELECT 1 FROM reservation WHERE resource_id = %s", rid)) == 4
    assert all(
        pooled
        for (pooled,) in _db(settings, "SELECT pooled FROM reservation WHERE resource_id = %s", rid)
    )


def test_partial_overlaps_are_counted_by_the_sweep_not_by_overlap(tenant: Tenant) -> None:
    # Intervals that pairwise overlap always share an instant, so the case that tells a sweep
    # from "count everything that overlaps" is a chain: the long booking meets both short ones,
    # which never meet each other.
    pool = tenant.admin.resource(capacity=2)
    rid, bk = pool["id"], tenant.booker
    _created(bk.book(rid, at(10), at(11)))
    _created(bk.book(rid, at(12), at(13)))
    long = _created(bk.book(rid, at(10), at(13)))  # overlaps both; never 3 at once
    _created(bk.book(rid, at(11), at(12)))  # overlaps only the long one
    _problem(bk.book(rid, at(10, 30), at(12, 30)), 409, "reservation-conflict")
    _problem(bk.book(rid, at(11, 59), at(12, 1)), 409, "reservation-conflict")
    # a reschedule goes through the same sweep: the long one moves to 09-10:30, then back
    r = bk.patch(f"/v1/reservations/{long['id']}", json={"start": at(9), "end": at(10, 30)})
    assert r.status_code == 200, r.text
    r = bk.patch(f"/v1/reservations/{long['id']}", json={"start": at(10), "end": at(13)})
    assert r.status_code == 200, r.text
    r = bk.patch(f"/v1/reservations/{long['id']}", json={"start": at(9), "end": at(14)})
    assert r.status_code == 200, r.text  # still at most 2 at once
    _created(bk.book(rid, at(9), at(9, 30)))  # only the long one there
    _problem(bk.book(rid, at(10, 15), at(10, 20)), 409, "reservation-conflict")


def test_buffers_apply_to_pooled_units(tenant: Tenant) -> None:
    pool = tenant.admin.resource(capacity=2, policy={"buffer_after": "PT30M"})
    rid, bk = pool["id"], tenant.booker
    _created(bk.book(rid, at(10), at(11), quantity=2))
    _problem(bk.book(rid, at(11, 15), at(12)), 409, "reservation-conflict")
    _created(bk.book(rid, at(11, 30), at(12)))


def test_availability_reports_remaining_units(tenant: Tenant) -> None:
    pool = tenant.admin.resource(capacity=3)
    rid = pool["id"]
    _created(tenant.booker.book(rid, at(10), at(11), quantity=2))
    _created(tenant.booker.book(rid, at(10, 30), at(12)))
    params = {"from": at(9), "to": at(13), "duration": "PT1H", "step": 60}

    def offered(**extra: Any) -> list[tuple[str, int]]:
        r = tenant.viewer.get(f"/v1/resources/{rid}/availability", params={**params, **extra})
        assert r.status_code == 200, r.text
        return [(s["start"], s["remaining"]) for s in r.json()["slots"]]

    assert offered() == [(at(9), 3), (at(11), 2), (at(12), 3)]  # 10:00 is full (2 + 1)
    assert offered(quantity=2) == [(at(9), 3), (at(11), 2), (at(12), 3)]
    assert offered(quantity=3) == [(at(9), 3), (at(12), 3)]
    assert offered(quantity=4) == []
    r = tenant.viewer.get(
        f"/v1/resources/{rid}/availability", params={**params, "explain": "true", "quantity": 2}
    )
    booked = [u for u in r.json()["unavailable"] if u["reason"] == "booked"]
    assert [(u["start"], u["end"], u["detail"]) for u in booked] == [
        (at(10), at(11), "3 of 3 units in use")
    ]
    # what availability offers for 2 units books, the rest does not
    _created(tenant.booker.book(rid, at(11), at(12), quantity=2))
    _problem(tenant.booker.book(rid, at(10), at(11)), 409, "reservation-conflict")
    assert offered() == [(at(9), 3), (at(12), 3)]


# --- capacity changes --------------------------------------------------------------------------


def test_lowering_capacity_below_peak_usage_is_refused(tenant: Tenant) -> None:
    pool = tenant.admin.resource(capacity=3)
    rid, bk = pool["id"], tenant.booker
    _created(bk.book(rid, at(10), at(11), quantity=2))
    single = _created(bk.book(rid, at(10, 30), at(11, 30)))
    _created(bk.book(rid, at(12), at(13), quantity=2))
    body = _problem(set_capacity(tenant.admin, rid, 2), 409, "capacity-in-use")
    assert body["peak_usage"] == 3
    assert capacity_of(tenant.admin, rid) == (3, 1)
    _problem(set_capacity(tenant.admin, rid, 1), 409, "capacity-in-use")
    assert capacity_of(tenant.admin, rid) == (3, 1)
    # the bookings are untouched and the old capacity still guards them
    _created(bk.book(rid, at(11, 30), at(12)))
    cancel(bk, single["id"])
    r = set_capacity(tenant.admin, rid, 2, **{"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert (r.json()["capacity"], r.json()["version"]) == (2, 2)
    assert r.headers["etag"] == '"2"'
    _problem(bk.book(rid, at(10, 30), at(10, 45)), 409, "reservation-conflict")


def test_lowering_to_one_with_overlaps_is_refused_and_without_works(
    tenant: Tenant, settings: Settings
) -> None:
    pool = tenant.admin.resource(capacity=2)
    rid, bk = pool["id"], tenant.booker
    a = _created(bk.book(rid, at(10), at(11)))
    _created(bk.book(rid, at(10, 30), at(11, 30)))
    _created(bk.book(rid, at(12), at(13)))
    _problem(set_capacity(tenant.admin, rid, 1), 409, "capacity-in-use")
    assert capacity_of(tenant.admin, rid) == (2, 1)
    cancel(bk, a["id"])
    r = set_capacity(tenant.admin, rid, 1)
    assert r.status_code == 200, r.text
    # the live reservations are unit reservations now, guarded by the exclusion constraint
    pooled = _db(
        settings,
        "SELECT pooled FROM reservation WHERE resource_id = %s AND status = 'confirmed'",
        rid,
    )
    assert pooled == [(False,), (False,)]
    _problem(bk.book(rid, at(12, 30), at(12, 45)), 409, "reservation-conflict")
    _created(bk.book(rid, at(10), at(10, 30)))


def test_raising_capacity_lets_a_second_booking_in(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource()
    rid, bk = room["id"], tenant.booker
    _created(bk.book(rid, at(10), at(11)))
    _problem(bk.book(rid, at(10), at(11)), 409, "reservation-conflict")
    _problem(bk.book(rid, at(10), at(11), quantity=2), 422, "invalid-input")
    r = set_capacity(tenant.admin, rid, 2)
    assert r.status_code == 200, r.text
    _created(bk.book(rid, at(10), at(11)))
    _problem(bk.book(rid, at(10, 30), at(10, 45)), 409, "reservation-conflict")
    rows = _db(settings, "SELECT pooled FROM reservation WHERE resource_id = %s", rid)
    assert rows == [(True,), (True,)]


def test_an_expired_hold_does_not_block_lowering_capacity(tenant: Tenant, clock: Clock) -> None:
    pool = tenant.admin.resource(capacity=2)
    rid, bk = pool["id"], tenant.booker
    _created(bk.book(rid, at(10), at(11)))
    _created(bk.book(rid, at(10), at(11), hold_seconds=60))
    clock.advance(timedelta(minutes=2))
    r = set_capacity(tenant.admin, rid, 1)
    assert r.status_code == 200, r.text


# --- the database guards, without the application -------------------------------------------

_COPY = (
    "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during, status,"
    " quantity, pooled, created_by, created_at, updated_at)"
    " SELECT gen_random_uuid(), tenant_id, resource_id, %(start)s, %(end)s,"
    " tstzrange(%(start)s, %(end)s), 'confirmed', %(quantity)s, %(pooled)s, created_by,"
    " now(), now() FROM reservation WHERE id = %(model)s RETURNING id, pooled"
)


def _insert(
    conn: psycopg.Connection[Any],
    model: str,
    start: str,
    end: str,
    quantity: int = 1,
    pooled: bool = True,
) -> tuple[Any, ...]:
    row = conn.execute(
        _COPY, {"model": model, "start": start, "end": end, "quantity": quantity, "pooled": pooled}
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_capacity_trigger_refuses_sql_inserts(tenant: Tenant, settings: Settings) -> None:
    pool = tenant.admin.resource(capacity=2)
    model = _created(tenant.booker.book(pool["id"], at(10), at(11), quantity=2))["id"]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # control: the same statement succeeds where there is room, and marks the row pooled
        _, pooled = _insert(conn, model, at(11), at(12), pooled=False)
        assert pooled is True
        for pooled_flag in (True, False):
            with pytest.raises(pg_errors.ExclusionViolation) as caught:
                _insert(conn, model, at(10, 30), at(11, 30), pooled=pooled_flag)
            assert caught.value.diag.constraint_name == "reservation_capacity"
        # one unit too many in a larger row
        with pytest.raises(pg_errors.ExclusionViolation):
            _insert(conn, model, at(11, 30), at(12, 30), quantity=2)
        # marking a live row as not pooled is undone by the database
        conn.execute("UPDATE reservation SET pooled = false WHERE id = %s", (model,))
        (flag,) = conn.execute(
            "SELECT pooled FROM reservation WHERE id = %s", (model,)
        ).fetchone() or (None,)
        assert flag is True
        # a cancelled row cannot come back to life over capacity
        conn.execute("UPDATE reservation SET status = 'cancelled' WHERE id = %s", (model,))
        _insert(conn, model, at(10), at(11), quantity=2)
        with pytest.raises(pg_errors.ExclusionViolation):
            conn.execute("UPDATE reservation SET status = 'confirmed' WHERE id = %s", (model,))
        # nor can a row be stretched over another
        with pytest.raises(pg_errors.ExclusionViolation):
            conn.execute(
                "UPDATE reservation SET start_at = %s, during = tstzrange(%s, end_at)"
                " WHERE resource_id = %s AND start_at = %s",
                (at(10, 30), at(10, 30), pool["id"], at(11)),
            )
    live = _db(
        settings,
        "SELECT start_at, quantity FROM reservation WHERE resource_id = %s"
        " AND status = 'confirmed' ORDER BY start_at",
        pool["id"],
    )
    assert [q for _, q in live] == [2, 1]


def test_trigger_holds_inside_one_transaction_and_across_writers(
    tenant: Tenant, settings: Settings
) -> None:
    pool = tenant.admin.resource(capacity=2)
    model = _created(tenant.booker.book(pool["id"], at(10), at(11)))["id"]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as first:
        _insert(first, model, at(10), at(11))  # fills the pool, not yet committed
        with psycopg.connect(settings.database_url) as second:
            second.execute("SET lock_timeout = '500ms'")
            # the trigger waits for the resource lock the first writer holds
            with pytest.raises(pg_errors.LockNotAvailable):
                _insert(second, model, at(10, 30), at(11, 30))
        first.commit()
        with (
            psycopg.connect(settings.database_url) as third,
            pytest.raises(pg_errors.ExclusionViolation),
        ):
            _insert(third, model, at(10, 30), at(11, 30))


def test_unit_resources_are_guarded_by_the_exclusion_constraint(
    tenant: Tenant, settings: Settings
) -> None:
    room = tenant.admin.resource()
    model = _created(tenant.booker.book(room["id"], at(10), at(11)))["id"]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        _, pooled = _insert(conn, model, at(11), at(12), pooled=True)
        assert pooled is False  # the database decides, not the writer
        with pytest.raises(pg_errors.ExclusionViolation) as caught:
            _insert(conn, model, at(10, 30), at(11, 30), pooled=True)
        # One exclusion constraint per partition of the live table (migration 0003).
        assert re.fullmatch(r"reservation_p\d\d_no_overlap", caught.value.diag.constraint_name)


def test_capacity_changed_by_sql_keeps_the_guard(tenant: Tenant, settings: Settings) -> None:
    pool = tenant.admin.resource(capacity=2)
    model = _created(tenant.booker.book(pool["id"], at(10), at(11)))["id"]
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        # the one live row fits a capacity of 1, so the change itself may pass; an
        # overlapping second row must not
        conn.execute("UPDATE resource SET capacity = 1 WHERE id = %s", (pool["id"],))
        with pytest.raises(pg_errors.ExclusionViolation):
            _insert(conn, model, at(10, 30), at(11, 30))
