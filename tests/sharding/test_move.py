"""Moving a logical shard to another cluster while clients keep writing to it."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
from typing import Any
from uuid import UUID

from reservations.kit.db import Database
from reservations.kit.shardmap import logical_of
from reservations.sharding import move
from reservations.sharding.router import Shards
from tests.support.sharding import LOGICAL, Topology, rows_on


def _move(topology: Topology, logical: int, target: str) -> move.MoveReport:
    settings = topology.settings(shard_map_refresh_seconds=1)

    async def run() -> move.MoveReport:
        catalog = Database(settings.database_url or "", settings)
        await catalog.open()
        shards = Shards(catalog, settings)
        await shards.open()
        try:
            return await move.move(shards, logical, target, settle_seconds=2.5)
        finally:
            await shards.close()
            await catalog.close()

    return asyncio.run(run())


def _where(topology: Topology, reservation_id: str) -> dict[str, list[str]]:
    return {
        name: [
            status
            for (status,) in rows_on(
                url, "SELECT status FROM reservation WHERE id = %s", UUID(reservation_id)
            )
        ]
        for name, url in topology.clusters.items()
    }


def test_a_shard_moves_under_traffic_without_losing_or_doubling_a_row(
    tenant, topology: Topology
) -> None:
    first = tenant.admin.resource(name="mover")
    logical = logical_of(UUID(first["id"]), LOGICAL)
    resources = [first["id"]]
    while len(resources) < 3:  # more resources of the same logical shard
        rid = tenant.admin.resource(name="mover")["id"]
        if logical_of(UUID(rid), LOGICAL) == logical:
            resources.append(rid)
    names = list(topology.clusters)
    source = names[logical * len(names) // LOGICAL]
    target = next(n for n in names if n != source)
    # Some history before the move: reservations, one cancelled, a booking, a waitlist entry.
    made = [
        tenant.booker.book(
            resources[i % 3], f"2033-01-0{1 + i}T09:00:00Z", f"2033-01-0{1 + i}T10:00:00Z"
        )
        for i in range(3)
    ]
    assert all(r.status_code == 201 for r in made)
    # Longer than anything of the tenant's on the target: a window it crosses must find it
    # there, so the move widens the target's bound (migration 0009) for the copied rows.
    long = tenant.booker.book(resources[2], "2033-02-01T00:00:00Z", "2033-02-21T00:00:00Z")
    assert long.status_code == 201, long.text
    crossed = {"from": "2033-02-10T00:00:00Z", "to": "2033-02-11T00:00:00Z"}
    assert tenant.booker.post(f"/v1/reservations/{made[0].json()['id']}/cancel").status_code == 200

    acked: dict[str, str] = {}  # reservation id -> status the client was last told
    moving = 0
    stop = threading.Event()
    hours = itertools.count()
    lock = threading.Lock()

    def client() -> None:
        nonlocal moving
        while not stop.is_set():
            with lock:
                n = next(hours)
            body: dict[str, Any] = {
                "resource_id": resources[n % 3],
                "start": f"2033-03-{1 + n // 24 % 28:02d}T{n % 24:02d}:00:00Z",
                "end": f"2033-03-{1 + n // 24 % 28:02d}T{n % 24:02d}:30:00Z",
            }
            key = secrets.token_hex(8)
            for _ in range(200):  # retry a refusal during the pause with the same key
                res = tenant.booker.post(
                    "/v1/reservations", json=body, headers={"Idempotency-Key": key}
                )
                if res.status_code != 503:
                    break
                with lock:
                    moving += 1
                time.sleep(0.05)
            assert res.status_code == 201, res.text
            rid = res.json()["id"]
            with lock:
                acked[rid] = "confirmed"
            if n % 4 == 0:
                for _ in range(200):
                    res = tenant.booker.post(f"/v1/reservations/{rid}/cancel")
                    if res.status_code != 503:
                        break
                    time.sleep(0.05)
                assert res.status_code == 200, res.text
                with lock:
                    acked[rid] = "cancelled"

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    report = _move(topology, logical, target)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(60)
    assert (report.source, report.target) == (source, target)
    assert report.rows["reservation"] >= 3
    assert report.rows["resource"] >= 3  # other tests may have resources on this shard too
    assert len(acked) > 20, "the clients should have kept writing"

    for rid, status in acked.items():
        found = _where(topology, rid)
        assert found[target] == [status], (rid, found)
        assert all(not rows for name, rows in found.items() if name != target), (rid, found)
    for res in made:
        assert _where(topology, res.json()["id"])[target]
    on_source = rows_on(
        topology.clusters[source],
        "SELECT count(*) FROM reservation_all WHERE logical_shard(resource_id, %s) = %s",
        LOGICAL,
        logical,
    )[0][0]
    assert on_source == 0
    # Reads and writes go to the new cluster; its constraint guards the moved rows.
    got = tenant.booker.get(f"/v1/reservations/{made[1].json()['id']}")
    assert got.status_code == 200
    listed = tenant.booker.get("/v1/reservations", params=crossed)
    assert [item["id"] for item in listed.json()["items"]] == [long.json()["id"]], listed.text
    clash = tenant.booker.book(resources[1], "2033-01-02T09:00:00Z", "2033-01-02T10:00:00Z")
    assert clash.status_code == 409
    print(f"moved {report.rows}; pause {report.pause_seconds * 1000:.0f} ms; 503s {moving}")

    back = _move(topology, logical, source)  # leave the map as the other tests expect it
    assert back.target == source
    for rid, status in acked.items():
        assert _where(topology, rid)[source] == [status]
