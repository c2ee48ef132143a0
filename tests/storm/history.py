"""The storm's history: one record per operation a client attempted, with what it was told.

An operation ends `ok` (a 2xx: it happened), `fail` (a definite 4xx such as a 409 conflict,
412 or 422: it certainly did not happen) or `info` (a timeout, a cut connection, a 5xx, a 409
idempotency-key-in-use: unknown). After the faults are healed every `info` operation is
retried with the same Idempotency-Key (and the same If-Match) until the answer is definite;
those retries are its `attempts` and their last answer is its `final` outcome.

A `read` is no write and is never retried: it GETs what the client's last ok write answered,
with the Consistency-Token that write returned, and the checker compares the two."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK, FAIL, INFO = "ok", "fail", "info"
KINDS = ("create", "confirm", "reschedule", "cancel", "booking-create", "booking-cancel", "read")
# Writes: every one but a read. Reads are checked against the write they follow, not settled.
WRITES = KINDS[:-1]


def outcome_of(status: int | None, problem: str | None) -> str:
    """How definite an answer is. `problem` is the problem+json type's last path segment."""
    if status is None or status >= 500:
        return INFO
    if 200 <= status < 300:
        return OK
    if status == 409 and problem == "idempotency-key-in-use":
        return INFO  # the first request with this key is still running
    return FAIL


@dataclass
class Attempt:
    """One retry of an info operation while settling it."""

    at: float
    status: int | None
    problem: str | None = None
    replayed: bool = False
    error: str = ""


@dataclass
class Op:
    n: int
    client: int
    kind: str  # one of KINDS
    key: str  # the Idempotency-Key (PATCH ignores it: If-Match makes a reschedule safe)
    method: str
    path: str
    body: dict[str, Any] | None
    if_match: int | None
    reservation: str | None  # the target; for a create, the id it made once known
    resource: str  # a booking's first resource
    seq: int  # position among the operations of its reservation (a create is 0)
    api: str
    started: float
    ended: float = 0.0
    status: int | None = None
    problem: str | None = None
    error: str = ""
    reply: dict[str, Any] | None = None
    outcome: str = INFO
    attempts: list[Attempt] = field(default_factory=list)
    final: str = INFO
    final_reply: dict[str, Any] | None = None
    final_problem: str | None = None
    # How a settled info operation turned out: "replayed" (it had happened; the stored answer
    # came back), "reads-applied" (a reschedule whose retry found it applied), "ran-on-retry"
    # (it had not happened and the retry did it), "refused-on-retry" (it had not happened and
    # the retry got a definite refusal), "reads-not-applied" (a reschedule that had not).
    settled_as: str = ""
    # False: sent without the Idempotency-Key header (a create the availability map may refuse
    # from Valkey); `key` is then only the mark in its metadata, and an unknown outcome is
    # settled by reading, since a retry could book it twice.
    keyed: bool = True
    # A booking's id (booking-create once known, booking-cancel, a read of a booking).
    booking: str | None = None
    # A write's: the Consistency-Token its first answer carried; a read's: the token it sent.
    token: str | None = None
    follows: int | None = None  # a read: the write (its `n`) whose answer it reads again
    source: str | None = None  # a read: where the API served it (Read-Source: replica/primary)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Op:
        attempts = [Attempt(**a) for a in data.get("attempts", [])]
        return cls(**{**data, "attempts": attempts})


@dataclass
class FaultWindow:
    kind: str  # FAULT_KINDS of tests/storm/workload.py, or crash-after-commit
    target: str
    started: float
    healed: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
