"""Promotion passes the whole admission a direct create passes (`admission.screen`, then
`admission.admit`), and what it costs follows what can be promoted, not the queue.

- The system's maximum length binds a promotion as it binds a create: an entry that joined
  when a longer range was allowed lapses instead of becoming a hold no create could make (it
  used to be promoted: promotion asked the policy's rules but skipped the length and quantity
  checks of the screen).
- Refusals by the counts are not asked again within one promotion: once the tenant's hold
  cap refuses, or a booker's limit refuses for a period, the later entries that would meet
  the same refusal cost no statement (they used to cost a count each, on every cancel)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reservations.app import create_app
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.reservations import repository as reservations_repo
from tests.support.api import Api, Tenant, _created, new_tenant

DAY = "2034-03-06"


def at(hour: int) -> str:
    return f"{DAY}T{hour:02d}:00:00Z"


def _join(api: Api, room: str, start: str, end: str) -> dict[str, Any]:
    body = {"resource_id": room, "start": start, "end": end}
    entry = _created(api.post("/v1/waitlist", json=body))
    assert entry["status"] == "waiting", entry
    return entry


def _status(api: Api, entry: dict[str, Any]) -> str:
    return str(api.get(f"/v1/waitlist/{entry['id']}").json()["status"])


@pytest.fixture
def shorter(settings: Settings) -> Iterator[TestClient]:
    """A second app on the same database whose longest reservation is two hours: as if the
    operator lowered RESERVATIONS_MAX_RESERVATION_SECONDS while entries waited."""
    small = settings.model_copy(update={"max_reservation_seconds": 2 * 3600})
    with TestClient(create_app(small, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_a_promotion_is_held_to_the_maximum_length_of_now(
    tenant: Tenant, shorter: TestClient
) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    blocker = _created(admin.book(room, at(9), at(17)))
    long_entry = _join(booker, room, at(9), at(12))  # three hours: allowed when it joined
    short_entry = _join(tenant.another_booker(), room, at(13), at(14))  # the control
    # A create of that range is refused now; the promotion must be too.
    strict = Api(shorter, tenant.tokens["booker"])
    refused = strict.book(room, at(9), at(12))
    assert (refused.status_code, refused.json()["type"]) == (422, "/problems/invalid-input")
    freed = Api(shorter, tenant.tokens["admin"]).post(f"/v1/reservations/{blocker['id']}/cancel")
    assert freed.status_code == 200, freed.text
    after = booker.get(f"/v1/waitlist/{long_entry['id']}").json()
    assert after["status"] == "lapsed", after  # no wait makes it short enough
    assert after["reservation_id"] is None
    assert _status(admin, short_entry) == "promoted"
    live = admin.get("/v1/reservations", params={"resource_id": room}).json()["items"]
    assert [(r["start"], r["end"]) for r in live if r["status"] != "cancelled"] == [
        (at(13), at(14))
    ]


def test_a_promotion_is_held_to_the_capacity_of_now(tenant: Tenant) -> None:
    """An entry for three units of a room whose capacity has since dropped to two lapses
    at its turn, as a create of three units would be refused (it used to stay waiting, and
    cost a refused insert on every promotion)."""
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource(capacity=3)["id"]
    blocker = _created(admin.book(room, at(9), at(10), quantity=1))
    body = {"resource_id": room, "start": at(9), "end": at(10), "quantity": 3}
    entry = _created(booker.post("/v1/waitlist", json=body))
    assert entry["status"] == "waiting", entry
    assert admin.patch(f"/v1/resources/{room}", json={"capacity": 2}).status_code == 200
    refused = booker.book(room, at(9), at(10), quantity=3)
    assert (refused.status_code, refused.json()["type"]) == (422, "/problems/invalid-input")
    assert admin.post(f"/v1/reservations/{blocker['id']}/cancel").status_code == 200
    after = booker.get(f"/v1/waitlist/{entry['id']}").json()
    assert (after["status"], after["reservation_id"]) == ("lapsed", None), after


Counted = Callable[..., Awaitable[Any]]


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many times admission reads the counts it decides on (the booker's starts, the
    tenant's live holds) from now on."""
    calls = {"booker_starts": 0, "live_holds": 0}

    def counting(name: str) -> Counted:
        original: Counted = getattr(reservations_repo, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await original(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(reservations_repo, name, counting(name))
    return calls


@pytest.fixture
def capped(settings: Settings) -> Iterator[TestClient]:
    """An app whose tenants may hold one live hold at a time."""
    one = settings.model_copy(update={"max_live_holds_per_tenant": 1})
    with TestClient(create_app(one, Clock()), raise_server_exceptions=False) as client:
        yield client


def test_at_the_hold_cap_a_promotion_asks_the_cap_once(
    capped: TestClient, counts: dict[str, int]
) -> None:
    tenant = new_tenant(capped)
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource()["id"]
    _created(booker.book(admin.resource()["id"], at(9), at(10), hold_seconds=600))  # the cap
    blocker = _created(admin.book(room, at(8), at(18)))
    entries = [_join(booker, room, at(h), at(h + 1)) for h in range(8, 18)]
    for name in counts:
        counts[name] = 0
    assert admin.post(f"/v1/reservations/{blocker['id']}/cancel").status_code == 200
    assert [_status(booker, e) for e in entries] == ["waiting"] * len(entries)
    # Ten entries fit the freed range; the cap refuses the first and is not asked again.
    assert counts["live_holds"] == 1, counts


def test_a_booker_at_their_limit_is_counted_once_per_period(
    tenant: Tenant, counts: dict[str, int]
) -> None:
    admin, booker = tenant.admin, tenant.booker
    room = admin.resource(policy={"booker_limit": {"max_live": 1, "period": "day"}})["id"]
    _created(booker.book(room, at(18), at(19)))  # the booker's one for the day
    blocker = _created(admin.book(room, at(8), at(17)))
    mine = [_join(booker, room, at(h), at(h + 1)) for h in range(8, 16)]
    other = _join(tenant.another_booker(), room, at(16), at(17))  # another booker: promoted
    for name in counts:
        counts[name] = 0
    assert admin.post(f"/v1/reservations/{blocker['id']}/cancel").status_code == 200
    assert [_status(booker, e) for e in mine] == ["waiting"] * len(mine)
    assert _status(admin, other) == "promoted"
    # One count for the booker at their limit (not eight), one for the other booker.
    assert counts["booker_starts"] == 2, counts
