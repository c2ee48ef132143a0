"""Racing creates from one pool: N clients, K resources, one slot → exactly min(N, K)
winners, each on its own resource, the rest 409 pool-exhausted, no 5xx.

The control runs the same race against a database without the exclusion constraint (the
pick, the pre-check and the per-resource retry unchanged) and shows it double-books: the
racers all start on the same resource, and only the constraint sends the losers on to the
next one."""

from __future__ import annotations

import psycopg
import pytest

from tests.support.live import LiveServer
from tests.support.race import create_key, overlapping_pairs, pool_burst


def live_per_resource(database_url: str, ids: list[str]) -> list[int]:
    with psycopg.connect(database_url) as conn:
        counts = dict(
            conn.execute(
                "SELECT resource_id::text, count(*) FROM reservation"
                " WHERE resource_id = ANY(%s::uuid[]) AND status IN ('held', 'confirmed')"
                " GROUP BY resource_id",
                (ids,),
            ).fetchall()
        )
    return [int(counts.get(rid, 0)) for rid in ids]


@pytest.mark.slow
def test_racing_pool_creates_have_exactly_min_n_k_winners(live_server: LiveServer) -> None:
    token = create_key(live_server.database_url)
    for day, (clients, size) in enumerate([(24, 6), (4, 6)], start=1):
        ids, codes = pool_burst(live_server, token, clients=clients, size=size, day=day)
        assert not [c for c in codes if c >= 500], codes
        assert codes.count(201) == min(clients, size), codes
        assert codes.count(409) == clients - min(clients, size), codes
        per_resource = live_per_resource(live_server.database_url, ids)
        assert sorted(per_resource) == sorted([1] * min(clients, size) + [0] * (size - clients)), (
            per_resource
        )
    assert overlapping_pairs(live_server.database_url) == 0


@pytest.mark.slow
def test_control_without_the_constraint_the_pool_race_double_books(
    unguarded_server: LiveServer,
) -> None:
    token = create_key(unguarded_server.database_url)
    doubled = []
    for day in range(1, 6):
        ids, _ = pool_burst(unguarded_server, token, clients=24, size=6, day=day)
        doubled.append(max(live_per_resource(unguarded_server.database_url, ids)))
        if doubled[-1] > 1:
            break
    assert max(doubled) > 1, f"expected a double booking without the guard, got {doubled}"
    assert overlapping_pairs(unguarded_server.database_url) > 0
