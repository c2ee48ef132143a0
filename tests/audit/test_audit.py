"""The audit log: every change of resources, reservations, bookings, keys and feeds is
recorded by the database with who did it (the API key, a job, or nobody for plain SQL) and
the row before and after; it cannot be changed; a sealer hash-chains it without making
writers wait; `reservations audit verify` finds where a superuser tampered with it."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import errors as pg_errors
from typer.testing import CliRunner

from reservations import cli
from reservations.app import create_app
from reservations.audit import chain
from reservations.audit import service as audit_service
from reservations.audit import tasks as audit_tasks
from reservations.audit.repository import AuditTextRow
from reservations.context import Context
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.reservations.tasks import sweep_expired
from reservations.tenancy.service import Role
from tests.support.api import Api, Tenant, _created, _problem, new_tenant
from tests.support.pgbouncer import start_pgbouncer
from tests.support.servers import THROUGH_PGBOUNCER, PgServer, RedisServer, make_settings

START, END = "2034-02-01T09:00:00Z", "2034-02-01T10:00:00Z"


def _key_id(url: str, token: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT id::text FROM api_key WHERE prefix = %s", (token.split("_")[1],)
        ).fetchone()
    assert row is not None
    return str(row[0])


def _audit(api: Api, **params: Any) -> list[dict[str, Any]]:
    r = api.get("/v1/audit", params={"limit": 500, **params})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_changes_are_recorded_with_actor_request_and_before_after(
    tenant: Tenant, other_tenant: Tenant, app_client: TestClient
) -> None:
    svc: Context = app_client.app.state.services  # type: ignore[attr-defined]
    url = svc.settings.database_url
    assert url is not None
    admin, booker = tenant.admin, tenant.booker
    admin_id, booker_id = _key_id(url, admin.token), _key_id(url, booker.token)

    r = admin.post("/v1/resources", json={"name": "Audited"}, headers={"X-Request-ID": "req-1"})
    room = _created(r)["id"]
    assert admin.patch(f"/v1/resources/{room}", json={"name": "Renamed"}).status_code == 200
    held = _created(booker.book(room, START, END, hold_seconds=600))
    assert booker.post(f"/v1/reservations/{held['id']}/confirm").status_code == 200
    short = _created(booker.book(room, "2034-02-02T09:00:00Z", "2034-02-02T10:00:00Z",
                                 hold_seconds=1))  # fmt: skip
    time.sleep(1.1)
    app_client.portal.call(sweep_expired, svc)  # type: ignore[union-attr]
    with psycopg.connect(url) as conn:  # outside the application: nobody to name
        conn.execute("UPDATE reservation SET metadata = '{\"by\": \"sql\"}' WHERE id = %s",
                     (held["id"],))  # fmt: skip

    resource_rows = _audit(admin, object_id=room)
    assert [(e["action"], e["actor"], e["actor_key_prefix"]) for e in resource_rows] == [
        ("update", admin_id, admin.token.split("_")[1]),
        ("insert", admin_id, admin.token.split("_")[1]),
    ]  # newest first
    update, insert = resource_rows
    assert insert["request_id"] == "req-1" == r.headers["x-request-id"]
    assert insert["before"] is None
    assert insert["after"]["name"] == "Audited"
    assert update["before"]["name"] == "Audited"
    assert update["after"]["name"] == "Renamed"
    assert update["object_type"] == "resource"

    held_rows = _audit(admin, object_id=held["id"])
    assert [(e["action"], e["actor"]) for e in held_rows] == [
        ("update", None),
        ("update", booker_id),
        ("insert", booker_id),
    ]
    assert held_rows[0]["after"]["metadata"] == {"by": "sql"}
    assert (held_rows[1]["before"]["status"], held_rows[1]["after"]["status"]) == (
        "held", "confirmed",
    )  # fmt: skip
    expired = _audit(admin, object_id=short["id"])[0]
    assert expired["actor"] == "system:sweeper"
    assert expired["after"]["status"] == "expired"

    # Filters, roles, tenants.
    by_booker = _audit(admin, actor=booker_id)
    assert by_booker
    assert all(e["actor"] == booker_id for e in by_booker)
    assert {e["object_id"] for e in by_booker} == {held["id"], short["id"]}
    first = admin.get("/v1/audit", params={"limit": 2}).json()
    second = admin.get("/v1/audit", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [e["id"] for e in first["items"] + second["items"]] == sorted(
        (e["id"] for e in first["items"] + second["items"]), reverse=True
    )
    for api in (booker, tenant.viewer):
        _problem(api.get("/v1/audit"), 403, "forbidden")
    assert _audit(other_tenant.admin, object_id=room) == []
    _problem(admin.get("/v1/audit", params={"actor": "a\x00b"}), 422, "invalid-input")
    _problem(admin.get("/v1/audit", params={"cursor": "nope"}), 422, "invalid-input")


def test_keys_and_feeds_are_recorded_without_their_secrets(
    tenant: Tenant, app_client: TestClient
) -> None:
    room = tenant.admin.resource()["id"]
    feed = _created(tenant.admin.post("/v1/feeds", json={"resource_id": room}))
    assert tenant.admin.delete(f"/v1/feeds/{feed['id']}").status_code == 204
    made, revoked = reversed(_audit(tenant.admin, object_id=feed["id"]))
    assert made["action"] == "insert"
    assert made["object_type"] == "feed"
    assert revoked["after"]["revoked_at"] is not None
    assert "secret_hash" not in made["after"]
    assert feed["token"][12:] not in json.dumps([made, revoked])
    keys = [e for e in _audit(tenant.admin) if e["object_type"] == "api_key"]
    assert len(keys) == len(Role)  # the tenant's keys, one per role, made outside any request
    assert all("secret_hash" not in e["after"] and e["actor"] is None for e in keys)


def test_the_log_refuses_changes_from_any_connection(app_client: TestClient) -> None:
    svc: Context = app_client.app.state.services  # type: ignore[attr-defined]
    assert svc.settings.database_url is not None
    new_tenant(app_client)  # some rows to aim at
    app_client.portal.call(audit_tasks.seal, svc.db)  # type: ignore[union-attr]
    with psycopg.connect(svc.settings.database_url, autocommit=True) as conn:
        (sealed,) = conn.execute("SELECT max(audit_id) FROM audit_seal").fetchone() or (None,)
        assert sealed is not None
        for statement in (
            "UPDATE audit_log SET actor = 'someone else' WHERE id = %(id)s",
            "DELETE FROM audit_log WHERE id = %(id)s",
            "TRUNCATE audit_log",
            "UPDATE audit_seal SET hash = sha256('') WHERE audit_id = %(id)s",
            "DELETE FROM audit_seal WHERE audit_id = %(id)s",
            "TRUNCATE audit_seal",
        ):
            with pytest.raises(pg_errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement, {"id": sealed})
        assert conn.execute(
            "SELECT count(*) FROM audit_log a JOIN audit_seal s ON s.audit_id = a.id"
            " WHERE a.id = %s", (sealed,)
        ).fetchone() == (1,)  # fmt: skip


@dataclasses.dataclass
class World:
    """An app on a database of its own: these tests tamper with the log."""

    client: TestClient
    tenant: Tenant
    url: str

    @property
    def db(self) -> Database:
        db: Database = self.client.app.state.services.db  # type: ignore[attr-defined]
        return db

    def seal(self) -> int:
        sealed: int = self.client.portal.call(audit_tasks.seal, self.db)  # type: ignore[union-attr]
        return sealed

    def seal_all(self, timeout: float = 15.0) -> int:
        """Seal until nothing is pending. The sealer passes over rows of transactions newer
        than the oldest one running anywhere on the server, and when the suite shares a
        server (CI's second pass) other tests' transactions hold it back for a moment."""
        sealed, deadline = self.seal(), time.monotonic() + timeout
        while self.verify().pending and time.monotonic() < deadline:
            time.sleep(0.05)
            sealed += self.seal()
        return sealed

    def verify(self, **kw: Any) -> audit_service.Verification:
        async def run() -> audit_service.Verification:
            return await audit_service.verify(
                self.db, max_unsealed_age_seconds=kw.pop("age", 600), **kw
            )

        found: audit_service.Verification = self.client.portal.call(run)  # type: ignore[union-attr]
        return found

    def superuser(self, statement: str, *params: Any) -> None:
        """As the superuser the tests run as: with the append-only triggers off, which is
        what the chain is for."""
        with psycopg.connect(self.url) as conn:
            conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
            conn.execute("ALTER TABLE audit_seal DISABLE TRIGGER audit_seal_append_only")
            conn.execute(statement, params)
            conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
            conn.execute("ALTER TABLE audit_seal ENABLE TRIGGER audit_seal_append_only")

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(query, params).fetchall()


@pytest.fixture
def w(pg_server: PgServer, redis_server: RedisServer) -> Iterator[World]:
    url = pg_server.create_database("rsv_audit")
    bouncer = start_pgbouncer(url, pool_size=2) if THROUGH_PGBOUNCER else None
    app_url = bouncer.url(urlparse(url).path.lstrip("/")) if bouncer else url
    # One pooled connection: every request and job below shares it, so a setting that
    # outlived its transaction would show.
    settings = make_settings(
        app_url,
        db_pool_max=1,
        redis_url=redis_server.url,
        redis_key_prefix=redis_server.prefix + "audit:",
    )
    try:
        with TestClient(create_app(settings, Clock()), raise_server_exceptions=False) as client:
            yield World(client=client, tenant=new_tenant(client), url=url)
    finally:
        if bouncer:
            bouncer.stop()
        pg_server.drop_database(url)


def _some_changes(w: World) -> str:
    admin = w.tenant.admin
    room = admin.resource(name="Chained")["id"]
    for day in range(1, 4):
        r = _created(admin.book(room, f"2034-03-0{day}T09:00:00Z", f"2034-03-0{day}T10:00:00Z"))
        assert admin.post(f"/v1/reservations/{r['id']}/cancel").status_code == 200
    return str(room)


def test_the_sealer_chains_every_row_and_verify_finds_tampering(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = _some_changes(w)
    total = w.sql("SELECT count(*) FROM audit_log")[0][0]
    assert w.verify().pending == total  # nothing sealed yet: all waiting
    assert w.seal_all() == total
    assert w.seal() == 0
    seals = w.sql("SELECT seq, audit_id FROM audit_seal ORDER BY seq")
    assert [s for s, _ in seals] == list(range(1, total + 1))
    entries = _audit(w.tenant.admin, object_id=room)
    assert all(e["seq"] is not None and len(e["hash"]) == 64 for e in entries)

    found = w.verify()
    assert found.ok
    assert found.rows == total
    assert found.pending == found.behind == 0
    assert found.head is not None
    monkeypatch.setenv("DATABASE_URL", w.url)
    result = CliRunner().invoke(cli.app, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"ok {total} rows (head {total}:{found.head.hex()})")
    anchor = f"{total}:{found.head.hex()}"
    assert CliRunner().invoke(cli.app, ["audit", "verify", "--anchor", anchor]).exit_code == 0

    # A superuser edits what a row says happened: verify names that row's position.
    seq, audit_id = seals[4]
    ((after,),) = w.sql("SELECT after::text FROM audit_log WHERE id = %s", audit_id)
    w.superuser(
        "UPDATE audit_log SET after = after || '{\"quantity\": 2}' WHERE id = %s",
        audit_id,
    )
    found = w.verify()
    assert not found.ok
    assert found.broken_at == seq
    assert found.rows == seq - 1
    assert found.problem == f"audit row {audit_id} (or the seal) has changed since it was sealed"
    result = CliRunner().invoke(cli.app, ["audit", "verify"])
    assert result.exit_code == 1
    assert f"broken at position {seq}: audit row {audit_id}" in result.output
    # Put back exactly as it was, the chain holds again: what broke it was the content.
    w.superuser("UPDATE audit_log SET after = %s::jsonb WHERE id = %s", after, audit_id)
    assert w.verify().ok

    # A superuser removes a row: its position names the missing row.
    seq, audit_id = seals[2]
    w.superuser("DELETE FROM audit_log WHERE id = %s", audit_id)
    found = w.verify()
    assert found.broken_at == seq
    assert found.problem == f"audit row {audit_id} is missing"
    # ... and its seal too: the gap shows (here an earlier one, found first).
    w.superuser("DELETE FROM audit_seal WHERE seq = %s", seals[1][0])
    found = w.verify()
    assert found.broken_at == seals[1][0] == 2
    assert found.problem == "seal 2 is missing (the next one is 3)"
    bad = CliRunner().invoke(cli.app, ["audit", "verify", "--anchor", "3:zz"])
    assert bad.exit_code == 1
    assert "--anchor" in bad.output


def test_verify_counts_rows_the_sealer_passed_over_and_rows_left_waiting(w: World) -> None:
    _some_changes(w)
    w.seal_all()
    head = w.verify().head
    assert head is not None
    # A row slipped in behind the chain's head (an old transaction id) can never be sealed.
    w.superuser(
        "INSERT INTO audit_log (tenant_id, action, object_type, object_id, txid)"
        " SELECT tenant_id, 'delete', 'resource', object_id, '3' FROM audit_log LIMIT 1"
    )
    assert w.seal() == 0
    found = w.verify()
    assert found.broken_at is None
    assert found.behind == 1
    assert not found.ok
    # The anchor catches a chain recomputed from scratch after rewriting history.
    rows = w.sql("SELECT seq, hash FROM audit_seal ORDER BY seq")
    found = w.verify(anchor=(rows[-1][0], bytes(32)))
    assert found.broken_at == rows[-1][0]
    assert found.problem is not None
    assert "anchor" in found.problem
    assert w.verify(anchor=(len(rows) + 5, head)).broken_at == len(rows) + 1


def test_pending_rows_older_than_allowed_fail_verify(w: World) -> None:
    _some_changes(w)
    found = w.verify(age=0)
    assert found.stale == found.pending > 0
    assert not found.ok
    w.seal_all()
    assert w.verify(age=0).ok


def test_the_sealer_never_passes_a_transaction_still_running(w: World) -> None:
    """Audit rows get ids when written, but transactions commit in any order: a sealer that
    followed ids would seal a later commit first and could never fit the slow one in. It
    seals only transactions older than every running one, in (txid, id) order."""
    admin = w.tenant.admin
    room = admin.resource(name="Slow")["id"]
    w.seal_all()
    slow = psycopg.connect(w.url)
    try:
        slow.execute("UPDATE resource SET name = 'slow', version = version + 1 WHERE id = %s",
                     (room,))  # fmt: skip
        fast = admin.resource(name="Fast")["id"]
        assert w.seal() == 0  # the fast change committed, but after the slow one began
        slow.commit()
    finally:
        slow.close()
    assert w.seal_all() == 2
    chained = w.sql(
        "SELECT a.object_id::text, a.actor FROM audit_seal s JOIN audit_log a"
        " ON a.id = s.audit_id ORDER BY s.seq DESC LIMIT 2"
    )
    assert chained[::-1] == [(room, None), (fast, _key_id(w.url, admin.token))]
    assert w.verify().ok


def test_the_actor_lasts_one_transaction_on_a_shared_connection(w: World) -> None:
    """The app's pool has one connection here: a request's actor must not leak into the
    next transaction on it (as it would through PgBouncer with a session-level SET)."""
    room = w.tenant.admin.resource(name="Pooled")["id"]

    async def unattributed_write() -> None:
        async with w.db.transaction() as conn:
            await conn.execute("UPDATE resource SET version = version + 1 WHERE id = %s", (room,))

    w.client.portal.call(unattributed_write)  # type: ignore[union-attr]
    rows = w.sql("SELECT actor FROM audit_log WHERE object_id = %s ORDER BY id", room)
    assert rows == [(_key_id(w.url, w.tenant.admin.token),), (None,)]


def test_canonical_bytes_keep_numbers_and_order_exact() -> None:
    row = AuditTextRow(
        id=7, tenant_id="t", actor=None, request_id="r", action="update",
        object_type="resource", object_id="o", txid="42",
        changed_at="2034-01-01T00:00:00.000000Z",
        before='{"b": 1.10, "a": [1, "x\\u0000\\"é"], "c": null}',
        after='{"a": 1.1}',
    )  # fmt: skip
    assert chain.canonical_bytes(row, 3) == (
        b'{"action":"update","actor":null,"after":{"a":1.1},'
        b'"before":{"a":[1,"x\\u0000\\"\xc3\xa9"],"b":1.10,"c":null},'
        b'"changed_at":"2034-01-01T00:00:00.000000Z","id":7,"object_id":"o",'
        b'"object_type":"resource","request_id":"r","seq":3,"tenant_id":"t","txid":"42"}'
    )
    assert chain.link(chain.GENESIS, row, 3) != chain.link(
        chain.GENESIS, dataclasses.replace(row, before=row.before.replace("1.10", "1.1")), 3
    )


def test_command_line_changes_name_the_command_line(
    w: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", w.url)
    made = CliRunner().invoke(cli.app, ["keys", "create", "--tenant", w.tenant.name,
                                        "--role", "viewer"])  # fmt: skip
    assert made.exit_code == 0, made.output
    prefix = made.output.strip().splitlines()[-1].split("_")[1]
    assert CliRunner().invoke(cli.app, ["keys", "revoke", prefix]).exit_code == 0
    rows = w.sql(
        "SELECT action, actor FROM audit_log WHERE object_type = 'api_key'"
        " AND (after->>'prefix') = %s ORDER BY id",
        prefix,
    )
    assert rows == [("insert", "system:cli"), ("update", "system:cli")]
    sealed = CliRunner().invoke(cli.app, ["audit", "seal"])
    assert sealed.exit_code == 0, sealed.output
    assert sealed.output.startswith("sealed ")
    assert w.verify().ok
