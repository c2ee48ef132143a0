"""The outbox: every change writes its event in the same transaction, numbered per resource,
read in an order no slow transaction can break, as pages and as a resumable SSE stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.config import Settings
from reservations.reservations.tasks import sweep_expired
from tests.support.api import Tenant, _created, _problem, new_tenant, sse_frames
from tests.support.live import LiveServer
from tests.support.servers import wait_for_earlier_transactions

START = "2033-04-04T09:00:00Z"
END = "2033-04-04T10:00:00Z"


def _events(api: Any, after: str | None = None, limit: int = 100) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit}
    if after is not None:
        params["after"] = after
    r = api.get("/v1/events", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _all(api: Any) -> list[dict[str, Any]]:
    return list(_events(api, limit=500)["items"])


def test_every_change_writes_one_event_numbered_per_resource(
    tenant: Tenant, app_client: TestClient
) -> None:
    admin = tenant.admin
    room = admin.resource(name="Events room")
    rid = room["id"]
    assert admin.patch(f"/v1/resources/{rid}", json={"name": "Renamed"}).status_code == 200
    held = _created(admin.book(rid, START, END, hold_seconds=600))
    admin.post(f"/v1/reservations/{held['id']}/confirm")
    r = admin.patch(
        f"/v1/reservations/{held['id']}",
        json={"start": "2033-04-04T11:00:00Z", "end": "2033-04-04T12:00:00Z"},
    )
    assert r.status_code == 200, r.text
    assert (
        admin.patch(f"/v1/reservations/{held['id']}", json={"customer": "c-1"}).status_code == 200
    )
    # A refused create (overlap) and a refused reschedule leave no event: same transaction.
    assert admin.book(rid, "2033-04-04T11:30:00Z", "2033-04-04T12:30:00Z").status_code == 409
    direct = _created(admin.book(rid, START, END))
    assert admin.post(f"/v1/reservations/{direct['id']}/cancel").status_code == 200
    stale = _created(
        admin.book(rid, "2033-04-05T09:00:00Z", "2033-04-05T10:00:00Z", hold_seconds=1)
    )
    time.sleep(1.1)
    app_client.portal.call(sweep_expired, app_client.app.state.services)  # type: ignore[union-attr, attr-defined]

    events = [e for e in _all(admin) if e["resource_id"] == rid]
    assert [(e["type"], e["subject_id"]) for e in events] == [
        ("resource.created", rid),
        ("resource.updated", rid),
        ("reservation.held", held["id"]),
        ("reservation.confirmed", held["id"]),
        ("reservation.rescheduled", held["id"]),
        ("reservation.updated", held["id"]),
        ("reservation.created", direct["id"]),
        ("reservation.cancelled", direct["id"]),
        ("reservation.held", stale["id"]),
        ("reservation.expired", stale["id"]),
    ]
    assert [e["resource_seq"] for e in events] == list(range(1, 11))
    assert events[4]["data"]["start"].startswith("2033-04-04T11:00:00")
    assert events[5]["data"]["customer"] == "c-1"
    assert events[1]["data"]["name"] == "Renamed"


def test_pages_follow_on_and_only_the_tenant_sees_its_events(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = tenant.admin
    rid = admin.resource()["id"]
    for day in range(5):
        _created(admin.book(rid, f"2033-05-0{day + 1}T09:00:00Z", f"2033-05-0{day + 1}T10:00:00Z"))
    first = _events(admin, limit=3)
    second = _events(admin, after=first["next_cursor"], limit=3)
    third = _events(admin, after=second["next_cursor"], limit=3)
    ids = [e["id"] for e in first["items"] + second["items"] + third["items"]]
    assert len(ids) == len(set(ids)) == 6  # resource.created + 5 creates
    assert third["next_cursor"] == second["next_cursor"]  # nothing new: the cursor stays
    assert _events(tenant.viewer)["items"] == _events(admin)["items"]
    assert [e for e in _all(other_tenant.admin) if e["resource_id"] == rid] == []
    # A booker sees where and when, not whose or what: no subject, no customer or metadata.
    booker = _events(tenant.booker)["items"]
    assert [(e["id"], e["type"], e["resource_seq"]) for e in booker] == [
        (e["id"], e["type"], e["resource_seq"]) for e in _events(admin)["items"]
    ]
    for event, full in zip(booker, _events(admin)["items"], strict=True):
        if event["type"].startswith("resource."):
            assert event == full
        else:
            assert "subject_id" not in event or event["subject_id"] is None
            assert event["data"] == {k: full["data"][k] for k in ("start", "end", "status")}
    _problem(admin.get("/v1/events", params={"after": "not-a-cursor"}), 422, "invalid-input")


def test_a_slow_transaction_cannot_be_skipped(tenant: Tenant, settings: Settings) -> None:
    """Event ids are handed out at insert, but transactions commit in any order. A reader that
    followed ids alone would pass over an event committed late; the stream holds back every
    event newer than the oldest running transaction, so it never does."""
    admin = tenant.admin
    rid = admin.resource()["id"]
    # The cursor must stand past rid's own creation: a transaction of another test on the
    # same server (CI's second pass) can hold that event back for a moment.
    wait_for_earlier_transactions(admin.client)
    start = _events(admin)["next_cursor"]
    assert settings.database_url is not None
    slow = psycopg.connect(settings.database_url)
    try:
        # The slow writer's event is written first (smaller id), and not committed.
        slow.execute(
            "UPDATE resource SET name = 'slow', version = version + 1 WHERE id = %s", (rid,)
        )
        # Meanwhile another resource's change commits through the API.
        other = admin.resource(name="fast")["id"]
        with psycopg.connect(settings.database_url) as conn:
            committed = conn.execute(
                "SELECT id FROM event WHERE resource_id = %s", (other,)
            ).fetchall()
            newest_first = conn.execute(
                "SELECT id FROM event WHERE tenant_id = (SELECT tenant_id FROM resource"
                " WHERE id = %s) ORDER BY id DESC LIMIT 1",
                (rid,),
            ).fetchone()
        assert committed
        assert newest_first == committed[-1]
        # The control: an id-ordered reader sees the fast event now, and would move past the
        # slow one. The stream shows nothing yet.
        assert _events(admin, after=start)["items"] == []
        slow.commit()
    finally:
        slow.close()
    items = _events(admin, after=start)["items"]
    assert [(e["type"], e["resource_id"]) for e in items] == [
        ("resource.updated", rid),
        ("resource.created", other),
    ]
    with psycopg.connect(settings.database_url) as conn:
        (slow_id,) = conn.execute(
            "SELECT id FROM event WHERE resource_id = %s AND type = 'resource.updated'", (rid,)
        ).fetchone() or (None,)
    assert slow_id is not None
    assert slow_id < committed[-1][0]  # what a reader following ids would have skipped


def test_concurrent_changes_of_one_resource_get_gapless_numbers(tenant: Tenant) -> None:
    admin = tenant.admin
    rid = admin.resource()["id"]
    made = [
        _created(admin.book(rid, f"2033-06-01T{h:02d}:00:00Z", f"2033-06-01T{h:02d}:30:00Z"))
        for h in range(12)
    ]
    barrier = threading.Barrier(len(made))

    def cancel(row: dict[str, Any]) -> int:
        barrier.wait()
        return admin.post(f"/v1/reservations/{row['id']}/cancel").status_code

    threads = [threading.Thread(target=cancel, args=(row,)) for row in made]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = [e for e in _all(admin) if e["resource_id"] == rid]
    # Gapless and unique. The stream's order is (transaction id, event id), which keeps
    # a slow transaction from being skipped but is not commit order: two cancels may appear
    # with their numbers swapped. resource_seq is the per-resource commit order.
    assert sorted(e["resource_seq"] for e in events) == list(range(1, 26))
    assert sum(e["type"] == "reservation.cancelled" for e in events) == 12


@pytest.mark.slow
def test_the_stream_is_live_and_resumes_after_the_last_event_id(
    live_server: LiveServer, database_url: str
) -> None:
    from tests.support.live import admin_token

    token = admin_token(database_url)
    auth = {"Authorization": f"Bearer {token}"}

    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url, headers=auth, timeout=10) as c:
            r = await c.post("/v1/resources", json={"name": "streamed"})
            rid = r.json()["id"]
            got: list[dict[str, str]] = []

            async def read(after: str | None, n: int) -> None:
                headers = {"Last-Event-ID": after} if after else {}
                async with c.stream("GET", "/v1/events/stream", headers=headers) as s:
                    assert s.status_code == 200
                    assert s.headers["content-type"].startswith("text/event-stream")
                    frame: dict[str, str] = {}
                    async for line in s.aiter_lines():
                        if line == "":
                            if "id" in frame:
                                got.append(frame)
                                if len(got) >= n:
                                    return
                            frame = {}
                        elif not line.startswith(":"):
                            field, _, value = line.partition(": ")
                            frame[field] = value

            reader = asyncio.create_task(read(None, 3))
            await asyncio.sleep(0.5)
            for h in (9, 11):  # two live events arrive while the stream is open
                r = await c.post(
                    "/v1/reservations",
                    json={
                        "resource_id": rid,
                        "start": f"2033-07-01T{h:02d}:00:00Z",
                        "end": f"2033-07-01T{h + 1:02d}:00:00Z",
                    },
                )
                assert r.status_code == 201
            await asyncio.wait_for(reader, 10)
            assert [f["event"] for f in got] == [
                "resource.created",
                "reservation.created",
                "reservation.created",
            ]
            # Reconnect after the first: the other two again, nothing twice, nothing lost.
            r = await c.delete(f"/v1/resources/{rid}", params={"cancel_reservations": "true"})
            assert r.status_code == 204, r.text
            resumed_from = got[0]["id"]
            got.clear()
            await asyncio.wait_for(read(resumed_from, 3 + 2), 10)
            assert [f["event"] for f in got] == [
                "reservation.created",
                "reservation.created",
                "reservation.cancelled",
                "reservation.cancelled",
                "resource.archived",
            ]

    asyncio.run(main())


def test_a_new_tenant_starts_with_an_empty_stream(app_client: TestClient) -> None:
    fresh = new_tenant(app_client)
    page = _events(fresh.admin)
    assert page == {"items": [], "next_cursor": None}


def test_the_stream_can_start_at_the_end_and_resume_from_there(
    live_server: LiveServer, database_url: str
) -> None:
    """`after=now` (what the booking page uses): no history, an id-only first frame naming
    where it started, and a reconnect from that id misses nothing committed in between."""
    from tests.support.live import admin_token

    token = admin_token(database_url)
    auth = {"Authorization": f"Bearer {token}"}

    async def main() -> None:
        async with httpx.AsyncClient(base_url=live_server.url, headers=auth, timeout=10) as c:
            r = await c.post("/v1/resources", json={"name": "history before now"})
            rid = r.json()["id"]
            (start,) = await asyncio.wait_for(sse_frames(c, 1, params={"after": "now"}), 10)
            assert set(start) == {"id"}  # where it started; no event of the history
            r = await c.post(
                "/v1/reservations",
                json={"resource_id": rid, "start": START, "end": END},
            )
            assert r.status_code == 201
            got = await asyncio.wait_for(
                sse_frames(c, 1, headers={"Last-Event-ID": start["id"]}), 10
            )
            assert [(f["event"], json.loads(f["data"])["subject_id"]) for f in got] == [
                ("reservation.created", r.json()["id"])
            ]
            r = await c.get("/v1/events/stream", params={"after": "later"})
            assert r.status_code == 422

    asyncio.run(main())


def test_the_outbox_is_read_in_txid_order_not_in_its_texts(app_client: TestClient) -> None:
    """Transaction ids 9 and 10 (written as such: both long finished), of a tenant of their
    own: every reader of the outbox takes 9 first and names 10 the last, though "10" < "9" as
    text, which is how the readers' `txid::text AS txid` column sorts if ORDER BY names it."""
    from reservations.events import repository as events
    from reservations.webhooks import queue

    svc = app_client.app.state.services  # type: ignore[attr-defined]
    tenant_id, rid = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(svc.settings.database_url, autocommit=True) as conn:
        for seq, txid in ((1, 9), (2, 10)):
            conn.execute(
                "INSERT INTO event (tenant_id, resource_id, resource_seq, type, subject_id, data,"
                " txid) VALUES (%s, %s, %s, 'resource.updated', %s, '{}', %s::text::xid8)",
                (tenant_id, rid, seq, rid, str(txid)),
            )

    async def read() -> tuple[Any, ...]:
        async with svc.db.connection() as conn:
            first = await events.after(conn, tenant_id=tenant_id, cursor=None, limit=1)
            last = await events.head(conn, tenant_id=tenant_id)
            queued = await queue.outbox_after(
                conn, tenant_id=tenant_id, after_txid="0", after_id=0, limit=1
            )
            ranges = await events.ranges_after(
                conn, position=events.PositionRow(txid="8", id=0), limit=1
            )
        return first, last, queued, ranges

    first, last, queued, ranges = app_client.portal.call(read)  # type: ignore[union-attr]
    assert [e.txid for e in first] == ["9"]
    assert last is not None
    assert last.txid == "10"
    assert [e.txid for e in queued] == ["9"]
    assert [e.txid for e in ranges] == ["9"]
