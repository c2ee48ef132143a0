"""Turning rule checks into refusals: the policy of a stored resource, the 422 for broken
rules, and the booker limit's arithmetic over the booker's existing starts (which the caller
reads, under the resource's lock, so two racing requests cannot both take the last allowed
booking: see reservations/admission.py `booker_existing`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson

from reservations.errors import BookingRuleViolated
from reservations.kit.spans import Span
from reservations.policy import rules
from reservations.policy.model import Policy, stored
from reservations.policy.rules import Reason, Violation


def policy_of(raw: dict[str, Any] | None) -> Policy:
    """The parsed policy of a stored resource. Parsing (with its validators) costs far more
    than a lookup, and search parses one per candidate: keep recent ones by their JSON."""
    if not raw:
        return _EMPTY
    return _parse(orjson.dumps(stored(raw), option=orjson.OPT_SORT_KEYS))


_EMPTY = Policy()


@lru_cache(maxsize=4096)
def _parse(raw: bytes) -> Policy:
    return Policy.model_validate_json(raw)


def refuse(violations: Sequence[Violation], **extra: Any) -> BookingRuleViolated:
    first = violations[0]
    return BookingRuleViolated(
        f"{first.detail[:1].upper()}{first.detail[1:]}. Change the booking, or (admin keys) "
        "send override_rules=true to book anyway.",
        reason=first.reason.value,
        violations=[{"reason": v.reason.value, "detail": v.detail} for v in violations],
        **extra,
    )


def booker_of(policy: Policy, api_key_id: UUID, customer: str | None) -> str | None:
    """The customer the limit counts by, or None to count by API key."""
    limit = policy.booker_limit
    if limit is not None and limit.per == "customer" and customer is not None:
        return customer
    return None


def over_limit(
    policy: Policy, zone: str, existing: Sequence[datetime], new: Sequence[datetime]
) -> list[datetime]:
    """The new starts that would exceed the booker limit, taking the new ones in order."""
    limit = policy.booker_limit
    if limit is None:
        return []
    counts: Counter[tuple[datetime, datetime] | None] = Counter(
        rules.period_span(limit.period, zone, s) for s in existing
    )
    refused = []
    for start in sorted(new):
        key = rules.period_span(limit.period, zone, start)
        if counts[key] >= limit.max_live:
            refused.append(start)
        else:
            counts[key] += 1
    return refused


def booker_window(
    policy: Policy, zone: str, starts: Sequence[datetime]
) -> tuple[datetime | None, datetime | None] | None:
    """Where the booker's existing starts matter for a limit on these starts: the periods
    they fall in, as (first start, last end), or (None, None) for a limit on live bookings
    at any time; None when the policy sets no limit (nothing to read)."""
    limit = policy.booker_limit
    if limit is None or not starts:
        return None
    if limit.period is None:
        return None, None
    spans = [rules.period_span(limit.period, zone, s) for s in starts]
    return min(s[0] for s in spans if s is not None), max(s[1] for s in spans if s is not None)


def limit_violation(policy: Policy) -> Violation:
    limit = policy.booker_limit
    assert limit is not None
    per = f" per {limit.period}" if limit.period else ""
    who = "customer" if limit.per == "customer" else "API key"
    return Violation(
        Reason.booker_limit,
        f"each {who} may hold at most {limit.max_live} live reservation(s) of this "
        f"resource{per}; cancel one first",
    )


def blocked_periods(policy: Policy, zone: str, existing: Sequence[datetime]) -> list[Span]:
    """Periods in which the booker already holds the maximum (for availability)."""
    limit = policy.booker_limit
    if limit is None or limit.period is None:
        return []
    counts = Counter(rules.period_span(limit.period, zone, s) for s in existing)
    return sorted(span for span, n in counts.items() if span is not None and n >= limit.max_live)
