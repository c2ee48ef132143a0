"""What Schemathesis (tests/fuzz/test_openapi.py) found, pinned as ordinary tests: answers that
were 5xx, statuses the document did not list, responses that broke their own schema, input the
document refuses but the API took, and the document's own promises (patterns, components,
links) that the fuzzer relies on."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from tests.support.api import Tenant

PROBLEM = "application/problem+json"
T0, T1 = "2031-05-05T10:00:00Z", "2031-05-05T11:00:00Z"


def _invalid(r: Any, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == "/problems/invalid-input", body
    if field is not None:
        assert any(e["field"] == field for e in body["errors"]), body["errors"]
    return body


@pytest.fixture(scope="module")
def document(app_client: TestClient) -> dict[str, Any]:
    r = app_client.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


# --------------------------------------------------------------------------------------------
# 5xx


@pytest.mark.parametrize("where", ["resource", "reservation"])
def test_metadata_numbers_beyond_64_bits_are_refused(tenant: Tenant, where: str) -> None:
    """1e20 is a float to Python, but PostgreSQL's jsonb prints it as 100000000000000000000,
    which came back as an integer the resource cache's JSON encoder cannot write: a 500 on the
    create and on every later read of the resource."""
    room = tenant.admin.resource()["id"]

    def send(metadata: dict[str, Any]) -> Any:
        if where == "resource":
            return tenant.admin.post("/v1/resources", json={"name": "R", "metadata": metadata})
        return tenant.booker.book(room, T0, T1, metadata=metadata)

    for huge in (1e20, -5.47e153, 2**63, -(2**63)):
        body = _invalid(send({"n": [{"deep": huge}]}), "metadata")
        assert "64 bits" in body["errors"][0]["message"]
    # Just inside the range: stored, and read back through the database and the cache.
    ok = send({"n": 9.2e18, "m": -(2**63) + 1, "f": 1.5})
    assert ok.status_code == 201, ok.text
    path = f"/v1/{where}s/{ok.json()['id']}"
    for _ in range(2):  # a miss fills the cache, a hit reads it
        read = tenant.admin.get(path)
        assert read.status_code == 200, read.text
        assert read.json()["metadata"] == {"n": 9200000000000000000, "m": -(2**63) + 1, "f": 1.5}


def test_a_resource_stored_with_a_huge_number_is_still_served(
    tenant: Tenant, settings: Settings
) -> None:
    """A row written before the API refused such numbers: its reads skip the cache (whose
    encoder cannot write the number) instead of failing."""
    assert settings.database_url is not None
    resource_id = uuid.uuid4()
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            "INSERT INTO resource (id, tenant_id, name, capacity, timezone, metadata,"
            " created_at, updated_at)"
            " SELECT %s, id, 'Old', 1, 'UTC', '{\"n\": 1e20}', now(), now()"
            " FROM tenant WHERE name = %s",
            (resource_id, tenant.name),
        )
    for _ in range(2):
        r = tenant.viewer.get(f"/v1/resources/{resource_id}")
        assert r.status_code == 200, r.text
        assert r.json()["metadata"] == {"n": 10**20}


# --------------------------------------------------------------------------------------------
# statuses the document did not list


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("OPTIONS", "/v1/resources", "GET, POST"),
        ("PUT", "/v1/resources/{rid}", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/reservations/{rid}", "GET, PATCH"),
        ("GET", "/v1/reservations/{rid}/confirm", "POST"),
        ("DELETE", "/v1/bookings/{rid}", "GET, PATCH"),
        ("PUT", "/v1/availability/search", "POST"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_405_allow_names_every_method_of_the_path(
    tenant: Tenant, method: str, path: str, allow: str
) -> None:
    """Starlette answers from the first route whose path matches, so `Allow` named only that
    route's method (OPTIONS /v1/resources said `Allow: POST`)."""
    r = tenant.admin.request(method, path.format(rid="00000000-0000-0000-0000-000000000001"))
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allow
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"] == "/problems/method-not-allowed"
    assert method in r.json()["detail"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("not-utf-8", b'{"name": "\xff\xfe"}', "UTF-8"),
        ("nested-past-the-parser", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("integer-of-5000-digits", b'{"name": "R", "capacity": ' + b"9" * 5000 + b"}", "number"),
    ],
)
def test_unreadable_bodies_are_422_not_400(
    tenant: Tenant, name: str, content: bytes, message: str
) -> None:
    """FastAPI answers a body its JSON reader raises on (other than a syntax error) with a bare
    400 that no operation documents."""
    r = tenant.admin.post(
        "/v1/resources", content=content, headers={"Content-Type": "application/json"}
    )
    body = _invalid(r, "body")
    assert body["errors"][0]["code"] == "json_invalid"
    assert message in body["errors"][0]["message"]


def test_the_500_of_an_unexpected_error_carries_the_usual_headers(settings: Settings) -> None:
    """Starlette's outermost middleware sends it, around the one that adds the security
    headers and the request id: the 500 had neither."""
    app = create_app(settings, Clock())

    def boom() -> None:
        raise RuntimeError("SELECT secret FROM api_key")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM
    assert r.headers["x-request-id"] == "req-500"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"
    assert "SELECT" not in r.text
    assert "Traceback" not in r.text


# --------------------------------------------------------------------------------------------
# responses that broke their own schema


def test_availability_without_duration_matches_its_schema(
    tenant: Tenant, document: dict[str, Any]
) -> None:
    """The reply leaves out null fields, `duration` among them without a `duration`
    parameter, and the schema required it."""
    room = tenant.admin.resource()["id"]
    r = tenant.viewer.get(
        f"/v1/resources/{room}/availability",
        params={"from": "2031-05-05T00:00:00Z", "to": "2031-05-06T00:00:00Z"},
    )
    assert r.status_code == 200, r.text
    assert "duration" not in r.json()
    schema = document["components"]["schemas"]["AvailabilityRead"]
    assert set(schema["required"]) <= set(r.json())


# --------------------------------------------------------------------------------------------
# input the document refuses and the API took


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "R", "capacity": "3"}, "capacity"),
        ({"name": "R", "capacity": True}, "capacity"),
        ({"name": "R", "policy": {"slot_grid_minutes": "30"}}, "policy.slot_grid_minutes"),
        ({"name": "R", "policy": {"booker_limit": {"max_live": "2"}}}, "policy.booker_limit"),
        ({"name": "R", "policy": {"date_overrides": [{"date": 0}]}}, "policy.date_overrides"),
        (
            {"name": "R", "policy": {"date_overrides": [{"date": "2031-05-05T00:00:00Z"}]}},
            "policy.date_overrides",
        ),
    ],
)
def test_json_types_are_not_coerced_on_resources(
    tenant: Tenant, body: dict[str, Any], field: str
) -> None:
    """Python's lax reading took "3" and true for integers and 0 for a date (1970-01-01)."""
    r = tenant.admin.post("/v1/resources", json=body)
    errors = _invalid(r)["errors"]
    assert any(e["field"].startswith(field) for e in errors), errors


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"quantity": "1"}, "quantity"),
        ({"quantity": True}, "quantity"),
        ({"hold_seconds": "60"}, "hold_seconds"),
        ({"override_rules": 1}, "override_rules"),
        ({"override_rules": "true"}, "override_rules"),
    ],
)
def test_json_types_are_not_coerced_on_reservations(
    tenant: Tenant, fields: dict[str, Any], field: str
) -> None:
    room = tenant.admin.resource()["id"]
    _invalid(tenant.admin.book(room, T0, T1, **fields), field)
    assert tenant.admin.get("/v1/reservations", params={"resource_id": room}).json()["items"] == []


def test_json_integers_may_be_written_with_a_zero_fraction(tenant: Tenant) -> None:
    """The control: JSON Schema's integer includes 3.0, and so does the API."""
    r = tenant.admin.post("/v1/resources", json={"name": "R", "capacity": 3.0})
    assert r.status_code == 201, r.text
    assert r.json()["capacity"] == 3
    booked = tenant.admin.book(r.json()["id"], T0, T1, quantity=2.0, hold_seconds=60.0)
    assert booked.status_code == 201, booked.text
    _invalid(tenant.admin.book(r.json()["id"], T0, T1, quantity=1.5), "quantity")


@pytest.mark.parametrize("value", ["\xb2", "\xb3", "1\xb9", "null", "", '""', "3 4", "W/"])
def test_malformed_if_match_is_422(tenant: Tenant, value: str) -> None:
    """The document allowed any text (and null, which a client sends as "null"); it now gives
    the pattern the API reads, and anything else is a 422 naming the header. (Digits are
    [0-9]: the reader no longer leans on `str.isdigit()`, which also takes "²".)"""
    room = tenant.admin.resource()["id"]
    header = {"If-Match": value.encode("latin-1")}
    r = tenant.admin.patch(f"/v1/resources/{room}", json={"name": "X"}, headers=header)
    body = _invalid(r, "If-Match")
    assert body["errors"][0]["in"] == "header"
    assert tenant.admin.get(f"/v1/resources/{room}").json()["name"] == "Room"


@pytest.mark.parametrize("value", ['"1"', 'W/"1"', "1", " 1 ", "*"])
def test_well_formed_if_match_is_honoured(tenant: Tenant, value: str) -> None:
    room = tenant.admin.resource()["id"]
    r = tenant.admin.patch(f"/v1/resources/{room}", json={"name": "X"}, headers={"If-Match": value})
    assert r.status_code == 200, r.text


def test_name_length_counts_what_was_sent(tenant: Tenant) -> None:
    """The schema's maxLength is of the text sent; white space around the name is dropped
    when stored, and a name of only white space (any Unicode space) is refused."""
    _invalid(tenant.admin.post("/v1/resources", json={"name": " " + "a" * 200}), "name")
    for blank in (" ", "\t", "\x1c", "\u3000 \u2028"):
        _invalid(tenant.admin.post("/v1/resources", json={"name": blank}), "name")
    r = tenant.admin.post("/v1/resources", json={"name": "  Room 1 \u3000"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Room 1"


# --------------------------------------------------------------------------------------------
# the document's promises


def _schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas_in(value)


def test_document_has_no_dangling_marks_or_references(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    for node in _schemas_in(document):
        assert "x-component" not in node
        ref = node.get("$ref")
        if ref is not None:
            assert ref.startswith("#/components/schemas/"), ref
            assert ref.rsplit("/", 1)[1] in components, ref
    assert "Europe/Berlin" in components["TimeZoneName"]["enum"]
    assert "localtime" not in components["TimeZoneName"]["enum"]


def test_parameters_are_never_null(document: dict[str, Any]) -> None:
    """A header or query parameter is sent or not; `null` would be sent as the text null."""
    for item in document["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                assert {"type": "null"} not in list(_schemas_in(parameter["schema"])), parameter


def test_patterns_compile_as_the_validators_read_them(document: dict[str, Any]) -> None:
    """Every pattern the document gives is one Python's `re` reads (Schemathesis generates
    from it, and the ECMA-262 subset they use is common to both)."""
    patterns = {n["pattern"] for n in _schemas_in(document) if isinstance(n.get("pattern"), str)}
    assert len(patterns) >= 8
    for pattern in patterns:
        re.compile(pattern)


def test_operations_link_what_they_create_to_what_acts_on_it(document: dict[str, Any]) -> None:
    ops = {
        op["operationId"]: op
        for item in document["paths"].values()
        for op in item.values()
        if "operationId" in op
    }
    for source, status, targets in [
        ("create_resource", "201", {"get_resource", "update_resource", "delete_resource"}),
        ("create_reservation", "201", {"get_reservation", "confirm_reservation"}),
        ("create_booking", "201", {"get_booking", "cancel_booking", "move_booking"}),
    ]:
        links = ops[source]["responses"][status]["links"]
        linked = {link["operationId"] for link in links.values()}
        assert targets <= linked, (source, linked)
        assert linked <= set(ops), linked - set(ops)
