"""A client generated from the live /openapi.json works unmodified: openapi-python-client
(default configuration, and with literal_enums) generates every operation without a warning,
and the generated package creates a resource, books, reads a typed 409 with its conflicts,
confirms, and pages through a list. The document passes openapi-spec-validator."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import LiveServer, admin_key_on

GENERATOR = "openapi_python_client"
PACKAGE = "reservations_api_client"


def _generator_missing() -> str | None:
    try:
        importlib.import_module(GENERATOR)
    except ImportError:
        return (
            "openapi-python-client is not installed: .venv/bin/pip install -e '.[test]' "
            "(it is in the test extras; CI installs it)"
        )
    return None


MISSING = _generator_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")


@pytest.fixture(scope="module")
def document(live_server_module: LiveServer) -> dict[str, Any]:
    return dict(httpx.get(live_server_module.url + "/openapi.json").json())


@pytest.fixture(scope="module")
def live_server_module(database_url: str, redis_server: Any) -> Iterator[LiveServer]:
    from tests.support.live import start_live_server, stop_live_server

    server = start_live_server(database_url, **redis_server.env())
    yield server
    stop_live_server(server)


def _generate(document: dict[str, Any], where: Path, *config: str) -> Path:
    """Run the generator as a developer would; its own post-hooks (ruff) find ruff on PATH."""
    import json

    where.mkdir(parents=True)
    source = where / "openapi.json"
    source.write_text(json.dumps(document))
    config_args: list[str] = []
    if config:
        (where / "config.yaml").write_text("\n".join(config) + "\n")
        config_args = ["--config", str(where / "config.yaml")]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", GENERATOR, "generate", "--path", str(source), *config_args],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert "Warning" not in said, said
    assert "Unable to" not in said, said
    assert "will not be generated" not in said, said
    return where / "reservations-api-client"


def _operations(document: dict[str, Any]) -> set[str]:
    return {op["operationId"] for item in document["paths"].values() for op in item.values()}


def _generated_operations(project: Path) -> set[str]:
    return {p.stem for p in (project / PACKAGE / "api").glob("*/*.py") if p.stem != "__init__"}


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    from openapi_spec_validator import validate

    validate(document)


@pytest.mark.parametrize(
    "config", [(), ("literal_enums: true",)], ids=["default-config", "literal-enums"]
)
def test_every_operation_is_generated_without_warnings(
    document: dict[str, Any], tmp_path: Path, config: tuple[str, ...]
) -> None:
    project = _generate(document, tmp_path / "gen", *config)
    assert _generated_operations(project) == _operations(document)


@pytest.fixture(scope="module")
def client_package(
    document: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    project = _generate(document, tmp_path_factory.mktemp("client") / "gen")
    sys.path.insert(0, str(project))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(project))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_the_generated_client_books_conflicts_confirms_and_pages(
    client_package: Any, live_server_module: LiveServer
) -> None:
    api = importlib.import_module(f"{PACKAGE}.api")
    create_resource = importlib.import_module(f"{PACKAGE}.api.resources.create_resource")
    create_reservation = importlib.import_module(f"{PACKAGE}.api.reservations.create_reservation")
    confirm_reservation = importlib.import_module(f"{PACKAGE}.api.reservations.confirm_reservation")
    list_reservations = importlib.import_module(f"{PACKAGE}.api.reservations.list_reservations")
    models = importlib.import_module(f"{PACKAGE}.models")
    assert api is not None

    key = admin_key_on(live_server_module.database_url)
    client = client_package.AuthenticatedClient(base_url=live_server_module.url, token=key)

    made = create_resource.sync_detailed(
        client=client,
        body=models.ResourceCreate(
            name="Room",
            timezone=models.TimeZoneName.EUROPE_BERLIN,
            metadata=models.Metadata.from_dict({"floor": 2, "kit": ["screen", {"hdmi": None}]}),
        ),
    )
    assert made.status_code == 201, made.content
    room = made.parsed
    assert isinstance(room, models.ResourceRead)
    assert room.timezone == models.TimeZoneName.EUROPE_BERLIN
    assert room.metadata.to_dict() == {"floor": 2, "kit": ["screen", {"hdmi": None}]}

    start = datetime(2031, 3, 3, 9, tzinfo=UTC)
    held = create_reservation.sync_detailed(
        client=client,
        body=models.ReservationCreate(
            resource_id=room.id, start=start, end=start + timedelta(hours=1), hold_seconds=300
        ),
        idempotency_key="generated-client-hold",
    )
    assert held.status_code == 201, held.content
    hold = held.parsed
    assert isinstance(hold, models.ReservationRead)
    assert hold.status == models.Status.HELD

    clash = create_reservation.sync_detailed(
        client=client,
        body=models.ReservationCreate(
            resource_id=room.id,
            start=start + timedelta(minutes=30),
            end=start + timedelta(minutes=90),
        ),
    )
    assert clash.status_code == 409
    problem = clash.parsed
    assert isinstance(problem, models.ConflictProblem)
    assert problem.type_ == "/problems/reservation-conflict"
    (conflict,) = problem.conflicts
    assert isinstance(conflict, models.ConflictItem)
    assert (conflict.start, conflict.end, conflict.id) == (hold.start, hold.end, hold.id)
    assert conflict.status == models.Status.HELD

    confirmed = confirm_reservation.sync_detailed(hold.id, client=client)
    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.parsed.status == models.Status.CONFIRMED

    made_ids = {hold.id}
    for day in range(1, 6):
        at = start + timedelta(days=day)
        r = create_reservation.sync_detailed(
            client=client,
            body=models.ReservationCreate(
                resource_id=room.id, start=at, end=at + timedelta(hours=1)
            ),
        )
        assert r.status_code == 201, r.content
        made_ids.add(r.parsed.id)
    seen: list[Any] = []
    cursor: Any = client_package.types.UNSET
    pages = 0
    while True:
        page = list_reservations.sync(client=client, resource_id=room.id, limit=2, cursor=cursor)
        assert isinstance(page, models.ReservationPage)
        pages += 1
        seen += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert len(seen) == len(set(seen)) == 6
    assert set(seen) == made_ids

    # A typed 422 too: the fields at fault, named.
    bad = create_reservation.sync_detailed(
        client=client,
        body=models.ReservationCreate(resource_id=room.id, start=start, end=start),
    )
    assert bad.status_code == 422
    assert isinstance(bad.parsed, models.InvalidInputProblem)
