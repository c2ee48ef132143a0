"""The rules admission enforces (reservations/admission.py), each as a policy and a range that
breaks it, and what every refusal must look like: shared by the write-path matrix
(tests/reservations/test_write_paths.py) and its rows across clusters
(tests/sharding/test_spanning.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

# A Monday ten to sixteen days ahead of real time, at midnight UTC (resources default to UTC).
_soon = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=10)
DAY = _soon + timedelta(days=(7 - _soon.weekday()) % 7)
WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def at(hour: float, days: int = 0) -> str:
    return (DAY + timedelta(days=days, hours=hour)).isoformat().replace("+00:00", "Z")


def iso(delta: timedelta) -> str:
    secs = int(delta.total_seconds())
    return f"-PT{-secs}S" if secs < 0 else f"PT{secs}S"


@dataclass(frozen=True)
class Rule:
    """A policy and a range that breaks it (`reason`: what every route must answer), with a
    harmless range to set things up in before the policy applies."""

    reason: str
    policy: dict[str, Any]
    bad: tuple[str, str]
    good: tuple[str, str] = (at(10, days=1), at(11, days=1))
    before: tuple[str, str] | None = None  # the booker's row the write would add to
    problem: str = "booking-rule-violated"
    counted: bool = False  # needs the locked rows (a waitlist join is judged at promotion)

    def __str__(self) -> str:
        return self.reason


RULES = [
    Rule(
        "outside-opening-hours",
        {"weekly_hours": {d: [{"start": "09:00", "end": "17:00"}] for d in WEEK}},
        (at(18), at(19)),
    ),
    Rule(
        "in-blackout",
        {"blackouts": [{"start": at(0), "end": at(24), "reason": "works"}]},
        (at(10), at(11)),
    ),
    Rule("off-grid", {"slot_grid_minutes": 30}, (at(10 + 1 / 6), at(11 + 1 / 6))),
    Rule("too-short", {"min_duration": "PT1H"}, (at(10), at(10.5))),
    Rule("too-long", {"max_duration": "PT1H"}, (at(10), at(12))),
    Rule("too-soon", {"min_notice": "P30D"}, (at(10), at(11))),
    Rule("too-far-ahead", {"max_advance": "P5D"}, (at(10), at(11))),
    Rule("in-the-past", {}, (at(10, days=-20), at(11, days=-20))),
    Rule(
        "booker-limit",
        {"booker_limit": {"max_live": 1, "period": "day"}},
        (at(10), at(11)),
        before=(at(8), at(9)),
        counted=True,
    ),
    Rule("longer-than-the-system-allows", {}, (at(10), at(10, days=40)), problem="invalid-input"),
]
RULE = {r.reason: r for r in RULES}


def ok(r: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json())


def refused(r: httpx.Response, rule: Rule) -> None:
    """The refusal every write path gives for `rule`: a direct create's 422."""
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"/problems/{rule.problem}", body
    if rule.problem == "booking-rule-violated":
        assert body["reason"] == rule.reason, body
        assert rule.reason in {v["reason"] for v in body["violations"]}, body
