"""The interactive API docs at /docs: Swagger UI from files shipped in the package
(web/swagger-ui, swagger-ui-dist from npm), so the page works without internet and asks no
other host for anything."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from starlette.responses import HTMLResponse

from reservations.web.assets import MemoryFiles, load

SWAGGER_UI = Path(__file__).parent / "swagger-ui"
STATIC = "/docs/static"
# Revalidated on every load (ETag), like the booking page's assets: an upgrade shows at once.
ASSET_HEADERS = {"Cache-Control": "no-cache"}


def install(app: FastAPI) -> None:
    assert app.openapi_url is not None
    openapi_url = app.openapi_url
    redirect_url = "/docs/oauth2-redirect"
    title = f"{app.title} - docs"
    router = APIRouter(include_in_schema=False)

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{STATIC}/swagger-ui.css",
            swagger_favicon_url="/app/static/icon.svg",
            oauth2_redirect_url=redirect_url,
            # No badge from Swagger's online validator (it would send the document there).
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get(redirect_url)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.include_router(router)
    app.mount(STATIC, MemoryFiles(load(SWAGGER_UI), ASSET_HEADERS), name="docs-static")
