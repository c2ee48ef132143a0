"""Races on pooled capacity and on multi-resource bookings, against a real server process.

Controls: the same capacity race on a database without the capacity trigger oversells; the
guard, not luck or timing, is what holds the line."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator

import psycopg
import pytest

from tests.support.live import LiveServer, start_live_server, stop_live_server
from tests.support.race import (
    _http,
    _resource,
    capacity_burst,
    create_key,
    fire,
    overlapping_pairs,
    peak_usage,
)
from tests.support.servers import PgServer

CLIENTS = 50


@pytest.mark.slow
def test_capacity_three_fifty_racers_exactly_three_win(live_server: LiveServer) -> None:
    token = create_key(live_server.database_url)
    for day in (1, 2):
        rid, codes = capacity_burst(
            live_server, token, capacity=3, quantities=[1] * CLIENTS, day=day
        )
        assert codes.count(201) == 3, codes
        assert codes.count(409) == CLIENTS - 3, codes
        assert peak_usage(live_server.database_url, rid) == 3


@pytest.mark.slow
def test_mixed_quantities_never_exceed_capacity(live_server: LiveServer) -> None:
    token = create_key(live_server.database_url)
    rng = random.Random(7)
    for day in (3, 4, 5):
        quantities = [rng.randint(1, 3) for _ in range(CLIENTS)]
        rid, codes = capacity_burst(live_server, token, capacity=5, quantities=quantities, day=day)
        assert not [c for c in codes if c >= 500], codes
        won = sum(q for q, c in zip(quantities, codes, strict=True) if c == 201)
        assert peak_usage(live_server.database_url, rid) <= 5
        # Every racer overlaps every other (10:29-11:00 is common to all), so the winners'
        # quantities are exactly what is in use, and someone must have won.
        assert 1 <= won <= 5, (won, codes)
        assert won == peak_usage(live_server.database_url, rid)


@pytest.fixture
def unguarded_capacity_server(pg_server: PgServer) -> Iterator[LiveServer]:
    """A server whose database lacks the capacity trigger: the pooled guard disabled."""
    url = pg_server.create_database("rsv_control_cap")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER reservation_capacity ON reservation")
        conn.execute("DROP TRIGGER reservation_capacity_update ON reservation")
    server = start_live_server(url)
    yield server
    stop_live_server(server)
    pg_server.drop_database(url)


@pytest.mark.slow
def test_control_without_the_capacity_trigger_the_race_oversells(
    unguarded_capacity_server: LiveServer,
) -> None:
    server = unguarded_capacity_server
    token = create_key(server.database_url)
    peaks = []
    for day in range(1, 6):
        rid, _ = capacity_burst(server, token, capacity=3, quantities=[1] * CLIENTS, day=day)
        peaks.append(peak_usage(server.database_url, rid))
        if peaks[-1] > 3:
            break
    # The application's pre-check alone (count, then insert) lets more than 3 through.
    assert max(peaks) > 3, f"expected overselling without the guard, got peaks {peaks}"


@pytest.mark.slow
def test_multi_resource_bookings_race_without_deadlock_or_double_booking(
    live_server: LiveServer,
) -> None:
    """Groups that share resources pairwise (A+B, B+C, C+A, ...) race for the same hour:
    sorted lock order means no deadlock; all-or-nothing means no half-booked group; the
    constraint means at most one holder per resource."""
    token = create_key(live_server.database_url)

    async def main() -> tuple[list[str], list[int], float]:
        rids = [await _resource(live_server, token, name=f"r{i}") for i in range(4)]
        pairs = [(a, b) for a in rids for b in rids if a < b]
        raw = []
        for i in range(30):
            a, b = pairs[i % len(pairs)]
            group = [a, b] if i % 2 else [b, a]  # requests list resources in either order
            raw.append(
                _http(
                    "POST",
                    "/v1/bookings",
                    token,
                    {
                        "resources": [{"resource_id": r} for r in group],
                        "start": f"2031-05-01T10:{i:02d}:00Z",
                        "end": "2031-05-01T11:30:00Z",
                    },
                )
            )
        started = time.perf_counter()
        codes = await fire(live_server, raw)
        return rids, codes, time.perf_counter() - started

    rids, codes, elapsed = asyncio.run(main())
    assert len(rids) == 4
    assert not [c for c in codes if c >= 500], codes
    assert set(codes) <= {201, 409}, codes
    assert 1 <= codes.count(201) <= 2, codes  # 4 resources, 2 per group: at most 2 groups
    assert elapsed < 20, f"burst took {elapsed:.1f} s (lock waits?)"
    assert overlapping_pairs(live_server.database_url) == 0
    with psycopg.connect(live_server.database_url) as conn:
        # Only this test's resources: earlier tests on this worker's database leave bookings
        # of one row (skip-conflicts) or hundreds (series) behind.
        sizes = conn.execute(
            "SELECT count(*) FROM reservation WHERE booking_id IS NOT NULL"
            " AND status IN ('held', 'confirmed') AND resource_id = ANY(%s::uuid[])"
            " GROUP BY booking_id",
            (rids,),
        ).fetchall()
    assert sizes, "no group was booked"
    assert all(n == 2 for (n,) in sizes), sizes  # no half-booked group
