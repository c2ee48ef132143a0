"""A shard cluster with its own streaming replica: reads spread to it, and the consistency
token (one position per database) keeps read-your-writes across clusters."""

from __future__ import annotations

import json
import re
from uuid import UUID

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from reservations.app import create_app
from reservations.cli import app as cli
from reservations.kit.clock import Clock
from reservations.kit.shardmap import logical_of
from tests.support.api import new_tenant
from tests.support.replica import start_replica
from tests.support.sharding import LOGICAL, Topology


def test_a_clusters_replica_serves_reads_and_tokens_keep_read_your_writes(
    topology: Topology,
) -> None:
    replica = start_replica(topology.clusters["b"], apply_delay="1500ms")
    try:
        clusters: dict[str, object] = dict(topology.clusters)
        clusters["b"] = {"url": topology.clusters["b"], "replicas": [replica.url("reservations")]}
        shards = json.dumps({"logical_shards": LOGICAL, "clusters": clusters})
        settings = topology.settings(shards=shards, replica_check_seconds=0.2)
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            tenant = new_tenant(client)
            names = list(topology.clusters)
            while True:  # a resource on cluster b
                made = tenant.admin.post(
                    "/v1/resources", json={"name": "replicated", "timezone": "UTC"}
                )
                rid = made.json()["id"]
                if names[logical_of(UUID(rid), LOGICAL) * 3 // LOGICAL] == "b":
                    break
            booked = tenant.booker.book(rid, "2034-02-01T09:00:00Z", "2034-02-01T10:00:00Z")
            assert booked.status_code == 201
            token = booked.headers["Consistency-Token"]
            assert re.fullmatch(r"shard-b=[0-9A-F]+/[0-9A-F]+", token), token
            path = f"/v1/reservations/{booked.json()['id']}"
            # Control: without the token the replica (1.5 s behind) answers, and has not
            # got the reservation yet.
            stale = tenant.booker.get(path)
            assert stale.headers.get("Read-Source") == "replica"
            assert stale.status_code == 404
            # With it, the read waits for the replica or goes to b's primary: never stale.
            fresh = tenant.booker.get(path, headers={"Consistency-Token": token})
            assert fresh.status_code == 200, fresh.text
            # A token naming several databases is accepted; a malformed one is a 422.
            both = tenant.booker.get(path, headers={"Consistency-Token": "primary=0/1;" + token})
            assert both.status_code == 200
            bad = tenant.booker.get(path, headers={"Consistency-Token": "b=zz"})
            assert bad.status_code == 422
        env = {"DATABASE_URL": topology.catalog, **topology.env(), "REDIS_URL": "none"}
        env["RESERVATIONS_SHARDS"] = shards
        result = CliRunner().invoke(cli, ["shards", "status"], env=env)
        assert result.exit_code == 0, result.output
        assert re.search(r"replica shard-b/0: \d+ bytes of WAL behind", result.output), (
            result.output
        )
    finally:
        replica.stop()
