"""Creating a booking: its occurrences, their shape, and what each meets on each resource
(rules, overlaps or capacity, booker limits), read with the resources' locks held."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any
from uuid import UUID

from reservations.bookings.recurrence import Occurrence, RecurrenceError, expand
from reservations.bookings.schemas import BookingCreate, OccurrenceReport, Outcome
from reservations.errors import BookingRuleViolated, InvalidInput, ReservationConflict
from reservations.kit.db import Conn
from reservations.kit.localtime import describe_instant
from reservations.reservations import admission, metrics
from reservations.reservations import repository as reservation_repo
from reservations.reservations.conflicts import blocking, items
from reservations.reservations.rows import RangeRow

MAX_RESERVATIONS = 1_000


@dataclass(frozen=True, slots=True)
class Series:
    """A booking's occurrences, expanded in `zone` before its transaction."""

    zone: str
    occurrences: list[Occurrence]


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


def check_shape(occurrences: list[Occurrence], targets: dict[UUID, admission.Target]) -> None:
    """Occurrences of one booking may not overlap each other on a resource (buffers
    included; their times said in that resource's zone too), and the whole booking has a
    size limit."""
    if len(occurrences) * len(targets) > MAX_RESERVATIONS:
        raise InvalidInput(
            f"A booking may hold at most {MAX_RESERVATIONS} reservations (occurrences times "
            "resources); split it.",
            errors=[{"field": "rrule", "in": "body", "message": "too many reservations"}],
        )
    for target in targets.values():
        gap = target.policy.buffer_before + target.policy.buffer_after
        for a, b in pairwise(occurrences):
            if b.start < a.end + gap:
                first, then = (describe_instant(o.start, target.zone) for o in (a, b))
                raise InvalidInput(
                    f"Occurrences {first} and {then} overlap "
                    "(turnover buffers included); shorten them or space them further apart.",
                    errors=[{"field": "rrule", "in": "body", "message": "overlapping"}],
                )


class Evaluation:
    """What each occurrence meets on each resource, with the locks held."""

    def __init__(self, occurrences: list[Occurrence]) -> None:
        self.occurrences = occurrences
        self.reasons: list[list[dict[str, Any]]] = [[] for _ in occurrences]
        self.expired: list[RangeRow] = []  # stale holds expired on the way

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
            broken = next(f for f in failed if any(r["reason"] != "booked" for r in f.reasons))
            rules_ = [r for r in broken.reasons if r["reason"] != "booked"]
            first = rules_[0]
            # As a direct create of the first such occurrence on the first resource whose
            # rules it breaks would list them (`occurrences` has every resource's).
            mine = [r for r in rules_ if r.get("resource_id") == first.get("resource_id")]
            return BookingRuleViolated(
                f"{len(failed)} occurrence(s) break the resources' rules (first: "
                f"{first['reason']}: {first['detail']}); nothing was booked. See `occurrences`.",
                reason=first["reason"],
                violations=[{"reason": r["reason"], "detail": r["detail"]} for r in mine],
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
    gate: admission.Gate,
    body: BookingCreate,
    targets: dict[UUID, admission.Target],
    occurrences: list[Occurrence],
) -> Evaluation:
    """Rules, overlaps/capacity and booker limits of every occurrence on every resource,
    read with the resources' locks held (so what it finds free stays free until commit).
    The rules and limits are admission's (reservations.admission), per occurrence."""
    now = gate.now
    evaluation = Evaluation(occurrences)
    lo, hi = occurrences[0].start, occurrences[-1].end
    for rid in targets:
        evaluation.expired += await reservation_repo.expire_stale_holds(
            conn, resource_id=rid, start=lo, end=hi, now=now
        )
    busy = await _busy(conn, targets, lo=lo, hi=hi, now=now)
    for units in body.resources:
        rid = units.resource
        candidates = _candidates(gate, body, targets[rid], units.quantity, occurrences)
        for i, candidate in enumerate(candidates):
            for reason in _met(gate, rid, candidate, busy[rid]):
                evaluation.add(i, reason)
        await _booker_limits(conn, gate, evaluation, rid, candidates)
    return evaluation


async def _busy(
    conn: Conn, targets: dict[UUID, admission.Target], *, lo: datetime, hi: datetime, now: datetime
) -> dict[UUID, list[RangeRow]]:
    """The live rows each resource holds around [lo, hi), widened by the largest buffers."""
    ids = list(targets)
    before = max(t.policy.buffer_before for t in targets.values())
    after = max(t.policy.buffer_after for t in targets.values())
    busy: dict[UUID, list[RangeRow]] = {rid: [] for rid in ids}
    for row in await reservation_repo.busy_between(
        conn, resource_ids=ids, start=lo - before, end=hi + after, now=now
    ):
        busy[row.resource_id].append(row)
    return busy


def _candidates(
    gate: admission.Gate,
    body: BookingCreate,
    target: admission.Target,
    quantity: int,
    occurrences: list[Occurrence],
) -> list[admission.Candidate]:
    """The rows one resource would get: one per occurrence, the caller's, for the customer."""
    return [
        admission.Candidate(
            resource=target,
            start=occ.start,
            end=occ.end,
            owner=gate.actor.api_key_id,
            customer=body.customer,
            quantity=quantity,
        )
        for occ in occurrences
    ]


def _met(
    gate: admission.Gate,
    rid: UUID,
    candidate: admission.Candidate,
    busy: list[RangeRow],
) -> list[dict[str, Any]]:
    """What one occurrence meets on one resource: the rules it breaks, then the live rows in
    its way (any overlap, or for a pooled resource too little capacity left)."""
    reasons: list[dict[str, Any]] = [
        {"resource_id": str(rid), "reason": v.reason.value, "detail": v.detail}
        for v in admission.violations(gate, candidate)
    ]
    target = candidate.resource
    during = target.policy.guarded(candidate.start, candidate.end)
    near = [r for r in busy if r.during_start < during[1] and during[0] < r.during_end]
    in_way = blocking(
        near, now=gate.now, capacity=target.capacity, quantity=candidate.quantity, during=during
    )
    if in_way:
        reasons.append(
            {"resource_id": str(rid), "reason": "booked", "conflicts": items(in_way, gate.actor)}
        )
    return reasons


async def _booker_limits(
    conn: Conn,
    gate: admission.Gate,
    evaluation: Evaluation,
    rid: UUID,
    candidates: list[admission.Candidate],
) -> None:
    """Which occurrences still admitted on this resource the booker limit refuses."""
    ok = evaluation.ok()
    refused = await admission.booker_refusals(conn, gate, [candidates[i] for i in ok])
    for j, violation in refused.items():
        evaluation.add(
            ok[j],
            {
                "resource_id": str(rid),
                "reason": violation.reason.value,
                "detail": violation.detail,
            },
        )


def booked(
    gate: admission.Gate,
    body: BookingCreate,
    targets: dict[UUID, admission.Target],
    occurrences: list[Occurrence],
    ok: list[int],
) -> list[admission.Candidate]:
    """The rows a booking makes: each admitted occurrence on each of its resources."""
    return [
        admission.Candidate(
            resource=targets[u.resource],
            start=occurrences[i].start,
            end=occurrences[i].end,
            owner=gate.actor.api_key_id,
            customer=body.customer,
            quantity=u.quantity,
        )
        for i in ok
        for u in body.resources
        if u.resource in targets
    ]
