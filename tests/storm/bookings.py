"""The storm's bookings (`POST /v1/bookings`): several reservations made as one, a daily series
on one resource, the same range on two resources (a unit and a pooled one, or two units), or
both; held or confirmed; all-or-nothing, and some in skip-conflicts mode (which books what it
can and says what it skipped). A client cancels its own bookings, whole or one occurrence.

Every booking create and cancel carries an Idempotency-Key (a booking cancel half the time an
If-Match too); an unknown outcome parks the booking until the settling phase retries it with
the same key. The booking's reservations carry the create's key in their metadata (the
checker's `KEY_FIELD`), so the checker finds them all, and only them."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from tests.storm.checker import KEY_FIELD
from tests.storm.history import INFO, OK

if TYPE_CHECKING:
    from tests.storm.workload import Storm

SKIP_CONFLICTS = 0.2  # share of booking creates in skip-conflicts mode
RECURRING = 0.6  # share that is a daily series
MULTI = 0.5  # share on two resources
HOLD = 0.3  # share held (hold_seconds) rather than confirmed


@dataclass
class KnownBooking:
    """A client's view of one of its bookings: the last answer it had."""

    id: str
    resource: str  # its first resource
    reply: dict[str, Any]
    seq: int = 0
    parked: bool = False

    @property
    def status(self) -> str:
        return str(self.reply["status"])

    @property
    def version(self) -> int:
        return int(self.reply["version"])

    def live_starts(self) -> list[str]:
        return sorted(
            {r["start"] for r in self.reply["reservations"] if r["status"] in ("held", "confirmed")}
        )


def booking_body(storm: Storm, rng: random.Random, key: str) -> dict[str, Any]:
    setup, c = storm.setup, storm.config
    first = rng.choice(setup.resources)
    resources = [first]
    if rng.random() < MULTI:  # a unit and a pooled resource, two units or two pools
        resources.append(rng.choice([r for r in setup.resources if r != first]))
    start, end = storm.slot(rng)
    body: dict[str, Any] = {
        "resources": [
            {"resource_id": r}
            | ({"quantity": rng.randint(1, storm.capacity[r])} if storm.capacity[r] > 1 else {})
            for r in resources
        ],
        "start": start,
        "end": end,
        "metadata": {KEY_FIELD: key},
    }
    if rng.random() < RECURRING:
        body["rrule"] = f"FREQ=DAILY;COUNT={rng.randint(2, max(2, c.days))}"
    if rng.random() < HOLD:
        body["hold_seconds"] = rng.randint(3, 40)
    if rng.random() < SKIP_CONFLICTS:
        body["mode"] = "skip-conflicts"
    return body


async def create(
    storm: Storm,
    http: httpx.AsyncClient,
    i: int,
    rng: random.Random,
    mine: dict[str, KnownBooking],
) -> None:
    key = uuid.uuid4().hex
    body = booking_body(storm, rng, key)
    api = storm.api(rng)
    op = storm.new_op(
        client=i,
        kind="booking-create",
        key=key,
        method="POST",
        path="/v1/bookings",
        body=body,
        if_match=None,
        reservation=None,
        resource=body["resources"][0]["resource_id"],
        seq=0,
        api=api.name,
    )
    await storm.send(http, op, api)
    if op.outcome == OK and op.reply is not None:
        op.booking = op.reply["id"]
        mine[op.booking] = KnownBooking(id=op.booking, resource=op.resource, reply=op.reply)
        await storm.maybe_read(http, i, rng, op)


async def cancel(
    storm: Storm, http: httpx.AsyncClient, i: int, rng: random.Random, known: KnownBooking
) -> None:
    starts = known.live_starts()
    body: dict[str, Any] = {"scope": "all"}
    if len(starts) > 1 and rng.random() < 0.3:
        body = {"scope": "occurrence", "occurrence": rng.choice(starts)}
    known.seq += 1
    api = storm.api(rng)
    op = storm.new_op(
        client=i,
        kind="booking-cancel",
        key=uuid.uuid4().hex,
        method="POST",
        path=f"/v1/bookings/{known.id}/cancel",
        body=body,
        if_match=known.version if rng.random() < 0.5 else None,
        reservation=None,
        resource=known.resource,
        seq=known.seq,
        api=api.name,
        booking=known.id,
    )
    await storm.send(http, op, api)
    if op.outcome == OK and op.reply is not None:
        known.reply = op.reply
        await storm.maybe_read(http, i, rng, op)
    elif op.outcome == INFO:
        known.parked = True
    else:  # refused (a 412 cannot happen: only this client changes the booking's version)
        try:
            r = await http.get(api.url + f"/v1/bookings/{known.id}")
        except httpx.HTTPError:
            known.parked = True
            return
        if r.status_code == 200:
            known.reply = r.json()
        else:
            known.parked = True
