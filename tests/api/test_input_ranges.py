"""Cursors come back from clients: every list route checks each part of one to the range of
the column it is compared with before any SQL, so a cursor is a page (200) or a 422 that says
to pass next_cursor unchanged, never a 5xx, and never an event stream that dies after its 200.

- ids: the lowercase hyphenated form the API writes;
- instants: RFC 3339 with an offset, from 1970 to 9000 (kit/fields.EARLIEST, LATEST);
- event positions: a transaction id (xid8, 0 to 2**64 - 1) and an event id (bigint);
- per-database positions (audit log, webhook deliveries): bigints.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reservations.errors import InvalidInput
from reservations.events.service import parse_positions
from reservations.kit.fields import EARLIEST, LATEST
from tests.support.api import Tenant, new_tenant
from tests.support.live import LiveServer

PROBLEM = "application/problem+json"
BIGINT_MAX = 2**63 - 1
XID8_MAX = 2**64 - 1
WINDOW = {"from": "2031-01-01T00:00:00Z", "to": "2031-01-02T00:00:00Z"}
RECEIVER = "https://93.184.215.14/hook"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(*parts: Any) -> str:
    return b64(json.dumps(list(parts)).encode())


# --------------------------------------------------------------------------------------------
# the routes


@dataclass
class Place:
    tenant: Tenant
    webhook_id: str


@pytest.fixture(scope="module")
def place(app_client: TestClient) -> Place:
    t = new_tenant(app_client)
    rid = t.admin.resource(name="Room")["id"]
    assert t.booker.book(rid, "2031-01-01T10:00:00Z", "2031-01-01T11:00:00Z").status_code == 201
    made = t.admin.post("/v1/webhooks", json={"url": RECEIVER})
    assert made.status_code == 201, made.text
    return Place(t, made.json()["id"])


@dataclass(frozen=True)
class Route:
    id: str
    kind: str  # id, instant, event, positions
    call: Callable[[Place, str], httpx.Response]


def _get(path: str, param: str = "cursor") -> Callable[[Place, str], httpx.Response]:
    def call(p: Place, value: str) -> httpx.Response:
        return p.tenant.admin.get(path.format(webhook=p.webhook_id), params={param: value})

    return call


def _search(p: Place, value: str) -> httpx.Response:
    return p.tenant.admin.post("/v1/availability/search", json={**WINDOW, "cursor": value})


ROUTES = [
    Route("reservations", "instant", _get("/v1/reservations")),
    Route("search", "instant", _search),
    Route("resources", "id", _get("/v1/resources")),
    Route("webhooks", "id", _get("/v1/webhooks")),
    Route("feeds", "id", _get("/v1/feeds")),
    Route("audit", "positions", _get("/v1/audit")),
    Route("deliveries", "positions", _get("/v1/webhooks/{webhook}/deliveries")),
    Route("events", "event", _get("/v1/events", "after")),
    Route("waitlist", "instant", _get("/v1/waitlist")),
]


def check(route: Route, r: httpx.Response, *, good: bool | None = None) -> None:
    where = f"{route.id}: {r.status_code} {r.text[:300]}"
    assert r.status_code in (200, 422), where
    if good is not None:
        assert (r.status_code == 200) == good, where
    if r.status_code == 422:
        assert r.headers["content-type"] == PROBLEM, where
        body = r.json()
        assert "next_cursor" in body["detail"], where
        assert [e["field"] for e in body["errors"]] == ["cursor"], where


def check_stream(p: Place, value: str) -> None:
    """The stream refuses, before it starts, every cursor the page refuses. (A cursor the page
    takes starts a stream that never ends: test_the_stream_lives_on_at_the_edges.)"""
    for kw in ({"params": {"after": value}}, {"headers": {"Last-Event-ID": value}}):
        r = p.tenant.admin.get("/v1/events/stream", **kw)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == PROBLEM


# --------------------------------------------------------------------------------------------
# anything at all


JSON_PART = st.one_of(
    st.text(max_size=30),
    st.integers(-(2**80), 2**80).map(str),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=False),
    st.sampled_from(["\u00b2", "\u0661", "1e5", " 1", "+1", "0x10", "1_000", "", "now"]),
    st.uuids().map(lambda u: str(u).upper()),
    st.datetimes().map(datetime.isoformat),
    st.none(),
)
ANY_CURSOR = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(b64),
    st.lists(JSON_PART, max_size=3).map(lambda parts: cursor(*parts)),
    st.dictionaries(st.text(max_size=8), st.lists(JSON_PART, max_size=3), max_size=2).map(
        lambda d: cursor(json.dumps(d))
    ),
)
HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(HYPOTHESIS, max_examples=20)
@given(value=ANY_CURSOR)
@example(value=cursor("18446744073709551616", "1"))
@example(value=cursor("\u00b2", "1"))
@example(value=cursor("\u00b2"))
@example(value=cursor("x:\u00b2"))
def test_any_cursor_is_a_page_or_a_422(place: Place, value: str) -> None:
    for route in ROUTES:
        check(route, route.call(place, value))
    refused = place.tenant.admin.get("/v1/events", params={"after": value}).status_code == 422
    if refused and value.isascii():  # a header carries ASCII only
        check_stream(place, value)


# --------------------------------------------------------------------------------------------
# well formed, at and beyond each range


@st.composite
def ids(draw: st.DrawFn) -> tuple[str, bool]:
    u = draw(st.uuids())
    spelled = draw(
        st.sampled_from(
            [str(u), str(u).upper(), f"{{{u}}}", f"urn:uuid:{u}", u.hex, str(u)[:-1], f" {u}"]
        )
    )
    return spelled, spelled == str(u)


OFFSETS = [timedelta(0), timedelta(hours=14), timedelta(hours=-12), timedelta(minutes=-1)]


def in_range(local: datetime, offset: timedelta) -> bool:
    try:
        utc = local.replace(tzinfo=None) - offset
    except OverflowError:  # before year 1 or after 9999: far out of range
        return False
    return EARLIEST.replace(tzinfo=None) <= utc < LATEST.replace(tzinfo=None)


@st.composite
def instants(draw: st.DrawFn) -> tuple[str, bool]:
    edge = st.sampled_from(
        [
            datetime(1970, 1, 1),
            datetime(1969, 12, 31, 23, 59, 59, 999_999),
            datetime(8999, 12, 31, 23, 59, 59, 999_999),
            datetime(9000, 1, 1),
            datetime(1, 1, 1),
            datetime(9999, 12, 31, 23, 59),
        ]
    )
    local = draw(edge | st.datetimes())
    offset = draw(st.sampled_from(OFFSETS))
    if draw(st.integers(0, 9)) == 0:
        return local.isoformat(), False  # naive
    return local.replace(tzinfo=timezone(offset)).isoformat(), in_range(local, offset)


def number(value: int, high: int) -> tuple[str, bool]:
    return str(value), 0 <= value <= high


INTS = st.sampled_from([0, 1, BIGINT_MAX, BIGINT_MAX + 1, XID8_MAX, XID8_MAX + 1, -1, 10**30])
ANY_INT = INTS | st.integers(-(2**65), 2**65)


@st.composite
def event_cursors(draw: st.DrawFn) -> tuple[str, bool]:
    txid, good_txid = number(draw(ANY_INT), XID8_MAX)
    event, good_event = number(draw(ANY_INT), BIGINT_MAX)
    if draw(st.integers(0, 9)) == 0:
        txid, good_txid = draw(st.sampled_from(["\u00b2", "\u0661", "1\u0660", "+1", " 1"])), False
    return cursor(txid, event), good_txid and good_event


@st.composite
def position_cursors(draw: st.DrawFn) -> tuple[str, bool]:
    n, good = number(draw(ANY_INT), BIGINT_MAX)
    name = draw(st.sampled_from(["", "primary:", "shard-1:"]))
    return cursor(f"{name}{n}"), good


@st.composite
def keyed(draw: st.DrawFn, kind: str) -> tuple[str, bool]:
    if kind == "id":
        value, good = draw(ids())
        return cursor(value), good
    if kind == "instant":
        at, good_at = draw(instants())
        value, good_id = draw(ids())
        return cursor(at, value), good_at and good_id
    if kind == "event":
        return draw(event_cursors())
    return draw(position_cursors())


@pytest.mark.parametrize("route", [r for r in ROUTES if r.kind], ids=lambda r: r.id)
def test_a_cursor_is_checked_to_its_range(place: Place, route: Route) -> None:
    @settings(HYPOTHESIS, max_examples=30)
    @given(case=keyed(route.kind))
    def run(case: tuple[str, bool]) -> None:
        value, good = case
        check(route, route.call(place, value), good=good)
        if route.kind == "event" and not good:
            check_stream(place, value)

    run()


# --------------------------------------------------------------------------------------------
# the stream, live


def stays_open(url: str, headers: dict[str, str], seconds: float) -> httpx.Response:
    """Open the stream and read it for `seconds` (several polls of the database): it must
    neither end nor break. The response (for its status) if it did not start."""
    timeout = httpx.Timeout(10.0, read=seconds)
    with httpx.stream("GET", f"{url}/v1/events/stream", headers=headers, timeout=timeout) as s:
        if s.status_code != 200:
            s.read()
            return s
        try:
            for _ in s.iter_lines():
                pass
        except httpx.ReadTimeout:
            return s  # still open, quiet: as a live stream with nothing new is
        except httpx.RemoteProtocolError as exc:
            pytest.fail(f"the stream broke after its 200: {exc}")
        pytest.fail("the stream ended after its 200")


def test_the_stream_lives_on_at_the_edges(live_server: LiveServer, database_url: str) -> None:
    """An event cursor at the edge of its range starts a stream that keeps polling; one past
    it is a 422 before the stream (it used to start, then die at its first query)."""
    from tests.support.live import admin_token

    auth = {"Authorization": f"Bearer {admin_token(database_url)}"}
    for txid, event in [(XID8_MAX, BIGINT_MAX), (0, 0), (2**63, 1)]:
        last = {"Last-Event-ID": cursor(str(txid), str(event))}
        r = stays_open(live_server.url, {**auth, **last}, 1.5)
        assert r.status_code == 200, r.text
    for txid, event in [(XID8_MAX + 1, 1), (1, BIGINT_MAX + 1)]:
        last = {"Last-Event-ID": cursor(str(txid), str(event))}
        r = stays_open(live_server.url, {**auth, **last}, 1.5)
        assert r.status_code == 422, r.text


def test_an_issued_cursor_still_pages(place: Place) -> None:
    """The checks take what the API writes: next_cursor of every route pages on."""
    api = place.tenant.admin
    for i in range(3):
        rid = api.resource(name=f"R{i}")["id"]
        assert api.book(rid, "2031-01-01T12:00:00Z", "2031-01-01T13:00:00Z").status_code == 201
        assert api.post("/v1/webhooks", json={"url": RECEIVER}).status_code == 201
    for path, param in [
        ("/v1/resources", "cursor"),
        ("/v1/webhooks", "cursor"),
        ("/v1/reservations", "cursor"),
        ("/v1/events", "after"),
        ("/v1/audit", "cursor"),
    ]:
        first = api.get(path, params={"limit": 1})
        assert first.status_code == 200, first.text
        nxt = first.json()["next_cursor"]
        assert nxt, path
        second = api.get(path, params={"limit": 1, param: nxt})
        assert second.status_code == 200, (path, second.text)
    free = {"from": "2032-01-01T00:00:00Z", "to": "2032-01-02T00:00:00Z", "limit": 1}
    search = api.post("/v1/availability/search", json=free)
    assert search.status_code == 200, search.text
    nxt = search.json()["next_cursor"]
    assert nxt
    assert api.post("/v1/availability/search", json={**free, "cursor": nxt}).status_code == 200


# --------------------------------------------------------------------------------------------
# with shard clusters: a position per database, in one cursor (no I/O)

POSITION = st.one_of(
    st.tuples(ANY_INT, ANY_INT).map(list),
    st.lists(JSON_PART, max_size=3),
    JSON_PART,
)


@settings(max_examples=300, deadline=None)
@given(positions=st.dictionaries(st.text(max_size=8), POSITION, max_size=3) | JSON_PART)
def test_a_sharded_event_cursor_is_checked_to_its_range(positions: Any) -> None:
    value = cursor(json.dumps(positions))
    good = isinstance(positions, dict) and all(
        isinstance(p, list)
        and len(p) == 2
        and all(type(n) is int for n in p)
        and 0 <= p[0] <= XID8_MAX
        and 0 <= p[1] <= BIGINT_MAX
        for p in positions.values()
    )
    if good:
        assert parse_positions(value) == {k: tuple(v) for k, v in positions.items()}
    else:
        with pytest.raises(InvalidInput):
            parse_positions(value)
