"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request on the hot path)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from contextvars import ContextVar
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reservations.errors import BodyTooLarge
from reservations.kit.metrics import LATENCY, REQUESTS

# On every response, errors included (OWASP's REST Security Cheat Sheet): nothing is sniffed,
# framed (the old header and the CSP directive that replaces it), cached, or sent on as Referer.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

# The request id: the client's (or the load balancer's) `X-Request-ID` when it is a sane token,
# else a new one in nginx's `$request_id` shape. The charset keeps ids safe to put in log lines
# and headers; deploy/nginx.conf applies the same rule before it forwards one.
_REQUEST_ID_OK = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            if _REQUEST_ID_OK.fullmatch(value):
                return value.decode("ascii")
            break
    return secrets.token_hex(16)


def outside_headers(scope: Scope) -> dict[str, str]:
    """What ObservabilityMiddleware adds to a response, for the one response sent around it:
    Starlette's outermost ServerErrorMiddleware sends the 500 of an unhandled exception."""
    headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
    rid = scope.get("state", {}).get("request_id")
    if rid:
        headers["X-Request-ID"] = rid
    return headers


_record_factory_installed = False


def install_request_id_logging() -> None:
    """Every log record made while a request is handled carries `request_id` (an attribute for
    structured formatters, "-" outside requests) and ends with `[request_id=...]`, so the
    application's own lines match the load balancer's access log under any formatter."""
    global _record_factory_installed
    if _record_factory_installed:
        return
    _record_factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        rid = REQUEST_ID.get()
        record.request_id = rid or "-"
        if rid is not None and isinstance(record.msg, str):
            # The id has no "%" (see _REQUEST_ID_OK), so %-style args still format.
            record.msg = f"{record.msg} [request_id={rid}]"
        return record

    logging.setLogRecordFactory(factory)


class ObservabilityMiddleware:
    """Records latency and status by route template, adds security headers, and gives every
    request an id (`X-Request-ID`: taken from the request or made up, echoed in the response,
    in `scope["state"]["request_id"]`, and on every log line written while it is handled)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        install_request_id_logging()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        rid = request_id_from(scope.get("headers", []))
        scope.setdefault("state", {})["request_id"] = rid
        token = REQUEST_ID.set(rid)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"x-request-id" not in present:
                    headers.append((b"x-request-id", rid.encode("ascii")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            REQUEST_ID.reset(token)
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            REQUESTS.labels(template, method, str(status)).inc()
            LATENCY.labels(template, method).observe(time.perf_counter() - started)


class BodyLimitMiddleware:
    """Refuses bodies over the limit with 413, whether announced by Content-Length or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(
            f"Send at most {self.max_bytes} bytes; split large changes into several requests."
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._too_large().response()(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI lets HTTPException out of body parsing; the app's handler renders it.
                    raise HTTPException(413, detail=self._too_large().detail)
            return message

        await self.app(scope, limited_receive, send)
