"""Every refusal (409 reservation-conflict, 422 booking-rule-violated) of a create, a move or
a booking carries `alternatives`: the next free starts of the same length on the same
resource(s) and the same range on other resources with its tags, each bookable at once, in
the caller's view; `Prefer: alternatives=none` skips the search. And the property: right
after a refusal, booking any listed alternative with the same Idempotency-Key succeeds."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reservations.alternatives.schemas import LIMIT
from reservations.config import Settings
from tests.support.api import Api, Tenant, _created, _db, _problem

KEY = "Idempotency-Key"
DAY = datetime(2034, 5, 8, tzinfo=UTC)  # a Monday, far enough ahead for any notice


def at(hour: float, day: int = 0) -> str:
    return (DAY + timedelta(days=day, hours=hour)).isoformat().replace("+00:00", "Z")


def key() -> str:
    return f"alt-{secrets.token_hex(8)}"


def alternatives(r: httpx.Response) -> dict[str, Any]:
    found = r.json().get("alternatives")
    assert isinstance(found, dict), r.text
    return found


def starts(items: list[dict[str, Any]]) -> list[str]:
    return [a["start"].replace("+00:00", "Z") for a in items]


def test_a_conflict_offers_the_next_free_starts_and_other_rooms(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    admin = tenant.admin
    room = admin.resource(name="A", tags=["room", "floor-1"])
    twin = admin.resource(name="B", tags=["room", "floor-1", "window"])
    busy_twin = admin.resource(name="C", tags=["room", "floor-1"])
    desk = admin.resource(name="D", tags=["desk"])
    part = admin.resource(name="E", tags=["room"])  # lacks floor-1
    elsewhere = other_tenant.admin.resource(name="F", tags=["room", "floor-1"])
    _created(admin.book(room["id"], at(9), at(10)))
    _created(admin.book(busy_twin["id"], at(9.5), at(10.5)))

    r = tenant.booker.book(room["id"], at(9), at(10))
    body = _problem(r, 409, "reservation-conflict")
    found = alternatives(r)
    assert starts(found["same_resources"]) == [at(10), at(10.25), at(10.5), at(10.75), at(11)]
    assert all(a["resources"] == [{"resource_id": room["id"], "name": "A", "quantity": 1}]
               for a in found["same_resources"])  # fmt: skip
    others = [a["resources"][0]["resource_id"] for a in found["other_resources"]]
    assert others == [twin["id"]]  # not busy_twin (booked), desk, part or another tenant's
    assert {desk["id"], part["id"], elsewhere["id"], busy_twin["id"]}.isdisjoint(others)
    assert starts(found["other_resources"]) == [at(9)]
    # the caller's view: resources and times, nobody's reservation
    assert set(found) == {"same_resources", "other_resources", "searched_from", "searched_to"}
    for a in found["same_resources"] + found["other_resources"]:
        assert set(a) == {"start", "end", "resources"}
        assert all(set(c) == {"resource_id", "name", "quantity"} for c in a["resources"])
    assert "conflicts" in body  # the refusal is as before

    # each is bookable at once
    first = found["same_resources"][0]
    _created(tenant.booker.book(room["id"], first["start"], first["end"]))
    _created(tenant.booker.book(twin["id"], at(9), at(10)))


def test_a_rule_refusal_offers_starts_inside_the_rules(tenant: Tenant) -> None:
    policy = {
        "weekly_hours": {d: [{"start": "09:00", "end": "12:00"}] for d in ("mon", "tue")},
        "slot_grid_minutes": 30,
        "buffer_after": "PT30M",
    }
    room = tenant.admin.resource(name="Ruled", policy=policy)
    _created(tenant.admin.book(room["id"], at(9), at(10)))
    r = tenant.booker.book(room["id"], at(11.5), at(12.5))  # past closing
    _problem(r, 422, "booking-rule-violated")
    found = alternatives(r)
    # forward from Monday 11:30 on the 30-minute grid: nothing more on Monday (an hour from
    # 11:30 ends after closing), then Tuesday's hours
    assert starts(found["same_resources"]) == [at(9, 1), at(9.5, 1), at(10, 1), at(10.5, 1),
                                               at(11, 1)]  # fmt: skip
    assert found["other_resources"] == []  # no tags, no substitutes


def test_nothing_left_after_offers_the_latest_before(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="Soon", policy={"max_advance": "P30D"})
    late = (datetime.now(UTC) + timedelta(days=31)).replace(minute=0, second=0, microsecond=0)
    r = tenant.booker.book(room["id"], late.isoformat(), (late + timedelta(hours=1)).isoformat())
    _problem(r, 422, "booking-rule-violated")
    found = alternatives(r)["same_resources"]
    assert len(found) == LIMIT
    got = [datetime.fromisoformat(a["start"]) for a in found]
    assert got == sorted(got, reverse=True)  # nearest first
    assert all(g < late for g in got)
    _created(tenant.booker.book(room["id"], found[0]["start"], found[0]["end"]))


def test_a_move_is_not_in_its_own_way(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="Move")
    mine = _created(tenant.booker.book(room["id"], at(10), at(11)))
    _created(tenant.admin.book(room["id"], at(8), at(9)))
    r = tenant.booker.patch(
        f"/v1/reservations/{mine['id']}", json={"start": at(8.5), "end": at(9.5)}
    )
    _problem(r, 409, "reservation-conflict")
    found = alternatives(r)["same_resources"]
    # 09:15-10:15 and later overlap the row as it is now, which the move frees
    assert starts(found) == [at(9), at(9.25), at(9.5), at(9.75), at(10)]
    moved = tenant.booker.patch(
        f"/v1/reservations/{mine['id']}", json={"start": found[4]["start"], "end": found[4]["end"]}
    )
    assert moved.status_code == 200, moved.text


def test_a_booking_of_several_shifts_the_set_or_replaces_the_one_in_the_way(
    tenant: Tenant,
) -> None:
    admin = tenant.admin
    room = admin.resource(name="R", tags=["room"])
    spare = admin.resource(name="S", tags=["room"])
    beamer = admin.resource(name="P", tags=["projector"])
    _created(admin.book(room["id"], at(9), at(10)))
    _created(admin.book(beamer["id"], at(10), at(11)))
    body = {
        "resources": [{"resource_id": room["id"]}, {"resource_id": beamer["id"]}],
        "start": at(9),
        "end": at(10),
    }
    r = tenant.booker.post("/v1/bookings", json=body)
    _problem(r, 409, "reservation-conflict")
    found = alternatives(r)
    # the whole set, later: both free from 11:00
    assert starts(found["same_resources"]) == [at(11), at(11.25), at(11.5), at(11.75), at(12)]
    assert [[c["resource_id"] for c in a["resources"]] for a in found["same_resources"]] == [
        [room["id"], beamer["id"]]
    ] * LIMIT
    # the same range with the room replaced by the spare one
    assert [[c["resource_id"] for c in a["resources"]] for a in found["other_resources"]] == [
        [spare["id"], beamer["id"]]
    ]
    pick = found["other_resources"][0]
    again = {
        **body,
        "resources": [{"resource_id": c["resource_id"]} for c in pick["resources"]],
    }
    assert tenant.booker.post("/v1/bookings", json=again).status_code == 201


def test_a_series_gets_none(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="Series", tags=["room"])
    _created(tenant.admin.book(room["id"], at(9, 1), at(10, 1)))
    body = {
        "resources": [{"resource_id": room["id"]}],
        "start": at(9),
        "end": at(10),
        "rrule": "FREQ=DAILY;COUNT=3",
    }
    r = tenant.booker.post("/v1/bookings", json=body)
    _problem(r, 409, "reservation-conflict")
    assert "alternatives" not in r.json()


def test_a_booking_move_offers_the_set_shifted(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="BM")
    made = tenant.booker.post(
        "/v1/bookings",
        json={
            "resources": [{"resource_id": room["id"]}],
            "start": at(9),
            "end": at(10),
        },
    )
    booking = _created(made)
    _created(tenant.admin.book(room["id"], at(10), at(11)))
    r = tenant.booker.patch(f"/v1/bookings/{booking['id']}", json={"shift": "PT1H"})
    _problem(r, 409, "reservation-conflict")
    assert starts(alternatives(r)["same_resources"])[0] == at(11)


def test_prefer_alternatives_none_skips_the_search(tenant: Tenant) -> None:
    room = tenant.admin.resource(name="Quiet")
    _created(tenant.admin.book(room["id"], at(9), at(10)))
    r = tenant.booker.post(
        "/v1/reservations",
        json={"resource_id": room["id"], "start": at(9), "end": at(10)},
        headers={"Prefer": "alternatives=none"},
    )
    _problem(r, 409, "reservation-conflict")
    assert "alternatives" not in r.json()
    assert r.headers["preference-applied"] == "alternatives=none"


def test_the_key_of_a_refusal_books_an_alternative(tenant: Tenant, settings: Settings) -> None:
    room = tenant.admin.resource(name="Keyed")
    _created(tenant.admin.book(room["id"], at(9), at(10)))
    k = key()
    body = {"resource_id": room["id"], "start": at(9), "end": at(10)}
    first = tenant.booker.post("/v1/reservations", json=body, headers={KEY: k})
    _problem(first, 409, "reservation-conflict")
    # the same request again: the refusal, replayed
    again = tenant.booker.post("/v1/reservations", json=body, headers={KEY: k})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # alternatives and all
    pick = alternatives(first)["same_resources"][2]
    chosen = {**body, "start": pick["start"], "end": pick["end"]}
    booked = tenant.booker.post("/v1/reservations", json=chosen, headers={KEY: k})
    made = _created(booked)
    # from now on the key is the booking's: a retry replays it, the refused body is a reuse
    replay = tenant.booker.post("/v1/reservations", json=chosen, headers={KEY: k})
    assert replay.json()["id"] == made["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    _problem(tenant.booker.post("/v1/reservations", json=body, headers={KEY: k}), 422,
             "idempotency-key-reused")  # fmt: skip
    rows = _db(settings, "SELECT count(*) FROM reservation WHERE resource_id = %s", room["id"])
    assert rows == [(2,)]
    # a key whose first request succeeded is not reopened by anything
    other = {**body, "start": at(14), "end": at(15)}
    _problem(tenant.booker.post("/v1/reservations", json=other, headers={KEY: k}), 422,
             "idempotency-key-reused")  # fmt: skip


# --- the property -----------------------------------------------------------------------------

_POLICIES = st.fixed_dictionaries(
    {},
    optional={
        "weekly_hours": st.just(
            {d: [{"start": "08:00", "end": "18:00"}] for d in ("mon", "tue", "wed", "thu", "fri")}
        ),
        "slot_grid_minutes": st.sampled_from([15, 30, 60]),
        "buffer_before": st.sampled_from(["PT15M", "PT30M"]),
        "buffer_after": st.sampled_from(["PT15M", "PT1H"]),
        "max_duration": st.sampled_from(["PT1H", "PT2H"]),
        "booker_limit": st.just({"max_live": 2, "per": "api_key", "period": "day"}),
    },
)


@st.composite
def _scenes(draw: st.DrawFn) -> dict[str, Any]:
    blocks = draw(
        st.lists(st.tuples(st.integers(0, 40), st.integers(1, 8)), min_size=1, max_size=6)
    )
    return {
        "policy": draw(_POLICIES),
        "twin_policy": draw(_POLICIES),
        "blocks": blocks,  # (quarter hours after 08:00, length in quarters)
        # mostly over the first block, so that most first answers are refusals
        "ask": (max(0, blocks[0][0] + draw(st.integers(-3, 3))), draw(st.integers(1, 12))),
        "other": draw(st.booleans()),  # pick among the other resources' when there are some
        "pick": draw(st.integers(0, LIMIT - 1)),
        "mine": draw(st.integers(0, 2)),  # the booker's own bookings that day
        "booking": draw(st.booleans()),
    }


def _quarter(q: int, day: int = 0) -> str:
    return at(8 + q / 4, day)


def _book_blocks(admin: Api, rid: str, blocks: list[tuple[int, int]]) -> None:
    for q, n in blocks:
        admin.post(
            "/v1/reservations",
            json={
                "resource_id": rid,
                "start": _quarter(q),
                "end": _quarter(q + n),
                "override_rules": True,
            },
        )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scene=_scenes())
def test_any_listed_alternative_books_with_the_same_key(
    tenant: Tenant, scene: dict[str, Any]
) -> None:
    admin, booker = tenant.admin, tenant.booker
    tag = f"t-{secrets.token_hex(4)}"
    room = admin.resource(name="P", tags=[tag], policy=scene["policy"])
    twin = admin.resource(name="Q", tags=[tag], policy=scene["twin_policy"])
    _book_blocks(admin, room["id"], scene["blocks"])
    _book_blocks(admin, twin["id"], scene["blocks"][1::2])
    for i in range(scene["mine"]):  # toward the booker limit, where there is one
        booker.post(
            "/v1/reservations",
            json={"resource_id": room["id"], "start": at(6 + i), "end": at(6.25 + i)},
        )
    q, n = scene["ask"]
    start, end = _quarter(q), _quarter(q + n)
    path = "/v1/bookings" if scene["booking"] else "/v1/reservations"

    def body(rid: str, s: str, e: str) -> dict[str, Any]:
        if scene["booking"]:
            return {"resources": [{"resource_id": rid}], "start": s, "end": e}
        return {"resource_id": rid, "start": s, "end": e}

    k = key()
    refused = booker.post(path, json=body(room["id"], start, end), headers={KEY: k})
    event(f"first answer {refused.status_code}")
    if refused.status_code == 201:
        return  # not refused: nothing to offer
    assert refused.status_code in (409, 422), refused.text
    if refused.json()["type"] not in (
        "/problems/reservation-conflict",
        "/problems/booking-rule-violated",
    ):
        return  # invalid-input (a range longer than allowed): not a refusal of the range
    found = alternatives(refused)
    listed = found["same_resources"] + found["other_resources"]
    assert len(found["same_resources"]) <= LIMIT
    assert len(found["other_resources"]) <= LIMIT
    event(f"alternatives listed: {bool(listed)}")
    if not listed:
        return
    among = found["other_resources"] if scene["other"] else found["same_resources"]
    among = among or listed
    event("an other resource" if among is found["other_resources"] else "the same resource")
    pick = among[scene["pick"] % len(among)]
    (choice,) = pick["resources"]
    r = booker.post(
        path, json=body(choice["resource_id"], pick["start"], pick["end"]), headers={KEY: k}
    )
    assert r.status_code == 201, (pick, r.text)
