"""Serves the booking page at /app and its assets under /app/static.

No template engine: the page is a static shell that signs in with an API key in the browser
and talks to /v1 like any other client. Its Content-Security-Policy allows nothing but this
origin (no inline script or style, no other host), which is also what keeps the key, held
in sessionStorage, from being sent anywhere else.

The files are read into memory when the app is built (web/assets.py): a reinstall of the
package under a running server leaves it serving them."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from reservations.web import docs, problems
from reservations.web.assets import Asset, MemoryFiles, load

HERE = Path(__file__).parent
STATIC = HERE / "static"

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Assets revalidate (ETag, Last-Modified) on every load instead of the API's no-store, so an
# upgrade shows at once and an unchanged file costs a 304.
ASSET_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP}


def install(app: FastAPI) -> None:
    page = Asset.read(HERE / "page.html")
    router = APIRouter(include_in_schema=False)

    @router.api_route("/", methods=["GET", "HEAD"])
    async def root() -> RedirectResponse:
        return RedirectResponse("/app", status_code=307)

    @router.api_route("/app", methods=["GET", "HEAD"])
    async def booking_page(request: Request) -> Response:
        return page.response(request.scope, ASSET_HEADERS)

    app.include_router(router)
    app.mount("/app/static", MemoryFiles(load(STATIC), ASSET_HEADERS), name="web-static")
    docs.install(app)
    problems.install(app)
