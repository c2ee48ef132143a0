"""Routing by resource across three clusters, and lists that merge every shard's pages."""

from __future__ import annotations

from uuid import UUID

import pytest

from reservations.kit.shardmap import ShardMapError, logical_of, parse
from tests.support.sharding import LOGICAL, Topology, rows_on

DAY = "2031-03-0{}T{:02d}:00:00+00:00"


def test_shard_map_is_validated() -> None:
    ok = parse(
        '{"logical_shards": 4, "clusters": {"a": "postgresql://x/a", "b": "postgresql://x/b"}}'
    )
    assert ok.assignment == ("a", "a", "b", "b")
    bad = [
        ('{"logical_shards": 0, "clusters": {"a": "postgresql://x"}}', "logical_shards"),
        ('{"logical_shards": 2, "clusters": {}}', "clusters"),
        ('{"logical_shards": 2, "clusters": {"A!": "postgresql://x"}}', "cluster name"),
        ('{"logical_shards": 2, "clusters": {"a": "mysql://x"}}', "postgresql://"),
        (
            '{"logical_shards": 4, "clusters": {"a": "postgresql://x"}, "assign": {"a": "0-2"}}',
            "logical shards 3 are assigned to no cluster",
        ),
        (
            '{"logical_shards": 4, "clusters": {"a": "postgresql://x", "b": "postgresql://y"},'
            ' "assign": {"a": "0-3", "b": "3"}}',
            "assigned to both",
        ),
        ('{"logical_shards": 2, "clusters": {"a": "postgresql://x"}, "oops": 1}', "unknown keys"),
        ("not json", "not valid JSON"),
    ]
    for text, message in bad:
        with pytest.raises(ShardMapError, match=message):
            parse(text)


def _cluster_of(topology: Topology, ident: str) -> str:
    names = list(topology.clusters)
    n = logical_of(UUID(ident), LOGICAL)
    return names[n * len(names) // LOGICAL]


def test_every_row_lives_on_its_resources_cluster(tenant, topology: Topology) -> None:
    made = [tenant.admin.resource(name=f"r{i}") for i in range(24)]
    on = {_cluster_of(topology, r["id"]) for r in made}
    assert on == set(topology.clusters), "24 random ids should reach all three clusters"
    for r in made[:9]:
        res = tenant.booker.book(r["id"], DAY.format(1, 9), DAY.format(1, 10))
        assert res.status_code == 201, res.text
        rid = res.json()["id"]
        assert logical_of(UUID(rid), LOGICAL) == logical_of(UUID(r["id"]), LOGICAL)
        home = topology.clusters[_cluster_of(topology, r["id"])]
        for name, url in topology.clusters.items():
            found = rows_on(url, "SELECT count(*) FROM reservation WHERE id = %s", rid)[0][0]
            assert found == (1 if url == home else 0), name
        got = tenant.booker.get(f"/v1/reservations/{rid}")
        assert got.status_code == 200
        assert got.json()["resource_id"] == r["id"]
        # The cluster's exclusion constraint still guards the resource.
        again = tenant.booker.book(r["id"], DAY.format(1, 9), DAY.format(1, 10))
        assert again.status_code == 409


def test_lists_merge_every_shard_in_cursor_order(tenant) -> None:
    made = sorted(tenant.admin.resource(name=f"p{i}")["id"] for i in range(17))
    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = tenant.admin.get("/v1/resources", params=params).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made  # every resource once, in id order, across the three clusters

    for i, rid in enumerate(made):
        hour = 8 + i % 9
        assert (
            tenant.admin.book(rid, DAY.format(2, hour), DAY.format(2, hour + 1)).status_code == 201
        )
    listed, cursor = [], None
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = tenant.admin.get("/v1/reservations", params=params).json()
        listed += [(r["start"], r["id"]) for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(listed) == 17
    assert listed == sorted(listed)


def test_search_finds_free_resources_on_every_cluster(tenant, topology: Topology) -> None:
    made = [tenant.admin.resource(name=f"s{i}", tags=["court"]) for i in range(12)]
    body = {
        "tags": ["court"],
        "from": DAY.format(3, 8),
        "to": DAY.format(3, 18),
        "duration": "PT1H",
        "limit": 50,
    }
    res = tenant.admin.post("/v1/availability/search", json=body)
    assert res.status_code == 200, res.text
    found = {h["resource"]["id"] for h in res.json()["items"]}
    assert found == {r["id"] for r in made}
    assert {_cluster_of(topology, r) for r in found} == set(topology.clusters)


def test_shards_status_reports_each_cluster(tenant, topology: Topology) -> None:
    from typer.testing import CliRunner

    from reservations.cli import app

    tenant.admin.resource(name="counted")
    env = {"DATABASE_URL": topology.catalog, **topology.env(), "REDIS_URL": "none"}
    result = CliRunner().invoke(app, ["shards", "status"], env=env)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("cluster ")]
    assert [line.split(":")[0] for line in lines] == ["cluster a", "cluster b", "cluster c"]
    assert "logical shards 0-5;" in lines[0]  # 16 spread over 3: 0-5, 6-10, 11-15
    assert "!" not in result.output  # every cluster holds what the map says


def _on_each_cluster(tenant, topology: Topology) -> dict[str, str]:
    found: dict[str, str] = {}
    while len(found) < len(topology.clusters):
        rid = tenant.admin.resource(name="everywhere")["id"]
        found.setdefault(_cluster_of(topology, rid), rid)
    return found


def test_the_event_stream_merges_every_clusters_outbox(tenant, topology: Topology) -> None:
    import time

    rooms = _on_each_cluster(tenant, topology)
    made = {
        tenant.admin.book(rid, DAY.format(5, 9), DAY.format(5, 10)).json()["id"]
        for rid in rooms.values()
    }
    seen: dict[str, int] = {}
    cursor = None
    deadline = time.monotonic() + 15
    while not made <= set(seen) and time.monotonic() < deadline:
        params = {"limit": 2, **({"after": cursor} if cursor else {})}
        page = tenant.admin.get("/v1/events", params=params)
        assert page.status_code == 200, page.text
        for event in page.json()["items"]:
            if event["type"] == "reservation.created":
                seen[event["subject_id"]] = seen.get(event["subject_id"], 0) + 1
        cursor = page.json()["next_cursor"] or cursor
        if not page.json()["items"]:
            time.sleep(0.2)  # an outbox shows a transaction once every older one has ended
    assert made <= set(seen), seen
    assert all(seen[m] == 1 for m in made)  # each once, though paged 2 at a time
    # Resuming from the last cursor gives only what happened since.
    later = tenant.admin.book(rooms["c"], DAY.format(6, 9), DAY.format(6, 10)).json()["id"]
    deadline = time.monotonic() + 15
    news: list[str] = []
    while later not in news and time.monotonic() < deadline:
        page = tenant.admin.get("/v1/events", params={"after": cursor}).json()
        news += [e["subject_id"] for e in page["items"] if e["type"] == "reservation.created"]
        cursor = page["next_cursor"] or cursor
        time.sleep(0.1)
    assert news == [later]
    bad = tenant.admin.get("/v1/events", params={"after": "bm90LWpzb24"})
    assert bad.status_code == 422


def test_feeds_read_the_cluster_of_their_resource_or_every_cluster(
    tenant, topology: Topology
) -> None:
    from datetime import UTC, datetime, timedelta

    import httpx

    rooms = _on_each_cluster(tenant, topology)
    start = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=10)
    end = start + timedelta(hours=1)
    for rid in rooms.values():
        booked = tenant.booker.book(rid, start.isoformat(), end.isoformat())
        assert booked.status_code == 201
    room_feed = tenant.admin.post("/v1/feeds", json={"resource_id": rooms["b"]})
    assert room_feed.status_code == 201, room_feed.text
    prefix = tenant.tokens["booker"].split("_")[1]
    key_feed = tenant.admin.post("/v1/feeds", json={"api_key_prefix": prefix})
    assert key_feed.status_code == 201, key_feed.text
    listed = tenant.admin.get("/v1/feeds").json()["items"]
    assert {f["id"] for f in listed} == {room_feed.json()["id"], key_feed.json()["id"]}

    def events(feed: dict[str, str]) -> int:
        body = tenant.admin.client.get(httpx.URL(feed["url"]).path).text
        return body.count("BEGIN:VEVENT")

    assert events(room_feed.json()) == 1  # its resource's, read on cluster b
    assert events(key_feed.json()) == 3  # the key's, gathered from all three clusters
    # A tag's free/busy feed (kept in the catalog) reads the tag's resources on every cluster.
    for rid in rooms.values():
        tagged = tenant.admin.patch(f"/v1/resources/{rid}", json={"tags": ["spread"]})
        assert tagged.status_code == 200, tagged.text
    fb = tenant.admin.post("/v1/feeds", json={"content": "freebusy", "tag": "spread"})
    assert fb.status_code == 201, fb.text
    read = tenant.admin.client.get(httpx.URL(fb.json()["json_url"]).path).json()
    assert [r["resource_id"] for r in read["resources"]] == sorted(rooms.values())
    for r in read["resources"]:
        assert [(p["start"], p["type"]) for p in r["busy"] if p["type"] == "busy"] == [
            (start.isoformat().replace("+00:00", "Z"), "busy")
        ]
    revoked = tenant.admin.delete(f"/v1/feeds/{room_feed.json()['id']}")
    assert revoked.status_code == 204
    assert tenant.admin.client.get(httpx.URL(room_feed.json()["url"]).path).status_code == 404
    assert tenant.admin.delete(f"/v1/feeds/{key_feed.json()['id']}").status_code == 204


def test_each_clusters_audit_log_is_read_and_verified(tenant, topology: Topology) -> None:
    from typer.testing import CliRunner

    from reservations.cli import app

    rooms = _on_each_cluster(tenant, topology)
    seen: dict[str, str] = {}
    cursor = None
    for _ in range(200):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = tenant.admin.get("/v1/audit", params=params)
        assert page.status_code == 200, page.text
        for entry in page.json()["items"]:
            if entry["object_type"] == "resource" and entry["action"] == "insert":
                assert entry["object_id"] not in seen  # each once across the pages
                seen[entry["object_id"]] = entry["database"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    for name, rid in rooms.items():
        assert seen[rid] == f"shard-{name}"
    env = {"DATABASE_URL": topology.catalog, **topology.env(), "REDIS_URL": "none"}
    runner = CliRunner()
    assert runner.invoke(app, ["audit", "seal"], env=env).exit_code == 0
    for name in topology.clusters:
        result = runner.invoke(app, ["audit", "verify", "--cluster", name], env=env)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("ok ")
    missing = runner.invoke(app, ["audit", "verify", "--cluster", "zz"], env=env)
    assert missing.exit_code == 1
    assert "no cluster 'zz'" in missing.output


def test_a_resource_made_near_another_shares_its_shard(tenant, topology: Topology) -> None:
    first = tenant.admin.resource(name="court")["id"]
    twins = [tenant.admin.resource(name="lights", near=first)["id"] for _ in range(5)]
    assert {logical_of(UUID(t), LOGICAL) for t in twins} == {logical_of(UUID(first), LOGICAL)}
    body = {
        "resources": [{"resource_id": first}, {"resource_id": twins[0]}],
        "start": "2031-08-01T09:00:00Z",
        "end": "2031-08-01T10:00:00Z",
    }
    booked = tenant.booker.post("/v1/bookings", json=body)
    assert booked.status_code == 201, booked.text
    home = topology.clusters[_cluster_of(topology, first)]
    spanning = rows_on(
        home, "SELECT spanning FROM booking WHERE id = %s", UUID(booked.json()["id"])
    )
    assert spanning == [(False,)]  # one cluster, one transaction
    unknown = tenant.admin.post(
        "/v1/resources", json={"name": "x", "near": "01900000-0000-7000-8000-000000000000"}
    )
    assert unknown.status_code == 404


def test_the_tenants_hold_cap_counts_every_cluster(topology: Topology) -> None:
    from fastapi.testclient import TestClient

    from reservations.app import create_app
    from reservations.kit.clock import Clock
    from tests.support.api import new_tenant

    settings = topology.settings(max_live_holds_per_tenant=3)
    with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
        tenant = new_tenant(client)
        rooms = _on_each_cluster(tenant, topology)
        order = ["a", "b", "c", "a"]
        codes = [
            tenant.booker.book(
                rooms[name], DAY.format(7, 9 + i), DAY.format(7, 10 + i), hold_seconds=600
            ).status_code
            for i, name in enumerate(order)
        ]
        assert codes == [201, 201, 201, 429]  # one hold per cluster, then the cap
        confirmed = tenant.booker.book(rooms["b"], DAY.format(8, 9), DAY.format(8, 10))
        assert confirmed.status_code == 201  # the cap is on holds only


def test_metrics_count_writes_per_cluster(tenant, topology: Topology) -> None:
    from tests.support.live import metric

    rooms = _on_each_cluster(tenant, topology)
    before = tenant.admin.client.get("/metrics").text
    for i, name in enumerate(("a", "b", "b")):
        made = tenant.booker.book(rooms[name], DAY.format(9, 9 + i), DAY.format(9, 10 + i))
        assert made.status_code == 201
    after = tenant.admin.client.get("/metrics").text

    def delta(cluster: str) -> float:
        name = "shard_write_transactions_total"
        return metric(after, name, cluster=cluster) - metric(before, name, cluster=cluster)

    assert delta("shard-a") >= 1
    assert delta("shard-b") >= 2
    assert delta("shard-c") == 0
    assert "twophase_transactions_total" in after


def test_cli_commands_open_every_cluster(topology: Topology) -> None:
    """`demo`, `history` and `worker` run on the shard clusters, not on the catalog alone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from typer.testing import CliRunner

    from reservations.cli import app

    env = {"DATABASE_URL": topology.catalog, **topology.env(), "REDIS_URL": "none"}
    runner = CliRunner()
    demo = runner.invoke(app, ["demo"], env=env)
    assert demo.exit_code == 0, demo.output
    counts = [
        rows_on(url, "SELECT count(*) FROM resource r JOIN tenant t ON t.id = r.tenant_id"
                " WHERE t.name = 'demo'")[0][0]
        for url in topology.clusters.values()
    ]  # fmt: skip
    assert sum(counts) == 12
    # Spread over the clusters by their random ids: one cluster of three gets none about once
    # in 40 runs (3 * (2/3)^12), all twelve on one cluster once in 180,000.
    assert sum(n > 0 for n in counts) >= 2, counts
    history = runner.invoke(app, ["history"], env=env)
    assert history.exit_code == 0, history.output
    for name in topology.clusters:
        assert f"shard-{name}: horizon:" in history.output
    worker = subprocess.Popen(
        [sys.executable, "-m", "reservations", "worker"],
        env={**os.environ, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert "Traceback" not in err, err


def test_other_tenants_ids_stay_invisible_on_every_cluster(
    tenant, sharded_client, topology: Topology
) -> None:
    from tests.support.api import new_tenant

    other = new_tenant(sharded_client)
    rooms = _on_each_cluster(tenant, topology)
    for name, rid in rooms.items():
        res = tenant.booker.book(rid, DAY.format(4, 9), DAY.format(4, 10)).json()["id"]
        for path in (f"/v1/resources/{rid}", f"/v1/reservations/{res}"):
            assert other.admin.get(path).status_code == 404, (name, path)
        assert other.admin.post(f"/v1/reservations/{res}/cancel").status_code == 404
        attempt = other.admin.book(rid, DAY.format(4, 11), DAY.format(4, 12))
        assert attempt.status_code == 404
    assert other.admin.get("/v1/reservations").json()["items"] == []
    assert other.admin.get("/v1/resources").json()["items"] == []


def test_the_live_stream_resumes_across_clusters(topology: Topology) -> None:
    """SSE with shards: `after=now` names a position on every cluster, and a reconnect from
    it gets the events committed meanwhile on all three."""
    import asyncio
    import json

    import httpx
    from typer.testing import CliRunner

    from reservations.cli import app
    from tests.support.api import sse_frames
    from tests.support.live import start_live_server, stop_live_server

    env = {"DATABASE_URL": topology.catalog, **topology.env(), "REDIS_URL": "none"}
    made = CliRunner().invoke(
        app, ["keys", "create", "--tenant", "sse", "--role", "admin"], env=env
    )
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    server = start_live_server(topology.catalog, **topology.env())

    async def main() -> None:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=auth, timeout=15) as c:
            rooms: dict[str, str] = {}
            while len(rooms) < 3:
                rid = (await c.post("/v1/resources", json={"name": "sse"})).json()["id"]
                rooms.setdefault(_cluster_of(topology, rid), rid)
            (start,) = await asyncio.wait_for(sse_frames(c, 1, params={"after": "now"}), 15)
            assert set(start) == {"id"}
            booked = set()
            for rid in rooms.values():
                body = {"resource_id": rid, "start": DAY.format(3, 9), "end": DAY.format(3, 10)}
                r = await c.post("/v1/reservations", json=body)
                assert r.status_code == 201, r.text
                booked.add(r.json()["id"])
            got = await asyncio.wait_for(
                sse_frames(c, 3, headers={"Last-Event-ID": start["id"]}), 20
            )
            assert {json.loads(f["data"])["subject_id"] for f in got} == booked
            assert all(f["event"] == "reservation.created" for f in got)

    try:
        asyncio.run(main())
    finally:
        stop_live_server(server)
