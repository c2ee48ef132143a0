"""Every route that takes an id, as the isolation matrix (tests/api/test_isolation.py) and the
OWASP checks (tests/api/test_owasp.py) send them: path and body templates filled with a
world's ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FREE_START, FREE_END = "2031-03-02T10:00:00Z", "2031-03-02T11:00:00Z"


def fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    write: bool = False
    admin_only: bool = False


ID_ROUTES = [
    Route("get-resource", "GET", "/v1/resources/{rid}"),
    Route(
        "patch-resource",
        "PATCH",
        "/v1/resources/{rid}",
        {"name": "Hijacked", "tags": ["mine"]},
        write=True,
        admin_only=True,
    ),
    Route("delete-resource", "DELETE", "/v1/resources/{rid}", write=True, admin_only=True),
    Route(
        "delete-resource-cancelling",
        "DELETE",
        "/v1/resources/{rid}?cancel_reservations=true",
        write=True,
        admin_only=True,
    ),
    Route(
        "book-resource",
        "POST",
        "/v1/reservations",
        {"resource_id": "{rid}", "start": FREE_START, "end": FREE_END},
        write=True,
    ),
    Route("get-reservation", "GET", "/v1/reservations/{bid}"),
    Route(
        "patch-reservation",
        "PATCH",
        "/v1/reservations/{bid}",
        {"customer": "hijacked", "metadata": {"x": 1}},
        write=True,
    ),
    Route(
        "reschedule-reservation",
        "PATCH",
        "/v1/reservations/{bid}",
        {"start": FREE_START, "end": FREE_END},
        write=True,
    ),
    Route("confirm-reservation", "POST", "/v1/reservations/{bid}/confirm", write=True),
    Route(
        "extend-reservation",
        "POST",
        "/v1/reservations/{bid}/extend",
        {"hold_seconds": 7200},
        write=True,
    ),
    Route("check-in-reservation", "POST", "/v1/reservations/{bid}/check-in", write=True),
    Route("cancel-reservation", "POST", "/v1/reservations/{bid}/cancel", write=True),
]
