"""A pool whose resources live on all three clusters: every resource is tried on its own
cluster, a retry with the Idempotency-Key finds the reply whichever cluster holds it, and
bookings from the pool (docs/pools.md)."""

from __future__ import annotations

import secrets
from uuid import UUID

from reservations.kit.shardmap import logical_of
from tests.support.api import Tenant, _created, _problem
from tests.support.sharding import LOGICAL, Topology, rows_on


def _cluster_of(topology: Topology, ident: str) -> str:
    names = list(topology.clusters)
    return names[logical_of(UUID(ident), LOGICAL) * len(names) // LOGICAL]


def _spanning_pool(tenant: Tenant, topology: Topology) -> tuple[str, list[str]]:
    tag = f"sp-{secrets.token_hex(3)}"
    ids: list[str] = []
    while len({_cluster_of(topology, r) for r in ids}) < len(topology.clusters) or len(ids) < 4:
        ids.append(tenant.admin.resource(name=f"Room {len(ids):02d}", tags=[tag])["id"])
    return tag, ids


def _live(topology: Topology, ids: list[str], start: str) -> int:
    return sum(
        rows_on(
            url,
            "SELECT count(*) FROM reservation WHERE resource_id = ANY(%s::uuid[])"
            " AND start_at = %s AND status IN ('held', 'confirmed')",
            ids,
            start,
        )[0][0]
        for url in topology.clusters.values()
    )


def test_a_pool_across_clusters_fills_then_names_every_resource(
    tenant: Tenant, topology: Topology
) -> None:
    tag, ids = _spanning_pool(tenant, topology)
    start, end = "2031-08-01T10:00:00Z", "2031-08-01T11:00:00Z"
    body = {"pool": {"tags": [tag]}, "start": start, "end": end}
    chosen = [_created(tenant.booker.post("/v1/reservations", json=body)) for _ in ids]
    assert [c["resource_id"] for c in chosen] == ids  # pool order: by name
    for made in chosen:  # each on its resource's cluster
        home = topology.clusters[_cluster_of(topology, made["resource_id"])]
        assert rows_on(home, "SELECT count(*) FROM reservation WHERE id = %s", made["id"]) == [(1,)]
    full = _problem(tenant.booker.post("/v1/reservations", json=body), 409, "pool-exhausted")
    assert [c["resource_id"] for c in full["candidates"]] == ids
    assert _live(topology, ids, start) == len(ids)


def test_a_retry_with_the_key_replays_from_whichever_cluster_holds_it(
    tenant: Tenant, topology: Topology
) -> None:
    tag, ids = _spanning_pool(tenant, topology)
    start, end = "2031-08-02T10:00:00Z", "2031-08-02T11:00:00Z"
    # round_robin: the retry starts at another resource (the turn moved on), likely on
    # another cluster than the one that holds the reply.
    body = {"pool": {"tags": [tag], "strategy": "round_robin"}, "start": start, "end": end}
    for n in range(3):
        key = {"Idempotency-Key": f"sp-{secrets.token_hex(4)}"}
        made = _created(tenant.booker.post("/v1/reservations", json=body, headers=key))
        again = tenant.booker.post("/v1/reservations", json=body, headers=key)
        assert again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == made["id"]
        assert _live(topology, ids, start) == n + 1


def test_bookings_from_a_pool_across_clusters(tenant: Tenant, topology: Topology) -> None:
    tag, ids = _spanning_pool(tenant, topology)
    series = {
        "resources": [{"pool": {"tags": [tag]}}],
        "start": "2031-08-10T10:00:00Z",
        "end": "2031-08-10T11:00:00Z",
        "rrule": "FREQ=DAILY;COUNT=2",
        "timezone": "UTC",
    }
    made = _created(tenant.booker.post("/v1/bookings", json={**series, "same_resource": True}))
    assert {r["resource_id"] for r in made["reservations"]} == {ids[0]}
    # Spreading a series needs one cluster: said, not half done.
    r = tenant.booker.post("/v1/bookings", json=series)
    assert _problem(r, 422, "invalid-input")["errors"][0]["field"] == "same_resource"
