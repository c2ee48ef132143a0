"""The storm's checker: the history against what the database holds, read directly.

It works on the data alone (rows, their `during` ranges, statuses, versions and the key each
create carried in its metadata), never on constraint or trigger names, so it keeps working when
the reservation table is partitioned. What it asserts:

- capacity: at no instant do the live reservations of a resource use more than its capacity
  (capacity 1: no two live `during` ranges overlap). `during` is the booked range widened by the
  resource's buffers; live is `confirmed`, or `held` with `expires_at` still ahead of the
  database's clock (a hold past its expiry is dead whether or not the sweeper marked it);
- every ok create is there, exactly once, in the state its last ok operation left it in (a
  hold whose expiry passed may since have become `expired`, one version later);
- no fail write is present: no row for a refused create, and no reservation showing the effect
  of a refused confirm, cancel or reschedule;
- every settled info operation agrees with its final answer (it is then checked as ok or fail),
  and no Idempotency-Key made more than one row;
- no row that no client was told about;
- bookings all or nothing (tests/storm/booking_check.py): every reservation an ok booking
  answered is there, in the state its last ok booking operation left it in, and no other;
  none of a refused booking; an all-or-nothing booking's answer lists every occurrence on
  every resource;
- read-your-writes: a read sent with the Consistency-Token of the client's last ok write to
  that reservation (or booking) never shows an older state than that write's answer (a 404,
  or a lower version).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from tests.storm.history import FAIL, INFO, OK, WRITES, Op

KEY_FIELD = "storm_key"  # the metadata field each create carries its Idempotency-Key in


@dataclass(frozen=True)
class Row:
    id: str
    resource_id: str
    status: str
    start: datetime
    end: datetime
    lo: datetime  # `during`, the guarded range
    hi: datetime
    quantity: int
    expires_at: datetime | None
    version: int
    key: str | None
    booking: str | None = None  # the booking it belongs to, if any


@dataclass
class Snapshot:
    now: datetime  # the database's clock when it was read
    capacity: dict[str, int]
    rows: list[Row]
    # Each resource's turnover buffers (before, after), as its policy says now.
    buffers: dict[str, tuple[timedelta, timedelta]] = field(default_factory=dict)

    def live(self) -> list[Row]:
        return [r for r in self.rows if is_live(r, self.now)]


def is_live(row: Row, now: datetime) -> bool:
    if row.status == "confirmed":
        return True
    return row.status == "held" and row.expires_at is not None and row.expires_at > now


def read_snapshot(database_url: str, resources: list[str] | None = None) -> Snapshot:
    """Every reservation (of `resources`, or all) and every resource's capacity, in one
    repeatable-read transaction, with the database's `now()`."""
    with psycopg.connect(database_url) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        head = conn.execute("SELECT now()").fetchone()
        assert head is not None
        where = " WHERE r.resource_id = ANY(%(ids)s::uuid[])" if resources is not None else ""
        rows = conn.execute(
            "SELECT r.id::text, r.resource_id::text, r.status, r.start_at, r.end_at,"
            " lower(r.during), upper(r.during), r.quantity, r.expires_at, r.version,"
            " r.metadata->>%(field)s, r.booking_id::text FROM reservation r" + where,
            {"ids": resources, "field": KEY_FIELD},
        ).fetchall()
        caps = conn.execute(
            "SELECT id::text, capacity,"
            " coalesce((policy->>'buffer_before')::interval, interval '0'),"
            " coalesce((policy->>'buffer_after')::interval, interval '0') FROM resource"
        ).fetchall()
    return Snapshot(
        now=head[0],
        capacity={str(i): int(c) for i, c, _, _ in caps},
        rows=[Row(*r) for r in rows],
        buffers={str(i): (before, after) for i, _, before, after in caps},
    )


@dataclass
class Verdict:
    over_capacity: list[str] = field(default_factory=list)  # one per maximal interval
    # While the storm ran: reservations certainly live at the same moment over capacity.
    realtime_over_capacity: list[str] = field(default_factory=list)
    overlapping_pairs: list[str] = field(default_factory=list)  # capacity-1 resources
    lost_ok: list[str] = field(default_factory=list)
    fail_present: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    # A booking half made: some of an ok booking's reservations missing, or an all-or-nothing
    # booking's answer with fewer reservations than occurrences times resources.
    partial_bookings: list[str] = field(default_factory=list)
    # A read with a write's Consistency-Token that showed a state older than that write's.
    stale_reads: list[str] = field(default_factory=list)
    unsettled: list[str] = field(default_factory=list)
    checked_reservations: int = 0
    checked_bookings: int = 0
    checked_reads: int = 0  # reads sent with a token and answered (2xx or 404)
    live_rows: int = 0

    @property
    def violations(self) -> int:
        return sum(
            len(x)
            for x in (
                self.over_capacity,
                self.realtime_over_capacity,
                self.overlapping_pairs,
                self.lost_ok,
                self.fail_present,
                self.duplicates,
                self.unexpected,
                self.mismatched,
                self.partial_bookings,
                self.stale_reads,
            )
        )

    def summary(self) -> dict[str, int]:
        return {
            "over_capacity_instants": len(self.over_capacity),
            "realtime_over_capacity": len(self.realtime_over_capacity),
            "overlapping_pairs": len(self.overlapping_pairs),
            "ok_writes_lost": len(self.lost_ok),
            "fail_writes_present": len(self.fail_present),
            "duplicate_keys": len(self.duplicates),
            "unexpected_rows": len(self.unexpected),
            "state_mismatches": len(self.mismatched),
            "partial_bookings": len(self.partial_bookings),
            "stale_reads": len(self.stale_reads),
            "unsettled_info": len(self.unsettled),
            "reservations_checked": self.checked_reservations,
            "bookings_checked": self.checked_bookings,
            "tokened_reads_checked": self.checked_reads,
            "live_rows": self.live_rows,
        }

    def details(self, limit: int = 20) -> str:
        parts = []
        for name in (
            "over_capacity",
            "realtime_over_capacity",
            "overlapping_pairs",
            "lost_ok",
            "fail_present",
            "duplicates",
            "unexpected",
            "mismatched",
            "partial_bookings",
            "stale_reads",
            "unsettled",
        ):
            items: list[str] = getattr(self, name)
            if items:
                parts.append(f"{name} ({len(items)}): " + "; ".join(items[:limit]))
        return "\n".join(parts) or "no violations"


# -- capacity ----------------------------------------------------------------------------


def check_capacity(snapshot: Snapshot, verdict: Verdict) -> None:
    by_resource: dict[str, list[Row]] = defaultdict(list)
    for row in snapshot.live():
        by_resource[row.resource_id].append(row)
    verdict.live_rows = sum(len(v) for v in by_resource.values())
    for resource, rows in by_resource.items():
        capacity = snapshot.capacity.get(resource, 1)
        # Half-open ranges: at an instant where one ends and another starts, the end counts
        # first (-q sorts before +q).
        events = sorted(
            [(r.lo, r.quantity, r.id) for r in rows] + [(r.hi, -r.quantity, r.id) for r in rows]
        )
        used = 0
        over_since: datetime | None = None
        active: set[str] = set()
        peak = 0
        for at, delta, rid in events:
            used += delta
            if delta > 0:
                active.add(rid)
            else:
                active.discard(rid)
            if used > capacity and over_since is None:
                over_since, peak = at, used
            elif used > capacity:
                peak = max(peak, used)
            elif used <= capacity and over_since is not None:
                verdict.over_capacity.append(
                    f"resource {resource} uses {peak} of {capacity} from {over_since.isoformat()}"
                    f" to {at.isoformat()}"
                )
                over_since = None
        if capacity == 1:
            ordered = sorted(rows, key=lambda r: r.lo)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1 :]:
                    if b.lo >= a.hi:
                        break
                    verdict.overlapping_pairs.append(f"{a.id} and {b.id} on {resource}")


# -- the history against the rows ------------------------------------------------------------


def _instant(text: Any) -> datetime:
    return datetime.fromisoformat(str(text))


def _same_range(reply: dict[str, Any], row: Row) -> bool:
    return _instant(reply["start"]) == row.start and _instant(reply["end"]) == row.end


def _state_ok(expected: dict[str, Any], row: Row, now: datetime) -> bool:
    """Does the row show the reservation as its last ok answer left it?"""
    if not _same_range(expected, row) or int(expected["quantity"]) != row.quantity:
        return False
    version, status = int(expected["version"]), expected["status"]
    expires = _instant(expected["expires_at"]) if expected.get("expires_at") else None
    if status == "held":
        if row.status == "held":
            return row.version == version
        # The sweeper, or a booking that met it, marks a dead hold expired (version + 1).
        return (
            row.status == "expired"
            and expires is not None
            and expires <= now
            and row.version == version + 1
        )
    if status == "expired":  # an answer that showed a dead hold the sweeper had not marked
        return row.status in ("held", "expired") and row.version in (version, version + 1)
    return row.status == status and row.version == version


def _intent_shown(op: Op, row: Row) -> bool:
    """Does the row show the effect a refused operation would have had?"""
    if op.kind == "confirm":
        return row.status == "confirmed"
    if op.kind == "cancel":
        return row.status == "cancelled"
    if op.kind == "reschedule" and op.body is not None:
        return _same_range(op.body, row)
    return False


def final_reply(op: Op) -> dict[str, Any] | None:
    return op.final_reply if op.final == OK else None


def check_history(history: list[Op], snapshot: Snapshot, verdict: Verdict) -> None:
    rows_by_key: dict[str | None, list[Row]] = defaultdict(list)
    for row in snapshot.rows:
        rows_by_key[row.key].append(row)
    creates = {op.key: op for op in history if op.kind == "create"}
    booking_keys = {op.key for op in history if op.kind == "booking-create"}  # booking_check
    mutations: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind in ("confirm", "reschedule", "cancel") and op.reservation is not None:
            mutations[op.reservation].append(op)
        if op.final == INFO and op.kind in WRITES:
            verdict.unsettled.append(f"{op.kind} #{op.n} key {op.key}")

    for key in rows_by_key:
        if key not in creates and key not in booking_keys:
            ids = [r.id for r in rows_by_key[key]]
            verdict.unexpected.append(f"rows {ids} with key {key!r}: no client asked for them")

    for key, create in creates.items():
        found = rows_by_key.get(key, [])
        if len(found) > 1:
            verdict.duplicates.append(f"key {key}: {len(found)} rows {[r.id for r in found]}")
            continue
        if create.final == FAIL:
            if found:
                verdict.fail_present.append(
                    f"create #{create.n} key {key} was refused ({create.final_problem}) but"
                    f" row {found[0].id} is there"
                )
            continue
        if create.final == INFO:
            continue  # unknown: 0 or 1 row are both fine (counted as unsettled)
        reply = create.final_reply
        assert reply is not None
        if not found:
            verdict.lost_ok.append(f"create #{create.n} key {key}: ok id {reply['id']}, no row")
            continue
        row = found[0]
        if row.id != reply["id"]:
            verdict.mismatched.append(
                f"create #{create.n} key {key}: told {reply['id']}, row {row.id}"
            )
            continue
        verdict.checked_reservations += 1
        _check_reservation(
            create,
            sorted(mutations.get(row.id, []), key=lambda o: o.seq),
            row,
            snapshot.now,
            verdict,
        )


def _check_reservation(
    create: Op, ops: list[Op], row: Row, now: datetime, verdict: Verdict
) -> None:
    expected = create.final_reply
    last_ok = create
    after: list[Op] = []  # refused or unknown operations after the last ok one
    for op in ops:
        reply = final_reply(op)
        if reply is not None:
            expected, last_ok, after = reply, op, []
        else:
            after.append(op)
    assert expected is not None
    if _state_ok(expected, row, now):
        return
    if any(op.final == INFO for op in after):
        return  # an unsettled operation may explain it; counted as unsettled
    refused = [op for op in after if _intent_shown(op, row)]
    shown = (
        f"row {row.id}: {row.status} v{row.version} {row.start.isoformat()}-{row.end.isoformat()};"
        f" last ok {last_ok.kind} #{last_ok.n} said {expected['status']} v{expected['version']}"
        f" {expected['start']}-{expected['end']}"
    )
    if refused:
        verdict.fail_present.append(
            f"{refused[-1].kind} #{refused[-1].n} was refused but shows: {shown}"
        )
    elif last_ok.kind != "create" and not _intent_shown(last_ok, row):
        verdict.lost_ok.append(shown)
    else:
        verdict.mismatched.append(shown)


# -- capacity while the storm ran -------------------------------------------------------------

# A hold is taken as certainly live only until this long before its expiry (the API's clock
# and the client's are the same machine's; the margin covers the steps between them).
HOLD_MARGIN_SECONDS = 0.5
LIVE = ("held", "confirmed")


@dataclass(frozen=True)
class Segment:
    """A reservation certainly live with one guarded range over an interval of the run: from
    the moment an ok answer told its state until the next operation on it was sent (or its
    hold ran out)."""

    reservation: str
    resource: str
    lo: datetime
    hi: datetime
    quantity: int
    since: float  # seconds into the run (the history's clock)
    until: float
    by: int  # the operation whose answer established it


def segments(
    history: list[Op], buffers: dict[str, tuple[timedelta, timedelta]], t0_wall: float
) -> list[Segment]:
    """The segments of single reservations (a booking's: tests/storm/booking_check.py)."""
    ops_of: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.reservation is not None and op.kind in ("create", "confirm", "reschedule", "cancel"):
            ops_of[op.reservation].append(op)
    out = []
    for rid, ops in ops_of.items():
        ops.sort(key=lambda o: o.seq)
        for i, op in enumerate(ops):
            # Only first answers: a settled operation's effect has no known moment.
            if op.outcome != OK or op.reply is None or op.reply["status"] not in LIVE:
                continue
            until = ops[i + 1].started if i + 1 < len(ops) else math.inf
            if op.reply["status"] == "held":
                expires = _instant(op.reply["expires_at"]).timestamp() - t0_wall
                until = min(until, expires - HOLD_MARGIN_SECONDS)
            if until <= op.ended:
                continue
            before, after = buffers.get(op.resource, (timedelta(0), timedelta(0)))
            out.append(
                Segment(
                    reservation=rid,
                    resource=op.resource,
                    lo=_instant(op.reply["start"]) - before,
                    hi=_instant(op.reply["end"]) + after,
                    quantity=int(op.reply["quantity"]),
                    since=op.ended,
                    until=until,
                    by=op.n,
                )
            )
    return out


def _peak(within: Segment, active: list[Segment]) -> tuple[int, list[Segment]]:
    """Most units the active segments use at one instant of `within`'s range."""
    meeting = [a for a in active if a.lo < within.hi and within.lo < a.hi]
    events = sorted(
        [(max(a.lo, within.lo), a.quantity) for a in meeting]
        + [(min(a.hi, within.hi), -a.quantity) for a in meeting]
    )
    used = peak = 0
    for _, delta in events:
        used += delta
        peak = max(peak, used)
    return peak, meeting


def check_realtime(history: list[Op], snapshot: Snapshot, t0_wall: float, verdict: Verdict) -> None:
    """The capacity rule at every moment of the run, from the answers alone: whenever a
    reservation became certainly live, the certainly-live ones of its resource must fit. (The
    maximum over time and range is reached where some segment starts, within its range.)"""
    from tests.storm import booking_check  # it builds on this module

    by_resource: dict[str, list[Segment]] = defaultdict(list)
    for seg in segments(history, snapshot.buffers, t0_wall) + booking_check.segments(
        history, snapshot.buffers, t0_wall
    ):
        by_resource[seg.resource].append(seg)
    for resource, segs in by_resource.items():
        capacity = snapshot.capacity.get(resource, 1)
        segs.sort(key=lambda s: s.since)
        active: list[Segment] = []
        for seg in segs:
            active = [a for a in active if a.until > seg.since]
            active.append(seg)
            peak, meeting = _peak(seg, active)
            if peak > capacity:
                verdict.realtime_over_capacity.append(
                    f"at {seg.since:.2f}s resource {resource} had {peak} of {capacity} in use:"
                    f" {sorted(f'{m.reservation} (op #{m.by})' for m in meeting)}"
                )


# -- read-your-writes -----------------------------------------------------------------------


def _versions(reply: dict[str, Any]) -> dict[str, int]:
    """The version of the thing a reply shows, and of each reservation a booking's shows."""
    out = {str(reply["id"]): int(reply["version"])}
    for r in reply.get("reservations", []):
        out[str(r["id"])] = int(r["version"])
    return out


def check_reads(history: list[Op], verdict: Verdict) -> None:
    """A read sent with the token of a write's answer must show that write or something newer:
    only the same client changes a reservation or booking (the sweeper too, upwards), so any
    lower version, or a 404, is a stale read. Reads without a token (no replica: every read is
    the primary's) and unknown answers (5xx, timeouts) are not judged."""
    by_n = {op.n: op for op in history}
    for read in history:
        if read.kind != "read" or read.token is None or read.follows is None:
            continue
        if read.status not in (200, 404):
            continue
        write = by_n.get(read.follows)
        if write is None or write.outcome != OK or write.reply is None:
            continue
        verdict.checked_reads += 1
        told = f"read #{read.n} ({read.path}, token {read.token}, served by {read.source})"
        if read.status == 404:
            verdict.stale_reads.append(
                f"{told}: 404 after ok {write.kind} #{write.n} said v{write.reply['version']}"
            )
            continue
        assert read.reply is not None
        seen = _versions(read.reply)
        older = [
            f"{i} v{seen.get(i, 'absent')} < v{v}"
            for i, v in _versions(write.reply).items()
            if seen.get(i, -1) < v
        ]
        if older:
            verdict.stale_reads.append(
                f"{told} after ok {write.kind} #{write.n}: " + ", ".join(older)
            )


def check(history: list[Op], snapshot: Snapshot, t0_wall: float | None = None) -> Verdict:
    """Everything: capacity in the final state, the history against the rows, bookings all
    or nothing, read-your-writes, and (given the wall-clock time of the history's zero)
    capacity while the storm ran."""
    from tests.storm import booking_check  # it builds on this module

    verdict = Verdict()
    check_capacity(snapshot, verdict)
    check_history(history, snapshot, verdict)
    booking_check.check_bookings(history, snapshot, verdict)
    check_reads(history, verdict)
    if t0_wall is not None:
        check_realtime(history, snapshot, t0_wall, verdict)
    return verdict
