"""Free/busy feeds: when a resource cannot be booked, as VFREEBUSY and JSON, computed by the
functions admission decides with. The property: at the moment the feed is computed, an
instant shown free is inside a booking an admin can make without override_rules, and every
booking over an instant shown busy is refused. Three parsers (icalendar, ical, vobject) read
the same periods out of the iCalendar as the JSON says."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import icalendar
import vobject
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from ical.calendar_stream import IcsCalendarStream
from pydantic import TypeAdapter

from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.localtime import grid_instants
from tests.support.api import Api, Tenant, _created, _problem

MINUTE = timedelta(minutes=1)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _monday_ahead(days: int) -> datetime:
    """A Monday 00:00 UTC at least `days` from now (a 5-minute boundary, so exact)."""
    day = (datetime.now(UTC) + timedelta(days=days)).date()
    day += timedelta(days=(7 - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class Stopped:
    """Where the stopped clock stands; a test may move it."""

    def __init__(self, at: datetime) -> None:
        self.at = at


@contextmanager
def frozen(clock: Clock, at: datetime) -> Iterator[Stopped]:
    """The app's clock stopped at `at`: the feed and the bookings that check it are judged
    at the same moment."""
    stopped = Stopped(at)
    clock.now = lambda: stopped.at  # type: ignore[method-assign]
    try:
        yield stopped
    finally:
        del clock.now


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _fetch(client: TestClient, url: str, **headers: str) -> httpx.Response:
    return client.get(httpx.URL(url).path, headers=headers)


def _json(client: TestClient, feed: dict[str, Any]) -> dict[str, Any]:
    r = _fetch(client, feed["json_url"])
    assert r.status_code == 200, r.text
    return dict(r.json())


Periods = list[tuple[datetime, datetime, str]]


def _json_periods(resource: dict[str, Any]) -> Periods:
    return [(_when(p["start"]), _when(p["end"]), p["type"].upper()) for p in resource["busy"]]


def _by_icalendar(body: bytes) -> dict[str, Periods]:
    out: dict[str, Periods] = {}
    for fb in icalendar.Calendar.from_ical(body).walk("VFREEBUSY"):
        lines = fb.get("FREEBUSY", [])
        lines = lines if isinstance(lines, list) else [lines]
        out[str(fb["UID"])] = [
            (p.dt[0].astimezone(UTC), p.dt[1].astimezone(UTC), p.params.get("FBTYPE", "BUSY"))
            for p in lines
        ]
    return out


def _by_ical(body: bytes) -> dict[str, Periods]:
    cal = IcsCalendarStream.calendar_from_ics(body.decode())
    return {
        str(fb.uid): [
            (p.start.astimezone(UTC), p.end.astimezone(UTC), str(p.free_busy_type.value))
            for p in fb.freebusy
            if p.end is not None
        ]
        for fb in cal.freebusy
    }


def _by_vobject(body: bytes) -> dict[str, Periods]:
    cal = vobject.readOne(body.decode())
    out: dict[str, Periods] = {}
    for fb in cal.vfreebusy_list:
        periods: Periods = []
        for line in fb.contents.get("freebusy", []):
            kind = line.params.get("FBTYPE", ["BUSY"])[0]
            periods += [(a.astimezone(UTC), b.astimezone(UTC), kind) for a, b in line.value]
        out[str(fb.uid.value)] = periods
    return out


WEEK_HOURS = {d: [{"start": "09:00", "end": "17:00"}] for d in WEEKDAYS[:5]}


def test_a_resources_freebusy_shows_reservations_buffers_closed_hours_and_blackouts(
    tenant: Tenant, app_client: TestClient, clock: Clock
) -> None:
    admin, t0 = tenant.admin, _monday_ahead(8)
    room = admin.resource(
        name="Board room, 1st floor",
        policy={
            "weekly_hours": WEEK_HOURS,
            "buffer_after": "PT15M",
            "min_duration": "PT30M",
            "slot_grid_minutes": 30,
            "blackouts": [
                {
                    "start": _iso(t0 + timedelta(days=1, hours=12)),
                    "end": _iso(t0 + timedelta(days=1, hours=13)),
                    "reason": "Fire drill",
                }
            ],
        },
    )["id"]
    with frozen(clock, t0):
        booked = tenant.booker.book(
            room,
            _iso(t0 + timedelta(hours=10)),
            _iso(t0 + timedelta(hours=11)),
            customer="Alice Secretly",
        )
        assert booked.status_code == 201, booked.text
        feed = _created(admin.post("/v1/feeds", json={"content": "freebusy", "resource_id": room}))
        assert (feed["kind"], feed["content"]) == ("resource", "freebusy")
        assert feed["json_url"] == feed["url"].removesuffix(".ics") + ".json"
        read = _json(app_client, feed)
        ics = _fetch(app_client, feed["url"])
    assert read["computed_at"] == read["from"] == _iso(t0)
    assert _when(read["to"]) == t0 + timedelta(days=62)
    assert read["complete"] is True
    (mine,) = read["resources"]
    assert (mine["resource_id"], mine["name"]) == (room, "Board room, 1st floor")
    h = timedelta(hours=1)
    # Monday: closed until 9; the 10-11 booking with its 15 minutes after, and the 15 minutes
    # before it that a 30-minute booking's own buffer would run into (BUSY); 11:15-11:30 no
    # start on the 30-minute grid covers; closed from 17. Tuesday: the blackout.
    assert _json_periods(mine)[:6] == [
        (t0, t0 + 9 * h, "BUSY-UNAVAILABLE"),
        (t0 + 9.75 * h, t0 + 11.25 * h, "BUSY"),
        (t0 + 11.25 * h, t0 + 11.5 * h, "BUSY-UNAVAILABLE"),
        (t0 + 17 * h, t0 + 33 * h, "BUSY-UNAVAILABLE"),
        (t0 + 36 * h, t0 + 37 * h, "BUSY-UNAVAILABLE"),
        (t0 + 41 * h, t0 + 57 * h, "BUSY-UNAVAILABLE"),
    ]
    # The weekend is one period; the last one runs to the end of the window.
    assert (t0 + 113 * h, t0 + 177 * h, "BUSY-UNAVAILABLE") in _json_periods(mine)
    assert _json_periods(mine)[-1][1] == t0 + timedelta(days=62)

    # iCalendar: one VFREEBUSY with the same periods, in UTC, as three parsers read them.
    assert ics.status_code == 200
    assert ics.headers["content-type"] == "text/calendar; charset=utf-8"
    body = ics.content
    uid = f"freebusy-{room}@reservations"
    for parse in (_by_icalendar, _by_ical, _by_vobject):
        assert parse(body) == {uid: _json_periods(mine)}, parse.__name__
    text = body.decode()
    assert "FREEBUSY;FBTYPE=BUSY:" in text
    assert f"DTSTAMP:{t0:%Y%m%dT%H%M%SZ}\r\n" in text
    assert "COMMENT:Board room\\, 1st floor\r\n" in text
    # No booker details: no customer, no reservation, no event.
    for said in (body, _fetch(app_client, feed["json_url"]).content):
        assert b"Alice" not in said
        assert booked.json()["id"].encode() not in said
    assert "BEGIN:VEVENT" not in text


def test_freebusy_feeds_cache_revoke_and_refuse_what_they_are_not(
    tenant: Tenant, app_client: TestClient, clock: Clock
) -> None:
    admin, t0 = tenant.admin, _monday_ahead(8)
    room = admin.resource(name="Cached")["id"]
    with frozen(clock, t0):
        feed = _created(admin.post("/v1/feeds", json={"content": "freebusy", "resource_id": room}))
        for url in (feed["url"], feed["json_url"]):
            first = _fetch(app_client, url)
            tag = first.headers["etag"]
            assert first.headers["cache-control"] == "private, max-age=300"
            assert _fetch(app_client, url, **{"If-None-Match": tag}).status_code == 304
            head = app_client.head(httpx.URL(url).path)
            assert (head.status_code, head.headers["etag"], head.content) == (200, tag, b"")
        # A booking changes the periods, and so the ETag.
        assert admin.book(room, _iso(t0 + MINUTE * 60), _iso(t0 + MINUTE * 90)).status_code == 201
        assert _fetch(app_client, feed["json_url"]).headers["etag"] != tag
    # An empty policy and no bookings: free from the step on.
    with frozen(clock, t0 + timedelta(minutes=3)):
        read = _json(app_client, feed)
    assert read["computed_at"] == _iso(t0)
    (busy,) = [p for p in read["resources"][0]["busy"] if p["type"] == "busy"]
    assert (_when(busy["start"]), _when(busy["end"])) == (t0 + 60 * MINUTE, t0 + 90 * MINUTE)
    # The past of the step (its start to now) and the rest of it (a start must not lie
    # before the step's end, so what is shown free stays bookable for the whole step).
    assert read["resources"][0]["busy"][0] == {
        "start": _iso(t0),
        "end": _iso(t0 + 5 * MINUTE),
        "type": "busy-unavailable",
    }

    # An events feed has no JSON; a revoked free/busy feed is gone in both forms.
    events = _created(admin.post("/v1/feeds", json={"resource_id": room}))
    assert (events["content"], events["json_url"]) == ("events", None)
    token = events["url"].rsplit("/", 1)[1].removesuffix(".ics")
    _problem(app_client.get(f"/feeds/{token}.json"), 404, "not-found")
    assert admin.delete(f"/v1/feeds/{feed['id']}").status_code == 204
    for url in (feed["url"], feed["json_url"]):
        _problem(_fetch(app_client, url), 404, "not-found")

    # Targets: a tag's feed is free/busy only, a key's events only, one target at a time.
    for body in (
        {"tag": "rooms"},
        {"content": "freebusy", "api_key_prefix": "A" * 12},
        {"content": "freebusy", "resource_id": room, "tag": "rooms"},
        {"content": "freebusy"},
        {"content": "busy", "resource_id": room},
    ):
        _problem(admin.post("/v1/feeds", json=body), 422, "invalid-input")


def test_a_tags_feed_has_a_vfreebusy_per_resource(
    tenant: Tenant, other_tenant: Tenant, app_client: TestClient, clock: Clock
) -> None:
    admin, t0 = tenant.admin, _monday_ahead(8)
    ids = sorted(admin.resource(name=f"Bay {n}", tags=["bays"], capacity=2)["id"] for n in range(3))
    admin.resource(name="Not a bay", tags=["desks"])
    other_tenant.admin.resource(name="Their bay", tags=["bays"])
    with frozen(clock, t0):
        # Both units of bay 0 taken 1:00-2:00, one of bay 1's.
        for rid in (ids[0], ids[0], ids[1]):
            made = admin.book(rid, _iso(t0 + 60 * MINUTE), _iso(t0 + 120 * MINUTE))
            assert made.status_code == 201, made.text
        feed = _created(
            admin.post("/v1/feeds", json={"content": "freebusy", "tag": "bays", "label": "Bays"})
        )
        assert (feed["kind"], feed["tag"], feed["resource_id"]) == ("tag", "bays", None)
        read = _json(app_client, feed)
        body = _fetch(app_client, feed["url"]).content
    assert [r["resource_id"] for r in read["resources"]] == ids
    by_id = {r["resource_id"]: _json_periods(r) for r in read["resources"]}
    # Bay 0 is full for that hour; the unit left on bay 1 keeps it free; bay 2 is free.
    assert by_id[ids[0]] == [(t0 + 60 * MINUTE, t0 + 120 * MINUTE, "BUSY")]
    assert by_id[ids[1]] == by_id[ids[2]] == []
    assert "X-WR-CALNAME:Bays\r\n" in body.decode()
    for parse in (_by_icalendar, _by_ical, _by_vobject):
        assert parse(body) == {f"freebusy-{i}@reservations": by_id[i] for i in ids}


# The property. Policies and reservations in the first three days after a Monday; the feed
# is read with the clock stopped at that Monday 00:00 (or a few minutes before), and instants
# of its periods are tried as bookings by an admin without override_rules.
DAYS = 3
_minutes = st.sampled_from


@st.composite
def _policies(draw: st.DrawFn, t0: datetime) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    if draw(st.booleans()):
        hours: dict[str, list[dict[str, str]]] = {}
        for day in WEEKDAYS:
            if draw(st.integers(0, 4)) == 0:
                continue  # closed
            a = draw(st.integers(0, 11))
            b = draw(st.integers(a + 1, 24))
            hours[day] = [{"start": f"{a:02d}:{draw(_minutes([0, 30])):02d}", "end": f"{b:02d}:00"}]
        policy["weekly_hours"] = hours
    blackouts = []
    for _ in range(draw(st.integers(0, 2))):
        start = t0 + timedelta(minutes=15 * draw(st.integers(0, DAYS * 96)))
        length = timedelta(minutes=15 * draw(st.integers(1, 16)))
        blackouts.append({"start": _iso(start), "end": _iso(start + length)})
    policy["blackouts"] = blackouts
    for name, choices in (
        ("buffer_before", [None, "PT15M", "PT30M"]),
        ("buffer_after", [None, "PT10M", "PT45M"]),
        ("min_notice", [None, "PT1H", "PT20H"]),
        ("max_advance", [None, "P1D", "PT40H"]),
        ("slot_grid_minutes", [None, 15, 30, 60, 90]),
    ):
        if (value := draw(st.sampled_from(choices))) is not None:
            policy[name] = value
    shortest = draw(st.sampled_from([None, 15, 30, 60]))
    longest = draw(st.sampled_from([None, 20, 60, 240]))
    if shortest is not None:
        policy["min_duration"] = f"PT{shortest}M"
    if longest is not None and (shortest is None or longest >= shortest):
        policy["max_duration"] = f"PT{longest}M"
    policy["requires_approval"] = draw(st.booleans())  # admins' bookings are confirmed anyway
    return policy


def _floor_to_grid(zone: str, step: int | None, at: datetime) -> datetime:
    """The latest start on the grid at or before `at`."""
    if step is None:
        return at
    return grid_instants(zone, step, at - timedelta(days=1), at + timedelta(microseconds=1))[-1]


def _cancel(admin: Api, made: dict[str, Any]) -> None:
    assert admin.post(f"/v1/reservations/{made['id']}/cancel").status_code == 200


def test_free_is_bookable_and_busy_is_refused(
    tenant: Tenant, app_client: TestClient, clock: Clock, settings: Settings
) -> None:
    admin, t0 = tenant.admin, _monday_ahead(9)
    tried = {"free": 0, "busy": 0}

    @hsettings(
        max_examples=20,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=True,
    )
    @given(
        policy=_policies(t0),
        zone=st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns"]),
        capacity=st.sampled_from([1, 2]),
        bookings=st.lists(st.tuples(st.integers(0, DAYS * 96), st.integers(1, 12)), max_size=4),
        seed=st.integers(0, 2**16),
        early=st.sampled_from([0, 0, 1, 4]),
    )
    def check(
        policy: dict[str, Any],
        zone: str,
        capacity: int,
        bookings: list[tuple[int, int]],
        seed: int,
        early: int,
    ) -> None:
        # The feed is read `early` minutes before t0, inside the step that ends there: what
        # it shows free must be bookable at that moment and at the step's end; what it shows
        # busy is checked when it is read at the boundary itself (exact; docs/feeds.md).
        read_at = stopped.at = t0 - timedelta(minutes=early)
        floor = t0 - timedelta(minutes=5) if early else t0
        horizon_end = floor + timedelta(days=62)
        room = admin.resource(name="Probe", timezone=zone, capacity=capacity, policy=policy)
        rid, rules = room["id"], room["policy"]
        step = rules.get("slot_grid_minutes")
        shortest = timedelta(minutes=_mins(rules.get("min_duration")))
        longest = min(
            timedelta(minutes=_mins(rules.get("max_duration")) or 10**6), settings.max_reservation
        )
        advance = rules.get("max_advance")
        latest = floor + timedelta(minutes=_mins(advance)) if advance else None
        for quarter, quarters in bookings:  # anywhere, closed hours too: override_rules
            start = t0 + timedelta(minutes=15 * quarter)
            end = start + timedelta(minutes=15 * quarters)
            admin.book(rid, _iso(start), _iso(end), override_rules=True)
        feed = _created(admin.post("/v1/feeds", json={"content": "freebusy", "resource_id": rid}))
        (read,) = _json(app_client, feed)["resources"]
        busy = _json_periods(read)
        assert _when(read["from"]) == floor
        edges = [floor, *(t for p in busy for t in p[:2]), horizon_end]
        free = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if a < b]
        rng = random.Random(seed)

        def instants(
            spans: list[tuple[datetime, datetime]], starts: int, ends: int, inside: int
        ) -> list[datetime]:
            """Whole minutes of the spans that start within the three days: mostly the
            minutes at their edges (where a wrong period would show), some in between."""
            firsts, lasts, betweens = [], [], []
            for a, b in spans:
                if a >= t0 + timedelta(days=DAYS) or b - a < MINUTE:
                    continue
                last = min(b, t0 + timedelta(days=DAYS)) - MINUTE
                firsts.append(a)
                lasts.append(last)
                betweens.append(a + MINUTE * rng.randint(0, int((last - a) / MINUTE)))
            for found in (firsts, lasts, betweens):
                rng.shuffle(found)
            return sorted(set(firsts[:starts] + lasts[:ends] + betweens[:inside]))

        # Free: the booking from the latest start on the grid that the period, the length
        # and the advance allow, to just past the instant (or the shortest length).
        for t in instants(free, 2, 3, 0):
            b = next(b for a, b in free if a <= t < b)
            bound = min(t, (b if b < horizon_end else t + shortest) - shortest)
            if latest is not None:
                bound = min(bound, latest)
            s = _floor_to_grid(zone, step, bound)
            e = max(s + shortest, t + MINUTE)
            stopped.at = rng.choice([read_at, t0])
            made = admin.book(rid, _iso(s), _iso(e))
            assert made.status_code == 201, (stopped.at, t, s, e, made.text, busy[:8])
            _cancel(admin, made.json())
            tried["free"] += 1
        if early:
            return
        stopped.at = t0
        # Busy: bookings over the instant from the grid start before it, from the one a
        # shortest booking still covers it from, and the longest from there.
        for t in instants([(a, b) for a, b, _ in busy], 1, 1, 1):
            s = _floor_to_grid(zone, step, t)
            tries = {
                (s, max(s + shortest, t + MINUTE)),
                (
                    (s2 := _floor_to_grid(zone, step, t - shortest + MINUTE)),
                    max(s2 + shortest, t + MINUTE),
                ),
                (s, s + min(longest, timedelta(hours=4))),
            }
            for start, end in tries:
                if not (start <= t < end) or end - start > longest:
                    continue
                made = admin.book(rid, _iso(start), _iso(end))
                if made.status_code == 201:
                    _cancel(admin, made.json())
                assert made.status_code in (409, 422), (t, start, end, made.text, busy[:8])
                tried["busy"] += 1

    with frozen(clock, t0) as stopped:
        check()
    # The property was exercised.
    assert tried["free"] > 20, tried
    assert tried["busy"] > 20, tried


def _mins(duration: str | None) -> int:
    """Minutes of a stored ISO 8601 duration (PT15M, P1D)."""
    if not duration:
        return 0
    return int(TypeAdapter(timedelta).validate_python(duration).total_seconds() // 60)
