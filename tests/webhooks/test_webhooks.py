"""Webhooks: endpoints registered through the API, events fanned out from the outbox and
delivered by real dispatcher loops to real HTTP receivers on loopback; signatures checked
with the Standard Webhooks library, retries, per-resource order, several dispatchers,
disabling, giving up, and the SSRF guard at registration and at delivery.

The delivery tests share one database of their own (a dispatcher works on every endpoint
of its database; the suite's shared database holds endpoints of other tests) and an app
that allows loopback receivers. Each test deletes its endpoints when it ends."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from reservations import wiring, worker
from reservations.app import create_app
from reservations.context import Context
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.webhooks import addresses, fanout, queue
from tests.support.api import Tenant, _created, _problem, new_tenant
from tests.support.pgbouncer import start_pgbouncer
from tests.support.servers import (
    THROUGH_PGBOUNCER,
    PgServer,
    make_settings,
    wait_for_earlier_transactions,
)
from tests.support.webhooks import Received, Receiver

# Dispatchers in these tests: quick rounds, retries within tenths of a second.
FAST: dict[str, Any] = {
    "webhooks_allow_private": True,
    "webhooks_interval_seconds": 0.05,
    "webhooks_backoff_base_seconds": 0.05,
    "webhooks_backoff_max_seconds": 0.2,
    "webhooks_timeout_seconds": 2.0,
}


# --------------------------------------------------------------------------------------------
# a real receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --------------------------------------------------------------------------------------------
# the world: a database, an app that allows loopback receivers, dispatcher loops


@dataclass
class Hooks:
    client: TestClient
    url: str  # what the app and the dispatchers connect to
    direct_url: str  # the database itself (for sessions the tests hold open)

    @property
    def svc(self) -> Context:
        svc: Context = self.client.app.state.services  # type: ignore[attr-defined]
        return svc

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.direct_url) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture(scope="module")
def hooks(pg_server: PgServer) -> Iterator[Hooks]:
    url = pg_server.create_database("rsv_hooks")
    bouncer = start_pgbouncer(url, pool_size=6) if THROUGH_PGBOUNCER else None
    app_url = bouncer.url(urlparse(url).path.lstrip("/")) if bouncer else url
    settings = make_settings(app_url, redis_url="none", **FAST)
    try:
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            yield Hooks(client=client, url=app_url, direct_url=url)
    finally:
        if bouncer:
            bouncer.stop()
        pg_server.drop_database(url)


@pytest.fixture
def t(hooks: Hooks) -> Iterator[Tenant]:
    """A fresh tenant in the webhook database; its endpoints are deleted afterwards, so no
    later test's dispatcher works on them."""
    tenant = new_tenant(hooks.client)
    yield tenant
    for item in tenant.admin.get("/v1/webhooks", params={"limit": 500}).json()["items"]:
        tenant.admin.delete(f"/v1/webhooks/{item['id']}")


@dataclass
class Dispatchers:
    """`count` dispatcher loops, each with its own connection pool (as separate workers
    have), on an event loop in a thread of their own."""

    url: str
    count: int = 1
    overrides: dict[str, Any] = field(default_factory=dict)
    # The whole worker loop (worker.run_forever: sweeps and webhooks), not the webhook loop alone.
    worker: bool = False
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = make_settings(
            self.url, redis_url="none", db_pool_max=4, **{**FAST, **self.overrides}
        )
        self.started = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        dbs = [Database(self.url, self.settings) for _ in range(self.count)]
        for db in dbs:
            await db.open()
        run = worker.run_forever if self.worker else worker.deliver_webhooks_forever
        loops = [asyncio.create_task(run(wiring.build(self.settings, db, Clock()))) for db in dbs]
        self.started.set()
        await self.stop.wait()
        for task in loops:
            if task.done() and not task.cancelled() and task.exception():
                self.errors.append(task.exception())  # type: ignore[arg-type]
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for db in dbs:
            await db.close()

    def __enter__(self) -> Dispatchers:
        self.thread.start()
        assert self.started.wait(30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        assert not self.errors, self.errors


def dispatching(
    hooks: Hooks, count: int = 1, *, worker: bool = False, **overrides: Any
) -> Dispatchers:
    return Dispatchers(hooks.url, count, overrides, worker=worker)


def wait_until(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def register(api: Any, url: str, **fields: Any) -> dict[str, Any]:
    r = api.post("/v1/webhooks", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def log_of(api: Any, webhook_id: str) -> list[dict[str, Any]]:
    r = api.get(f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 500})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def book(api: Any, room: str, n: int, **fields: Any) -> dict[str, Any]:
    """The n-th of a series of non-overlapping hours on one day far ahead."""
    day, hour = divmod(n, 20)
    start = f"2034-01-{day + 1:02d}T{hour:02d}:00:00Z"
    end = f"2034-01-{day + 1:02d}T{hour:02d}:30:00Z"
    return _created(api.book(room, start, end, **fields))


def assert_in_order(received: list[Received], expected: dict[str, int]) -> None:
    """Each request is the next message of its resource: never one before the previous
    one was answered 2xx; each message delivered once; every resource complete."""
    done: dict[str, int] = {}
    delivered_ids: list[str] = []
    for r in received:
        body = r.payload
        rid, seq = body["resource_id"], body["resource_seq"]
        assert seq == done.get(rid, 0) + 1, (rid, seq, done.get(rid))
        if 200 <= r.status < 300:
            done[rid] = seq
            delivered_ids.append(r.msg_id)
    assert done == expected
    assert len(delivered_ids) == len(set(delivered_ids))


# --------------------------------------------------------------------------------------------
# delivery


def test_deliveries_are_signed_and_only_events_after_registration_arrive(
    hooks: Hooks, t: Tenant, receiver: Receiver
) -> None:
    admin = t.admin
    before = admin.resource(name="before")  # its events predate the endpoint
    hook = register(admin, receiver.url, description="all events")
    assert hook["secret"].startswith("whsec_")
    assert hook["enabled"] is True
    assert hook["event_types"] == []
    only = Receiver()
    try:
        narrow = register(admin, only.url, event_types=["reservation.created", "resource.*"])
        room = admin.resource(name="after")
        made = book(admin, room["id"], 0)
        held = book(admin, room["id"], 1, hold_seconds=600)
        assert admin.post(f"/v1/reservations/{held['id']}/cancel").status_code == 200
        with dispatching(hooks, worker=True):  # `reservations worker` runs this loop
            wait_until(lambda: len(receiver.delivered()) == 4, what="4 deliveries")
            wait_until(lambda: len(only.delivered()) == 2, what="2 filtered deliveries")
            wait_until(lambda: len(log_of(admin, hook["id"])) == 4, what="the log")
        got = receiver.snapshot()
        assert [r.payload["type"] for r in got] == [
            "resource.created",
            "reservation.created",
            "reservation.held",
            "reservation.cancelled",
        ]
        assert {r.payload["resource_id"] for r in got} == {room["id"]}
        assert [r.payload["type"] for r in only.snapshot()] == [
            "resource.created",
            "reservation.created",
        ]
        # The standard's own library accepts every signature, with the secret shown once.
        wh = Webhook(hook["secret"])
        for r in got:
            assert wh.verify(r.body, r.headers) == r.payload
            assert r.headers["webhook-id"].startswith("msg_")
            assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 60
            assert r.headers["content-type"] == "application/json"
        # Control: a changed body, or another endpoint's secret, does not verify.
        with pytest.raises(WebhookVerificationError):
            wh.verify(got[1].body.replace(b"created", b"cancelld"), got[1].headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(narrow["secret"]).verify(got[1].body, got[1].headers)
        # The payload names the event as /v1/events does, with the object after the change.
        events = [
            e
            for e in admin.get("/v1/events", params={"limit": 500}).json()["items"]
            if e["resource_id"] == room["id"]
        ]
        assert [r.payload["id"] for r in got] == [e["id"] for e in events]
        assert [r.payload["resource_seq"] for r in got] == [1, 2, 3, 4]
        assert got[1].payload["data"]["id"] == made["id"]
        assert got[1].payload["subject_id"] == made["id"]
        assert got[3].payload["data"]["status"] == "cancelled"
        assert before["id"] not in {r.payload["resource_id"] for r in got + only.snapshot()}
    finally:
        only.close()
    # The secret is shown once only; the log says what happened.
    shown = admin.get(f"/v1/webhooks/{hook['id']}")
    assert shown.status_code == 200
    assert "secret" not in shown.json()
    assert shown.headers["etag"] == '"1"'
    log = log_of(admin, hook["id"])
    assert len(log) == 4
    assert [a["event_type"] for a in log] == [
        "reservation.cancelled",
        "reservation.held",
        "reservation.created",
        "resource.created",
    ]  # newest first
    for a in log:
        assert a["outcome"] == "delivered"
        assert a["message_status"] == "delivered"
        assert a["status_code"] == 200
        assert a["attempt"] == 1
        assert a["error"] is None
        assert isinstance(a["latency_ms"], int)
        assert a["latency_ms"] >= 0
    assert {a["message_id"] for a in log} == {r.msg_id for r in got}
    assert [a["event_id"] for a in reversed(log)] == [r.payload["id"] for r in got]


def test_failed_attempts_are_retried_with_the_same_webhook_id(hooks: Hooks, t: Tenant) -> None:
    answers = iter([500, 503, 200])
    rx = Receiver(lambda _: next(answers, 200))
    try:
        hook = register(t.admin, rx.url, event_types=["resource.created"])
        t.admin.resource()
        with dispatching(hooks):
            wait_until(lambda: rx.delivered(), what="the delivery")
            time.sleep(0.3)  # nothing more should come
        got = rx.snapshot()
        assert [r.status for r in got] == [500, 503, 200]
        assert len({r.msg_id for r in got}) == 1
        assert len({r.body for r in got}) == 1
        wh = Webhook(hook["secret"])
        for r in got:
            wh.verify(r.body, r.headers)
        log = log_of(t.admin, hook["id"])
        assert [(a["attempt"], a["outcome"], a["status_code"]) for a in reversed(log)] == [
            (1, "failed", 500),
            (2, "failed", 503),
            (3, "delivered", 200),
        ]
        assert {a["message_id"] for a in log} == {got[0].msg_id}
        assert all(a["message_status"] == "delivered" for a in log)
        assert log[2]["error"] == "HTTP 500"
        assert log[2]["next_attempt_at"] is not None
        assert log[0]["next_attempt_at"] is None
        # A success ends the failure streak.
        shown = t.admin.get(f"/v1/webhooks/{hook['id']}").json()
        assert shown["consecutive_failures"] == 0
        assert shown["failing_since"] is None
    finally:
        rx.close()


def test_events_of_a_resource_arrive_in_order_through_failures(hooks: Hooks, t: Tenant) -> None:
    """Two busy resources, a receiver that fails a third of first attempts and is slow:
    every resource's events arrive in resource_seq order, none missing, none twice."""
    tries: dict[str, int] = {}

    def flaky(r: Received) -> int:
        tries[r.msg_id] = tries.get(r.msg_id, 0) + 1
        time.sleep(0.005)
        return 500 if tries[r.msg_id] == 1 and hash(r.msg_id) % 3 == 0 else 200

    rx = Receiver(flaky)
    try:
        register(t.admin, rx.url)
        rooms = [t.admin.resource(name=f"busy {i}")["id"] for i in range(2)]
        with dispatching(hooks, webhooks_concurrency=8):
            made = []
            for n in range(12):
                for room in rooms:
                    made.append(book(t.admin, room, n))
            for row in made[:12]:  # six of each room
                assert t.admin.post(f"/v1/reservations/{row['id']}/cancel").status_code == 200
            expected = {room: 1 + 12 + 6 for room in rooms}
            wait_until(lambda: len(rx.delivered()) == sum(expected.values()), 30, "every delivery")
            time.sleep(0.2)
        assert any(r.status == 500 for r in rx.snapshot())  # failures did happen
        assert_in_order(rx.snapshot(), expected)
    finally:
        rx.close()


def test_an_event_read_before_an_earlier_one_of_its_resource_waits_for_it(
    hooks: Hooks, t: Tenant, receiver: Receiver
) -> None:
    """The outbox order (txid, id) is not commit order. Transaction A takes its txid first,
    C next, B last; B changes the room and commits, then A changes it and commits, while C
    is still open. The outbox then shows A's event (seq 4) but holds B's (seq 3) back until
    C ends. The fan-out must queue both at once, and the dispatcher deliver 3 before 4."""
    hook = register(t.admin, receiver.url)
    room = t.admin.resource(name="racy")["id"]  # seq 1
    t.admin.patch(f"/v1/resources/{room}", json={"name": "first change"})  # seq 2

    def after_the_first_change() -> str | None:
        # Another session's open transaction can hold seq 1 and 2 back for a moment (the same
        # rule this test is about); a cursor taken before they show would read them again.
        body = t.admin.get("/v1/events", params={"limit": 500}).json()
        seen = any(e["resource_seq"] == 2 for e in body["items"] if e["resource_id"] == room)
        return str(body["next_cursor"]) if seen else None

    cursor = wait_until(after_the_first_change, what="the first change's event")
    change = "UPDATE resource SET name = %s, version = version + 1 WHERE id = %s"
    a = psycopg.connect(hooks.direct_url)
    b = psycopg.connect(hooks.direct_url)
    c = psycopg.connect(hooks.direct_url)
    try:
        a.execute("SELECT pg_current_xact_id()")
        c.execute("SELECT pg_current_xact_id()")
        b.execute("SELECT pg_current_xact_id()")
        b.execute(change, ("by B", room))  # seq 3
        b.commit()
        a.execute(change, ("by A", room))  # seq 4
        a.commit()
        # Control: the outbox shows A's change and holds B's back (a reader that queued what
        # it sees would deliver seq 4 first). Other sessions' transactions may hold A's back
        # for a moment too.
        page = wait_until(
            lambda: t.admin.get("/v1/events", params={"after": cursor}).json()["items"],
            what="A's event",
        )
        assert [(e["data"]["name"], e["resource_seq"]) for e in page] == [("by A", 4)]
        hooks.client.portal.call(fanout.fan_out, hooks.svc)  # type: ignore[union-attr]
        queued = hooks.sql(
            "SELECT resource_seq FROM webhook_delivery WHERE endpoint_id = %s ORDER BY 1",
            hook["id"],
        )
        assert [q[0] for q in queued] == [1, 2, 3, 4]
    finally:
        c.commit()
        for conn in (a, b, c):
            conn.close()
    with dispatching(hooks):
        wait_until(lambda: len(receiver.delivered()) == 4, what="4 deliveries")
    assert [(r.payload["resource_seq"], r.payload["data"]["name"]) for r in receiver.snapshot()][
        2:
    ] == [(3, "by B"), (4, "by A")]
    # Read again later through the cursor, B's event is not queued a second time.
    hooks.client.portal.call(fanout.fan_out, hooks.svc)  # type: ignore[union-attr]
    assert (
        hooks.sql("SELECT count(*) FROM webhook_delivery WHERE endpoint_id = %s", hook["id"])[0][0]
        == 4
    )


def test_two_dispatchers_share_the_work_without_double_delivery(hooks: Hooks, t: Tenant) -> None:
    def slowish(_: Received) -> int:
        time.sleep(0.01)
        return 200

    rx = Receiver(slowish)
    try:
        register(t.admin, rx.url + "/one")
        register(t.admin, rx.url + "/two")
        rooms = [t.admin.resource(name=f"shared {i}")["id"] for i in range(4)]
        for n in range(6):
            for room in rooms:
                book(t.admin, room, n)
        with dispatching(hooks, count=2, webhooks_concurrency=4):
            wait_until(lambda: len(rx.delivered()) == 2 * 4 * 7, 30, "every delivery")
            time.sleep(0.3)
        got = rx.snapshot()
        # No failures were injected, so each message was sent exactly once.
        assert len(got) == len({r.msg_id for r in got}) == 56
        for path in ("/hook/one", "/hook/two"):
            mine = [r for r in got if r.path == path]
            assert_in_order(mine, {room: 7 for room in rooms})
    finally:
        rx.close()


def test_a_claim_is_exclusive_while_held_and_after_commit(hooks: Hooks, t: Tenant) -> None:
    """The claim's two guards, one at a time: a claim in progress is skipped (SKIP LOCKED),
    a committed claim is leased. And the control: without the lease a message is claimed
    again."""
    register(t.admin, "http://127.0.0.1:9/unused")
    for i in range(3):
        t.admin.resource(name=f"claim {i}")
    wait_for_earlier_transactions(hooks.client)  # the fan-out reads only settled events
    hooks.client.portal.call(fanout.fan_out, hooks.svc)  # type: ignore[union-attr]

    async def scenario() -> tuple[int, int, int, int]:
        db = Database(hooks.url, hooks.svc.settings)
        await db.open()
        try:
            async with db.transaction() as first:
                mine = await queue.claim(first, claim_id=_uuid(), limit=2, lease_seconds=60)
                async with db.transaction() as second:
                    theirs = await queue.claim(second, claim_id=_uuid(), limit=10, lease_seconds=60)
            async with db.transaction() as third:
                after = await queue.claim(third, claim_id=_uuid(), limit=10, lease_seconds=60)
            async with db.transaction() as conn:  # control: the leases run out
                await conn.execute("UPDATE webhook_delivery SET locked_until = now()")
            async with db.transaction() as fourth:
                again = await queue.claim(fourth, claim_id=_uuid(), limit=10, lease_seconds=0)
            return len(mine), len(theirs), len(after), len(again)
        finally:
            await db.close()

    assert asyncio.run(scenario()) == (2, 1, 0, 3)


def _uuid() -> Any:
    from reservations.kit.ids import uuid7

    return uuid7()


# --------------------------------------------------------------------------------------------
# failure: disabling, giving up, addresses that turn private


def test_sustained_failure_disables_the_endpoint_and_enabling_resumes(
    hooks: Hooks, t: Tenant
) -> None:
    status = {"code": 500}
    rx = Receiver(lambda _: status["code"])
    try:
        hook = register(t.admin, rx.url)
        room = t.admin.resource(name="down")["id"]
        book(t.admin, room, 0)
        overrides = {"webhooks_disable_after_seconds": 0.3, "webhooks_disable_after_failures": 3}
        with dispatching(hooks, **overrides):
            shown = wait_until(
                lambda: (
                    (s := t.admin.get(f"/v1/webhooks/{hook['id']}").json())["enabled"] is False
                    and s
                ),
                what="the endpoint to be disabled",
            )
            assert shown["disabled_at"] is not None
            assert "Disabled automatically" in shown["disabled_reason"]
            assert "HTTP 500" in shown["disabled_reason"]
            assert shown["consecutive_failures"] >= 3
            assert shown["version"] == 2
            # Deliveries stop; events keep queueing.
            time.sleep(0.15)
            count = len(rx.snapshot())
            book(t.admin, room, 1)
            time.sleep(0.5)
            assert len(rx.snapshot()) == count
            assert all(r.status == 500 for r in rx.snapshot())
            # The receiver is fixed and the endpoint re-enabled: everything arrives, in order.
            status["code"] = 200
            r = t.admin.patch(
                f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers={"If-Match": '"2"'}
            )
            assert r.status_code == 200, r.text
            assert r.json()["enabled"] is True
            assert r.json()["disabled_reason"] is None
            wait_until(lambda: len(rx.delivered()) == 3, what="the backlog")
        assert_in_order(rx.snapshot(), {room: 3})
        # An admin can pause it too, and says so.
        r = t.admin.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": False})
        assert r.json()["enabled"] is False
        assert "admin" in r.json()["disabled_reason"]
    finally:
        rx.close()


def test_a_message_is_given_up_and_the_next_of_its_resource_goes_on(
    hooks: Hooks, t: Tenant
) -> None:
    poisoned: set[str] = set()

    def refuse_first(r: Received) -> int:
        if r.payload["resource_seq"] == 2:
            poisoned.add(r.msg_id)
            return 410
        return 200

    rx = Receiver(refuse_first)
    try:
        hook = register(t.admin, rx.url)
        room = t.admin.resource(name="poison")["id"]
        book(t.admin, room, 0)
        book(t.admin, room, 1)
        with dispatching(hooks, webhooks_give_up_after_seconds=0.4):
            wait_until(lambda: len(rx.delivered()) == 2, what="the events after the dead one")
        seqs = [(r.payload["resource_seq"], r.status) for r in rx.snapshot()]
        assert seqs[0] == (1, 200)
        assert seqs[-1] == (3, 200)
        assert {s for s, _ in seqs[1:-1]} == {2}
        assert len(seqs) >= 4
        log = log_of(t.admin, hook["id"])
        dead = [a for a in log if a["outcome"] == "dead"]
        assert len(dead) == 1
        assert dead[0]["resource_seq"] == 2
        assert dead[0]["message_status"] == "dead"
        assert dead[0]["status_code"] == 410
        assert len(poisoned) == 1
    finally:
        rx.close()


def test_delivery_checks_the_address_again(hooks: Hooks, t: Tenant, receiver: Receiver) -> None:
    """Registered while private receivers were allowed, delivered by a worker that refuses
    them: nothing reaches the receiver, and the log says why (the host resolves to loopback
    now; plain http is refused as well)."""
    port = urlparse(receiver.url).port
    secure = register(t.admin, f"https://localhost:{port}/hook")
    plain = register(t.admin, receiver.url)
    t.admin.resource(name="rebound")
    with dispatching(hooks, webhooks_allow_private=False):
        logs = wait_until(
            lambda: all(logs := [log_of(t.admin, h["id"]) for h in (secure, plain)]) and logs,
            what="an attempt at each",
        )
    assert receiver.snapshot() == []
    for log in logs:
        assert log[-1]["outcome"] == "failed"
        assert log[-1]["status_code"] is None
        assert log[-1]["error"].startswith("refused: ")
    assert "resolves to" in logs[0][-1]["error"]
    assert "loopback" in logs[0][-1]["error"]
    assert "https" in logs[1][-1]["error"]


def test_test_message_is_delivered_and_verifies(
    hooks: Hooks, t: Tenant, receiver: Receiver
) -> None:
    hook = register(t.admin, receiver.url, event_types=["resource.archived"])
    r = t.admin.post(f"/v1/webhooks/{hook['id']}/test")
    assert r.status_code == 202, r.text
    message = r.json()
    assert message["status"] == "pending"
    assert message["message_id"].startswith("msg_")
    with dispatching(hooks):
        wait_until(lambda: receiver.delivered(), what="the test message")
    (got,) = receiver.snapshot()
    assert got.msg_id == message["message_id"]
    body = Webhook(hook["secret"]).verify(got.body, got.headers)
    assert body["type"] == "webhook.test"
    assert body["data"]["endpoint_id"] == hook["id"]
    (entry,) = log_of(t.admin, hook["id"])
    assert entry["event_type"] == "webhook.test"
    assert entry["event_id"] is None


# --------------------------------------------------------------------------------------------
# the API: addresses, roles, tenants, validation


REFUSED = [
    "http://127.0.0.1/hook",
    "https://127.0.0.1/hook",
    "https://127.1.2.3:8443/",
    "https://10.0.0.8/",
    "https://172.16.5.4/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://224.0.0.1/",
    "https://[::1]/",
    "https://[fd00::1]/",
    "https://[fe80::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:a9fe:a9fe]/",
    "https://[64:ff9b::a00:1]/",
    "https://2130706433/",  # 127.0.0.1 as one number: the resolver's answer is checked
    "https://0x7f.1/",
    "https://localhost/",
    "https://localhost./hook",
    "http://93.184.215.14/",  # public, but plain http
    "ftp://93.184.215.14/",
    "https://user:pw@93.184.215.14/",
    "https:///nohost",
    "not a url",
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_and_malformed_urls_are_refused_by_default(tenant: Tenant, url: str) -> None:
    body = _problem(tenant.admin.post("/v1/webhooks", json={"url": url}), 422, "invalid-input")
    assert [e["field"] for e in body["errors"]] == ["url"]
    # A scheme other than http(s) breaks the documented pattern (pydantic's wording); the
    # address rules are the service's ("The url ...").
    assert "url" in body["detail"]


def test_public_urls_are_accepted_and_private_ones_only_when_allowed(
    tenant: Tenant, t: Tenant
) -> None:
    for url in ("https://93.184.215.14/hook", "https://[2606:4700:4700::1111]:8443/in?x=1"):
        assert register(tenant.admin, url)["url"] == url
    # A private URL PATCHed over a public one is refused the same way.
    hook = register(tenant.admin, "https://93.184.215.14/")
    r = tenant.admin.patch(f"/v1/webhooks/{hook['id']}", json={"url": "https://10.0.0.1/"})
    assert _problem(r, 422, "invalid-input")["errors"][0]["field"] == "url"
    # t's app allows private receivers (tests): loopback and plain http pass.
    for url in ("http://127.0.0.1:9/hook", "http://localhost:9/", "http://[::1]:9/"):
        assert register(t.admin, url)["url"] == url
    assert _problem(t.admin.post("/v1/webhooks", json={"url": "ftp://x/"}), 422, "invalid-input")


def test_address_rules() -> None:
    import ipaddress

    public = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"]
    private = {
        "127.0.0.1": "loopback",
        "10.1.1.1": "private",
        "100.100.1.1": "carrier-grade NAT",
        "169.254.169.254": "link-local",
        "::1": "loopback",
        "fd12::1": "unique local",
        "fe80::1": "link-local",
        "::ffff:8.8.8.8": "IPv4-mapped",
        "2002:808:808::1": "6to4",
        "2001::1": "Teredo",
        "ff02::1": "multicast",
        "239.1.1.1": "multicast",
        "255.255.255.255": "reserved",
        "198.18.0.1": "benchmarking",
        "192.0.2.1": "documentation",
    }
    for ip in public:
        assert addresses.refusal(ipaddress.ip_address(ip)) is None, ip
    for ip, why in private.items():
        reason = addresses.refusal(ipaddress.ip_address(ip))
        assert why in (reason or ""), (ip, reason)
    target = addresses.parse("https://Example.COM:8443/a/b?c=d", allow_private=False)
    assert (target.host, target.port, target.path) == ("example.com", 8443, "/a/b?c=d")
    assert target.host_header == "example.com:8443"
    assert (
        target.url_for(ipaddress.ip_address("2606:4700::1"))
        == "https://[2606:4700::1]:8443/a/b?c=d"
    )


def test_only_admins_and_only_their_tenant(t: Tenant, hooks: Hooks) -> None:
    hook = register(t.admin, "http://127.0.0.1:9/")
    path = f"/v1/webhooks/{hook['id']}"
    for api in (t.booker, t.viewer):
        _problem(api.get("/v1/webhooks"), 403, "forbidden")
        _problem(api.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/"}), 403, "forbidden")
        _problem(api.get(path), 403, "forbidden")
        _problem(api.patch(path, json={"enabled": False}), 403, "forbidden")
        _problem(api.delete(path), 403, "forbidden")
        _problem(api.get(path + "/deliveries"), 403, "forbidden")
        _problem(api.post(path + "/test"), 403, "forbidden")
    other = new_tenant(hooks.client)
    unknown = "/v1/webhooks/0190f5c2-0000-7000-8000-000000000000"
    for p in (path, unknown):
        _problem(other.admin.get(p), 404, "not-found")
        _problem(other.admin.patch(p, json={"enabled": False}), 404, "not-found")
        _problem(other.admin.delete(p), 404, "not-found")
        _problem(other.admin.get(p + "/deliveries"), 404, "not-found")
        _problem(other.admin.post(p + "/test"), 404, "not-found")
    assert other.admin.get("/v1/webhooks").json() == {"items": [], "next_cursor": None}
    assert t.admin.get(path).json()["enabled"] is True  # nothing changed
    _problem(t.admin.get("/v1/webhooks/not-a-uuid"), 422, "invalid-input")


def test_validation_versions_and_pages(t: Tenant) -> None:
    admin = t.admin
    r = admin.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "event_types": ["nope"]})
    assert _problem(r, 422, "invalid-input")["errors"][0]["field"].startswith("event_types")
    r = admin.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/", "secret": "mine"})
    _problem(r, 422, "invalid-input")
    made = [
        register(admin, f"http://127.0.0.1:9/{i}", event_types=["reservation.*", "reservation.*"])
        for i in range(3)
    ]
    assert made[0]["event_types"] == ["reservation.*"]
    first = admin.get("/v1/webhooks", params={"limit": 2}).json()
    second = admin.get("/v1/webhooks", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [h["id"] for h in first["items"] + second["items"]] == [h["id"] for h in made]
    assert second["next_cursor"] is None
    path = f"/v1/webhooks/{made[0]['id']}"
    r = admin.patch(path, json={"description": "renamed"}, headers={"If-Match": '"1"'})
    assert r.status_code == 200
    assert r.json()["version"] == 2
    assert r.headers["etag"] == '"2"'
    r = admin.patch(path, json={"description": "stale"}, headers={"If-Match": '"1"'})
    assert _problem(r, 412, "precondition-failed")["current_version"] == 2
    r = admin.patch(path, json={"event_types": []})
    assert r.json()["event_types"] == []
    assert r.json()["description"] == "renamed"
    _problem(admin.get(path + "/deliveries", params={"cursor": "bad"}), 422, "invalid-input")
    assert admin.delete(path).status_code == 204
    _problem(admin.get(path), 404, "not-found")


def test_openapi_documents_the_webhook_routes(app_client: TestClient) -> None:
    doc = app_client.get("/openapi.json").json()
    for path, method in [
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{webhook_id}", "get"),
        ("/v1/webhooks/{webhook_id}", "patch"),
        ("/v1/webhooks/{webhook_id}", "delete"),
        ("/v1/webhooks/{webhook_id}/deliveries", "get"),
        ("/v1/webhooks/{webhook_id}/test", "post"),
    ]:
        responses = doc["paths"][path][method]["responses"]
        assert "application/problem+json" in responses["403"]["content"], (path, method)
    assert "secret" in doc["components"]["schemas"]["WebhookCreated"]["properties"]
    assert "secret" not in doc["components"]["schemas"]["WebhookRead"]["properties"]
