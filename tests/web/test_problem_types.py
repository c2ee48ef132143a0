"""Every problem `type` URI resolves: /problems/<slug> answers what the condition means and what
to do, as HTML to a browser and as JSON to everyone else."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin

import pytest
from fastapi.testclient import TestClient

from reservations import errors
from reservations.errors import DomainError
from tests.support.api import Tenant

ROOT = Path(__file__).resolve().parents[2]
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _subclasses(cls: type[DomainError]) -> list[type[DomainError]]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_subclasses(sub))]


DOMAIN_ERRORS = _subclasses(DomainError)


def _slugs_in_source() -> set[str]:
    """Every slug the code writes into a problem by hand, outside the DomainError classes."""
    found: set[str] = set()
    for path in (ROOT / "src" / "reservations").rglob("*.py"):
        text = path.read_text()
        found.update(re.findall(r'slug="([a-z0-9-]+)"', text))
    found.update(slug for slug, _ in errors._HTTP_SLUGS.values())
    return found


@pytest.mark.parametrize("error", DOMAIN_ERRORS, ids=lambda c: c.slug)
def test_every_domain_errors_type_answers_a_page(
    app_client: TestClient, error: type[DomainError]
) -> None:
    as_json = app_client.get(f"/problems/{error.slug}")
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"].startswith("application/json")
    body = as_json.json()
    assert body["type"] == f"/problems/{error.slug}"
    assert body["status"] == error.status
    assert body["title"] == error.title
    assert len(body["about"]) > 20, "say what the condition means"
    assert len(body["fix"]) > 10, "say what to do about it"

    page = app_client.get(f"/problems/{error.slug}", headers={"Accept": BROWSER})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "What it means" in page.text
    assert "What to do" in page.text
    assert "<script" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("slug", sorted(_slugs_in_source()))
def test_every_slug_written_by_hand_answers_too(app_client: TestClient, slug: str) -> None:
    got = app_client.get(f"/problems/{slug}")
    assert got.status_code == 200, f"/problems/{slug}: {got.status_code}"
    assert got.json()["fix"]


def test_a_type_uri_from_a_real_error_resolves(app_client: TestClient, tenant: Tenant) -> None:
    room = tenant.admin.resource(name="Room")
    start, end = "2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z"
    assert tenant.admin.book(room["id"], start, end).status_code == 201
    conflict = tenant.admin.book(room["id"], start, end)
    assert conflict.status_code == 409
    url = urljoin(str(conflict.request.url), conflict.json()["type"])
    page = app_client.get(url)
    assert page.status_code == 200
    assert page.json()["status"] == 409


def test_the_index_lists_them_all_and_unknown_types_are_404(app_client: TestClient) -> None:
    listed = app_client.get("/problems").json()["items"]
    assert {p["type"] for p in listed} == {f"/problems/{s}" for s in errors.problem_types()}
    assert "reservation-conflict" in app_client.get("/problems", headers={"Accept": BROWSER}).text
    missing = app_client.get("/problems/no-such-thing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_the_api_guide_lists_every_problem_type() -> None:
    guide = (ROOT / "docs" / "api.md").read_text()
    unlisted = [slug for slug in errors.problem_types() if f"`{slug}`" not in guide]
    assert unlisted == [], f"docs/api.md does not name {unlisted}"
