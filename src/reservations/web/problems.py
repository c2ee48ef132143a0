"""Problem type pages: every `type` URI an error carries (`/problems/<slug>`) answers what the
condition means and how to get past it: HTML for a browser, JSON for everyone else. The words
come from the error classes themselves (errors.py: `about`, `fix`)."""

from __future__ import annotations

import html
import re

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from reservations.errors import NotFound, ProblemType, problem_types

# A page of text: no script, no style, nothing from anywhere.
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "Cache-Control": "public, max-age=3600",
    "Vary": "Accept",
}
JSON_HEADERS = {"Cache-Control": "public, max-age=3600", "Vary": "Accept"}


def _wants_html(request: Request) -> bool:
    """A browser asks for text/html first; curl, clients and fetch() do not."""
    accept = request.headers.get("accept", "")
    html_at, json_at = accept.find("text/html"), accept.find("json")
    return html_at != -1 and (json_at == -1 or html_at < json_at)


def _text(value: str) -> str:
    """Escaped, with `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(value, quote=False))


def _as_json(problem: ProblemType) -> dict[str, object]:
    return {
        "type": f"/problems/{problem.slug}",
        "status": problem.status,
        "title": problem.title,
        "about": problem.about,
        "fix": problem.fix,
    }


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{body}\n"
        '<p><a href="/problems">All problem types</a> · <a href="/docs">API docs</a></p>\n'
        "</body>\n</html>\n"
    )


def install(app: FastAPI) -> None:
    types = problem_types()
    router = APIRouter(include_in_schema=False)

    @router.get("/problems")
    async def problem_index(request: Request) -> Response:
        ordered = sorted(types.values(), key=lambda p: (p.status, p.slug))
        if not _wants_html(request):
            body = orjson.dumps({"items": [_as_json(p) for p in ordered]})
            return Response(body, media_type="application/json", headers=JSON_HEADERS)
        rows = "\n".join(
            f'<li><a href="/problems/{p.slug}">{p.slug}</a> ({p.status}): {_text(p.title)}</li>'
            for p in ordered
        )
        page = _page(
            "Problem types",
            "<h1>Problem types</h1>\n<p>Errors are <code>application/problem+json</code> "
            "(RFC 9457); their <code>type</code> is one of these.</p>\n"
            f"<ul>\n{rows}\n</ul>",
        )
        return Response(page, media_type="text/html", headers=HTML_HEADERS)

    @router.get("/problems/{slug}")
    async def problem_type(slug: str, request: Request) -> Response:
        problem = types.get(slug)
        if problem is None:
            raise NotFound("No such problem type; /problems lists them all.")
        if not _wants_html(request):
            body = orjson.dumps(_as_json(problem))
            return Response(body, media_type="application/json", headers=JSON_HEADERS)
        page = _page(
            f"{problem.slug}: {problem.title}",
            f"<h1>{_text(problem.title)}</h1>\n"
            f"<p><code>/problems/{problem.slug}</code>, HTTP {problem.status}</p>\n"
            f"<h2>What it means</h2>\n<p>{_text(problem.about)}</p>\n"
            f"<h2>What to do</h2>\n<p>{_text(problem.fix)}</p>",
        )
        return Response(page, media_type="text/html", headers=HTML_HEADERS)

    app.include_router(router)
