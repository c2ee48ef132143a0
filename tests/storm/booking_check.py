"""The checker's part for bookings: all or nothing, against the rows.

A booking's reservations carry its create's Idempotency-Key in their metadata and its id in
`booking_id`. For every booking create:

- refused (fail, first answer or settled): no row carries its key;
- ok: its rows are exactly the reservations its answer listed, all of one booking (the one
  answered). Some there and some missing is a partial booking; none there, a lost write;
- ok in all-or-nothing mode: the answer itself lists every occurrence on every resource (its
  report says every occurrence was booked);
- each of its reservations is in the state the last ok operation on the booking (its create,
  or a cancel, whose answers list every reservation of the booking) left it in, as for single
  reservations (checker._state_ok: a hold past its expiry may since have become expired);
- unknown (info, unsettled): not judged (counted as unsettled by the checker).

And the capacity rule while the storm ran counts a booking's reservations too: each is
certainly live from an ok answer that showed it live until the next operation on the booking
was sent (or its hold ran out).
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import timedelta
from typing import Any

from tests.storm.checker import (
    HOLD_MARGIN_SECONDS,
    LIVE,
    Row,
    Segment,
    Snapshot,
    Verdict,
    _instant,
    _state_ok,
    final_reply,
)
from tests.storm.history import FAIL, INFO, OK, Op


def _ops_by_booking(history: list[Op]) -> dict[str, list[Op]]:
    """The create (once its id is known) and cancels of each booking, in the client's order."""
    out: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        if op.kind in ("booking-create", "booking-cancel") and op.booking is not None:
            out[op.booking].append(op)
    for ops in out.values():
        ops.sort(key=lambda o: o.seq)
    return out


def check_bookings(history: list[Op], snapshot: Snapshot, verdict: Verdict) -> None:
    rows_by_key: dict[str | None, list[Row]] = defaultdict(list)
    for row in snapshot.rows:
        rows_by_key[row.key].append(row)
    ops_of = _ops_by_booking(history)
    for create in history:
        if create.kind != "booking-create":
            continue
        rows = rows_by_key.get(create.key, [])
        bookings = sorted({str(r.booking) for r in rows})
        if len(bookings) > 1:
            verdict.duplicates.append(f"booking key {create.key}: {len(bookings)} bookings")
            continue
        if create.final == FAIL:
            if rows:
                verdict.fail_present.append(
                    f"booking-create #{create.n} key {create.key} was refused"
                    f" ({create.final_problem}) but {len(rows)} rows of booking {bookings[0]}"
                    " are there"
                )
            continue
        if create.final == INFO:
            continue
        reply = create.final_reply
        assert reply is not None
        verdict.checked_bookings += 1
        _check_answer(create, reply, verdict)
        _check_rows(create, reply, rows, ops_of.get(str(reply["id"]), []), snapshot, verdict)


def _check_answer(create: Op, reply: dict[str, Any], verdict: Verdict) -> None:
    """An all-or-nothing booking's ok answer lists every occurrence on every resource."""
    assert create.body is not None
    if create.body.get("mode", "all-or-nothing") != "all-or-nothing":
        return
    report = reply.get("report")
    reservations = reply["reservations"]
    if not isinstance(report, list):
        return  # a booking read, not its create's answer (settled by reading): no report
    want = len(report) * len(create.body["resources"])
    skipped = [o for o in report if o.get("outcome") != "booked"]
    if skipped or len(reservations) != want:
        verdict.partial_bookings.append(
            f"booking-create #{create.n} (all-or-nothing) answered {len(reservations)}"
            f" reservations of {want}, {len(skipped)} occurrences skipped"
        )


def _check_rows(
    create: Op,
    reply: dict[str, Any],
    rows: list[Row],
    ops: list[Op],
    snapshot: Snapshot,
    verdict: Verdict,
) -> None:
    booking = str(reply["id"])
    reservations = reply["reservations"]
    promised = {str(r["id"]) for r in reservations}
    by_id = {r.id: r for r in rows}
    missing = sorted(promised - set(by_id))
    extra = sorted(set(by_id) - promised)
    if missing and len(missing) < len(promised):
        verdict.partial_bookings.append(
            f"booking {booking} (create #{create.n}): {len(missing)} of its {len(promised)}"
            f" reservations have no row: {missing[:5]}"
        )
    elif missing:
        verdict.lost_ok.append(
            f"booking-create #{create.n} key {create.key}: ok booking {booking}, none of its"
            f" {len(promised)} reservations has a row"
        )
    if extra:
        verdict.unexpected.append(
            f"rows {extra[:5]} with booking {booking}'s key: not in its answer"
        )
    if wrong := [r.id for r in rows if r.booking != booking]:
        verdict.mismatched.append(f"rows {wrong[:5]} with booking {booking}'s key: another booking")

    # Replay the booking's operations: each ok answer lists every reservation's state.
    expected = {str(r["id"]): r for r in reservations}
    last_ok = create
    after: list[Op] = []
    for op in ops:
        if op.kind != "booking-cancel":
            continue
        answer = final_reply(op)
        if answer is not None:
            expected = {str(r["id"]): r for r in answer["reservations"]}
            last_ok, after = op, []
        else:
            after.append(op)
    for rid, want in expected.items():
        row = by_id.get(rid)
        if row is None:
            continue  # counted above
        verdict.checked_reservations += 1
        if _state_ok(want, row, snapshot.now):
            continue
        if any(op.final == INFO for op in after):
            continue  # an unsettled cancel may explain it; counted as unsettled
        shown = (
            f"booking {booking} row {row.id}: {row.status} v{row.version}; last ok"
            f" {last_ok.kind} #{last_ok.n} said {want['status']} v{want['version']}"
        )
        if row.status == "cancelled" and after:
            verdict.fail_present.append(f"{after[-1].kind} #{after[-1].n} was refused: {shown}")
        elif last_ok.kind == "booking-cancel" and want["status"] == "cancelled":
            verdict.lost_ok.append(shown)
        else:
            verdict.mismatched.append(shown)


def segments(
    history: list[Op], buffers: dict[str, tuple[timedelta, timedelta]], t0_wall: float
) -> list[Segment]:
    """Each reservation of a booking, certainly live from a first ok answer that showed it
    live until the next operation on the booking was sent (or its hold ran out)."""
    out = []
    for ops in _ops_by_booking(history).values():
        for i, op in enumerate(ops):
            if op.outcome != OK or op.reply is None:
                continue
            next_sent = ops[i + 1].started if i + 1 < len(ops) else math.inf
            for r in op.reply["reservations"]:
                if r["status"] not in LIVE:
                    continue
                until = next_sent
                if r["status"] == "held":
                    expires = _instant(r["expires_at"]).timestamp() - t0_wall
                    until = min(until, expires - HOLD_MARGIN_SECONDS)
                if until <= op.ended:
                    continue
                resource = str(r["resource_id"])
                before, after = buffers.get(resource, (timedelta(0), timedelta(0)))
                out.append(
                    Segment(
                        reservation=str(r["id"]),
                        resource=resource,
                        lo=_instant(r["start"]) - before,
                        hi=_instant(r["end"]) + after,
                        quantity=int(r["quantity"]),
                        since=op.ended,
                        until=until,
                        by=op.n,
                    )
                )
    return out
