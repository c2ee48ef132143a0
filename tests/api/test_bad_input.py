"""Nasty inputs: every one is refused with a 4xx problem+json that says what to fix, none
reaches the database as a 5xx, and none leaves anything behind.

Placeholders in paths, bodies and raw texts: @RESOURCE@ is a live resource of the caller's
tenant, @UNKNOWN@ a well-formed id that exists nowhere.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.api import Api, Tenant, new_tenant

PROBLEM = "application/problem+json"
MIB = 1_048_576

RESOURCE = "@RESOURCE@"
UNKNOWN = "@UNKNOWN@"
T0, T1 = "2031-01-01T10:00:00Z", "2031-01-01T11:00:00Z"


def room(**fields: Any) -> dict[str, Any]:
    """A valid resource body, changed by `fields`."""
    return {"name": "Room", **fields}


def booking(**fields: Any) -> dict[str, Any]:
    """A valid reservation body, changed by `fields`."""
    return {"resource_id": RESOURCE, "start": T0, "end": T1, **fields}


def b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def big_body() -> bytes:
    return b'{"name": "Room", "metadata": {"k": "' + b"x" * MIB + b'"}}'


def chunked_big_body() -> Iterator[bytes]:
    yield b'{"name": "Room", "metadata": {"k": "'
    for _ in range(17):
        yield b"x" * 65_536
    yield b'"}}'


_NO_JSON = object()


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    json: Any = _NO_JSON
    content: str | bytes | None = None
    stream: Callable[[], Iterator[bytes]] | None = None
    params: dict[str, Any] | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    status: int | tuple[int, ...] = 422
    # For 422: some item of `errors` names one of these fields (a prefix before '.' counts).
    fields: tuple[str, ...] = ()
    # The detail contains one of these (case-insensitive); defaults to the fields.
    hint: tuple[str, ...] | None = None
    slug: str | None = None
    role: str = "admin"

    @property
    def statuses(self) -> tuple[int, ...]:
        return self.status if isinstance(self.status, tuple) else (self.status,)


def c(
    id: str,
    method: str,
    path: str,
    *fields: str,
    **kw: Any,
) -> Any:
    return pytest.param(Case(id=id, method=method, path=path, fields=fields, **kw), id=id)


RES = "/v1/resources"
RSV = "/v1/reservations"
RES_ID = f"{RES}/{RESOURCE}"
RSV_UNKNOWN = f"{RSV}/{UNKNOWN}"
BOOK = {"role": "booker"}
JSON_CT = {"Content-Type": "application/json"}

CASES = [
    # ---- timestamps in the body
    c("naive-start", "POST", RSV, "start", json=booking(start="2031-01-01T10:00:00"), **BOOK),
    c("naive-end", "POST", RSV, "end", json=booking(end="2031-01-01T11:00:00"), **BOOK),
    c("naive-start-with-space", "POST", RSV, "start", json=booking(start="2031-01-01 10:00:00")),
    c("date-only-start", "POST", RSV, "start", json=booking(start="2031-01-01"), **BOOK),
    c("date-only-end", "POST", RSV, "end", json=booking(end="2031-01-02"), **BOOK),
    c("epoch-int-start", "POST", RSV, "start", json=booking(start=1924_941_600), **BOOK),
    c("epoch-float-end", "POST", RSV, "end", json=booking(end=1924_945_200.5), **BOOK),
    c("epoch-string-start", "POST", RSV, "start", json=booking(start="1924941600"), **BOOK),
    c("garbage-start", "POST", RSV, "start", json=booking(start="tomorrow at ten"), **BOOK),
    c("empty-start", "POST", RSV, "start", json=booking(start=""), **BOOK),
    c("month-13", "POST", RSV, "start", json=booking(start="2031-13-01T10:00:00Z"), **BOOK),
    c("february-30", "POST", RSV, "start", json=booking(start="2031-02-30T10:00:00Z"), **BOOK),
    c("hour-25", "POST", RSV, "start", json=booking(start="2031-01-01T25:00:00Z"), **BOOK),
    c("offset-25h", "POST", RSV, "start", json=booking(start="2031-01-01T10:00:00+25:00")),
    c("null-start", "POST", RSV, "start", json=booking(start=None), **BOOK),
    c("object-start", "POST", RSV, "start", json=booking(start={"year": 2031}), **BOOK),
    c("list-end", "POST", RSV, "end", json=booking(end=[2031, 1, 1]), **BOOK),
    c("missing-end", "POST", RSV, "end", json={"resource_id": RESOURCE, "start": T0}, **BOOK),
    # ---- a pool instead of a resource (docs/pools.md)
    c("no-resource-nor-pool", "POST", RSV, "resource_id", json={"start": T0, "end": T1}, **BOOK),
    c("pool-and-resource", "POST", RSV, "resource_id", json=booking(pool={"tags": ["x"]}), **BOOK),
    c("pool-empty", "POST", RSV, "pool", json={"pool": {}, "start": T0, "end": T1}, **BOOK),
    c("pool-not-object", "POST", RSV, "pool", json={"pool": "rooms", "start": T0, "end": T1}),
    c(
        "pool-unknown-strategy",
        "POST",
        RSV,
        "pool.strategy",
        json={"pool": {"tags": ["x"], "strategy": "random"}, "start": T0, "end": T1},
    ),
    c("pool-nul-tag", "POST", RSV, "pool.tags", json={"pool": {"tags": ["a\x00"]}, "start": T0}),
    c(
        "pool-twice-the-same-id",
        "POST",
        RSV,
        "pool.resource_ids",
        json={"pool": {"resource_ids": [RESOURCE, RESOURCE]}, "start": T0, "end": T1},
    ),
    c(
        "pool-matches-nothing",
        "POST",
        RSV,
        "pool",
        json={"pool": {"resource_ids": [UNKNOWN]}, "start": T0, "end": T1},
        **BOOK,
    ),
    c(
        "pool-min-capacity-past-64-bits",
        "POST",
        RSV,
        "pool.min_capacity",
        json={"pool": {"tags": ["x"], "min_capacity": 2**70}, "start": T0, "end": T1},
    ),
    c(
        "booking-two-pools",
        "POST",
        "/v1/bookings",
        "resources",
        json={
            "resources": [{"pool": {"tags": ["a"]}}, {"pool": {"tags": ["b"]}}],
            "start": T0,
            "end": T1,
        },
    ),
    c("end-equals-start", "POST", RSV, "end", "start", json=booking(end=T0), **BOOK),
    c(
        "end-before-start",
        "POST",
        RSV,
        "end",
        "start",
        json=booking(start=T1, end=T0),
        **BOOK,
    ),
    c(
        "end-equals-start-other-offset",
        "POST",
        RSV,
        "end",
        "start",
        json=booking(end="2031-01-01T12:00:00+02:00"),
        **BOOK,
    ),
    c(
        "year-0001",
        "POST",
        RSV,
        "start",
        json=booking(start="0001-01-01T00:00:00Z", end="0001-01-01T01:00:00Z"),
        **BOOK,
    ),
    c(
        "year-0001-plus-14",
        "POST",
        RSV,
        "start",
        json=booking(start="0001-01-01T00:00:00+14:00", end="0001-01-01T01:00:00+14:00"),
        **BOOK,
    ),
    c(
        "year-9999",
        "POST",
        RSV,
        "start",
        json=booking(start="9999-12-31T10:00:00Z", end="9999-12-31T11:00:00Z"),
        **BOOK,
    ),
    c(
        "year-9999-minus-12",
        "POST",
        RSV,
        "end",
        json=booking(start="9999-12-31T10:00:00Z", end="9999-12-31T23:00:00-12:00"),
        **BOOK,
    ),
    c(
        "before-1970",
        "POST",
        RSV,
        "start",
        json=booking(start="1969-12-31T23:00:00Z", end="1970-01-01T01:00:00Z"),
        **BOOK,
    ),
    c(
        "longer-than-31-days",
        "POST",
        RSV,
        "end",
        json=booking(end="2031-02-01T10:00:01Z"),
        hint=("at most",),
        **BOOK,
    ),
    c(
        "patch-naive-start",
        "PATCH",
        RSV_UNKNOWN,
        "start",
        json={"start": "2031-01-01T10:00:00"},
        **BOOK,
    ),
    c(
        "patch-date-only-end",
        "PATCH",
        RSV_UNKNOWN,
        "end",
        json={"end": "2031-01-02"},
        **BOOK,
    ),
    c(
        "patch-year-9999-minus-12",
        "PATCH",
        RSV_UNKNOWN,
        "end",
        json={"end": "9999-12-31T23:00:00-12:00"},
        **BOOK,
    ),
    # ---- timestamps in the query
    c("query-naive-from", "GET", RSV, "from", params={"from": "2031-01-01T10:00:00"}),
    c("query-naive-to", "GET", RSV, "to", params={"to": "2031-01-01T10:00:00"}),
    c("query-date-only-from", "GET", RSV, "from", params={"from": "2031-01-01"}),
    c("query-epoch-to", "GET", RSV, "to", params={"to": "1924941600"}),
    c("query-garbage-from", "GET", RSV, "from", params={"from": "yesterday"}),
    c("query-year-0001-plus-14", "GET", RSV, "from", params={"from": "0001-01-01T00:00:00+14:00"}),
    c("query-year-9999-minus-12", "GET", RSV, "to", params={"to": "9999-12-31T23:00:00-12:00"}),
    c(
        "query-to-before-from",
        "GET",
        RSV,
        "to",
        params={"from": "2031-01-02T00:00:00Z", "to": "2031-01-01T00:00:00Z"},
        hint=("'to'",),
    ),
    c(
        "query-to-equals-from",
        "GET",
        RSV,
        "to",
        params={"from": "2031-01-02T00:00:00Z", "to": "2031-01-02T01:00:00+01:00"},
        hint=("'to'",),
    ),
    c(
        "query-unencoded-plus-offset",
        "GET",
        f"{RSV}?from=2031-01-01T10:00:00+01:00&to=2031-01-02T10:00:00+01:00",
        status=200,
    ),
    # ---- holds and quantities
    c("hold-zero", "POST", RSV, "hold_seconds", json=booking(hold_seconds=0), **BOOK),
    c("hold-negative", "POST", RSV, "hold_seconds", json=booking(hold_seconds=-60), **BOOK),
    c("hold-above-max", "POST", RSV, "hold_seconds", json=booking(hold_seconds=86_401), **BOOK),
    c("hold-huge", "POST", RSV, "hold_seconds", json=booking(hold_seconds=10**30), **BOOK),
    c("hold-fraction", "POST", RSV, "hold_seconds", json=booking(hold_seconds=1.5), **BOOK),
    c("hold-string", "POST", RSV, "hold_seconds", json=booking(hold_seconds="soon"), **BOOK),
    c("quantity-zero", "POST", RSV, "quantity", json=booking(quantity=0), **BOOK),
    c("quantity-two", "POST", RSV, "quantity", json=booking(quantity=2), **BOOK),
    c("quantity-negative", "POST", RSV, "quantity", json=booking(quantity=-1), **BOOK),
    # ---- capacity
    c("capacity-zero", "POST", RES, "capacity", json=room(capacity=0)),
    c("capacity-huge", "POST", RES, "capacity", json=room(capacity=10**40)),
    c("capacity-string", "POST", RES, "capacity", json=room(capacity="one")),
    c("capacity-float", "POST", RES, "capacity", json=room(capacity=1.5)),
    c("patch-capacity-zero", "PATCH", RES_ID, "capacity", json={"capacity": 0}),
    # ---- time zones
    c("unknown-zone", "POST", RES, "timezone", json=room(timezone="Mars/Olympus_Mons")),
    c("localtime-zone", "POST", RES, "timezone", json=room(timezone="localtime")),
    c("path-traversal-zone", "POST", RES, "timezone", json=room(timezone="../etc/passwd")),
    c("absolute-path-zone", "POST", RES, "timezone", json=room(timezone="/etc/localtime")),
    c("empty-zone", "POST", RES, "timezone", json=room(timezone="")),
    c("zone-with-nul", "POST", RES, "timezone", json=room(timezone="UTC\u0000")),
    c("zone-number", "POST", RES, "timezone", json=room(timezone=1)),
    c("patch-localtime-zone", "PATCH", RES_ID, "timezone", json={"timezone": "localtime"}),
    # ---- names and customers
    c("empty-name", "POST", RES, "name", json=room(name="")),
    c("blank-name", "POST", RES, "name", json=room(name="   ")),
    c("name-201-chars", "POST", RES, "name", json=room(name="n" * 201)),
    c("name-with-nul", "POST", RES, "name", json=room(name="Room\u00001")),
    c(
        "name-lone-surrogate",
        "POST",
        RES,
        "name",
        content='{"name": "Room \\ud800"}',
        headers=JSON_CT,
    ),
    c("name-number", "POST", RES, "name", json=room(name=42)),
    c("name-missing", "POST", RES, "name", json={"capacity": 1}),
    c("patch-empty-name", "PATCH", RES_ID, "name", json={"name": ""}),
    c("patch-name-with-nul", "PATCH", RES_ID, "name", json={"name": "a\u0000b"}),
    c("customer-with-nul", "POST", RSV, "customer", json=booking(customer="a\u0000b"), **BOOK),
    c("customer-201-chars", "POST", RSV, "customer", json=booking(customer="c" * 201), **BOOK),
    c(
        "customer-lone-surrogate",
        "POST",
        RSV,
        "customer",
        content='{"resource_id": "@RESOURCE@", "start": "2031-01-01T10:00:00Z",'
        ' "end": "2031-01-01T11:00:00Z", "customer": "\\udfff"}',
        headers=JSON_CT,
        **BOOK,
    ),
    # ---- metadata
    c("metadata-nul-in-key", "POST", RES, "metadata", json=room(metadata={"a\u0000": 1})),
    c("metadata-nul-in-value", "POST", RES, "metadata", json=room(metadata={"a": "\u0000"})),
    c(
        "metadata-nul-deep",
        "POST",
        RSV,
        "metadata",
        json=booking(metadata={"a": [{"b": "x\u0000"}]}),
        **BOOK,
    ),
    c(
        "metadata-nan",
        "POST",
        RES,
        "metadata",
        content='{"name": "Room", "metadata": {"score": NaN}}',
        headers=JSON_CT,
    ),
    c(
        "metadata-infinity",
        "POST",
        RES,
        "metadata",
        content='{"name": "Room", "metadata": {"score": [-Infinity]}}',
        headers=JSON_CT,
    ),
    c(
        "metadata-overflowing-float",
        "POST",
        RES,
        "metadata",
        content='{"name": "Room", "metadata": {"score": 1e999}}',
        headers=JSON_CT,
    ),
    c(
        "metadata-integer-beyond-64-bits",
        "POST",
        RES,
        "metadata",
        content='{"name": "Room", "metadata": {"n": 18446744073709551616}}',
        headers=JSON_CT,
    ),
    c(
        "metadata-lone-surrogate-key",
        "POST",
        RES,
        "metadata",
        content='{"name": "Room", "metadata": {"\\ud83d": 1}}',
        headers=JSON_CT,
    ),
    c("metadata-nested-20", "POST", RES, "metadata", json=room(metadata=nested(20))),
    c(
        "metadata-nested-20-reservation",
        "POST",
        RSV,
        "metadata",
        json=booking(metadata=nested(20)),
        **BOOK,
    ),
    c("metadata-over-16k", "POST", RES, "metadata", json=room(metadata={"k": "x" * 16_400})),
    c(
        "metadata-many-keys-over-16k",
        "POST",
        RSV,
        "metadata",
        json=booking(metadata={f"k{i}": i for i in range(3000)}),
        **BOOK,
    ),
    c("metadata-list", "POST", RES, "metadata", json=room(metadata=[1, 2])),
    c("metadata-string", "POST", RSV, "metadata", json=booking(metadata="{}"), **BOOK),
    c(
        "patch-metadata-nan",
        "PATCH",
        RES_ID,
        "metadata",
        content='{"metadata": {"x": NaN}}',
        headers=JSON_CT,
    ),
    c(
        "json-nested-100k-deep",
        "POST",
        RES,
        status=(400, 422),
        content='{"name": "Room", "metadata": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}",
        headers=JSON_CT,
        hint=("body", "json"),
    ),
    # ---- tags
    c("tag-with-space", "POST", RES, "tags", json=room(tags=["two words"])),
    c("tag-with-tab", "POST", RES, "tags", json=room(tags=["a\tb"])),
    c("tag-65-chars", "POST", RES, "tags", json=room(tags=["t" * 65])),
    c("tag-empty", "POST", RES, "tags", json=room(tags=[""])),
    c("tag-with-nul", "POST", RES, "tags", json=room(tags=["a\u0000"])),
    c("33-tags", "POST", RES, "tags", json=room(tags=[f"t{i}" for i in range(33)])),
    c("tags-string", "POST", RES, "tags", json=room(tags="indoor")),
    c("tags-numbers", "POST", RES, "tags", json=room(tags=[1, 2])),
    c("patch-33-tags", "PATCH", RES_ID, "tags", json={"tags": [f"t{i}" for i in range(33)]}),
    # ---- bodies that are not the right JSON
    c("invalid-json", "POST", RES, "body", content='{"name": ', headers=JSON_CT, hint=("json",)),
    c(
        "invalid-json-reservation",
        "POST",
        RSV,
        "body",
        content="{resource_id: 1}",
        headers=JSON_CT,
        hint=("json",),
        **BOOK,
    ),
    c("empty-body", "POST", RES, "body", content=b"", headers=JSON_CT),
    c("empty-body-reservation", "POST", RSV, "body", content=b"", headers=JSON_CT, **BOOK),
    c("json-array-body", "POST", RES, "body", json=[room()]),
    c("json-string-body", "POST", RSV, "body", json="booking", **BOOK),
    c("json-null-body", "POST", RES, "body", content="null", headers=JSON_CT),
    c("patch-array-body", "PATCH", RES_ID, "body", json=[{"name": "x"}]),
    c("patch-invalid-json", "PATCH", RSV_UNKNOWN, "body", content="{", headers=JSON_CT),
    c(
        "not-utf8-body",
        "POST",
        RES,
        "body",
        content=b'{"name": "\xff\xfe"}',
        headers=JSON_CT,
        status=(400, 422),
        hint=("body", "json", "utf-8"),
    ),
    c(
        "form-encoded-body",
        "POST",
        RES,
        "body",
        content="name=Room",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        status=(415, 422),
        hint=("body", "json", "content-type"),
    ),
    # ---- ids
    c("resource-id-not-uuid", "GET", f"{RES}/123", "resource_id"),
    c("resource-id-words", "PATCH", f"{RES}/not-a-uuid", "resource_id", json={"name": "x"}),
    c("resource-id-nul", "DELETE", f"{RES}/%00", "resource_id"),
    c("resource-id-too-long", "GET", f"{RES}/{'a' * 5000}", "resource_id"),
    c("reservation-id-not-uuid", "GET", f"{RSV}/1", "reservation_id"),
    c("reservation-id-patch", "PATCH", f"{RSV}/abc", "reservation_id", json={"customer": "x"}),
    c("reservation-id-confirm", "POST", f"{RSV}/abc/confirm", "reservation_id"),
    c("reservation-id-cancel", "POST", f"{RSV}/zz/cancel", "reservation_id"),
    c("unknown-resource", "GET", f"{RES}/{UNKNOWN}", status=404, hint=("No resource",)),
    c(
        "unknown-resource-patch",
        "PATCH",
        f"{RES}/{UNKNOWN}",
        json={"name": "x"},
        status=404,
        hint=("No resource",),
    ),
    c("unknown-resource-delete", "DELETE", f"{RES}/{UNKNOWN}", status=404, hint=("No resource",)),
    c("unknown-reservation", "GET", RSV_UNKNOWN, status=404, hint=("No reservation",)),
    c(
        "unknown-reservation-patch",
        "PATCH",
        RSV_UNKNOWN,
        json={"customer": "x"},
        status=404,
        hint=("No reservation",),
    ),
    c(
        "unknown-reservation-confirm",
        "POST",
        f"{RSV_UNKNOWN}/confirm",
        status=404,
        hint=("No reservation",),
    ),
    c(
        "unknown-reservation-cancel",
        "POST",
        f"{RSV_UNKNOWN}/cancel",
        status=404,
        hint=("No reservation",),
    ),
    c("nil-uuid-resource", "GET", f"{RES}/00000000-0000-0000-0000-000000000000", status=404),
    c("body-resource-id-not-uuid", "POST", RSV, "resource_id", json=booking(resource_id="r1")),
    c("body-resource-id-number", "POST", RSV, "resource_id", json=booking(resource_id=7)),
    c(
        "body-resource-id-unknown",
        "POST",
        RSV,
        json=booking(resource_id=UNKNOWN),
        status=404,
        hint=("No resource",),
        **BOOK,
    ),
    # ---- bodies over 1 MiB
    c(
        "body-over-1mib-content-length",
        "POST",
        RES,
        content=big_body(),
        headers=JSON_CT,
        status=413,
        hint=("at most",),
        slug="body-too-large",
    ),
    c(
        "body-over-1mib-chunked",
        "POST",
        RES,
        stream=chunked_big_body,
        headers=JSON_CT,
        status=413,
        hint=("at most",),
        slug="body-too-large",
    ),
    c(
        "reservation-body-over-1mib-chunked",
        "POST",
        RSV,
        stream=chunked_big_body,
        headers=JSON_CT,
        status=413,
        hint=("at most",),
        slug="body-too-large",
        **BOOK,
    ),
    c(
        "patch-body-over-1mib",
        "PATCH",
        RES_ID,
        content=big_body(),
        headers=JSON_CT,
        status=413,
        hint=("at most",),
        slug="body-too-large",
    ),
    # ---- paging
    c("limit-zero", "GET", RSV, "limit", params={"limit": 0}),
    c("limit-501", "GET", RSV, "limit", params={"limit": 501}),
    c("limit-negative", "GET", RES, "limit", params={"limit": -1}),
    c("limit-abc", "GET", RES, "limit", params={"limit": "abc"}),
    c("limit-huge", "GET", RES, "limit", params={"limit": "9" * 40}),
    c("cursor-garbage", "GET", RSV, "cursor", params={"cursor": "!!!not-base64!!!"}),
    c("cursor-non-ascii", "GET", RES, "cursor", params={"cursor": "curs\u00f6r"}),
    c("cursor-json-object", "GET", RSV, "cursor", params={"cursor": b64({"after": 1})}),
    c("cursor-json-numbers", "GET", RSV, "cursor", params={"cursor": b64([1, 2])}),
    c("cursor-json-strings", "GET", RSV, "cursor", params={"cursor": b64(["x", "y"])}),
    c(
        "cursor-naive-time",
        "GET",
        RSV,
        "cursor",
        params={"cursor": b64(["2031-01-01T10:00:00", str(uuid.uuid4())])},
    ),
    c("cursor-wrong-arity", "GET", RES, "cursor", params={"cursor": b64(["a", "b"])}),
    c("cursor-not-uuid", "GET", RES, "cursor", params={"cursor": b64(["not-a-uuid"])}),
    c("cursor-too-long", "GET", RES, "cursor", params={"cursor": "A" * 600}),
    # ---- headers
    c(
        "idempotency-key-256",
        "POST",
        RSV,
        "Idempotency-Key",
        json=booking(),
        headers={"Idempotency-Key": "k" * 256},
        **BOOK,
    ),
    c(
        "idempotency-key-space",
        "POST",
        RSV,
        "Idempotency-Key",
        json=booking(),
        headers={"Idempotency-Key": "my key"},
        **BOOK,
    ),
    c(
        "idempotency-key-non-ascii",
        "POST",
        RSV,
        "Idempotency-Key",
        json=booking(),
        headers={"Idempotency-Key": "schl\u00fcssel".encode()},
        **BOOK,
    ),
    c(
        "idempotency-key-empty",
        "POST",
        RSV,
        "Idempotency-Key",
        json=booking(),
        headers={"Idempotency-Key": ""},
        **BOOK,
    ),
    c(
        "idempotency-key-on-cancel",
        "POST",
        f"{RSV_UNKNOWN}/cancel",
        "Idempotency-Key",
        headers={"Idempotency-Key": "a b"},
        **BOOK,
    ),
    c(
        "if-match-garbage",
        "PATCH",
        RES_ID,
        "If-Match",
        json={"name": "Room"},
        headers={"If-Match": "garbage"},
    ),
    c(
        "if-match-negative",
        "PATCH",
        RES_ID,
        "If-Match",
        json={"name": "Room"},
        headers={"If-Match": '"-1"'},
    ),
    c(
        "if-match-too-big",
        "PATCH",
        RES_ID,
        "If-Match",
        json={"name": "Room"},
        headers={"If-Match": '"99999999999"'},
    ),
    c(
        "if-match-on-confirm",
        "POST",
        f"{RSV_UNKNOWN}/confirm",
        "If-Match",
        headers={"If-Match": "W/abc"},
    ),
    # ---- filters and long query strings
    c("status-unknown", "GET", RSV, "status", params={"status": "active"}),
    c("status-uppercase", "GET", RSV, "status", params={"status": ["held", "HELD"]}),
    c("query-resource-id-not-uuid", "GET", RSV, "resource_id", params={"resource_id": "r-1"}),
    c("query-customer-with-nul", "GET", RSV, "customer", params={"customer": "a\u0000b"}),
    c("query-tag-with-nul", "GET", RES, "tag", params={"tag": "a\u0000b"}),
    c("query-long-customer", "GET", RSV, "customer", params={"customer": "c" * 20_000}),
    c("query-long-tag", "GET", RES, "tag", params={"tag": "t" * 20_000}),
    c("query-long-from", "GET", RSV, "from", params={"from": "2031" * 5_000}),
    c(
        "delete-cancel-flag-garbage",
        "DELETE",
        RES_ID,
        "cancel_reservations",
        params={"cancel_reservations": "maybe"},
    ),
    # ---- routes and methods
    c("unknown-route", "GET", "/v1/nothing-here", status=404),
    c("unknown-version", "GET", "/v2/resources", status=404),
    c("unknown-subroute", "POST", f"{RSV_UNKNOWN}/approve", status=404),
    c("put-resource", "PUT", RES_ID, json=room(), status=405),
    c("delete-reservation", "DELETE", RSV_UNKNOWN, status=405),
    c("get-confirm", "GET", f"{RSV_UNKNOWN}/confirm", status=405),
    c("delete-collection", "DELETE", RES, status=405),
]


# --------------------------------------------------------------------------------------------
# sending and checking


@dataclass
class Place:
    tenant: Tenant
    resource_id: str
    unknown_id: str


def make_place(client: TestClient) -> Place:
    t = new_tenant(client)
    resource = t.admin.resource(name="Room", tags=["indoor"])
    return Place(tenant=t, resource_id=resource["id"], unknown_id=str(uuid.uuid4()))


@pytest.fixture(scope="module")
def place(app_client: TestClient) -> Place:
    return make_place(app_client)


def _fill(value: Any, place: Place) -> Any:
    if isinstance(value, str):
        return value.replace(RESOURCE, place.resource_id).replace(UNKNOWN, place.unknown_id)
    if isinstance(value, bytes):
        return value.replace(RESOURCE.encode(), place.resource_id.encode())
    if isinstance(value, dict):
        return {k: _fill(v, place) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, place) for v in value]
    return value


def send(case: Case, place: Place) -> httpx.Response:
    api: Api = getattr(place.tenant, case.role)
    kw: dict[str, Any] = {"headers": dict(case.headers)}
    if case.json is not _NO_JSON:
        kw["json"] = _fill(case.json, place)
    elif case.content is not None:
        kw["content"] = _fill(case.content, place)
    elif case.stream is not None:
        kw["content"] = case.stream()
    if case.params is not None:
        kw["params"] = case.params
    return api.request(case.method, _fill(case.path, place), **kw)


def _names(error: dict[str, Any]) -> str:
    return str(error.get("field") or "")


def check(case: Case, r: httpx.Response) -> None:
    where = f"{case.method} {case.path} -> {r.status_code} {r.text[:600]}"
    assert r.status_code < 500, where
    assert r.status_code in case.statuses, where
    if r.status_code < 400:
        assert r.headers["content-type"] == "application/json", where
        assert "items" in r.json()
        return
    assert r.headers["content-type"] == PROBLEM, where
    body = r.json()
    assert body["status"] == r.status_code
    assert body["type"].startswith("/problems/"), where
    assert isinstance(body.get("title"), str), where
    assert body["title"], where
    detail = body.get("detail")
    assert isinstance(detail, str), where
    assert detail.strip(), where
    if case.slug is not None:
        assert body["type"] == f"/problems/{case.slug}", where
    hints = case.hint if case.hint is not None else case.fields
    if hints:
        assert any(h.lower() in detail.lower() for h in hints), f"detail lacks {hints}: {where}"
    if r.status_code == 405:
        assert r.headers.get("allow"), where
    if r.status_code == 422:
        errors = body.get("errors")
        assert isinstance(errors, list), where
        assert errors, where
        for e in errors:
            assert isinstance(e.get("message"), str), where
            assert e["message"], where
            assert e.get("in") in {"body", "query", "path", "header"}, where
        if case.fields:
            named = {_names(e) for e in errors}
            assert any(n == f or n.startswith(f + ".") for n in named for f in case.fields), (
                f"errors name {named}, expected one of {case.fields}: {where}"
            )


@pytest.mark.parametrize("case", CASES)
def test_nasty_input_is_refused_cleanly(place: Place, case: Case) -> None:
    check(case, send(case, place))


# --------------------------------------------------------------------------------------------
# controls and aftermath


def test_base_bodies_are_valid(tenant: Tenant) -> None:
    """The bodies the table distorts are accepted as they are: each case fails for its own
    reason, not for a mistake in the template."""
    resource = tenant.admin.post(RES, json=room())
    assert resource.status_code == 201, resource.text
    body = {**booking(), "resource_id": resource.json()["id"]}
    r = tenant.booker.post(RSV, json=body)
    assert r.status_code == 201, r.text
    later = {**body, "start": "2031-01-02T10:00:00Z", "end": "2031-02-02T10:00:00Z"}
    assert tenant.booker.post(RSV, json=later).status_code == 201  # exactly 31 days is fine
    held = {**body, "start": "2031-03-01T10:00:00Z", "end": "2031-03-01T11:00:00Z"}
    r = tenant.booker.post(RSV, json={**held, "hold_seconds": 86_400, "quantity": 1})
    assert r.status_code == 201, r.text


def test_unencoded_plus_offset_is_read_as_an_offset(tenant: Tenant) -> None:
    """'from=...10:00:00+01:00' unencoded arrives as '10:00:00 01:00'; it must mean 09:00Z,
    not 10:00 in some other zone."""
    resource = tenant.admin.resource()
    r = tenant.booker.book(resource["id"], "2031-01-01T09:00:00Z", "2031-01-01T09:30:00Z")
    assert r.status_code == 201, r.text
    inside = tenant.booker.get(f"{RSV}?from=2031-01-01T10:00:00+01:00&to=2031-01-01T10:15:00+01:00")
    assert inside.status_code == 200, inside.text
    assert [i["id"] for i in inside.json()["items"]] == [r.json()["id"]]
    after = tenant.booker.get(f"{RSV}?from=2031-01-01T10:30:00+01:00&to=2031-01-01T11:00:00+01:00")
    assert after.status_code == 200, after.text
    assert after.json()["items"] == []


def test_nasty_inputs_leave_nothing_behind(app_client: TestClient) -> None:
    """Replays the whole table against a fresh tenant, then looks at what is stored."""
    fresh = make_place(app_client)
    admin = fresh.tenant.admin
    resources_before = admin.get(RES, params={"limit": 500})
    assert resources_before.status_code == 200

    statuses = {}
    for param in CASES:
        (case,) = param.values
        statuses[case.id] = send(case, fresh).status_code
    accepted = {k: v for k, v in statuses.items() if v < 400}
    context = f"requests that were not refused: {accepted}"

    reservations = admin.get(RSV, params={"limit": 500})
    assert reservations.status_code == 200
    assert reservations.json()["items"] == [], context
    resources_after = admin.get(RES, params={"limit": 500})
    assert resources_after.status_code == 200
    assert resources_after.json() == resources_before.json(), context
    assert len(resources_after.json()["items"]) == 1
