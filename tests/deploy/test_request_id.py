"""The API's side of request ids (kit/http.py), in process: taken from X-Request-ID when sane,
made up otherwise, echoed in the response, and on every log line written for the request."""

from __future__ import annotations

import logging
import re

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from reservations.kit.http import ObservabilityMiddleware

log = logging.getLogger("reservations.test_request_id")


async def endpoint(request: Request) -> JSONResponse:
    log.warning("handling %s", request.url.path)
    return JSONResponse({"seen": request.scope["state"]["request_id"]})


@pytest.fixture
def client() -> TestClient:
    app = Starlette(routes=[Route("/echo", endpoint)])
    return TestClient(ObservabilityMiddleware(app))


def test_a_sane_id_is_kept_echoed_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="reservations"):
        r = client.get("/echo", headers={"X-Request-ID": "abc-123"})
    assert r.headers.get_list("x-request-id") == ["abc-123"]
    assert r.json() == {"seen": "abc-123"}
    (record,) = [rec for rec in caplog.records if rec.name == log.name]
    assert record.request_id == "abc-123"  # type: ignore[attr-defined]
    assert record.getMessage() == "handling /echo [request_id=abc-123]"


@pytest.mark.parametrize("sent", [None, "", "a b", "x" * 129, "id%s", "id]\tx", "ü"])
def test_a_missing_or_unsafe_id_is_replaced(client: TestClient, sent: str | None) -> None:
    headers = {} if sent is None else {"X-Request-ID": sent.encode()}
    r = client.get("/echo", headers=headers)
    (rid,) = r.headers.get_list("x-request-id")
    assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
    assert r.json() == {"seen": rid}


def test_log_lines_outside_requests_say_so(caplog: pytest.LogCaptureFixture) -> None:
    ObservabilityMiddleware(Starlette())  # installs the record factory
    with caplog.at_level(logging.WARNING, logger="reservations"):
        log.warning("no request here")
    (record,) = [rec for rec in caplog.records if rec.name == log.name]
    assert record.request_id == "-"  # type: ignore[attr-defined]
    assert record.getMessage() == "no request here"
