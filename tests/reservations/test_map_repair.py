"""The availability map's repair follows the outbox (reservations/tasks.py
`repair_map_changes`): each round rebuilds, from PostgreSQL, the (resource, day) entries the
changes committed since the last round touched. Changes here are made in SQL, behind the
API: exactly what a crash between COMMIT and the map's write leaves (the row and its event
committed, the map not told).

- a lost clear, a lost mark and a lost move are repaired by the first round after the
  change; controls: without a round the map stays wrong, and a move whose event forgot the
  range it left leaves that range refused;
- what a round reads is the changes', not the tables' or the map's: the same six changes cost
  the same events, entries and rows with ten times the reservations (and map entries);
- the position is PostgreSQL's: a second app (a restart) does not read the events again, two
  rounds at once read them once, and a round that cannot reach Redis reads them again.

Each test has a database of its own, so its rounds read its own events only."""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.availability_map.store import AvailabilityMap
from reservations.context import Context
from reservations.kit.clock import Clock
from reservations.kit.redis import RedisTier
from reservations.reservations import tasks
from reservations.reservations.tasks import MapRepair
from tests.support.api import Api, new_tenant
from tests.support.servers import (
    PgServer,
    RedisServer,
    make_settings,
    wait_for_earlier_transactions,
)

DAY0 = datetime(2032, 3, 1, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


@dataclass
class Repairing:
    """An app on a database and map prefix of its own, with its map repair run by hand."""

    client: TestClient
    url: str
    admin: Api

    @property
    def svc(self) -> Context:
        svc: Context = self.client.app.state.services  # type: ignore[attr-defined]
        return svc

    def round(self, svc: Context | None = None, *, batches: int = 1) -> MapRepair:
        """One round of the repair, once every change made before it is readable."""
        wait_for_earlier_transactions(self.client)
        on = svc or self.svc
        done: MapRepair = self.client.portal.call(  # type: ignore[union-attr]
            lambda: tasks.repair_map_changes(on, batches=batches)
        )
        return done

    def catch_up(self) -> None:
        while self.round(batches=10).more:
            pass

    def refused(self, resource_id: str, start: datetime, end: datetime) -> set[str]:
        """The reservations the map names in the way of [start, end) (empty: it passes)."""
        store = self.svc.availability_map
        assert store is not None
        found = self.client.portal.call(  # type: ignore[union-attr]
            lambda: store.refusal(UUID(resource_id), start, end, now=self.svc.clock.now())
        )
        return {str(d.id) for d in found or []}

    def entries(self) -> int:
        """(resource, day) entries the map holds."""
        tier = self.svc.redis

        async def count() -> int:
            assert tier.client is not None
            n = 0
            async for _ in tier.client.scan_iter(match=tier.key("map", "*") + ":m", count=1000):
                n += 1
            return n

        n: int = self.client.portal.call(count)  # type: ignore[union-attr]
        return n

    def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def create_in_sql(self, resource_id: str, start: datetime, end: datetime) -> str:
        (row,) = self.sql(
            "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during,"
            " status, quantity, created_by, created_at, updated_at)"
            " SELECT gen_random_uuid(), r.tenant_id, r.id, %(s)s, %(e)s, tstzrange(%(s)s, %(e)s),"
            " 'confirmed', 1, k.id, now(), now() FROM resource r"
            " JOIN api_key k ON k.tenant_id = r.tenant_id WHERE r.id = %(r)s LIMIT 1"
            " RETURNING id",
            {"r": resource_id, "s": start, "e": end},
        )
        return str(row[0])

    def cancel_in_sql(self, reservation_id: str) -> None:
        self.sql(
            "UPDATE reservation SET status = 'cancelled', version = version + 1,"
            " updated_at = now() WHERE id = %s",
            (reservation_id,),
        )

    def move_in_sql(self, reservation_id: str, start: datetime, end: datetime) -> None:
        self.sql(
            "UPDATE reservation SET start_at = %(s)s, end_at = %(e)s, during = tstzrange(%(s)s,"
            " %(e)s), version = version + 1, updated_at = now() WHERE id = %(id)s",
            {"id": reservation_id, "s": start, "e": end},
        )


@pytest.fixture
def repairing(pg_server: PgServer, redis_server: RedisServer) -> Iterator[Repairing]:
    url = pg_server.create_database("rsv_repair")
    settings = make_settings(
        url,
        redis_url=redis_server.url,
        redis_key_prefix=f"{redis_server.prefix}repair-{secrets.token_hex(3)}:",
    )
    try:
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            yield Repairing(client=client, url=url, admin=new_tenant(client).admin)
    finally:
        pg_server.drop_database(url)


def book(r: Repairing, resource_id: str, start: datetime, end: datetime) -> str:
    reply = r.admin.book(resource_id, iso(start), iso(end))
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


# --------------------------------------------------------------------------------------------
# lost effects, repaired by the next round


@pytest.mark.parametrize("repair", [True, False], ids=["one-round", "control-no-round"])
def test_a_lost_clear_is_repaired_by_the_next_round(repairing: Repairing, repair: bool) -> None:
    r = repairing
    room = r.admin.resource(name="clear")["id"]
    rid = book(r, room, DAY0, DAY0 + HOUR)
    r.catch_up()
    assert r.refused(room, DAY0, DAY0 + HOUR) == {rid}
    r.cancel_in_sql(rid)
    assert r.refused(room, DAY0, DAY0 + HOUR) == {rid}, "the clear was not lost"

    if repair:
        done = r.round()
        assert (done.events, done.entries, done.wrong) == (1, 1, 1), done
        assert r.refused(room, DAY0, DAY0 + HOUR) == set()
        assert book(r, room, DAY0, DAY0 + HOUR)
    else:  # without the repair the free range stays refused
        assert r.refused(room, DAY0, DAY0 + HOUR) == {rid}
        assert r.admin.book(room, iso(DAY0), iso(DAY0 + HOUR)).json()["source"] == (
            "availability-map"
        )


@pytest.mark.parametrize("repair", [True, False], ids=["one-round", "control-no-round"])
def test_a_lost_mark_is_repaired_by_the_next_round(repairing: Repairing, repair: bool) -> None:
    r = repairing
    room = r.admin.resource(name="mark")["id"]
    r.catch_up()
    rid = r.create_in_sql(room, DAY0, DAY0 + HOUR)
    assert r.refused(room, DAY0, DAY0 + HOUR) == set()

    if repair:
        done = r.round()
        assert (done.events, done.entries, done.rows, done.wrong) == (1, 1, 1, 1), done
        assert r.refused(room, DAY0, DAY0 + HOUR) == {rid}
        refusal = r.admin.book(room, iso(DAY0), iso(DAY0 + HOUR))
        assert refusal.json()["source"] == "availability-map", refusal.text
    else:
        assert r.refused(room, DAY0, DAY0 + HOUR) == set()


@pytest.mark.parametrize(
    "remember", [True, False], ids=["range-left-repaired", "control-range-left-forgotten"]
)
def test_a_lost_move_frees_the_day_it_left(repairing: Repairing, remember: bool) -> None:
    """The event of a move carries the range it left (`event.was_during`): the day the
    reservation left is rebuilt too, not only the day it went to."""
    r = repairing
    room = r.admin.resource(name="move")["id"]
    rid = book(r, room, DAY0, DAY0 + HOUR)
    r.catch_up()
    later = DAY0 + timedelta(days=3)
    r.move_in_sql(rid, later, later + HOUR)
    if not remember:
        r.sql("UPDATE event SET was_during = NULL WHERE subject_id = %s", (rid,))

    done = r.round()
    assert done.events == 1
    assert r.refused(room, later, later + HOUR) == {rid}
    if remember:
        assert done.entries == 2
        assert r.refused(room, DAY0, DAY0 + HOUR) == set()
    else:  # only the new day rebuilt: the old one still refuses a free range
        assert done.entries == 1
        assert r.refused(room, DAY0, DAY0 + HOUR) == {rid}


# --------------------------------------------------------------------------------------------
# the cost of a round: the changes', not the tables'


def seed(r: Repairing, rooms: list[str], days: range) -> None:
    """A confirmed hour (10:00) per room and day, in one INSERT (each with its event)."""
    r.sql(
        "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during, status,"
        " quantity, created_by, created_at, updated_at)"
        " SELECT gen_random_uuid(), res.tenant_id, res.id, s, s + interval '1 hour',"
        " tstzrange(s, s + interval '1 hour'), 'confirmed', 1, k.id, now(), now()"
        " FROM resource res JOIN LATERAL (SELECT id FROM api_key"
        " WHERE tenant_id = res.tenant_id LIMIT 1) k ON true,"
        " generate_series(%(first)s::int, %(last)s::int) d,"
        " LATERAL (SELECT %(t0)s::timestamptz + d * interval '1 day' AS s) x"
        " WHERE res.id = ANY(%(rooms)s::uuid[])",
        {"rooms": rooms, "first": days.start, "last": days.stop - 1, "t0": DAY0},
    )


def six_changes(r: Repairing, rooms: list[str], day: int) -> None:
    """Three cancels (rooms 0-2) and three creates beside the seeded hour (rooms 3-5), on
    `day`: six (resource, day) entries, each left wrong."""
    at = DAY0 + timedelta(days=day)
    for room in rooms[:3]:
        ((rid,),) = r.sql(
            "SELECT id FROM reservation WHERE resource_id = %s AND start_at = %s", (room, at)
        )
        r.cancel_in_sql(str(rid))
    for room in rooms[3:6]:
        r.create_in_sql(room, at + 5 * HOUR, at + 6 * HOUR)


def test_a_round_reads_the_changes_not_the_tables(repairing: Repairing) -> None:
    r = repairing
    rooms = [r.admin.resource(name=f"room {n}")["id"] for n in range(10)]
    seen = []
    for days, changed_day in ((range(0, 20), 5), (range(20, 200), 6)):
        seed(r, rooms, days)
        r.catch_up()  # the seeding's own events: the map now holds every seeded day
        entries = r.entries()
        six_changes(r, rooms, changed_day)
        done = r.round()
        print(f"\n{len(rooms) * days.stop} reservations, {entries} map entries: {done}")
        # Six events; six entries; the rows live on those days: the three created beside
        # their seeded hour (two each), none where the only row was cancelled.
        assert (done.events, done.entries, done.rows, done.wrong) == (6, 6, 6, 6), done
        seen.append((entries, done))
    (small, first), (large, second) = seen
    assert large == 10 * small == 2_000  # ten times the reservations and the map entries ...
    assert first == second  # ... and the same work per round


# --------------------------------------------------------------------------------------------
# the position: PostgreSQL's, shared, kept until Redis has the entries


def test_the_position_survives_a_restart_and_is_shared(
    repairing: Repairing, redis_server: RedisServer
) -> None:
    r = repairing
    room = r.admin.resource(name="shared")["id"]
    r.catch_up()
    for day in range(4):
        r.create_in_sql(room, DAY0 + timedelta(days=day), DAY0 + timedelta(days=day) + HOUR)
    wait_for_earlier_transactions(r.client)

    async def two_at_once() -> list[MapRepair]:
        return list(
            await asyncio.gather(
                tasks.repair_map_changes(r.svc, batches=1),
                tasks.repair_map_changes(r.svc, batches=1),
            )
        )

    done = r.client.portal.call(two_at_once)  # type: ignore[union-attr]
    assert sorted(d.events for d in done) == [0, 4], done  # one read them, the other skipped
    r.create_in_sql(room, DAY0 + timedelta(days=9), DAY0 + timedelta(days=9) + HOUR)

    # Another process on the same database (a restart, another worker): only what is new.
    settings = r.svc.settings
    with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as other:
        wait_for_earlier_transactions(other)
        svc = other.app.state.services  # type: ignore[attr-defined]
        again: MapRepair = other.portal.call(  # type: ignore[union-attr]
            lambda: tasks.repair_map_changes(svc, batches=1)
        )
    assert (again.events, again.entries) == (1, 1), again


def test_a_round_that_cannot_reach_redis_keeps_the_position(repairing: Repairing) -> None:
    r = repairing
    room = r.admin.resource(name="down")["id"]
    r.catch_up()
    rid = r.create_in_sql(room, DAY0, DAY0 + HOUR)

    down = RedisTier("redis://127.0.0.1:1/0", timeout=0.2, prefix=r.svc.settings.redis_key_prefix)
    r.client.portal.call(down.open)  # type: ignore[union-attr]
    cut_off = copy.copy(r.svc)
    cut_off.availability_map = AvailabilityMap(down, ttl_seconds=60)
    try:
        lost = r.round(cut_off)
    finally:
        r.client.portal.call(down.close)  # type: ignore[union-attr]
    assert (lost.events, lost.wrong, lost.more) == (1, 0, False), lost
    assert r.refused(room, DAY0, DAY0 + HOUR) == set()

    done = r.round()  # the same event again
    assert (done.events, done.wrong) == (1, 1), done
    assert r.refused(room, DAY0, DAY0 + HOUR) == {rid}
