"""Calendar feeds: admins make, list and revoke secret-token URLs; the feed is RFC 5545 that
icalendar parses back, with wall times in the resource's zone that convert back to the exact
instants booked, across both DST changes (checked against the feed's own VTIMEZONE too)."""

from __future__ import annotations

import hashlib
import io
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar
import psycopg
from dateutil import tz as dateutil_tz
from fastapi.testclient import TestClient

from reservations.config import Settings
from reservations.feeds import ical
from reservations.kit.clock import Clock
from tests.support.api import Api, Tenant, _created, _problem
from tests.support.live import LiveServer, admin_key_on

BERLIN = ZoneInfo("Europe/Berlin")


def _prefix(token: str) -> str:
    return token.split("_")[1]


def _feed(api: Api, **body: Any) -> dict[str, Any]:
    return _created(api.post("/v1/feeds", json=body))


def _fetch(client: TestClient, url: str, **headers: str) -> httpx.Response:
    """The feed as a calendar app fetches it: no Authorization header."""
    return client.get(httpx.URL(url).path, headers=headers)


def _calendar(client: TestClient, url: str) -> icalendar.Calendar:
    r = _fetch(client, url)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/calendar; charset=utf-8"
    return icalendar.Calendar.from_ical(r.content)


def _events(cal: icalendar.Calendar) -> dict[str, icalendar.Event]:
    return {str(e["uid"]).removesuffix("@reservations"): e for e in cal.walk("VEVENT")}


def _instant(value: datetime) -> datetime:
    assert value.tzinfo is not None, "a floating time: clients would read it in their own zone"
    return value.astimezone(UTC)


def _unescape(text: str) -> str:
    """A TEXT value as RFC 5545 3.3.11 reads it."""
    out, chars = [], iter(text)
    for c in chars:
        if c == "\\":
            c = next(chars)
            c = "\n" if c in "nN" else c
        out.append(c)
    return "".join(out)


def _raw_line(body: bytes, uid: str, name: str) -> str:
    """The unfolded content line `name` of the event `uid`, as written."""
    text = body.decode().replace("\r\n ", "")
    block = text.split(f"UID:{uid}@reservations", 1)[1].split("END:VEVENT", 1)[0]
    return next(line for line in block.split("\r\n") if line.startswith(name))


def test_admin_makes_lists_and_revokes_feeds(
    tenant: Tenant, other_tenant: Tenant, app_client: TestClient, settings: Settings
) -> None:
    admin = tenant.admin
    room = admin.resource(name="Feed room")["id"]
    made = _feed(admin, resource_id=room, label="Front desk")
    token = made["token"]
    assert len(token) == 55
    assert token.isalnum()
    assert made["url"] == f"http://testserver/feeds/{token}.ics"
    assert made["kind"] == "resource"
    assert made["resource_id"] == room
    assert made["revoked_at"] is None
    assert _fetch(app_client, made["url"]).status_code == 200

    # Only a hash of the secret is stored; the list never shows a token.
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT prefix, secret_hash, to_jsonb(feed)::text FROM feed WHERE id = %s",
            (made["id"],),
        ).fetchall()
    assert rows[0][0] == token[:12]
    assert bytes(rows[0][1]) == hashlib.sha256(token[12:].encode()).digest()
    assert token[12:] not in rows[0][2]
    listed = admin.get("/v1/feeds")
    assert listed.status_code == 200
    assert [f["id"] for f in listed.json()["items"]] == [made["id"]]
    assert token[12:] not in listed.text
    assert "token" not in listed.json()["items"][0]

    # Roles and tenants.
    for api in (tenant.booker, tenant.viewer):
        _problem(api.post("/v1/feeds", json={"resource_id": room}), 403, "forbidden")
        _problem(api.get("/v1/feeds"), 403, "forbidden")
        _problem(api.delete(f"/v1/feeds/{made['id']}"), 403, "forbidden")
    _problem(other_tenant.admin.delete(f"/v1/feeds/{made['id']}"), 404, "not-found")
    assert other_tenant.admin.get("/v1/feeds").json()["items"] == []
    assert _fetch(app_client, made["url"]).status_code == 200

    # Revoked: the URL is gone, as if it never existed; revoking again is fine.
    assert admin.delete(f"/v1/feeds/{made['id']}").status_code == 204
    gone = _problem(_fetch(app_client, made["url"]), 404, "not-found")
    assert admin.delete(f"/v1/feeds/{made['id']}").status_code == 204
    assert admin.get("/v1/feeds").json()["items"][0]["revoked_at"] is not None
    # Unknown, malformed, and a right prefix with a wrong secret: the same answer.
    for path in (
        f"/feeds/{secrets.token_hex(28)[:55]}.ics",
        "/feeds/short.ics",
        f"/feeds/{'x' * 300}.ics",
        f"/feeds/{token[:12]}{'x' * 43}.ics",
    ):
        assert _problem(app_client.get(path), 404, "not-found") == gone


def test_feed_targets_must_be_in_the_callers_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = other_tenant.admin.resource(name="Theirs")["id"]
    _problem(tenant.admin.post("/v1/feeds", json={"resource_id": theirs}), 404, "not-found")
    their_key = _prefix(other_tenant.tokens["booker"])
    _problem(tenant.admin.post("/v1/feeds", json={"api_key_prefix": their_key}), 404, "not-found")
    archived = tenant.admin.resource(name="Archived")["id"]
    assert tenant.admin.delete(f"/v1/resources/{archived}").status_code in (200, 204)
    _problem(tenant.admin.post("/v1/feeds", json={"resource_id": archived}), 404, "not-found")
    for body in (
        {},
        {"resource_id": theirs, "api_key_prefix": their_key},
        {"api_key_prefix": "not-a-prefix"},
        {"resource_id": theirs, "label": "a\x00b"},
        {"resource_id": theirs, "extra": 1},
    ):
        _problem(tenant.admin.post("/v1/feeds", json=body), 422, "invalid-input")


def test_a_resource_feed_is_rfc_5545_with_the_live_reservations(
    tenant: Tenant, app_client: TestClient
) -> None:
    admin, booker = tenant.admin, tenant.booker
    name = "Salle Ré, étage 2; côté cour — a name long enough to need folding"
    room = admin.resource(name=name, timezone="Europe/Berlin")["id"]
    feed = _feed(admin, resource_id=room)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    confirmed = _created(
        booker.book(room, soon.isoformat(), (soon + timedelta(hours=1)).isoformat(),
                    customer="alice@example.com", hold_seconds=600)
    )  # fmt: skip
    assert booker.post(f"/v1/reservations/{confirmed['id']}/confirm").status_code == 200
    held = _created(
        admin.book(room, (soon + timedelta(hours=2)).isoformat(),
                   (soon + timedelta(hours=3)).isoformat(), hold_seconds=600)
    )  # fmt: skip
    cancelled = _created(
        admin.book(room, (soon + timedelta(hours=4)).isoformat(),
                   (soon + timedelta(hours=5)).isoformat())
    )  # fmt: skip
    assert admin.post(f"/v1/reservations/{cancelled['id']}/cancel").status_code == 200
    past = soon - timedelta(days=40)  # before the window
    _created(
        admin.book(
            room, past.isoformat(), (past + timedelta(hours=1)).isoformat(), override_rules=True
        )
    )

    r = _fetch(app_client, feed["url"])
    cal = icalendar.Calendar.from_ical(r.content)
    assert str(cal["PRODID"]) == ical.PRODID
    assert str(cal["VERSION"]) == "2.0"
    assert str(cal["CALSCALE"]) == "GREGORIAN"
    assert str(cal["METHOD"]) == "PUBLISH"
    # An X- property's value is TEXT (RFC 5545 3.8.8.2); icalendar leaves it escaped.
    assert _unescape(str(cal["X-WR-CALNAME"])) == name
    assert str(cal["X-WR-TIMEZONE"]) == "Europe/Berlin"
    assert [str(z["TZID"]) for z in cal.walk("VTIMEZONE")] == ["Europe/Berlin"]
    assert all(len(line) <= 75 for line in r.content.split(b"\r\n"))

    events = _events(cal)
    assert set(events) == {confirmed["id"], held["id"]}
    by_status = {str(e["STATUS"]): e for e in events.values()}
    assert set(by_status) == {"CONFIRMED", "TENTATIVE"}
    done = by_status["CONFIRMED"]
    assert str(done["SUMMARY"]) == name
    assert int(done["SEQUENCE"]) == 1  # version 2: made (0), then confirmed
    assert int(by_status["TENTATIVE"]["SEQUENCE"]) == 0
    assert _instant(done.decoded("DTSTART")) == soon
    assert _instant(done.decoded("DTEND")) == soon + timedelta(hours=1)
    assert done["DTSTART"].params["TZID"] == "Europe/Berlin"
    for stamp in ("DTSTAMP", "LAST-MODIFIED", "CREATED"):
        assert done.decoded(stamp).tzinfo is not None
    assert b"alice" not in r.content  # a resource feed says when, never who

    # Conditional requests; caching only in the subscriber's own client.
    assert r.headers["cache-control"] == "private, max-age=300"
    again = _fetch(app_client, feed["url"], **{"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert _fetch(app_client, feed["url"]).content == r.content  # deterministic
    assert admin.post(f"/v1/reservations/{held['id']}/cancel").status_code == 200
    changed = _fetch(app_client, feed["url"], **{"If-None-Match": r.headers["etag"]})
    assert changed.status_code == 200
    assert set(_events(icalendar.Calendar.from_ical(changed.content))) == {confirmed["id"]}


def _last_sunday(year: int, month: int) -> date:
    day = date(year, month + 1, 1) - timedelta(days=1)
    return day - timedelta(days=(day.weekday() + 1) % 7)


def test_wall_times_survive_both_dst_changes(
    tenant: Tenant, app_client: TestClient, clock: Clock
) -> None:
    """Europe/Berlin: clocks go 02:00 CET -> 03:00 CEST (01:00 UTC) on the last Sunday of
    March and 03:00 CEST -> 02:00 CET (01:00 UTC) on the last Sunday of October. The app's
    clock is put 30 days before the next spring change so both sit in the feed's window."""
    today = datetime.now(UTC).date()
    year = today.year if _last_sunday(today.year, 3) > today + timedelta(days=2) else today.year + 1
    spring, autumn = _last_sunday(year, 3), _last_sunday(year, 10)
    clock.advance(datetime.combine(spring, datetime.min.time(), UTC) - timedelta(days=30)
                  - datetime.now(UTC))  # fmt: skip
    admin = tenant.admin
    # Capacity 2: two of the autumn cases overlap.
    room = admin.resource(name="DST room", timezone="Europe/Berlin", capacity=2)["id"]
    feed = _feed(admin, resource_id=room)

    def utc(day: date, hour: int, minute: int = 30) -> datetime:
        return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)

    def book(start: datetime, end: datetime) -> str:
        return str(_created(admin.book(room, start.isoformat(), end.isoformat()))["id"])

    # id -> (start, end, the DTSTART and DTEND lines the feed must carry)
    d = {"s": spring.strftime("%Y%m%d"), "a": autumn.strftime("%Y%m%d")}
    cases = {
        # 01:30 CET -> 03:30 CEST: one hour, two on the wall clock.
        book(utc(spring, 0), utc(spring, 1)): (
            f"DTSTART;TZID=Europe/Berlin:{d['s']}T013000",
            f"DTEND;TZID=Europe/Berlin:{d['s']}T033000",
        ),
        # 01:30-03:30 UTC on that day: 03:30-05:30 CEST.
        book(utc(spring, 1), utc(spring, 3)): (
            f"DTSTART;TZID=Europe/Berlin:{d['s']}T033000",
            f"DTEND;TZID=Europe/Berlin:{d['s']}T053000",
        ),
        # 01:30 CEST -> the second 02:30 (CET): ambiguous as a wall time, so in UTC.
        book(utc(autumn - timedelta(days=1), 23), utc(autumn, 1)): (
            f"DTSTART;TZID=Europe/Berlin:{d['a']}T013000",
            f"DTEND:{d['a']}T013000Z",
        ),
        # 01:30-03:30 UTC on that day: the second 02:30 (CET) -> 04:30 CET.
        book(utc(autumn, 1), utc(autumn, 3)): (
            f"DTSTART:{d['a']}T013000Z",
            f"DTEND;TZID=Europe/Berlin:{d['a']}T043000",
        ),
        # The first 02:30 (CEST) is ambiguous too: UTC as well.
        book(utc(autumn, 0), utc(autumn, 0, 45)): (
            f"DTSTART:{d['a']}T003000Z",
            f"DTEND:{d['a']}T004500Z",
        ),
    }

    # A weekly series at 09:00-10:00 Berlin time, two weeks each side of the spring change.
    first = datetime.combine(spring - timedelta(days=14), datetime.min.time()).replace(
        hour=9, tzinfo=BERLIN
    )
    series = _created(
        admin.post(
            "/v1/bookings",
            json={
                "resources": [{"resource_id": room}],
                "start": first.isoformat(),
                "end": (first + timedelta(hours=1)).isoformat(),
                "rrule": "FREQ=WEEKLY;COUNT=4",
            },
        )
    )
    occurrences = series["reservations"]
    assert [datetime.fromisoformat(o["start"]).astimezone(UTC).hour for o in occurrences] == [
        8, 8, 7, 7,
    ]  # fmt: skip
    for o in occurrences:
        day = datetime.fromisoformat(o["start"]).astimezone(BERLIN).strftime("%Y%m%d")
        cases[o["id"]] = (
            f"DTSTART;TZID=Europe/Berlin:{day}T090000",
            f"DTEND;TZID=Europe/Berlin:{day}T100000",
        )

    r = _fetch(app_client, feed["url"])
    assert r.status_code == 200
    cal = icalendar.Calendar.from_ical(r.content)
    events = _events(cal)
    assert set(events) == set(cases)
    # A client that builds the zone from the feed's own VTIMEZONE (not its tz database).
    (vtz,) = cal.walk("VTIMEZONE")
    from_feed = dateutil_tz.tzical(io.StringIO(vtz.to_ical().decode())).get()
    for rid, (start_line, end_line) in cases.items():
        assert _raw_line(r.content, rid, "DTSTART") == start_line
        assert _raw_line(r.content, rid, "DTEND") == end_line
        booked = admin.get(f"/v1/reservations/{rid}").json()
        for prop, field in (("DTSTART", "start"), ("DTEND", "end")):
            instant = datetime.fromisoformat(booked[field]).astimezone(UTC)
            parsed = events[rid].decoded(prop)
            assert _instant(parsed) == instant, (rid, prop)
            if "TZID" in events[rid][prop].params:
                wall = parsed.replace(tzinfo=None)
                assert wall.replace(tzinfo=from_feed).astimezone(UTC) == instant, (rid, prop)


def test_a_booker_feed_shows_one_keys_reservations_in_each_resources_zone(
    tenant: Tenant, app_client: TestClient
) -> None:
    admin, booker = tenant.admin, tenant.booker
    berlin = admin.resource(name="Berlin desk", timezone="Europe/Berlin")["id"]
    york = admin.resource(name="New York desk", timezone="America/New_York")["id"]
    feed = _feed(admin, api_key_prefix=_prefix(tenant.tokens["booker"]))
    assert feed["kind"] == "booker"
    assert feed["api_key_prefix"] == _prefix(tenant.tokens["booker"])
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    mine = [
        _created(booker.book(room, start.isoformat(), (start + timedelta(hours=1)).isoformat(),
                             customer=f"Ms. {n}, VIP"))["id"]
        for n, room in enumerate((berlin, york))
    ]  # fmt: skip
    other = tenant.another_booker()
    later = start + timedelta(hours=2)
    _created(other.book(berlin, later.isoformat(), (later + timedelta(hours=1)).isoformat()))

    cal = _calendar(app_client, feed["url"])
    assert str(cal["X-WR-CALNAME"]) == f"Reservations of key {feed['api_key_prefix']}"
    assert "X-WR-TIMEZONE" not in cal
    assert sorted(str(z["TZID"]) for z in cal.walk("VTIMEZONE")) == [
        "America/New_York", "Europe/Berlin",
    ]  # fmt: skip
    events = _events(cal)
    assert set(events) == set(mine)
    berlin_event, york_event = events[mine[0]], events[mine[1]]
    assert berlin_event["DTSTART"].params["TZID"] == "Europe/Berlin"
    assert york_event["DTSTART"].params["TZID"] == "America/New_York"
    assert _instant(york_event.decoded("DTSTART")) == start
    assert str(york_event["LOCATION"]) == "New York desk"
    assert str(york_event["DESCRIPTION"]) == "Customer: Ms. 1, VIP"


def test_head_on_a_feed_answers_gets_headers_without_a_body(
    app_client: TestClient, tenant: Tenant, live_server: LiveServer
) -> None:
    """Calendar apps and link checkers ask HEAD first: 200 and GET's headers, no body; an
    unknown token is the same 404 as for GET. Through a real server too (uvicorn must accept
    a Content-Length with no body after it)."""
    room = tenant.admin.resource(name="Room", timezone="Europe/Berlin")
    feed = _feed(tenant.admin, resource_id=room["id"])
    path = httpx.URL(feed["url"]).path
    got = app_client.get(path)
    head = app_client.head(path)
    assert head.status_code == 200
    assert head.content == b""
    for name in ("content-type", "etag", "cache-control", "content-length"):
        assert head.headers[name] == got.headers[name], name
    assert app_client.head(path, headers={"If-None-Match": got.headers["etag"]}).status_code == 304
    missing = app_client.head("/feeds/" + "x" * 55 + ".ics")
    assert missing.status_code == 404
    assert missing.content == b""
    assert "HEAD" in app_client.put(path).headers["allow"]

    # The live server has its own database: a feed there, asked over HTTP.
    key = admin_key_on(live_server.database_url)
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {key}"}) as c:
        made = c.post("/v1/resources", json={"name": "Court"})
        url = c.post("/v1/feeds", json={"resource_id": made.json()["id"]}).json()["url"]
        live_path = httpx.URL(url).path
        full = httpx.get(live_server.url + live_path)
        bare = httpx.head(live_server.url + live_path)
    assert bare.status_code == 200
    assert bare.content == b""
    assert bare.headers["content-length"] == full.headers["content-length"] != "0"
