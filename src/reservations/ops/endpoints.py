from __future__ import annotations

from fastapi import APIRouter, Response

from reservations.deps import Svc
from reservations.errors import problem_response
from reservations.kit.metrics import render

router = APIRouter(tags=["operations"])


@router.get("/healthz", openapi_extra={"security": []})
async def healthz() -> dict[str, str]:
    """The process is alive (no dependencies checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "The primary cannot be reached"}},
    openapi_extra={"security": []},
)
async def readyz(svc: Svc) -> Response:
    """Ready to serve: the primary database answers. Redis is reported (`ok`, `unavailable`,
    `disabled`) but not required: without it the API serves from the database."""
    redis = await svc.redis.ping()
    if await svc.db.ping():
        return Response(f'{{"status":"ready","redis":"{redis}"}}', media_type="application/json")
    return problem_response(
        status=503,
        slug="not-ready",
        title="Not ready",
        detail="The primary database does not answer; this instance takes no traffic.",
        extra={"redis": redis},
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
