"""Serves the booking page at /app and its assets under /app/static.

No template engine: the page is a static shell that signs in with an API key in the browser
and talks to /v1 like any other client. Its Content-Security-Policy allows nothing but this
origin (no inline script or style, no other host), which is also what keeps the key, held
in sessionStorage, from being sent anywhere else."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

HERE = Path(__file__).parent
STATIC = HERE / "static"

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# Assets revalidate (ETag, Last-Modified) on every load instead of the API's no-store, so an
# upgrade shows at once and an unchanged file costs a 304.
ASSET_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def root() -> RedirectResponse:
    return RedirectResponse("/app", status_code=307)


@router.api_route("/app", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return FileResponse(HERE / "page.html", media_type="text/html", headers=ASSET_HEADERS)


class Assets(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(ASSET_HEADERS)
        return response


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/app/static", Assets(directory=STATIC), name="web-static")
