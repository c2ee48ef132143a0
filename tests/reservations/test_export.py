"""The reservations list as CSV (`Accept: text/csv`): RFC 4180 rows a spreadsheet opens
cleanly (UTF-8 with a BOM, CRLF, quoted fields), UTC and local times with the zone, the same
filters and authorization as the JSON list, every page streamed, and every accepted customer
text read back (a leading formula character is neutralized with an apostrophe)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reservations.reservations import export
from tests.support.api import Api, Tenant, _created, _problem

CSV = {"Accept": "text/csv"}


def _rows(r: Any) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv; charset=utf-8")
    raw = r.content
    assert raw.startswith("\ufeff".encode())
    text = raw.decode("utf-8")[1:]
    assert text.endswith("\r\n")
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_columns_times_and_zone(tenant: Tenant) -> None:
    room = tenant.admin.resource(name='Room "A", 1st floor', timezone="America/New_York")
    made = _created(
        tenant.booker.book(
            room["id"], "2030-07-01T13:00:00Z", "2030-07-01T14:30:00Z", customer="Zoë, Ltd"
        )
    )
    (row,) = _rows(tenant.booker.get("/v1/reservations", headers=CSV))
    assert tuple(row) == export.HEADER
    assert row["id"] == made["id"]
    assert row["resource_name"] == 'Room "A", 1st floor'
    assert row["start_utc"] == "2030-07-01 13:00:00"
    assert row["end_utc"] == "2030-07-01 14:30:00"
    assert row["timezone"] == "America/New_York"
    assert row["start_local"] == "2030-07-01 09:00:00"  # EDT, UTC-4
    assert row["end_local"] == "2030-07-01 10:30:00"
    assert row["customer"] == "Zoë, Ltd"
    assert row["status"] == "confirmed"


def test_same_filters_and_authorization(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    mine = _created(tenant.booker.book(room["id"], "2030-07-01T10:00:00Z", "2030-07-01T11:00:00Z"))
    theirs = _created(
        tenant.another_booker().book(room["id"], "2030-07-01T11:00:00Z", "2030-07-01T12:00:00Z")
    )
    assert [r["id"] for r in _rows(tenant.booker.get("/v1/reservations", headers=CSV))] == [
        mine["id"]
    ]
    everyone = _rows(tenant.viewer.get("/v1/reservations", headers=CSV))
    assert [r["id"] for r in everyone] == [mine["id"], theirs["id"]]
    later = _rows(
        tenant.viewer.get("/v1/reservations", params={"from": "2030-07-01T11:00:00Z"}, headers=CSV)
    )
    assert [r["id"] for r in later] == [theirs["id"]]


def test_every_page_is_streamed(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "PAGE", 2)  # several pages without booking 500 first
    room = tenant.admin.resource()
    ids = [
        _created(
            tenant.booker.book(
                room["id"], f"2030-07-01T{h:02d}:00:00Z", f"2030-07-01T{h:02d}:30:00Z"
            )
        )["id"]
        for h in range(7)
    ]
    assert [r["id"] for r in _rows(tenant.booker.get("/v1/reservations", headers=CSV))] == ids
    # The JSON list still pages by `limit`.
    assert len(tenant.booker.get("/v1/reservations", params={"limit": 3}).json()["items"]) == 3


@pytest.mark.parametrize(
    ("accept", "as_csv"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("text/csv", True),
        ("text/csv, application/json", True),
        ("application/json, text/csv", False),
        ("application/json;q=0.5, text/csv", True),
        ("text/csv;q=0.5, application/json", False),
        ("text/csv;q=0", False),
        ("text/csv;q=nonsense", False),
    ],
)
def test_negotiation(accept: str | None, as_csv: bool) -> None:
    assert export.wants_csv(accept) is as_csv


def test_bad_input_is_still_a_problem(tenant: Tenant) -> None:
    r = tenant.booker.get("/v1/reservations", params={"cursor": "nonsense"}, headers=CSV)
    _problem(r, 422, "invalid-input")


@pytest.fixture(scope="module")
def shared(app_client: Any) -> tuple[Api, str]:
    from tests.support.api import new_tenant

    t = new_tenant(app_client)
    return t.admin, t.admin.resource()["id"]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(customer=st.text(min_size=1, max_size=60))
def test_every_accepted_customer_reads_back(shared: tuple[Api, str], customer: str) -> None:
    admin, room = shared
    made = admin.book(room, "2030-08-01T10:00:00Z", "2030-08-01T11:00:00Z", customer=customer)
    if made.status_code != 201:
        assert made.status_code == 422, made.text  # refused as input, never a 5xx
        return
    try:
        rows = _rows(
            admin.get(
                "/v1/reservations", params={"resource_id": room, "status": "confirmed"}, headers=CSV
            )
        )
        (row,) = rows
        expected = made.json()["customer"]
        if expected.startswith(("=", "+", "-", "@", "\t", "\r")):
            expected = "'" + expected
        assert row["customer"] == expected
    finally:
        assert admin.post(f"/v1/reservations/{made.json()['id']}/cancel").status_code == 200
