"""Creating a booking: its occurrences, their shape, and what each meets on each resource
(rules, overlaps or capacity, booker limits), read with the resources' locks held."""

from __future__ import annotations

import asyncio
from datetime import datetime
from itertools import pairwise
from typing import Any
from uuid import UUID

from reservations.availability import enforce, rules
from reservations.availability.policy import Policy
from reservations.bookings.recurrence import Occurrence, RecurrenceError, expand
from reservations.bookings.schemas import BookingCreate, OccurrenceReport, Outcome
from reservations.errors import BookingRuleViolated, InvalidInput, ReservationConflict
from reservations.kit import metrics
from reservations.kit.db import Conn
from reservations.reservations import repository as reservation_repo
from reservations.reservations.conflicts import blocking, items
from reservations.tenancy.service import Principal

MAX_RESERVATIONS = 1_000


async def occurrences_of(body: BookingCreate, zone: str) -> list[Occurrence]:
    """Expand the series off the event loop. No deadline: the expansion is bounded by work
    (recurrence.WORK_BUDGET, under 100 ms of CPU), so a refused rule leaves nothing running."""
    if body.rrule is None:
        return [Occurrence(body.start, body.end)]
    try:
        return await asyncio.to_thread(
            expand, body.rrule, zone=zone, start=body.start, end=body.end, exdates=body.exdates
        )
    except RecurrenceError as exc:
        raise InvalidInput(
            str(exc), errors=[{"field": "rrule", "in": "body", "message": str(exc)}]
        ) from None


def check_shape(occurrences: list[Occurrence], policies: dict[UUID, Policy]) -> None:
    """Occurrences of one booking may not overlap each other on a resource (buffers
    included), and the whole booking has a size limit."""
    if len(occurrences) * len(policies) > MAX_RESERVATIONS:
        raise InvalidInput(
            f"A booking may hold at most {MAX_RESERVATIONS} reservations (occurrences times "
            "resources); split it.",
            errors=[{"field": "rrule", "in": "body", "message": "too many reservations"}],
        )
    for policy in policies.values():
        gap = policy.buffer_before + policy.buffer_after
        for a, b in pairwise(occurrences):
            if b.start < a.end + gap:
                raise InvalidInput(
                    f"Occurrences {a.start.isoformat()} and {b.start.isoformat()} overlap "
                    "(turnover buffers included); shorten them or space them further apart.",
                    errors=[{"field": "rrule", "in": "body", "message": "overlapping"}],
                )


class Evaluation:
    """What each occurrence meets on each resource, with the locks held."""

    def __init__(self, occurrences: list[Occurrence]) -> None:
        self.occurrences = occurrences
        self.reasons: list[list[dict[str, Any]]] = [[] for _ in occurrences]
        self.expired: list[dict[str, Any]] = []  # stale holds expired on the way

    def add(self, index: int, reason: dict[str, Any]) -> None:
        self.reasons[index].append(reason)

    def ok(self) -> list[int]:
        return [i for i, r in enumerate(self.reasons) if not r]

    def report(self) -> list[OccurrenceReport]:
        return [
            OccurrenceReport(
                start=o.start,
                end=o.end,
                outcome=Outcome.skipped if self.reasons[i] else Outcome.booked,
                reasons=self.reasons[i],
            )
            for i, o in enumerate(self.occurrences)
        ]

    def refusal(self) -> ReservationConflict | BookingRuleViolated:
        failed = [r for r in self.report() if r.outcome is Outcome.skipped]
        report = [f.model_dump(mode="json") for f in failed]
        kinds = {reason["reason"] for f in failed for reason in f.reasons}
        if kinds - {"booked"}:
            first = next(r for f in failed for r in f.reasons if r["reason"] != "booked")
            return BookingRuleViolated(
                f"{len(failed)} occurrence(s) break the resources' rules (first: "
                f"{first['reason']}); nothing was booked. See `occurrences`.",
                reason=first["reason"],
                occurrences=report,
            )
        metrics.RESERVATIONS_CONFLICTED.labels("booking").inc()
        return ReservationConflict(
            f"{len(failed)} occurrence(s) overlap live reservations; nothing was booked. "
            "See `occurrences`, or send mode=skip-conflicts to book the rest.",
            occurrences=report,
        )


async def evaluate(
    conn: Conn,
    caller: Principal,
    body: BookingCreate,
    found: dict[UUID, dict[str, Any]],
    policies: dict[UUID, Policy],
    occurrences: list[Occurrence],
    now: datetime,
) -> Evaluation:
    """Rules, overlaps/capacity and booker limits of every occurrence on every resource,
    read with the resources' locks held (so what it finds free stays free until commit)."""
    evaluation = Evaluation(occurrences)
    ids = list(found)
    lo, hi = occurrences[0].start, occurrences[-1].end
    for rid in ids:
        evaluation.expired += await reservation_repo.expire_stale_holds(
            conn, resource_id=rid, start=lo, end=hi, now=now
        )
    before = max(p.buffer_before for p in policies.values())
    after = max(p.buffer_after for p in policies.values())
    busy: dict[UUID, list[dict[str, Any]]] = {rid: [] for rid in ids}
    for row in await reservation_repo.busy_between(
        conn, resource_ids=ids, start=lo - before, end=hi + after, now=now
    ):
        busy[row["resource_id"]].append(row)
    check_rules = not body.override_rules
    for units in body.resources:
        rid, resource = units.resource_id, found[units.resource_id]
        policy, zone = policies[rid], resource["timezone"]
        for i, occ in enumerate(occurrences):
            if check_rules and resource["policy"]:
                for v in rules.check(policy, zone, start=occ.start, end=occ.end, now=now):
                    evaluation.add(
                        i, {"resource_id": str(rid), "reason": v.reason.value, "detail": v.detail}
                    )
            during = policy.guarded(occ.start, occ.end)
            near = [
                r
                for r in busy[rid]
                if r["during_start"] < during[1] and during[0] < r["during_end"]
            ]
            in_way = blocking(
                near, now=now, capacity=resource["capacity"], quantity=units.quantity, during=during
            )
            if in_way:
                evaluation.add(
                    i,
                    {
                        "resource_id": str(rid),
                        "reason": "booked",
                        "conflicts": items(in_way, caller),
                    },
                )
        if check_rules and policy.booker_limit is not None:
            ok = evaluation.ok()
            starts = [occurrences[i].start for i in ok]
            existing = await enforce.booker_existing(
                conn,
                policy,
                zone,
                resource_id=rid,
                api_key_id=caller.api_key_id,
                customer=body.customer,
                starts=starts,
                now=now,
            )
            refused = set(enforce.over_limit(policy, zone, existing, starts))
            violation = enforce.limit_violation(policy)
            for i in ok:
                if occurrences[i].start in refused:
                    evaluation.add(
                        i,
                        {
                            "resource_id": str(rid),
                            "reason": violation.reason.value,
                            "detail": violation.detail,
                        },
                    )
    return evaluation
