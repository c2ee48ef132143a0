"""Free text into every field that takes it: what the API accepts reads back exactly as sent
(a name without the white space around it), and what it cannot store (a NUL, a lone surrogate,
too many characters) is a 422 naming the field, never a 5xx and never a half-made object.

Bodies are sent as JSON with every non-ASCII character escaped, so a lone surrogate arrives as
the six characters \\ud800, as a client's JSON encoder would send it; a high and a low
surrogate side by side are one character on arrival.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reservations.kit.fields import METADATA_MAX_BYTES
from tests.support.api import Api, Tenant, new_tenant

PROBLEM = "application/problem+json"
START, END = "2031-06-01T10:00:00Z", "2031-06-01T11:00:00Z"
# A public address written as a literal: registering it needs no DNS.
RECEIVER = "https://93.184.215.14/hook"


def send(api: Api, method: str, path: str, body: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    return api.request(method, path, content=json.dumps(body), headers=headers)


def created(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def get(api: Api, path: str) -> dict[str, Any]:
    r = api.get(path)
    assert r.status_code == 200, r.text
    return dict(r.json())


@dataclass
class Place:
    tenant: Tenant
    resource_id: str
    reservation_id: str
    webhook_id: str


@pytest.fixture(scope="module")
def place(app_client: TestClient) -> Place:
    t = new_tenant(app_client)
    rid = t.admin.resource(name="Hall", capacity=1_000_000)["id"]
    reservation = created(t.booker.book(rid, START, END))
    webhook = created(t.admin.post("/v1/webhooks", json={"url": RECEIVER}))
    return Place(t, rid, reservation["id"], webhook["id"])


@dataclass(frozen=True)
class TextField:
    """One free-text field: how to send a value, how to read it back, its rules."""

    id: str
    error: str  # the `field` of the 422's error
    max_length: int
    send: Callable[[Place, str], httpx.Response]
    read: Callable[[Place, httpx.Response], str]
    min_length: int = 0
    stripped: bool = False  # stored without the white space around it
    metadata: Callable[[str], dict[str, Any]] | None = None  # the object the text is in

    def stored_as(self, value: str) -> str:
        return value.strip() if self.stripped else value

    def valid(self, value: str) -> bool:
        if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
            return False
        if not self.min_length <= len(value) <= self.max_length:
            return False
        if self.stripped and not value.strip():
            return False
        if self.metadata is None:
            return True
        compact = json.dumps(self.metadata(value), ensure_ascii=False, separators=(",", ":"))
        return len(compact.encode()) <= METADATA_MAX_BYTES


def _resource(p: Place, r: httpx.Response) -> dict[str, Any]:
    return get(p.tenant.admin, f"/v1/resources/{r.json()['id']}")


def _reservation(p: Place, r: httpx.Response) -> dict[str, Any]:
    return get(p.tenant.booker, f"/v1/reservations/{r.json()['id']}")


def _webhook(p: Place, r: httpx.Response) -> dict[str, Any]:
    return get(p.tenant.admin, f"/v1/webhooks/{r.json()['id']}")


def _booking(p: Place, value: str) -> httpx.Response:
    body = {"resources": [{"resource_id": p.resource_id}], "start": START, "end": END}
    return send(p.tenant.booker, "POST", "/v1/bookings", {**body, "customer": value})


FIELDS = [
    TextField(
        "resource-name",
        "name",
        200,
        lambda p, v: send(p.tenant.admin, "POST", "/v1/resources", {"name": v}),
        lambda p, r: _resource(p, r)["name"],
        min_length=1,
        stripped=True,
    ),
    TextField(
        "resource-name-patch",
        "name",
        200,
        lambda p, v: send(p.tenant.admin, "PATCH", f"/v1/resources/{p.resource_id}", {"name": v}),
        lambda p, r: _resource(p, r)["name"],
        min_length=1,
        stripped=True,
    ),
    TextField(
        "resource-metadata-value",
        "metadata",
        METADATA_MAX_BYTES,
        lambda p, v: send(
            p.tenant.admin, "POST", "/v1/resources", {"name": "M", "metadata": {"k": v}}
        ),
        lambda p, r: _resource(p, r)["metadata"]["k"],
        metadata=lambda v: {"k": v},
    ),
    TextField(
        "resource-metadata-key",
        "metadata",
        METADATA_MAX_BYTES,
        lambda p, v: send(
            p.tenant.admin, "POST", "/v1/resources", {"name": "M", "metadata": {v: 1}}
        ),
        lambda p, r: next(iter(_resource(p, r)["metadata"])),
        metadata=lambda v: {v: 1},
    ),
    TextField(
        "blackout-reason",
        "policy.blackouts.0.reason",
        200,
        lambda p, v: send(
            p.tenant.admin,
            "POST",
            "/v1/resources",
            {"name": "B", "policy": {"blackouts": [{"start": START, "end": END, "reason": v}]}},
        ),
        lambda p, r: _resource(p, r)["policy"]["blackouts"][0]["reason"],
    ),
    TextField(
        "reservation-customer",
        "customer",
        200,
        lambda p, v: send(
            p.tenant.booker,
            "POST",
            "/v1/reservations",
            {"resource_id": p.resource_id, "start": START, "end": END, "customer": v},
        ),
        lambda p, r: _reservation(p, r)["customer"],
        min_length=1,
    ),
    TextField(
        "reservation-customer-patch",
        "customer",
        200,
        lambda p, v: send(
            p.tenant.booker, "PATCH", f"/v1/reservations/{p.reservation_id}", {"customer": v}
        ),
        lambda p, r: _reservation(p, r)["customer"],
        min_length=1,
    ),
    TextField(
        "reservation-metadata-value",
        "metadata",
        METADATA_MAX_BYTES,
        lambda p, v: send(
            p.tenant.booker,
            "POST",
            "/v1/reservations",
            {"resource_id": p.resource_id, "start": START, "end": END, "metadata": {"k": v}},
        ),
        lambda p, r: _reservation(p, r)["metadata"]["k"],
        metadata=lambda v: {"k": v},
    ),
    TextField(
        "booking-customer",
        "customer",
        200,
        _booking,
        lambda p, r: get(p.tenant.booker, f"/v1/bookings/{r.json()['id']}")["customer"],
        min_length=1,
    ),
    TextField(
        "waitlist-customer",
        "customer",
        200,
        lambda p, v: send(
            p.tenant.booker,
            "POST",
            "/v1/waitlist",
            {"resource_id": p.resource_id, "start": START, "end": END, "customer": v},
        ),
        lambda p, r: get(p.tenant.booker, f"/v1/waitlist/{r.json()['id']}")["customer"],
        min_length=1,
    ),
    TextField(
        "webhook-description",
        "description",
        500,
        lambda p, v: send(
            p.tenant.admin, "POST", "/v1/webhooks", {"url": RECEIVER, "description": v}
        ),
        lambda p, r: _webhook(p, r)["description"],
    ),
    TextField(
        "webhook-description-patch",
        "description",
        500,
        lambda p, v: send(
            p.tenant.admin, "PATCH", f"/v1/webhooks/{p.webhook_id}", {"description": v}
        ),
        lambda p, r: _webhook(p, r)["description"],
    ),
    TextField(
        "feed-label",
        "label",
        200,
        lambda p, v: send(
            p.tenant.admin, "POST", "/v1/feeds", {"resource_id": p.resource_id, "label": v}
        ),
        lambda p, r: str(r.json()["label"]),
    ),
]

NASTY = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ud83d\ude00", " ", "\u2028", "\ufeff"]


@st.composite
def texts(draw: st.DrawFn, field: TextField) -> str:
    """Short texts of any characters (the nasty ones often), and texts at and around the
    field's length limit."""
    char = st.characters() | st.sampled_from(NASTY)
    short = st.lists(char, max_size=12).map("".join)
    n = draw(st.sampled_from([field.max_length - 1, field.max_length, field.max_length + 1]))
    filler = draw(st.sampled_from(["y", "\u00e9", "\U0001f600"]))
    tail = draw(st.lists(st.sampled_from(NASTY), max_size=2))
    near_limit = st.just(filler * max(n - len(tail), 0) + "".join(tail))
    return draw(short | short | near_limit)


def arrives_as(value: str) -> str:
    """The text the server decodes from json.dumps(value): adjacent surrogates pair up."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def check_refused(field: TextField, r: httpx.Response) -> None:
    where = f"{field.id}: {r.status_code} {r.text[:300]}"
    assert r.status_code == 422, where
    assert r.headers["content-type"] == PROBLEM, where
    body = r.json()
    assert body["detail"].strip(), where
    named = [e["field"] for e in body["errors"]]
    assert any(n == field.error or n.startswith(field.error + ".") for n in named), where
    assert all(e["message"].strip() for e in body["errors"]), where


@pytest.mark.parametrize("field", FIELDS, ids=[f.id for f in FIELDS])
def test_free_text_reads_back_or_is_refused(place: Place, field: TextField) -> None:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(value=texts(field))
    def check(value: str) -> None:
        r = field.send(place, value)
        sent = arrives_as(value)
        if not field.valid(sent):
            check_refused(field, r)
            return
        assert r.status_code in (200, 201), f"{field.id}: {r.status_code} {r.text[:300]}"
        assert field.read(place, r) == field.stored_as(sent)

    check()


@pytest.mark.parametrize("value", ["\x00", "\ud800", "FREQ=DAILY;COUNT=2\x00", "FREQ=DAILY\udfff"])
def test_an_rrule_carries_no_nul_and_no_lone_surrogate(place: Place, value: str) -> None:
    body = {
        "resources": [{"resource_id": place.resource_id}],
        "start": START,
        "end": END,
        "rrule": value,
    }
    r = send(place.tenant.booker, "POST", "/v1/bookings", body)
    assert r.status_code == 422, r.text
    assert [e["field"] for e in r.json()["errors"]] == ["rrule"], r.text


def test_a_lone_surrogate_is_named_with_what_to_send(place: Place) -> None:
    r = place.tenant.admin.request(
        "POST",
        "/v1/webhooks",
        content=f'{{"url": "{RECEIVER}", "description": "a\\ud800"}}',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "description"
    assert "surrogate" in error["message"]
    assert "\\ud83d\\ude00" in error["message"]  # how to write a character beyond U+FFFF


def test_a_length_beyond_a_narrowed_limit_is_counted_in_characters(place: Place) -> None:
    r = send(
        place.tenant.admin, "POST", "/v1/webhooks", {"url": RECEIVER, "description": "d" * 501}
    )
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["message"] == "String should have at most 500 characters", error


# --------------------------------------------------------------------------------------------
# every string a request takes is bounded


NO_NUL = "^[^\\x00]*$"
# Strings bounded otherwise: a metadata value by the whole object's 16 KiB; a feed's token is
# not stored, and every wrong one gets the same 404 (feeds/endpoints.py says why it is unbounded).
BOUNDED_ELSEWHERE = ("MetadataValue", "/feeds/{token}.ics token", "/feeds/{token}.json token")
FREE_TEXT_KEYS = ("properties", "additionalProperties", "items", "anyOf", "oneOf", "allOf")


def _strings(
    schema: Any, components: dict[str, Any], path: str
) -> list[tuple[str, dict[str, Any]]]:
    """Every string schema under `schema` that is free text: no pattern of its own (or one
    that only refuses NUL, and blanks for a name), nor one on the schema that holds it."""
    if not isinstance(schema, dict):
        return []
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in path.split(">"):  # a recursive schema (MetadataValue)
            return []
        return _strings(components[name], components, f"{path}>{name}")
    if not schema.get("pattern", NO_NUL).startswith(NO_NUL[:7]) or "enum" in schema:
        return []  # a format of its own (a tag, a wall time, an If-Match), not free text
    if "format" in schema:
        return []
    out = [(path, schema)] if schema.get("type") == "string" else []
    for key in FREE_TEXT_KEYS:
        sub = schema.get(key)
        if key == "properties" and isinstance(sub, dict):
            for name, prop in sub.items():
                out += _strings(prop, components, f"{path}.{name}")
        elif isinstance(sub, list):
            for item in sub:
                out += _strings(item, components, path)
        elif isinstance(sub, dict):
            out += _strings(sub, components, path)
    return out


def test_every_free_text_a_request_takes_is_bounded(app_client: TestClient) -> None:
    """A free-text field with no maxLength lets a client store as much as the body limit
    allows: each one narrows kit/fields.Text to a length."""
    doc = app_client.get("/openapi.json").json()
    components = doc["components"]["schemas"]
    found = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            for param in op.get("parameters", []):
                found += _strings(param["schema"], components, f"{where} {param['name']}")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            found += _strings(body.get("schema", {}), components, f"{where} body")
    reached = {where.rsplit(".", 1)[-1] for where, _ in found}
    assert {"name", "customer", "description", "label", "rrule", "reason"} <= reached
    unbounded = [
        where
        for where, s in found
        if "maxLength" not in s and not any(b in where for b in BOUNDED_ELSEWHERE)
    ]
    assert unbounded == [], "\n".join(unbounded)
