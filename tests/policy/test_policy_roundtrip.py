"""Every policy the API accepts reads back as it was sent (after the documented normalisation)
and keeps every route that reads it working; every policy it refuses is a 422 that names the
field and leaves nothing behind.

The strategies draw whole policies: every duration across its range, its edges and just past
them, written in the forms ISO 8601 allows (weeks, days, hours only, seconds only, leading
zeros); weekly hours and date overrides in any order; blackouts with offsets at the edges of
the timestamp range; booker limits; grids. A broken policy is a valid one with one thing made
wrong, so each refusal has one reason the test knows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from reservations.app import create_app
from reservations.availability.schemas import AvailabilityRead
from reservations.kit.clock import Clock
from reservations.kit.fields import EARLIEST, LATEST
from reservations.policy.enforce import policy_of
from reservations.policy.model import Policy
from tests.support.api import Api, Tenant, new_tenant
from tests.support.servers import make_settings

PROBLEM = "application/problem+json"
DAY = 86_400
YEAR = 365 * DAY
LONGEST = 366 * DAY
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ZONES = ["UTC", "Europe/Berlin", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu"]

# (lowest, highest) whole seconds each duration field takes, both inclusive.
RANGES = {
    "buffer_before": (0, DAY),
    "buffer_after": (0, DAY),
    "min_duration": (1, LONGEST),
    "max_duration": (1, LONGEST),
    "min_notice": (0, LONGEST),
    "max_advance": (0, LONGEST),
    "approval_window": (60, 7 * DAY),
}
DEFAULTS: dict[str, Any] = {
    "weekly_hours": None,
    "date_overrides": [],
    "blackouts": [],
    "buffer_before": "PT0S",
    "buffer_after": "PT0S",
    "min_duration": None,
    "max_duration": None,
    "slot_grid_minutes": None,
    "min_notice": None,
    "max_advance": None,
    "booker_limit": None,
    "requires_approval": False,
    "approval_window": "P1D",
    "reminders": [],
    "check_in": None,
}

# --------------------------------------------------------------------------------------------
# durations


def canonical(seconds: int) -> str:
    """The documented written-back form: days, hours, minutes, seconds; zero as PT0S."""
    days, rest = divmod(seconds, DAY)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    if not days and not clock:
        return "PT0S"
    return "P" + (f"{days}D" if days else "") + (f"T{clock}" if clock else "")


@st.composite
def spelled(draw: st.DrawFn, seconds: int) -> str:
    """`seconds` written in one of the ways ISO 8601 (as the API reads it) allows."""
    days, rest = divmod(seconds, DAY)
    forms = [canonical(seconds), f"PT{seconds}S", f"PT{seconds // 60}M{seconds % 60}S"]
    if seconds % 3600 == 0:
        forms.append(f"PT{seconds // 3600}H")
    if rest == 0 and days:
        forms.append(f"P{days:04d}D")
        if days % 7 == 0:
            forms.append(f"P{days // 7}W")
    if days and rest:
        forms.append(f"P{days}DT{rest}S")
    return draw(st.sampled_from(forms))


def edges(low: int, high: int) -> list[int]:
    inside = [low, low + 1, high - 1, high, YEAR - 1, YEAR, YEAR + 1, 60, 3600, DAY - 1, DAY]
    return sorted({s for s in inside if low <= s <= high})


@st.composite
def seconds_in(draw: st.DrawFn, low: int, high: int) -> int:
    return draw(st.sampled_from(edges(low, high)) | st.integers(low, high))


# --------------------------------------------------------------------------------------------
# valid policies


def hhmm(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


@st.composite
def day_hours(draw: st.DrawFn) -> list[dict[str, str]]:
    """Up to 12 intervals that do not overlap (they may touch), in any order."""
    bounds = sorted(draw(st.sets(st.integers(0, 1440), max_size=24)))
    pairs = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
    hours = [{"start": hhmm(a), "end": hhmm(b)} for a, b in pairs]
    return draw(st.permutations(hours))


DATES = st.sampled_from([date(1970, 1, 1), date(8999, 12, 31), date(2031, 3, 30)]) | st.dates(
    date(1970, 1, 1), date(8999, 12, 31)
)
OFFSETS = [timedelta(0), timedelta(hours=14), timedelta(hours=-12), timedelta(hours=5, minutes=45)]


def written(instant: datetime, offset: timedelta) -> str:
    """`instant` in RFC 3339 with this offset (UTC as Z)."""
    local = instant.astimezone(timezone(offset))
    text = local.isoformat()
    return text.replace("+00:00", "Z")


@st.composite
def instants(draw: st.DrawFn) -> datetime:
    edge = st.sampled_from([EARLIEST, LATEST - timedelta(microseconds=1), LATEST - timedelta(1)])
    naive = st.datetimes(datetime(1970, 1, 1), datetime(8999, 12, 31))
    return draw(edge | naive.map(lambda d: d.replace(tzinfo=UTC)))


@st.composite
def blackout(draw: st.DrawFn) -> dict[str, Any]:
    a, b = sorted(draw(st.lists(instants(), min_size=2, max_size=2, unique=True)))
    body = {
        "start": written(a, draw(st.sampled_from(OFFSETS))),
        "end": written(b, draw(st.sampled_from(OFFSETS))),
    }
    if draw(st.booleans()):
        body["reason"] = draw(
            st.text(
                st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=200
            )
        )
    return body


@st.composite
def valid_policy(draw: st.DrawFn) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    for name, (low, high) in RANGES.items():
        if draw(st.booleans()):
            policy[name] = draw(seconds_in(low, high))
    if "min_duration" in policy and "max_duration" in policy:
        lo, hi = sorted((policy["min_duration"], policy["max_duration"]))
        policy["min_duration"], policy["max_duration"] = lo, hi
    policy = {k: draw(spelled(v)) for k, v in policy.items()}
    if draw(st.booleans()):
        days = draw(st.lists(st.sampled_from(WEEKDAYS), unique=True))
        policy["weekly_hours"] = {d: draw(day_hours()) for d in days}
    if draw(st.booleans()):
        dates = draw(st.lists(DATES, unique=True, max_size=4))
        policy["date_overrides"] = [
            {"date": d.isoformat(), "hours": draw(day_hours())} for d in dates
        ]
    if draw(st.booleans()):
        policy["blackouts"] = draw(st.lists(blackout(), max_size=3))
    if draw(st.booleans()):
        policy["slot_grid_minutes"] = draw(st.sampled_from([1, 1440, 15.0]) | st.integers(1, 1440))
    if draw(st.booleans()):
        limit: dict[str, Any] = {"max_live": draw(st.sampled_from([1, 10_000]) | st.integers(1, 9))}
        if draw(st.booleans()):
            limit["period"] = draw(st.sampled_from(["day", "week", "month", None]))
        if draw(st.booleans()):
            limit["per"] = draw(st.sampled_from(["api_key", "customer"]))
        policy["booker_limit"] = limit
    if draw(st.booleans()):
        policy["requires_approval"] = draw(st.booleans())
    return policy


# --------------------------------------------------------------------------------------------
# broken policies: a valid one with one thing wrong


@st.composite
def broken_duration(draw: st.DrawFn) -> tuple[str, Any]:
    name, (low, high) = draw(st.sampled_from(sorted(RANGES.items())))
    wrong: list[Any] = [
        canonical(high + 1),
        f"PT{high + 1}S",
        "P1Y",
        "P1M",
        "P1Y1D",
        "-PT1H",
        "P",
        "PT",
        "P1DT",
        "P\u0661D",  # an Arabic-Indic digit
        "PT0.5S",
        3600,
        None if name in ("buffer_before", "buffer_after", "approval_window") else True,
        f"P{10**30}D",
    ]
    if low > 0:
        wrong.append(canonical(low - 1))
    if high >= YEAR:
        wrong += ["P53W", "P366DT1S", "P367D"]
    value = draw(st.sampled_from(wrong))
    return name, value


@st.composite
def broken_policy(draw: st.DrawFn) -> dict[str, Any]:
    policy = draw(valid_policy())
    kind = draw(
        st.sampled_from(
            [
                "duration",
                "min-above-max",
                "hours-overlap",
                "hours-inverted",
                "hours-13",
                "bad-wall-time",
                "override-date",
                "override-twice",
                "blackout-range",
                "blackout-order",
                "blackout-reason",
                "grid",
                "booker-limit",
                "unknown-field",
            ]
        )
    )
    if kind == "duration":
        name, value = draw(broken_duration())
        policy[name] = value
    elif kind == "min-above-max":
        a = draw(st.integers(2, LONGEST))
        policy["min_duration"], policy["max_duration"] = canonical(a), canonical(a - 1)
    elif kind == "hours-overlap":
        policy["weekly_hours"] = {
            "mon": [{"start": "09:00", "end": "12:00"}, {"start": "11:59", "end": "13:00"}]
        }
    elif kind == "hours-inverted":
        policy["weekly_hours"] = {"tue": [{"start": "10:00", "end": "10:00"}]}
    elif kind == "hours-13":
        hours = [{"start": hhmm(60 * i), "end": hhmm(60 * i + 30)} for i in range(13)]
        policy["date_overrides"] = [{"date": "2031-01-01", "hours": hours}]
    elif kind == "bad-wall-time":
        bad = draw(st.sampled_from(["24:01", "25:00", "9:00", "09:60", "\u0661\u0660:00", ""]))
        policy["weekly_hours"] = {"wed": [{"start": bad, "end": "24:00"}]}
    elif kind == "override-date":
        bad = draw(
            st.sampled_from(
                ["1969-12-31", "9000-01-01", "0001-01-01", "9999-12-31", "2031-02-30", "20310101"]
            )
        )
        policy["date_overrides"] = [{"date": bad, "hours": []}]
    elif kind == "override-twice":
        policy["date_overrides"] = [{"date": "2031-05-05"}, {"date": "2031-05-05", "hours": []}]
    elif kind == "blackout-range":
        start, end = draw(
            st.sampled_from(
                [
                    ("1969-12-31T23:59:59Z", "1970-01-02T00:00:00Z"),
                    ("1970-01-01T00:00:00+00:01", "1970-01-02T00:00:00Z"),
                    ("8999-12-31T00:00:00Z", "9000-01-01T00:00:00Z"),
                    ("8999-12-31T00:00:00Z", "8999-12-31T23:00:00-12:00"),
                    ("0001-01-01T00:00:00+14:00", "2031-01-01T00:00:00Z"),
                    ("2031-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00"),
                    ("2031-01-01T00:00:00", "2031-01-02T00:00:00Z"),
                ]
            )
        )
        policy["blackouts"] = [{"start": start, "end": end}]
    elif kind == "blackout-order":
        policy["blackouts"] = [
            {"start": "2031-01-01T10:00:00Z", "end": "2031-01-01T11:00:00+01:00"}
        ]
    elif kind == "blackout-reason":
        bad = draw(st.sampled_from(["a\x00b", "\ud800", "x\udfff", "r" * 201]))
        policy["blackouts"] = [
            {"start": "2031-01-01T10:00:00Z", "end": "2031-01-01T11:00:00Z", "reason": bad}
        ]
    elif kind == "grid":
        policy["slot_grid_minutes"] = draw(st.sampled_from([0, -15, 1441, 2**63, 1.5, "15", True]))
    elif kind == "booker-limit":
        policy["booker_limit"] = draw(
            st.sampled_from(
                [
                    {"max_live": 0},
                    {"max_live": 10_001},
                    {"max_live": 1, "period": "year"},
                    {"max_live": 1, "per": "tenant"},
                    {},
                ]
            )
        )
    else:
        policy["max_duratoin"] = "PT1H"
    return policy


# --------------------------------------------------------------------------------------------
# what the API must answer


def seconds_of(text: str) -> int:
    m = re.fullmatch(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?", text)
    assert m is not None, text
    w, d, h, mi, s = (int(g or 0) for g in m.groups())
    return (((w * 7 + d) * 24 + h) * 60 + mi) * 60 + s


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def sorted_hours(hours: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(hours, key=lambda i: i["start"])


def expected(sent: dict[str, Any]) -> dict[str, Any]:
    """What GET shows for a policy sent as `sent`: defaults filled, durations in canonical
    form, hours and overrides sorted, blackout instants in UTC."""
    out = {**DEFAULTS, **sent}
    for name in RANGES:
        if out[name] is not None:
            out[name] = canonical(seconds_of(out[name]))
    if out["weekly_hours"] is not None:
        out["weekly_hours"] = {d: sorted_hours(h) for d, h in out["weekly_hours"].items()}
    out["date_overrides"] = sorted(
        (
            {"date": o["date"], "hours": sorted_hours(o.get("hours", []))}
            for o in out["date_overrides"]
        ),
        key=lambda o: o["date"],
    )
    out["blackouts"] = [
        {"start": instant(b["start"]), "end": instant(b["end"]), "reason": b.get("reason", "")}
        for b in out["blackouts"]
    ]
    if out["slot_grid_minutes"] is not None:
        out["slot_grid_minutes"] = int(out["slot_grid_minutes"])
    if out["booker_limit"] is not None:
        out["booker_limit"] = {"period": None, "per": "api_key", **out["booker_limit"]}
    return out


def comparable(shown: dict[str, Any]) -> dict[str, Any]:
    """GET's policy with blackout instants parsed (their text is checked on its own)."""
    out = dict(shown)
    out["blackouts"] = [
        {**b, "start": instant(b["start"]), "end": instant(b["end"])} for b in shown["blackouts"]
    ]
    return out


def check_refused(r: httpx.Response) -> None:
    where = f"{r.request.method} {r.request.url} -> {r.status_code} {r.text[:400]}"
    assert r.status_code == 422, where
    assert r.headers["content-type"] == PROBLEM, where
    body = r.json()
    assert body["type"] == "/problems/invalid-input", where
    assert body["detail"].strip(), where
    assert any(e["field"].startswith("policy") for e in body["errors"]), where
    assert all(e["message"].strip() for e in body["errors"]), where


WINDOW = {"from": "2031-03-29T00:00:00Z", "to": "2031-03-31T00:00:00Z"}


def check_readers(api: Api, rid: str) -> dict[str, Any]:
    """GET, the resource list, availability and search all answer 200 (availability of a
    length the policy forbids: the 422 that says so); GET's body."""
    got = api.get(f"/v1/resources/{rid}")
    assert got.status_code == 200, got.text
    listed = api.get("/v1/resources", params={"limit": 500})
    assert listed.status_code == 200, listed.text
    policy = got.json()["policy"]
    low, high = (policy[k] and seconds_of(policy[k]) for k in ("min_duration", "max_duration"))
    hour_allowed = (low or 0) <= 3600 <= (high or LONGEST)
    r = api.get(f"/v1/resources/{rid}/availability", params=WINDOW)
    assert r.status_code == 200, r.text
    r = api.get(
        f"/v1/resources/{rid}/availability",
        params={**WINDOW, "duration": "PT1H", "explain": "true"},
    )
    if hour_allowed:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 422, r.text
        assert r.json()["reason"] in ("too-short", "too-long"), r.text
    for extra in ({}, {"duration": "PT30M"}):
        r = api.post("/v1/availability/search", json={**WINDOW, **extra})
        assert r.status_code == 200, r.text
    return dict(got.json())


def send(api: Api, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    """`body` as JSON with every non-ASCII character escaped, as a lone surrogate must be."""
    headers = {"Content-Type": "application/json"}
    return api.request(method, path, content=json.dumps(body), headers=headers)


HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(HYPOTHESIS, max_examples=30)
@given(policy=valid_policy(), zone=st.sampled_from(ZONES))
def test_an_accepted_policy_reads_back_as_sent(
    tenant: Tenant, policy: dict[str, Any], zone: str
) -> None:
    api = tenant.admin
    r = send(api, "POST", "/v1/resources", {"name": "Room", "timezone": zone, "policy": policy})
    assert r.status_code == 201, (policy, r.text)
    rid = r.json()["id"]
    assert comparable(r.json()["policy"]) == expected(policy)
    shown = check_readers(api, rid)["policy"]
    assert shown == r.json()["policy"]
    for b in shown["blackouts"]:
        assert b["start"].endswith("Z"), b
        assert b["end"].endswith("Z"), b
    # What GET shows is a policy the API takes back unchanged (it re-serialises to itself).
    again = api.patch(f"/v1/resources/{rid}", json={"policy": shown})
    assert again.status_code == 200, again.text
    assert again.json()["policy"] == shown
    assert check_readers(api, rid)["policy"] == shown


@settings(HYPOTHESIS, max_examples=30)
@given(policy=broken_policy())
def test_a_refused_policy_is_a_422_and_changes_nothing(
    tenant: Tenant, policy: dict[str, Any]
) -> None:
    api = tenant.admin
    check_refused(send(api, "POST", "/v1/resources", {"name": "Broken", "policy": policy}))
    kept = api.resource(name="Kept", policy={"max_advance": "P366D"})
    check_refused(send(api, "PATCH", f"/v1/resources/{kept['id']}", {"policy": policy}))
    assert check_readers(api, kept["id"]) == kept
    names = [i["name"] for i in api.get("/v1/resources", params={"limit": 500}).json()["items"]]
    assert "Broken" not in names


# --------------------------------------------------------------------------------------------
# without I/O: many more policies


@settings(max_examples=150, deadline=None)
@given(policy=valid_policy())
def test_every_valid_policy_survives_storage(policy: dict[str, Any]) -> None:
    parsed = Policy.model_validate(policy)
    written_ = parsed.model_dump(mode="json", exclude_defaults=True)
    again = policy_of(written_)  # as every reader of a stored resource parses it
    assert again == parsed
    assert again.model_dump(mode="json") == parsed.model_dump(mode="json")
    assert comparable(parsed.model_dump(mode="json")) == expected(policy)


@settings(max_examples=150, deadline=None)
@given(policy=broken_policy())
def test_every_broken_policy_is_a_validation_error(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Policy.model_validate(policy)


@pytest.mark.parametrize("seconds", [0, 1, DAY, YEAR - 1, YEAR, YEAR + 1, LONGEST])
def test_durations_are_written_in_days_at_every_length(seconds: int) -> None:
    """Pydantic's own writer spells 365 days "P1Y", which the reader refuses."""
    policy = Policy.model_validate({"max_advance": f"PT{seconds}S"})
    assert policy.model_dump(mode="json")["max_advance"] == canonical(seconds)
    assert Policy.model_validate(policy.model_dump(mode="json")) == policy


def test_an_availability_reply_writes_its_duration_in_days() -> None:
    """The longest reservation may be configured up to 366 days; the reply's duration is then
    one a client can send back."""
    reply = AvailabilityRead.model_validate(
        {
            "resource_id": "00000000-0000-0000-0000-000000000001",
            "timezone": "UTC",
            "capacity": 1,
            "from": EARLIEST,
            "to": EARLIEST + timedelta(days=1),
            "duration": timedelta(days=366),
            "quantity": 1,
            "slots": [],
            "free": [],
        }
    )
    assert json.loads(reply.model_dump_json(by_alias=True))["duration"] == "P366D"


# --------------------------------------------------------------------------------------------
# rows written before the fix


@dataclass
class Legacy:
    api: Api
    database_url: str


@pytest.fixture
def uncached(database_url: str) -> Iterator[Legacy]:
    """An app on the suite's database without Redis: a row changed in SQL is what it reads."""
    app = create_app(make_settings(database_url, redis_url="none"), Clock())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Legacy(new_tenant(client).admin, database_url)


@pytest.mark.parametrize(
    ("stored_as", "shown"),
    [("P1Y", "P365D"), ("P1Y1D", "P366D"), ("P1YT12H", "P365DT12H"), ("P364D", "P364D")],
)
def test_a_duration_stored_in_years_reads_as_its_days(
    uncached: Legacy, stored_as: str, shown: str
) -> None:
    """Durations of 365 days and more were once stored as pydantic wrote them ("P1Y"), after
    which the resource, its availability and the tenant's search all answered 500."""
    rid = uncached.api.resource(name="Old")["id"]
    with psycopg.connect(uncached.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE resource SET policy = %s::jsonb WHERE id = %s",
            (f'{{"max_advance": "{stored_as}", "min_notice": "{stored_as}"}}', rid),
        )
    got = check_readers(uncached.api, rid)["policy"]
    assert (got["max_advance"], got["min_notice"]) == (shown, shown)
