"""Webhooks with shard clusters: each cluster fans out and delivers its own outbox to its
copy of every endpoint; the catalog holds the endpoint."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.kit.clock import Clock
from reservations.kit.shardmap import logical_of
from tests.support.api import new_tenant
from tests.support.sharding import LOGICAL, Topology, rows_on
from tests.support.webhooks import Receiver


def _wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_events_of_every_cluster_reach_the_endpoint(topology: Topology) -> None:
    settings = topology.settings(
        run_worker=True,
        webhooks_allow_private=True,
        webhooks_interval_seconds=0.2,
        sweep_interval_seconds=0.5,
    )
    receiver = Receiver()
    try:
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            tenant = new_tenant(client)
            names = list(topology.clusters)
            rooms: dict[str, str] = {}
            while len(rooms) < 3:  # a resource on each cluster (the tenant is then on each)
                rid = tenant.admin.resource(name="hooked")["id"]
                rooms.setdefault(names[logical_of(UUID(rid), LOGICAL) * 3 // LOGICAL], rid)
            made = tenant.admin.post(
                "/v1/webhooks", json={"url": receiver.url, "event_types": ["reservation.*"]}
            )
            assert made.status_code == 201, made.text
            hook = made.json()
            # Every cluster got its copy at once.
            for url in topology.clusters.values():
                assert rows_on(url, "SELECT count(*) FROM webhook_endpoint WHERE id = %s",
                               UUID(hook["id"]))[0][0] == 1  # fmt: skip
            booked = {
                tenant.admin.book(rid, "2035-01-02T09:00:00Z", "2035-01-02T10:00:00Z").json()["id"]
                for rid in rooms.values()
            }

            def created() -> set[str]:
                return {
                    r.payload["subject_id"]
                    for r in receiver.delivered()
                    if r.payload["type"] == "reservation.created"
                } & booked

            assert _wait(lambda: created() == booked)
            log = tenant.admin.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": 2})
            assert log.status_code == 200, log.text
            assert len(log.json()["items"]) == 2
            rest = tenant.admin.get(
                f"/v1/webhooks/{hook['id']}/deliveries",
                params={"cursor": log.json()["next_cursor"]},
            ).json()["items"]
            ids = [a["id"] for a in log.json()["items"]] + [a["id"] for a in rest]
            assert len(ids) >= 3
            # Deleted in the catalog: gone from every cluster.
            assert tenant.admin.delete(f"/v1/webhooks/{hook['id']}").status_code == 204
            for url in topology.clusters.values():
                assert rows_on(url, "SELECT count(*) FROM webhook_endpoint WHERE id = %s",
                               UUID(hook["id"]))[0][0] == 0  # fmt: skip
    finally:
        receiver.close()
