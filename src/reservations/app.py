"""Builds the ASGI app. The lifespan owns the pool and the background loop; nothing is
created at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from psycopg_pool import PoolTimeout
from starlette.responses import Response
from starlette.routing import Route

from reservations import __version__, problem_bodies, wiring, worker
from reservations.alternatives import http as alternatives_http
from reservations.audit.endpoints import router as audit_router
from reservations.availability.endpoints import router as availability_router
from reservations.bookings.endpoints import router as bookings_router
from reservations.config import Settings, load_settings
from reservations.context import Context
from reservations.errors import ShardMoving, install_error_handlers, problem_response
from reservations.events.endpoints import router as events_router
from reservations.feeds.endpoints import public as public_feeds_router
from reservations.feeds.endpoints import router as feeds_router
from reservations.kit.clock import Clock
from reservations.kit.consistency import ConsistencyMiddleware
from reservations.kit.db import Database
from reservations.kit.faults import CrashAfterCommit, CrashAfterCommitMiddleware
from reservations.kit.http import BodyLimitMiddleware, ObservabilityMiddleware, outside_headers
from reservations.kit.openapi import (
    add_field_components,
    add_problem_schemas,
    parameters_without_null,
)
from reservations.kit.ratelimit import RateLimitHeadersMiddleware
from reservations.mcp import http as mcp_http
from reservations.ops.endpoints import router as ops_router
from reservations.reports.endpoints import router as reports_router
from reservations.reservations.endpoints import router as reservations_router
from reservations.resources.endpoints import router as resources_router
from reservations.sharding.router import NOT_HERE
from reservations.waitlist.endpoints import router as waitlist_router
from reservations.web import endpoints as web
from reservations.webhooks.endpoints import router as webhooks_router

log = logging.getLogger(__name__)

DESCRIPTION = """
Book resources (rooms, desks, courts, vehicles, staff, seats) for time ranges without ever
double-booking: PostgreSQL's exclusion constraint decides every accept.

Authenticate with `Authorization: Bearer <api key>`. Timestamps are RFC 3339 with an offset;
ranges are half-open `[start, end)`. Errors are `application/problem+json` (RFC 9457).
POSTs accept `Idempotency-Key`; reservations carry an `ETag` for `If-Match`.
"""


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    settings = settings or load_settings()
    clock = clock or Clock()
    if settings.database_url is None:
        raise RuntimeError(
            "DATABASE_URL is not set: start the service with 'reservations serve', which "
            "starts the embedded PostgreSQL, or set DATABASE_URL."
        )
    db = Database(settings.database_url, settings)
    svc = wiring.build(settings, db, clock, redis=True)
    agents = mcp_http.Endpoint(svc)
    app = FastAPI(
        title="Reservations API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=_lifespan(settings, db, svc, agents),
        openapi_url="/openapi.json",
        docs_url=None,  # served by web.docs from packaged files, not from a CDN
        redoc_url=None,
        # operationIds are the endpoint functions' names (get_reservation), stable for
        # generated clients and for the OpenAPI links between operations.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.services = svc
    install_error_handlers(app)
    alternatives_http.install(app)  # refusals with bookable alternatives
    _install_infrastructure_handlers(app)
    _include_routers(app)
    # The MCP surface for agents (docs/agents.md): not in the OpenAPI document.
    app.router.routes.append(
        Route(mcp_http.PATH, agents, methods=mcp_http.METHODS, include_in_schema=False)
    )
    web.install(app)
    _add_middlewares(app, settings, svc)
    _install_openapi(app)
    return app


def _lifespan(
    settings: Settings, db: Database, svc: Context, agents: mcp_http.Endpoint
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the pool, the opened services and (if configured) the background
    loop live exactly as long as the app serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.open()
        try:
            async with wiring.opened(svc), agents.running():
                sweeper = (
                    asyncio.create_task(worker.run_forever(svc)) if settings.run_worker else None
                )
                try:
                    yield
                finally:
                    if sweeper is not None:
                        sweeper.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await sweeper
        finally:
            await db.close()

    return lifespan


def _include_routers(app: FastAPI) -> None:
    """Which domains the API serves, in the order their routes are matched."""
    app.include_router(resources_router)
    app.include_router(reservations_router)
    app.include_router(availability_router)
    app.include_router(bookings_router)
    app.include_router(events_router)
    app.include_router(waitlist_router)
    app.include_router(webhooks_router)
    app.include_router(feeds_router)
    app.include_router(public_feeds_router)
    app.include_router(audit_router)
    app.include_router(reports_router)
    app.include_router(ops_router)


def _add_middlewares(app: FastAPI, settings: Settings, svc: Context) -> None:
    """Which middlewares wrap the app; each one added wraps those before it, so the last
    (observability) is outermost."""
    crash = CrashAfterCommit.parse(settings.fault_crash_after_commit)
    if crash is not None:  # tests only: innermost, so it sees the reply the service made
        app.add_middleware(CrashAfterCommitMiddleware, fault=crash)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.replica_urls or svc.shards.has_replicas:
        app.add_middleware(ConsistencyMiddleware)
    if svc.limits is not None:
        app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(ObservabilityMiddleware)


def _install_openapi(app: FastAPI) -> None:
    """The OpenAPI document: built once on first request, with problem schemas and field
    components added and nullable parameters simplified."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                servers=[{"url": "/"}],
            )
            schema = add_field_components(add_problem_schemas(schema, problem_bodies.MODELS))
            app.openapi_schema = parameters_without_null(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_infrastructure_handlers(app: FastAPI) -> None:
    """Database trouble is the service's fault, never the caller's: 503 with Retry-After, a
    log line for the operator, and no internals in the body."""

    async def unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return problem_response(
            status=503,
            slug="service-unavailable",
            title="The service cannot complete this request right now",
            detail="The database is busy or unreachable; retry shortly (with the same "
            "Idempotency-Key if you sent one).",
            headers={"Retry-After": "1"},
        )

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            status=500,
            slug="internal-error",
            title="Internal error",
            detail="Something went wrong on our side; it has been logged.",
            headers=outside_headers(request.scope),
        )

    async def database_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, psycopg.Error) and exc.sqlstate == NOT_HERE:
            # A shard moved and this instance's map was stale: nothing was written.
            svc: Context = request.app.state.services
            await svc.shards.refused(str(exc.diag.message_primary or ""))
            return ShardMoving().response()
        return await unexpected(request, exc)

    app.add_exception_handler(psycopg.DatabaseError, database_error)
    for exc_type in (
        psycopg.OperationalError,
        psycopg.errors.DeadlockDetected,
        psycopg.errors.LockNotAvailable,
        psycopg.errors.QueryCanceled,
        psycopg.errors.SerializationFailure,
        PoolTimeout,
    ):
        app.add_exception_handler(exc_type, unavailable)
    app.add_exception_handler(Exception, unexpected)
