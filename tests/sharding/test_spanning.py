"""Bookings whose resources live on different clusters: Redlock, fencing tokens and
two-phase commit, against three real PostgreSQL clusters and three real Valkey nodes."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import httpx
import pytest

from reservations.kit.shardmap import logical_of
from reservations.sharding import twophase
from reservations.sharding.router import Shards
from tests.support.admission_rules import RULES, Rule, ok, refused
from tests.support.api import Tenant, new_tenant
from tests.support.live import start_live_server, stop_live_server
from tests.support.sharding import LOGICAL, Topology, rows_on

DAY = "2032-05-{:02d}T{:02d}:00:00+00:00"


def _cluster_of(topology: Topology, ident: str) -> str:
    names = list(topology.clusters)
    return names[logical_of(UUID(ident), LOGICAL) * len(names) // LOGICAL]


def resources_on(tenant: Tenant, topology: Topology, wanted: list[str]) -> list[str]:
    """One new resource on each named cluster, in that order."""
    out: dict[str, str] = {}
    while not set(wanted) <= set(out):
        rid = tenant.admin.resource(name="spanned")["id"]
        out.setdefault(_cluster_of(topology, rid), rid)
    return [out[w] for w in wanted]


def booking_body(resources: list[str], day: int, hour: int) -> dict[str, Any]:
    return {
        "resources": [{"resource_id": r} for r in resources],
        "start": DAY.format(day, hour),
        "end": DAY.format(day, hour + 1),
    }


def reservations_of(topology: Topology, booking_id: str) -> dict[str, int]:
    return {
        name: rows_on(
            url,
            "SELECT count(*) FROM reservation WHERE booking_id = %s AND status <> 'cancelled'",
            booking_id,
        )[0][0]
        for name, url in topology.clusters.items()
    }


def prepared_on(topology: Topology) -> list[str]:
    return [
        gid
        for url in topology.clusters.values()
        for (gid,) in rows_on(url, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'rsv2pc:%%'")
    ]


def test_a_booking_across_clusters_is_whole_and_replays(tenant, topology: Topology) -> None:
    a, b = resources_on(tenant, topology, ["a", "b"])
    body = booking_body([a, b], 1, 9)
    res = tenant.booker.post("/v1/bookings", json=body, headers={"Idempotency-Key": "span-1"})
    assert res.status_code == 201, res.text
    booking = res.json()
    assert {r["resource_id"] for r in booking["reservations"]} == {a, b}
    assert reservations_of(topology, booking["id"]) == {"a": 1, "b": 1, "c": 0}
    assert (
        tenant.booker.get(f"/v1/bookings/{booking['id']}").json()["reservations"]
        == booking["reservations"]
    )
    listed = tenant.booker.get("/v1/reservations", params={"booking_id": booking["id"]})
    assert {r["resource_id"] for r in listed.json()["items"]} == {a, b}
    again = tenant.booker.post("/v1/bookings", json=body, headers={"Idempotency-Key": "span-1"})
    assert again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == booking["id"]
    # Each cluster's constraint still guards its resource, against single-resource writes too.
    assert tenant.booker.book(b, DAY.format(1, 9), DAY.format(1, 10)).status_code == 409
    clash = tenant.booker.post("/v1/bookings", json=booking_body([b, a], 1, 9))
    assert clash.status_code == 409
    assert prepared_on(topology) == []
    # Moving it as one is refused in words (not supported across clusters yet) ...
    moved = tenant.booker.patch(f"/v1/bookings/{booking['id']}", json={"shift": "PT1H"})
    assert moved.status_code == 409
    assert moved.json()["type"].endswith("booking-spans-clusters")
    # ... cancelling it is all or nothing on both clusters, and replays by its key.
    headers = {"Idempotency-Key": "span-1-cancel"}
    cancel = tenant.booker.post(f"/v1/bookings/{booking['id']}/cancel", json={}, headers=headers)
    assert cancel.status_code == 200, cancel.text
    assert {r["status"] for r in cancel.json()["reservations"]} == {"cancelled"}
    assert reservations_of(topology, booking["id"]) == {"a": 0, "b": 0, "c": 0}
    again = tenant.booker.post(f"/v1/bookings/{booking['id']}/cancel", json={}, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert tenant.booker.book(b, DAY.format(1, 9), DAY.format(1, 10)).status_code == 201
    assert prepared_on(topology) == []


def test_a_refused_booking_across_clusters_keeps_its_refusal_under_its_key(
    tenant, topology: Topology
) -> None:
    """The coordinator's claim on the home cluster keeps a refusal too (TwoPhase commits the
    record there, one-phase, before anything is prepared): once the slot is free, the key
    still answers the 409 its client got, and nothing is booked or left prepared."""
    a, b = resources_on(tenant, topology, ["a", "b"])
    blocker = tenant.admin.book(b, DAY.format(2, 9), DAY.format(2, 10))
    assert blocker.status_code == 201, blocker.text
    body = booking_body([a, b], 2, 9)
    headers = {"Idempotency-Key": "span-refused"}
    first = tenant.booker.post("/v1/bookings", json=body, headers=headers)
    assert first.status_code == 409, first.text
    assert "Idempotent-Replayed" not in first.headers
    cancelled = tenant.admin.post(f"/v1/reservations/{blocker.json()['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    again = tenant.booker.post("/v1/bookings", json=body, headers=headers)
    assert again.status_code == 409
    assert again.content == first.content
    assert again.headers["content-type"] == "application/problem+json"
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert prepared_on(topology) == []
    for url in topology.clusters.values():
        live = rows_on(
            url,
            "SELECT count(*) FROM reservation WHERE resource_id IN (%s, %s)"
            " AND status <> 'cancelled'",
            UUID(a),
            UUID(b),
        )
        assert live == [(0,)]
    fresh = tenant.booker.post("/v1/bookings", json=body, headers={"Idempotency-Key": "span-ok"})
    assert fresh.status_code == 201, fresh.text


def test_a_held_booking_across_clusters_is_confirmed_as_one(tenant, topology: Topology) -> None:
    a, c = resources_on(tenant, topology, ["a", "c"])
    body = {**booking_body([a, c], 5, 9), "hold_seconds": 600}
    held = tenant.booker.post("/v1/bookings", json=body)
    assert held.status_code == 201, held.text
    assert {r["status"] for r in held.json()["reservations"]} == {"held"}
    bid = held.json()["id"]
    stale = tenant.booker.post(f"/v1/bookings/{bid}/confirm", headers={"If-Match": '"7"'})
    assert stale.status_code == 412
    done = tenant.booker.post(f"/v1/bookings/{bid}/confirm", headers={"If-Match": '"1"'})
    assert done.status_code == 200, done.text
    assert {r["status"] for r in done.json()["reservations"]} == {"confirmed"}
    assert done.headers["ETag"] == '"2"'
    for name, url in topology.clusters.items():
        statuses = rows_on(url, "SELECT status FROM reservation WHERE booking_id = %s", UUID(bid))
        assert statuses == ([("confirmed",)] if name in ("a", "c") else []), name
    other = new_tenant(tenant.admin.client)
    assert other.admin.post(f"/v1/bookings/{bid}/cancel", json={}).status_code == 404


def test_a_held_booking_across_clusters_is_extended_as_one(tenant, topology: Topology) -> None:
    a, c = resources_on(tenant, topology, ["a", "c"])
    held = tenant.booker.post(
        "/v1/bookings", json={**booking_body([a, c], 6, 9), "hold_seconds": 60}
    )
    assert held.status_code == 201, held.text
    bid = held.json()["id"]
    first = {r["expires_at"] for r in held.json()["reservations"]}
    stale = tenant.booker.post(
        f"/v1/bookings/{bid}/extend", json={"hold_seconds": 1200}, headers={"If-Match": '"7"'}
    )
    assert stale.status_code == 412
    done = tenant.booker.post(f"/v1/bookings/{bid}/extend", json={"hold_seconds": 1200})
    assert done.status_code == 200, done.text
    assert {r["status"] for r in done.json()["reservations"]} == {"held"}
    assert not first & {r["expires_at"] for r in done.json()["reservations"]}
    for name, url in topology.clusters.items():
        rows = rows_on(
            url,
            "SELECT status, expires_at > now() + interval '10 minutes' FROM reservation"
            " WHERE booking_id = %s",
            UUID(bid),
        )
        assert rows == ([("held", True)] if name in ("a", "c") else []), name
    # A cancelled hold stays cancelled; the live one on the other cluster is extended.
    one = done.json()["reservations"][0]["id"]
    assert tenant.booker.post(f"/v1/reservations/{one}/cancel").status_code == 200
    again = tenant.booker.post(f"/v1/bookings/{bid}/extend", json={"hold_seconds": 1800})
    assert again.status_code == 200, again.text


def test_racing_bookings_across_clusters_never_double_book(tenant, topology: Topology) -> None:
    """Twelve clients book the same hour on overlapping pairs of resources spread over three
    clusters: every booking is whole or absent, and no resource is booked twice."""
    a, b, c = resources_on(tenant, topology, ["a", "b", "c"])
    pairs = [[a, b], [b, c], [c, a], [a, b, c]]
    client = tenant.booker

    def attempt(i: int) -> tuple[int, dict[str, Any]]:
        res = client.post("/v1/bookings", json=booking_body(pairs[i % len(pairs)], 2, 10))
        return res.status_code, res.json()

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(attempt, range(24)))
    codes = sorted({code for code, _ in results})
    assert set(codes) <= {201, 409}, results
    winners = [body for code, body in results if code == 201]
    assert winners, "someone must win the hour"
    booked: dict[str, int] = {}
    for body in winners:
        for r in body["reservations"]:
            booked[r["resource_id"]] = booked.get(r["resource_id"], 0) + 1
    assert all(n == 1 for n in booked.values()), booked
    for url in topology.clusters.values():
        # These three (capacity 1) only: other tests share the clusters, some with pooled
        # resources whose reservations may overlap.
        overlapping = rows_on(
            url,
            "SELECT count(*) FROM reservation x JOIN reservation y ON x.resource_id ="
            " y.resource_id AND x.id < y.id AND x.during && y.during"
            " WHERE x.status IN ('held', 'confirmed') AND y.status IN ('held', 'confirmed')"
            " AND x.resource_id = ANY(%s)",
            [UUID(a), UUID(b), UUID(c)],
        )[0][0]
        assert overlapping == 0
    for code, body in results:  # all or nothing, per booking, on every cluster
        if code == 201:
            want = {_cluster_of(topology, r["resource_id"]) for r in body["reservations"]}
            counts = reservations_of(topology, body["id"])
            assert {n for n, k in counts.items() if k} == want
    assert prepared_on(topology) == []


def _post_in_thread(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            res = httpx.post(
                url + "/v1/bookings",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            out["status"], out["body"] = res.status_code, res.json()
        except httpx.HTTPError as exc:
            out["error"] = repr(exc)

    thread = threading.Thread(target=run)
    thread.start()
    out["thread"] = thread
    return out


def _recover(topology: Topology) -> dict[str, int]:
    from reservations.kit.db import Database

    settings = topology.settings(twophase_recover_after_seconds=0.001)

    async def run() -> dict[str, int]:
        catalog = Database(settings.database_url or "", settings)
        await catalog.open()
        shards = Shards(catalog, settings)
        await shards.open()
        try:
            return await twophase.recover(shards, older_than=0)
        finally:
            await shards.close()
            await catalog.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("point", "outcome"),
    [("after-prepare", "absent"), ("after-decision", "whole"), ("mid-commit", "whole")],
)
def test_coordinator_killed_mid_commit_leaves_bookings_whole_or_absent(
    sharded_client, topology: Topology, point: str, outcome: str
) -> None:
    tenant = new_tenant(sharded_client)
    a, b = resources_on(tenant, topology, ["a", "b"])
    server = start_live_server(topology.catalog, **topology.env(RESERVATIONS_FAULT_TWOPHASE=point))
    try:
        call = _post_in_thread(server.url, tenant.tokens["booker"], booking_body([a, b], 3, 9))
        call["thread"].join(30)
        assert "error" in call, call  # the coordinator died before answering
        assert server.process.wait(10) == -signal.SIGKILL
    finally:
        stop_live_server(server)
    in_doubt = prepared_on(topology)
    assert in_doubt, "the crash should leave prepared transactions behind"
    # Nothing else may take the range while it is in doubt: the prepared transaction holds
    # the resource's lock (a writer waits lock_timeout, then 503 Retry-After) and its rows.
    assert tenant.booker.book(a, DAY.format(3, 9), DAY.format(3, 10)).status_code in (409, 503)
    done = _recover(topology)
    assert prepared_on(topology) == []
    assert sum(done.values()) == len(in_doubt)
    booked = {
        name: rows_on(
            url,
            "SELECT count(*) FROM reservation WHERE resource_id = ANY(%s) AND status = 'confirmed'",
            [UUID(a), UUID(b)],
        )[0][0]
        for name, url in topology.clusters.items()
    }
    if outcome == "whole":
        assert booked == {"a": 1, "b": 1, "c": 0}
        assert tenant.booker.book(a, DAY.format(3, 9), DAY.format(3, 10)).status_code == 409
    else:
        assert booked == {"a": 0, "b": 0, "c": 0}
        assert tenant.booker.book(a, DAY.format(3, 9), DAY.format(3, 10)).status_code == 201


@pytest.mark.parametrize("fencing", [True, False])
def test_a_paused_lock_holder_is_fenced_out(
    sharded_client, topology: Topology, fencing: bool
) -> None:
    """Holder A takes the Redlock lease, then is stopped (SIGSTOP) past its expiry; B books
    the same resources meanwhile (another hour) with a newer token. When A resumes, the
    clusters refuse its older token. The control, without the fencing check, shows A's write
    would have gone through although it no longer held the lock."""
    tenant = new_tenant(sharded_client)
    a, b = resources_on(tenant, topology, ["a", "b"])
    env = {"RESERVATIONS_REDLOCK_TTL_MS": "1000", "RESERVATIONS_FAULT_TWOPHASE": "before-fence"}
    if not fencing:
        env["RESERVATIONS_FAULT_SKIP_FENCING"] = "true"
    server = start_live_server(topology.catalog, **topology.env(**env))
    try:
        call = _post_in_thread(server.url, tenant.tokens["booker"], booking_body([a, b], 4, 9))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until A has stopped itself holding the lease
            if _state(server.process.pid) == "T":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the holder never paused")
        time.sleep(1.5)  # past the lease's validity
        other = tenant.booker.post("/v1/bookings", json=booking_body([b, a], 4, 11))
        assert other.status_code == 201, other.text  # B got the lock: A's lease has expired
        os.kill(server.process.pid, signal.SIGCONT)
        call["thread"].join(30)
    finally:
        stop_live_server(server)
    if fencing:
        assert call.get("status") == 409, call
        assert call["body"]["type"].endswith("booking-contended")
        assert "lock expired" in call["body"]["detail"]
    else:
        assert call.get("status") == 201, call  # the stale holder's write went through
    assert prepared_on(topology) == []


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_a_booking_across_clusters_passes_the_same_admission(tenant, topology: Topology) -> None:
    """The spanning path asks the gate every path asks (reservations/admission.py): a rule of
    one resource refuses the whole booking with the 422 a create gets, an approval resource
    makes it pending, and a booker's confirm is refused until an admin decides."""
    a, b = resources_on(tenant, topology, ["a", "b"])
    admin = tenant.admin
    policy = {"weekly_hours": {d: [{"start": "09:00", "end": "17:00"}] for d in WEEKDAYS}}
    assert admin.patch(f"/v1/resources/{b}", json={"policy": policy}).status_code == 200
    late = tenant.booker.post("/v1/bookings", json=booking_body([a, b], 7, 18))
    assert late.status_code == 422, late.text
    assert late.json()["reason"] == "outside-opening-hours"
    assert late.json()["violations"][0]["reason"] == "outside-opening-hours"
    for rid in (a, b):  # nothing written on either cluster
        assert admin.get("/v1/reservations", params={"resource_id": rid}).json()["items"] == []
    policy = {**policy, "requires_approval": True}
    assert admin.patch(f"/v1/resources/{b}", json={"policy": policy}).status_code == 200
    made = tenant.booker.post("/v1/bookings", json=booking_body([a, b], 7, 10))
    assert made.status_code == 201, made.text
    booking = made.json()
    assert {r["status"] for r in booking["reservations"]} == {"pending"}
    refused = tenant.booker.post(f"/v1/bookings/{booking['id']}/confirm")
    assert (refused.status_code, refused.json()["type"]) == (409, "/problems/approval-required")
    confirmed = admin.post(f"/v1/bookings/{booking['id']}/confirm")
    assert confirmed.status_code == 200, confirmed.text
    assert {r["status"] for r in confirmed.json()["reservations"]} == {"confirmed"}
    assert prepared_on(topology) == []


@pytest.mark.parametrize("rule", RULES, ids=str)
def test_a_booking_across_clusters_refuses_every_rule(
    tenant: Tenant, topology: Topology, rule: Rule
) -> None:
    """The write-path matrix's row for a booking across clusters (tests/reservations/
    test_write_paths.py runs it on one): the rule on one resource refuses the whole booking
    with a direct create's 422, nothing is written on either cluster, and an admin's
    override_rules books it (except the system's maximum length, which nobody overrides)."""
    a, b = resources_on(tenant, topology, ["a", "b"])
    admin, booker = tenant.admin, tenant.booker
    if rule.before is not None:
        ok(booker.book(b, *rule.before))
    ok(admin.patch(f"/v1/resources/{b}", json={"policy": rule.policy}), 200)
    listed = {r: admin.get("/v1/reservations", params={"resource_id": r}).json() for r in (a, b)}
    start, end = rule.bad
    body = {"resources": [{"resource_id": a}, {"resource_id": b}], "start": start, "end": end}
    r = booker.post("/v1/bookings", json=body)
    refused(r, rule)
    direct = booker.book(b, start, end)  # a direct create of the range on the ruled resource
    refused(direct, rule)
    if rule.problem == "booking-rule-violated":
        reasons = [[v["reason"] for v in x.json()["violations"]] for x in (r, direct)]
        assert reasons[0] == reasons[1], (r.text, direct.text)
    for rid in (a, b):
        assert admin.get("/v1/reservations", params={"resource_id": rid}).json() == listed[rid]
    overridden = admin.post("/v1/bookings", json={**body, "override_rules": True})
    if rule.problem == "invalid-input":
        refused(overridden, rule)
    else:
        booked = ok(overridden)
        assert {r["resource_id"] for r in booked["reservations"]} == {a, b}
    assert prepared_on(topology) == []


WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
