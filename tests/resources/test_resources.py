"""Resources over HTTP: create, read, list with keyset pagination and tags, change, archive."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from tests.support.api import Api, Tenant

PROBLEM = "application/problem+json"
START = "2031-03-01T10:00:00Z"
END = "2031-03-01T11:00:00Z"


def _problem(r: Any, status: int, slug: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    return body


def _all_pages(api: Api, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(50):
        query = dict(params)
        if cursor is not None:
            query["cursor"] = cursor
        r = api.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("pagination did not end")


# --- create and read ---------------------------------------------------------------------


def test_create_returns_201_location_and_etag(tenant: Tenant) -> None:
    r = tenant.admin.post("/v1/resources", json={"name": "Court 1"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/resources/{body['id']}"
    assert r.headers["etag"] == f'"{body["version"]}"'
    assert body["version"] == 1
    assert body["name"] == "Court 1"
    # defaults
    assert body["capacity"] == 1
    assert body["timezone"] == "UTC"
    assert body["tags"] == []
    assert body["metadata"] == {}
    assert body["created_at"].endswith("Z")

    got = tenant.viewer.get(r.headers["location"])
    assert got.status_code == 200, got.text
    assert got.json() == body
    assert got.headers["etag"] == r.headers["etag"]


def test_fields_round_trip(tenant: Tenant) -> None:
    metadata = {"floor": 3, "features": ["projector", "whiteboard"], "nested": {"a": None}}
    r = tenant.admin.post(
        "/v1/resources",
        json={
            "name": "Board room",
            "capacity": 1,
            "timezone": "Europe/Berlin",
            "tags": ["big", "quiet", "big", "video", "quiet"],
            "metadata": metadata,
        },
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "Board room"
    assert created["capacity"] == 1
    assert created["timezone"] == "Europe/Berlin"
    assert created["tags"] == ["big", "quiet", "video"]
    assert created["metadata"] == metadata

    fetched = tenant.booker.get(f"/v1/resources/{created['id']}").json()
    assert fetched == created


def test_create_errors(tenant: Tenant) -> None:
    _problem(tenant.admin.post("/v1/resources", json={"name": ""}), 422, "invalid-input")
    _problem(
        tenant.admin.post("/v1/resources", json={"name": "x", "timezone": "Mars/Olympus"}),
        422,
        "invalid-input",
    )
    _problem(
        tenant.admin.post("/v1/resources", json={"name": "x", "unknown": 1}),
        422,
        "invalid-input",
    )
    _problem(tenant.booker.post("/v1/resources", json={"name": "x"}), 403, "forbidden")
    _problem(tenant.viewer.post("/v1/resources", json={"name": "x"}), 403, "forbidden")
    anonymous = tenant.admin.client.post("/v1/resources", json={"name": "x"})
    _problem(anonymous, 401, "unauthenticated")
    # nothing was created by any of these
    assert tenant.admin.get("/v1/resources").json()["items"] == []


def test_get_unknown_and_other_tenant(tenant: Tenant, other_tenant: Tenant) -> None:
    room = tenant.admin.resource()
    _problem(tenant.admin.get(f"/v1/resources/{secrets.token_hex(16)}"), 404, "not-found")
    _problem(other_tenant.admin.get(f"/v1/resources/{room['id']}"), 404, "not-found")
    assert other_tenant.admin.get("/v1/resources").json()["items"] == []
    _problem(tenant.admin.get("/v1/resources/not-a-uuid"), 422, "invalid-input")


# --- list --------------------------------------------------------------------------------


def test_list_keyset_pagination(tenant: Tenant) -> None:
    created = [tenant.admin.resource(name=f"R{i}")["id"] for i in range(7)]
    pages = _all_pages(tenant.viewer, "/v1/resources", limit=3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [item["id"] for page in pages for item in page]
    assert len(seen) == len(set(seen)), "duplicates across pages"
    assert sorted(seen) == sorted(created), "gaps across pages"
    # creation order (UUIDv7 keyset)
    assert seen == created


def test_list_last_page_exact_multiple_has_null_cursor(tenant: Tenant) -> None:
    created = [tenant.admin.resource(name=f"R{i}")["id"] for i in range(6)]
    pages = _all_pages(tenant.admin, "/v1/resources", limit=3)
    seen = [item["id"] for page in pages for item in page]
    assert seen == created
    assert all(pages), "an empty trailing page means next_cursor was not null at the end"


def test_list_bad_cursor_and_limit(tenant: Tenant) -> None:
    _problem(tenant.admin.get("/v1/resources", params={"cursor": "garbage!"}), 422, "invalid-input")
    _problem(tenant.admin.get("/v1/resources", params={"limit": 0}), 422, "invalid-input")
    _problem(tenant.admin.get("/v1/resources", params={"limit": 501}), 422, "invalid-input")


def test_list_tag_filter_means_all(tenant: Tenant) -> None:
    ab = tenant.admin.resource(name="ab", tags=["a", "b"])["id"]
    abc = tenant.admin.resource(name="abc", tags=["c", "b", "a"])["id"]
    a_only = tenant.admin.resource(name="a", tags=["a"])["id"]
    b_only = tenant.admin.resource(name="b", tags=["b"])["id"]
    tenant.admin.resource(name="none")

    def ids(*tags: str) -> list[str]:
        r = tenant.viewer.get("/v1/resources", params={"tag": list(tags)})
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    assert ids("a", "b") == [ab, abc]
    assert ids("a") == [ab, abc, a_only]
    assert ids("b") == [ab, abc, b_only]
    assert ids("c", "a") == [abc]
    assert ids("zzz") == []
    assert len(ids()) == 5

    # pagination keeps the filter
    pages = _all_pages(tenant.viewer, "/v1/resources", tag=["b"], limit=2)
    assert [i["id"] for p in pages for i in p] == [ab, abc, b_only]


# --- patch -------------------------------------------------------------------------------


def test_patch_changes_fields_and_bumps_version(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="Old", tags=["x"], metadata={"k": 1})
    r = tenant.admin.patch(
        f"/v1/resources/{room['id']}",
        json={
            "name": "New",
            "timezone": "America/New_York",
            "tags": ["y", "z", "y"],
            "metadata": {"k": 2},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["name"] == "New"
    assert body["timezone"] == "America/New_York"
    assert body["tags"] == ["y", "z"]
    assert body["metadata"] == {"k": 2}
    assert body["version"] == room["version"] + 1
    assert r.headers["etag"] == f'"{body["version"]}"'
    assert body["created_at"] == room["created_at"]

    fetched = tenant.viewer.get(f"/v1/resources/{room['id']}")
    assert fetched.json() == body
    assert fetched.headers["etag"] == r.headers["etag"]

    # omitted fields stay as they are
    r = tenant.admin.patch(f"/v1/resources/{room['id']}", json={"name": "Newer"})
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["y", "z"]
    assert r.json()["metadata"] == {"k": 2}
    assert r.json()["timezone"] == "America/New_York"
    assert r.json()["version"] == room["version"] + 2


def test_patch_if_match(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="A")
    path = f"/v1/resources/{room['id']}"
    first = tenant.admin.patch(path, json={"name": "B"}, headers={"If-Match": '"1"'})
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 2

    stale = tenant.admin.patch(path, json={"name": "C"}, headers={"If-Match": '"1"'})
    body = _problem(stale, 412, "precondition-failed")
    assert body["current_version"] == 2
    assert tenant.admin.get(path).json()["name"] == "B"

    current = tenant.admin.patch(
        path, json={"name": "C"}, headers={"If-Match": first.headers["etag"]}
    )
    assert current.status_code == 200, current.text
    assert current.json()["name"] == "C"
    assert current.json()["version"] == 3

    weak = tenant.admin.patch(path, json={"name": "D"}, headers={"If-Match": 'W/"3"'})
    assert weak.status_code == 200, weak.text
    assert weak.json()["version"] == 4

    star = tenant.admin.patch(path, json={"name": "E"}, headers={"If-Match": "*"})
    assert star.status_code == 200, star.text
    assert star.json()["name"] == "E"
    assert star.json()["version"] == 5

    _problem(
        tenant.admin.patch(path, json={"name": "F"}, headers={"If-Match": "nonsense"}),
        422,
        "invalid-input",
    )


def test_patch_errors(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    path = f"/v1/resources/{room['id']}"
    _problem(tenant.booker.patch(path, json={"name": "x"}), 403, "forbidden")
    _problem(tenant.admin.patch(path, json={"timezone": "Nowhere/Land"}), 422, "invalid-input")
    _problem(
        tenant.admin.patch(f"/v1/resources/{secrets.token_hex(16)}", json={"name": "x"}),
        404,
        "not-found",
    )
    _problem(
        tenant.admin.patch(
            f"/v1/resources/{secrets.token_hex(16)}",
            json={"name": "x"},
            headers={"If-Match": '"1"'},
        ),
        404,
        "not-found",
    )
    assert tenant.admin.get(path).json()["version"] == 1


# --- delete (archive) --------------------------------------------------------------------


def test_delete_archives(tenant: Tenant) -> None:
    keep = tenant.admin.resource(name="keep")
    gone = tenant.admin.resource(name="gone")
    r = tenant.admin.delete(f"/v1/resources/{gone['id']}")
    assert r.status_code == 204, r.text
    assert r.content == b""

    _problem(tenant.admin.get(f"/v1/resources/{gone['id']}"), 404, "not-found")
    listed = [i["id"] for i in tenant.admin.get("/v1/resources").json()["items"]]
    assert listed == [keep["id"]]
    _problem(tenant.admin.delete(f"/v1/resources/{gone['id']}"), 404, "not-found")
    _problem(
        tenant.admin.patch(f"/v1/resources/{gone['id']}", json={"name": "back"}), 404, "not-found"
    )


def test_delete_requires_admin(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    _problem(tenant.booker.delete(f"/v1/resources/{room['id']}"), 403, "forbidden")
    assert tenant.admin.get(f"/v1/resources/{room['id']}").status_code == 200


def test_booking_an_archived_resource_is_404(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    assert tenant.admin.delete(f"/v1/resources/{room['id']}").status_code == 204
    _problem(tenant.booker.book(room["id"], START, END), 404, "not-found")


def test_delete_refused_with_future_live_reservations(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    booked = tenant.booker.book(room["id"], START, END)
    assert booked.status_code == 201, booked.text
    held = tenant.booker.book(
        room["id"], "2031-03-02T10:00:00Z", "2031-03-02T11:00:00Z", hold_seconds=600
    )
    assert held.status_code == 201, held.text

    body = _problem(
        tenant.admin.delete(f"/v1/resources/{room['id']}"), 409, "resource-has-future-reservations"
    )
    assert body["live_reservations"] == 2
    # still there and still bookable
    assert tenant.admin.get(f"/v1/resources/{room['id']}").status_code == 200

    r = tenant.admin.delete(f"/v1/resources/{room['id']}", params={"cancel_reservations": "true"})
    assert r.status_code == 204, r.text
    _problem(tenant.admin.get(f"/v1/resources/{room['id']}"), 404, "not-found")

    for created in (booked, held):
        got = tenant.booker.get(f"/v1/reservations/{created.json()['id']}")
        assert got.status_code == 200, got.text
        assert got.json()["status"] == "cancelled"
        assert got.json()["version"] == created.json()["version"] + 1


def test_delete_ignores_cancelled_reservations(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    booked = tenant.booker.book(room["id"], START, END)
    assert booked.status_code == 201, booked.text
    rid = booked.json()["id"]
    assert tenant.booker.post(f"/v1/reservations/{rid}/cancel").status_code == 200
    assert tenant.admin.delete(f"/v1/resources/{room['id']}").status_code == 204


def test_delete_keeps_past_reservations_untouched(tenant: Tenant) -> None:
    room = tenant.admin.resource()
    past = tenant.admin.book(  # past use, recorded by an admin
        room["id"], "2020-01-01T10:00:00Z", "2020-01-01T11:00:00Z", override_rules=True
    )
    assert past.status_code == 201, past.text
    r = tenant.admin.delete(f"/v1/resources/{room['id']}", params={"cancel_reservations": "true"})
    assert r.status_code == 204, r.text
    got = tenant.admin.get(f"/v1/reservations/{past.json()['id']}")
    assert got.status_code == 200, got.text
    assert got.json()["status"] == "confirmed"
    assert got.json()["version"] == past.json()["version"]


def test_delete_not_blocked_by_expired_hold(tenant: Tenant, clock: Any) -> None:
    room = tenant.admin.resource()
    held = tenant.booker.book(room["id"], START, END, hold_seconds=60)
    assert held.status_code == 201, held.text
    _problem(
        tenant.admin.delete(f"/v1/resources/{room['id']}"), 409, "resource-has-future-reservations"
    )
    clock.advance(timedelta(seconds=61))
    assert tenant.admin.delete(f"/v1/resources/{room['id']}").status_code == 204
