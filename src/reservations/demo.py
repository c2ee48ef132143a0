"""`reservations demo`: a realistic tenant for a first look at the booking page.

A dozen resources of mixed kinds, capacities and time zones, with opening hours, buffers, a
blackout and one resource that needs approval, and a week of bookings (confirmed, held and
pending) from yesterday on. Everything goes through the service layer, so every booking
passes the same rules and guards as one made over HTTP (past ones with an admin's
`override_rules`, the only way to book before the minimum notice).

Runs once per database: when the tenant already has resources it seeds nothing and only
makes a new admin key for it."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from reservations.context import Context
from reservations.errors import DomainError
from reservations.reservations import service as reservations
from reservations.reservations.schemas import ReservationCreate
from reservations.resources import service as resources
from reservations.resources.schemas import ResourceCreate, ResourceRead
from reservations.tenancy import repository as tenants
from reservations.tenancy import service as tenancy
from reservations.tenancy.service import Principal, Role

TENANT = "demo"
DAYS = range(-1, 7)  # yesterday to six days on: a week ahead, and what just happened
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
ALL_DAYS = (*WEEKDAYS, "sat", "sun")
CUSTOMERS = (
    "A. Okafor", "B. Lindqvist", "C. Moreau", "D. Tanaka", "E. García", "F. Novak",
    "G. Haddad", "H. Schmidt", "I. Rossi", "J. Kowalski", "K. Nguyen", "L. Dubois",
)  # fmt: skip


def _hours(days: tuple[str, ...], *spans: tuple[str, str]) -> dict[str, Any]:
    return {day: [{"start": a, "end": b} for a, b in spans] for day in days}


def resource_specs(today: date) -> list[dict[str, Any]]:
    """What to create; `today` places the one blackout (tomorrow afternoon)."""
    tomorrow = today + timedelta(days=1)
    berlin = ZoneInfo("Europe/Berlin")
    blackout_start = datetime.combine(tomorrow, datetime.min.time(), berlin) + timedelta(hours=12)
    return [
        {
            "name": "Boardroom",
            "timezone": "Europe/Berlin",
            "tags": ["room", "projector"],
            "metadata": {"floor": 5, "seats": 14},
            "policy": {
                "weekly_hours": _hours(WEEKDAYS, ("08:00", "18:00")),
                "buffer_after": "PT15M",
                "slot_grid_minutes": 30,
            },
        },
        {
            "name": "Focus room 1",
            "timezone": "Europe/Berlin",
            "tags": ["room"],
            "policy": {"weekly_hours": _hours(WEEKDAYS, ("07:00", "20:00"))},
        },
        {
            "name": "Focus room 2",
            "timezone": "Europe/Berlin",
            "tags": ["room"],
            "policy": {
                "weekly_hours": _hours(WEEKDAYS, ("07:00", "20:00")),
                "blackouts": [
                    {
                        "start": blackout_start.isoformat(),
                        "end": (blackout_start + timedelta(hours=3)).isoformat(),
                        "reason": "Carpet cleaning",
                    }
                ],
            },
        },
        {
            "name": "Hot desks, floor 3",
            "timezone": "Europe/Berlin",
            "capacity": 12,
            "tags": ["desk"],
            "policy": {"weekly_hours": _hours(WEEKDAYS, ("07:00", "19:00"))},
        },
        {
            "name": "Tennis court 1",
            "timezone": "Europe/Madrid",
            "tags": ["court", "outdoor"],
            "policy": {
                "weekly_hours": _hours(ALL_DAYS, ("08:00", "22:00")),
                "buffer_before": "PT10M",
                "slot_grid_minutes": 30,
            },
        },
        {
            "name": "Tennis court 2",
            "timezone": "Europe/Madrid",
            "tags": ["court", "outdoor"],
            "policy": {
                "weekly_hours": _hours(ALL_DAYS, ("08:00", "22:00")),
                "buffer_before": "PT10M",
                "slot_grid_minutes": 30,
            },
        },
        {
            "name": "Van (Crafter)",
            "timezone": "Europe/London",
            "tags": ["vehicle"],
            "policy": {"buffer_after": "PT30M"},
        },
        {
            "name": "E-bikes",
            "timezone": "Europe/London",
            "capacity": 6,
            "tags": ["vehicle", "bike"],
            "policy": {"weekly_hours": _hours(ALL_DAYS, ("06:00", "22:00"))},
        },
        {
            "name": "Recording studio",
            "timezone": "America/New_York",
            "tags": ["room", "studio"],
            "policy": {
                "weekly_hours": _hours((*WEEKDAYS, "sat"), ("09:00", "21:00")),
                "buffer_before": "PT15M",
                "buffer_after": "PT15M",
                "requires_approval": True,
                "approval_window": "P7D",
            },
        },
        {
            "name": "Yoga hall",
            "timezone": "America/New_York",
            "capacity": 20,
            "tags": ["room", "class"],
            "policy": {"weekly_hours": _hours(ALL_DAYS, ("06:00", "21:00"))},
        },
        {
            "name": "Dr. Lee, consultations",
            "timezone": "Asia/Tokyo",
            "tags": ["staff"],
            "policy": {
                "weekly_hours": _hours(WEEKDAYS, ("09:00", "12:00"), ("13:00", "17:00")),
                "slot_grid_minutes": 20,
                "min_duration": "PT20M",
                "max_duration": "PT1H",
            },
        },
        {
            "name": "Auditorium",
            "timezone": "Australia/Sydney",
            "tags": ["room", "projector", "large"],
            "metadata": {"seats": 240},
            "policy": {
                "weekly_hours": _hours(ALL_DAYS, ("08:00", "23:00")),
                "buffer_before": "PT30M",
                "buffer_after": "PT30M",
            },
        },
    ]


@dataclass
class Seeded:
    created: bool
    token: str
    resources: int = 0
    bookings: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Attempt:
    start: datetime
    end: datetime
    status: str  # confirmed, held or pending
    quantity: int
    customer: str


def attempts(resource: ResourceRead, now: datetime, rng: random.Random) -> list[Attempt]:
    """Bookings to try on one resource, in its local wall time: a few a day inside its
    opening hours, on its grid; holds and pending requests only in the future."""
    zone = ZoneInfo(resource.timezone)
    grid = resource.policy.slot_grid_minutes or 30
    today = now.astimezone(zone).date()
    out: list[Attempt] = []
    lanes = 3 if resource.capacity > 1 else 1  # pooled resources get overlapping bookings
    for offset, _lane in itertools.product(DAYS, range(lanes)):
        day = today + timedelta(days=offset)
        hours = resource.policy.hours_on(day)
        intervals = [(8 * 60, 20 * 60)] if hours is None else hours
        for open_at, close_at in intervals:
            cursor = open_at + grid * rng.randint(0, 2)
            while True:
                length = rng.choice((1, 2, 2, 3, 4)) * max(grid, 20)
                if resource.policy.max_duration is not None:
                    length = min(length, int(resource.policy.max_duration.total_seconds() // 60))
                if cursor + length > close_at:
                    break
                start = datetime.combine(day, datetime.min.time(), zone) + timedelta(minutes=cursor)
                end = start + timedelta(minutes=length)
                status = "confirmed"
                if start > now + timedelta(hours=1):
                    if resource.policy.requires_approval:
                        status = rng.choice(("pending", "pending", "confirmed"))
                    elif offset <= 2 and rng.random() < 0.2:
                        status = "held"
                quantity = rng.randint(1, max(1, resource.capacity // 2))
                customer = rng.choice(CUSTOMERS)
                out.append(Attempt(start, end, status, quantity, customer))
                cursor += length + grid * rng.randint(1, 4)
    return out


async def _principal(svc: Context, token: str) -> Principal:
    found = await tenancy.authenticate(svc.db, token, now=svc.clock.now())
    assert found is not None
    return found


async def _book(svc: Context, caller: Principal, resource_id: UUID, a: Attempt) -> bool:
    body = ReservationCreate(
        resource_id=resource_id,
        start=a.start,
        end=a.end,
        quantity=a.quantity,
        customer=a.customer,
        hold_seconds=86_400 if a.status == "held" else None,
        override_rules=caller.role is Role.admin and a.start < svc.clock.now(),
    )
    try:
        await reservations.create(svc, caller, body, None)
    except DomainError:  # an overlap with an earlier attempt, a buffer, a rule: skip it
        return False
    return True


async def seed(svc: Context, *, rng_seed: int = 10) -> Seeded:
    """Create the demo tenant, or only a new admin key if it is already there."""
    async with svc.db.connection() as conn:
        existing = await tenants.find_tenant(conn, TENANT)
    admin_key = await tenancy.create_key(svc.db, tenant=TENANT, role=Role.admin, label="demo")
    admin = await _principal(svc, admin_key.token)
    if existing is not None:
        page = await resources.list_page(svc, admin, tags=[], limit=500, cursor=None)
        if page.items:
            return Seeded(created=False, token=admin_key.token, resources=len(page.items))
    booker_key = await tenancy.create_key(
        svc.db, tenant=TENANT, role=Role.booker, label="demo bookings"
    )
    booker = await _principal(svc, booker_key.token)
    rng = random.Random(rng_seed)  # noqa: S311 (sample data, not secrets)
    now = svc.clock.now()
    counts = {"confirmed": 0, "held": 0, "pending": 0}
    specs = resource_specs(now.astimezone(ZoneInfo("Europe/Berlin")).date())
    for spec in specs:
        resource = await resources.create(svc, admin, ResourceCreate.model_validate(spec))
        for attempt in attempts(resource, now, rng):
            caller = booker if attempt.status == "pending" else admin
            if await _book(svc, caller, resource.id, attempt) is not None:
                counts[attempt.status] += 1
    return Seeded(created=True, token=admin_key.token, resources=len(specs), bookings=counts)
