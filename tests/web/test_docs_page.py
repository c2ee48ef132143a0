"""/docs in a real browser with the network cut off: Swagger UI comes from files the package
ships, so the page lists every operation with nothing but the API's own host reachable."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, MISSING
from tests.support.live import LiveServer

pytestmark = [
    pytest.mark.slow,
    # The page is the same whatever PostgreSQL is behind the API: CI's first pass (embedded
    # PostgreSQL 18) runs it; the second, against TEST_DATABASE_URL, does not again.
    pytest.mark.skipif(
        bool(os.environ.get("TEST_DATABASE_URL")),
        reason="runs in the pass on the embedded servers, not again against TEST_DATABASE_URL",
    ),
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_docs_list_every_operation_offline(browser: Any, live_server: LiveServer) -> None:
    document = httpx.get(live_server.url + "/openapi.json").json()
    operations = {op["operationId"] for item in document["paths"].values() for op in item.values()}
    ctx = browser.new_context()
    outside: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        if urlparse(r.request.url).hostname not in ("127.0.0.1", "localhost"):
            outside.append(r.request.url)
            r.abort("internetdisconnected")
        else:
            r.continue_()

    ctx.route("**/*", route)
    page = ctx.new_page()
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_default_timeout(20_000)
    try:
        page.goto(live_server.url + "/docs")
        try:
            page.wait_for_selector(".opblock")
        except Exception as exc:
            raise AssertionError(f"no operations shown; requests cut off: {outside}") from exc
        shown = page.eval_on_selector_all(
            ".opblock", "blocks => blocks.map(b => b.id.replace(/^operations-[^-]+-/, ''))"
        )
        title = page.inner_text(".info .title")
    finally:
        ctx.close()
    assert outside == [], f"/docs asked other hosts: {outside}"
    assert errors == [], errors
    assert "Reservations API" in title
    assert set(shown) == operations
    assert len(shown) == len(operations)
