"""Growth (issue 7, scenario 4): list and availability latency as the table grows from 10^5
to 10^6 to 10^7 reservations.

`reservations serve --no-worker` (1 worker; no background jobs, so the history job does not
move rows while we measure) on a fresh embedded data directory, or the URLs given. One tenant,
RESOURCES unit-capacity resources (UTC, no policy), one of them the **probe**.

**Data**, written by COPY in the layout the history job would have left (migration 0003):
the history horizon is set to midnight UTC 90 days ago (`history_after_days`' default), rows
whose range ended before it go to `reservation_history` (monthly partitions made by SQL the
way the job makes them), the rest to `reservation` (hash-partitioned by resource, through
its triggers and exclusion constraints). Every row a 30-minute reservation on the
half-hour grid, 9 in 10 confirmed, 1 in 10 cancelled.

- The probe resource always holds the same 540 rows: 10:00-11:00 and 15:00-15:30 each day
  from 180 days before the read week to 90 days after it, so what each probe query returns
  is the same at every size: only the table around it grows.
- The other resources get the rest, spread evenly over PAST_DAYS before the read week to
  FUTURE_DAYS after it (a fixed pseudo-random permutation of every (resource, slot) pair, so
  each size adds rows to the previous ones, never the same slot twice).

After each size: VACUUM (ANALYZE) of both tables, CHECKPOINT. Then each query through the
API, one keep-alive client, requests one after another (a warm-up, then up to `--requests`
or `--budget` seconds, at least 10): median, p95, p99; API and PostgreSQL CPU per request.
The read week is the Monday at least 14 days ahead.

    list_resource      GET /v1/reservations?resource_id=<probe>&from=<week>&to=<week + 7 d>
    list_tenant        GET /v1/reservations?from=<week + 2 d>&to=<week + 3 d>&limit=50
    list_tenant_first  GET /v1/reservations?limit=50 (the tenant's first page, no window)
    get_by_id          GET /v1/reservations/<a probe reservation of the read week>
    availability       GET /v1/resources/<probe>/availability?from=<week>&to=<+7 d>
                       &duration=PT1H&step=60

With each size, EXPLAIN (ANALYZE, BUFFERS) of the SQL those requests run (taken from
reservations.reservations.repository itself, so it cannot drift), once as PostgreSQL plans it
for the values (a custom plan) and once as a prepared statement's generic plan (the server
prepares statements after 5 uses): partition pruning, Merge Append and index scans, or not.
Goal (issue 7): the median grows less than 1.5x from the smallest to the largest size.

    python -m bench growth [--quick] [--out DIR] [--sizes 100000 1000000 10000000]

Full mode: sizes 10^5, 10^6, 10^7, 1,000 resources (expect tens of minutes, most of it
seeding 10^7 rows, and ~6 GB of disk). Quick: 10^3, 10^4, 10^5 rows, 100 resources.
Writes growth.json, growth.md and (matplotlib) growth.png into --out (default
bench/results/); a full run with the default --out replaces the generated block of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from bench import harness
from reservations.history.repository import month_start, next_month, partition_name
from reservations.kit.ids import uuid7

RESOURCES = 1_000
PAST_DAYS = 730
FUTURE_DAYS = 180
HISTORY_AFTER_DAYS = 90  # Settings.history_after_days' default
SLOT = timedelta(minutes=30)
SLOTS_PER_DAY = 48
PROBE_DAYS = (-180, 90)  # the probe's rows: days around the read week
PROBE_TIMES = ((timedelta(hours=10), timedelta(hours=1)), (timedelta(hours=15), SLOT))
CHUNK = 100_000
GOAL_RATIO = 1.5
FULL_SIZES = [100_000, 1_000_000, 10_000_000]
QUICK_SIZES = [1_000, 10_000, 100_000]
HISTORY_EXTRA = "metadata, version, pooled, moved_at"


# --- data ----------------------------------------------------------------------------------


@dataclass
class Layout:
    tenant: UUID
    key: UUID
    probe: UUID
    bulk: list[UUID]
    week0: datetime
    horizon: datetime
    start: datetime  # the first bulk slot
    slots: int  # bulk slots per resource
    multiplier: int = 0
    offset: int = 0
    written: int = 0  # bulk rows written so far
    probe_rows: int = 0
    probe_in_week: UUID | None = None
    in_history: int = 0
    timings: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        m = len(self.bulk) * self.slots
        a = int(m * 0.6180339887)
        while math.gcd(a, m) != 1:
            a += 1
        self.multiplier, self.offset = a, m // 3

    @property
    def capacity(self) -> int:
        return len(self.bulk) * self.slots

    def bulk_rows(self, lo: int, hi: int) -> Iterator[tuple[UUID, datetime, int]]:
        """(resource, start, i) of bulk rows lo..hi-1: i -> k = (a i + c) mod m is a
        permutation of every (resource, slot) pair."""
        m, a, c, n = self.capacity, self.multiplier, self.offset, len(self.bulk)
        for i in range(lo, hi):
            k = (a * i + c) % m
            yield self.bulk[k % n], self.start + (k // n) * SLOT, i


def read_week() -> datetime:
    day = datetime.now(UTC).date() + timedelta(days=14)
    day += timedelta(days=(7 - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def prepare(server: harness.Server, *, resources: int) -> Layout:
    """Resources, the history horizon and the month partitions; no reservations yet."""
    week0 = read_week()
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    horizon = today - timedelta(days=HISTORY_AFTER_DAYS)
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        tenant, key = harness.tenant_and_key(conn, server.token)
        ids = harness.insert_resources(conn, tenant=tenant, count=resources, prefix="grow-")
        start = week0 - timedelta(days=PAST_DAYS)
        first = min(start, week0 + timedelta(days=PROBE_DAYS[0]))
        month, last = month_start(first), next_month(next_month(month_start(horizon)))
        while month <= last:
            name = sql.Identifier(partition_name(month))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (LIKE reservation_history INCLUDING DEFAULTS)"
                ).format(name)
            )
            conn.execute(
                sql.SQL(
                    "ALTER TABLE reservation_history ATTACH PARTITION {} FOR VALUES"
                    " FROM ({}) TO ({})"
                ).format(name, sql.Literal(month), sql.Literal(next_month(month)))
            )
            month = next_month(month)
        conn.execute("UPDATE history_horizon SET moved_before = %s", (horizon,))
    return Layout(
        tenant=tenant,
        key=key,
        probe=ids[0],
        bulk=ids[1:],
        week0=week0,
        horizon=horizon,
        start=start,
        slots=(PAST_DAYS + FUTURE_DAYS) * SLOTS_PER_DAY,
    )


def _row(
    lay: Layout, resource: UUID, start: datetime, end: datetime, i: int, now: datetime
) -> tuple[Any, ...]:
    status = "cancelled" if i % 10 == 0 else "confirmed"
    return (
        uuid7(),
        lay.tenant,
        resource,
        start,
        end,
        Range(start, end, "[)"),
        status,
        1,
        lay.key,
        now,
        now,
    )


def _write(conn: psycopg.Connection[Any], lay: Layout, rows: list[tuple[Any, ...]]) -> None:
    """One transaction: rows that ended before the horizon into the history, the rest live."""
    live = [r for r in rows if r[4] > lay.horizon]
    old = [(*r, Jsonb({}), 1, False, r[9]) for r in rows if r[4] <= lay.horizon]
    with conn.transaction():
        harness.copy_rows(conn, "reservation", harness.RESERVATION_COLUMNS, live)
        harness.copy_rows(
            conn, "reservation_history", f"{harness.RESERVATION_COLUMNS}, {HISTORY_EXTRA}", old
        )
    lay.in_history += len(old)


def grow(server: harness.Server, lay: Layout, *, to: int) -> dict[str, Any]:
    """Add rows until the tables hold `to` reservations; VACUUM (ANALYZE), CHECKPOINT."""
    t0 = time.monotonic()
    now = datetime.now(UTC)
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        if lay.probe_rows == 0:
            rows = []
            for d in range(*PROBE_DAYS):
                day = lay.week0 + timedelta(days=d)
                for at, length in PROBE_TIMES:
                    rows.append(_row(lay, lay.probe, day + at, day + at + length, 1, now))
            # The first row of the read week's Tuesday: what get_by_id asks for.
            lay.probe_in_week = rows[(1 - PROBE_DAYS[0]) * len(PROBE_TIMES)][0]
            _write(conn, lay, rows)
            lay.probe_rows = len(rows)
        target = to - lay.probe_rows
        if target > lay.capacity:
            raise SystemExit(f"{to:,} rows do not fit {lay.capacity:,} bulk slots")
        batches = range(lay.written, target, CHUNK)
        for lo in harness.progress(batches, total=len(batches), label=f"growing to {to:,}"):
            hi = min(target, lo + CHUNK)
            _write(
                conn, lay, [_row(lay, r, s, s + SLOT, i, now) for r, s, i in lay.bulk_rows(lo, hi)]
            )
            lay.written = hi
        copied = time.monotonic() - t0
        conn.execute("VACUUM (ANALYZE) reservation")
        conn.execute("VACUUM (ANALYZE) reservation_history")
        conn.execute("CHECKPOINT")
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM reservation), (SELECT count(*) FROM reservation_history),"
            " pg_total_relation_size('reservation') + coalesce((SELECT sum(pg_total_relation_size("
            "inhrelid)) FROM pg_inherits WHERE inhparent = 'reservation'::regclass), 0),"
            " coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits"
            " WHERE inhparent = 'reservation_history'::regclass), 0)"
        ).fetchone()
    assert counts is not None
    live, history, live_bytes, history_bytes = counts
    if live + history != to:
        raise SystemExit(f"expected {to:,} rows, found {live + history:,}")
    return {
        "rows": to,
        "live_rows": live,
        "history_rows": history,
        "live_mib": round(live_bytes / 2**20, 1),
        "history_mib": round(history_bytes / 2**20, 1),
        "copy_s": round(copied, 1),
        "vacuum_checkpoint_s": round(time.monotonic() - t0 - copied, 1),
    }


# --- queries -------------------------------------------------------------------------------


def queries(lay: Layout) -> dict[str, tuple[str, dict[str, str]]]:
    w = lay.week0

    def iso(t: datetime) -> str:
        return t.isoformat().replace("+00:00", "Z")

    return {
        "list_resource": (
            "/v1/reservations",
            {"resource_id": str(lay.probe), "from": iso(w), "to": iso(w + timedelta(days=7))},
        ),
        "list_tenant": (
            "/v1/reservations",
            {"from": iso(w + timedelta(days=2)), "to": iso(w + timedelta(days=3)), "limit": "50"},
        ),
        "list_tenant_first": ("/v1/reservations", {"limit": "50"}),
        "get_by_id": (f"/v1/reservations/{lay.probe_in_week}", {}),
        "availability": (
            f"/v1/resources/{lay.probe}/availability",
            {"from": iso(w), "to": iso(w + timedelta(days=7)), "duration": "PT1H", "step": "60"},
        ),
    }


def measure(
    client: httpx.Client,
    server: harness.Server,
    path: str,
    params: dict[str, str],
    *,
    warmup: int,
    n: int,
    budget: float,
    statements: bool,
) -> dict[str, Any]:
    """Sequential requests: `warmup`, then up to `n` or `budget` seconds (at least 10).
    With `statements`, what pg_stat_statements saw during the timed requests."""
    reply = None
    for _ in range(warmup):
        reply = client.get(path, params=params)
        reply.raise_for_status()
    if statements:
        harness.reset_statements(server.db_url)
    ms: list[float] = []
    with harness.CpuMeter(server) as meter:
        deadline = time.monotonic() + budget
        while len(ms) < n and (len(ms) < 10 or time.monotonic() < deadline):
            t0 = time.perf_counter()
            reply = client.get(path, params=params)
            ms.append((time.perf_counter() - t0) * 1000)
            if reply.status_code != 200:
                raise SystemExit(f"{path}: {reply.status_code} {reply.text[:300]}")
    assert reply is not None
    body = reply.json()
    returned = len(body["items"]) if "items" in body else len(body.get("slots", [body]))
    cpu = meter.result["cpu_s"]
    out = {
        **harness.percentiles(ms),
        "items_returned": returned,
        "response_bytes": len(reply.content),
        "api_cpu_ms_per_request": round(1000 * cpu["api"] / len(ms), 3),
        "postgres_cpu_ms_per_request": round(1000 * cpu["postgres"] / len(ms), 3),
        "loadavg": meter.result["loadavg_after"][0],
    }
    if statements:
        st = harness.statement_totals(server.db_url)
        out["statements"] = {
            **st,
            "per_request": {
                "statements": round(st["calls"] / len(ms), 2),
                "plans": round(st["plans"] / len(ms), 2),
                "plan_ms": round(st["plan_ms"] / len(ms), 3),
                "exec_ms": round(st["exec_ms"] / len(ms), 3),
            },
        }
    return out


# --- EXPLAIN -------------------------------------------------------------------------------


class _Capture:
    """Stands in for the connection a repository function gets (and for the cursor of a
    typed read, kit/db.py `fetch_all`): keeps its SQL and params."""

    def __init__(self) -> None:
        self.query = ""
        self.params: dict[str, Any] = {}

    def cursor(self, **_: Any) -> _Capture:
        return self

    async def __aenter__(self) -> _Capture:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def execute(self, query: str, params: dict[str, Any] | None = None, **_: Any) -> _Capture:
        if query.lstrip().upper().startswith(("SELECT", "WITH")):  # not BEGIN, SET, COMMIT
            self.query, self.params = query, params or {}
        return self

    def pipeline(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def fetchall(self) -> list[Any]:
        return []

    async def fetchone(self) -> None:
        return None


def captured(call: Callable[[Any], Awaitable[Any]]) -> tuple[str, dict[str, Any]]:
    cap = _Capture()
    asyncio.run(call(cap))
    return cap.query, cap.params


def sql_of(lay: Layout) -> dict[str, tuple[str, dict[str, Any]]]:
    """The SQL the API runs for the measured requests, from the repositories themselves."""
    from reservations.reservations import repository as rr

    w, now = lay.week0, datetime.now(UTC)

    def page(**kw: Any) -> Callable[[Any], Awaitable[Any]]:
        args = {
            "tenant_id": lay.tenant,
            "owner": None,
            "resource_id": None,
            "booking_id": None,
            "window_from": None,
            "window_to": None,
            "statuses": [],
            "customer": None,
            "after": None,
            "limit": 51,
            "now": now,
            **kw,
        }
        return lambda conn: rr.page(conn, **args)

    assert lay.probe_in_week is not None
    probe_id = lay.probe_in_week
    return {
        "list_resource": captured(
            page(resource_id=lay.probe, window_from=w, window_to=w + timedelta(days=7))
        ),
        "list_tenant": captured(
            page(window_from=w + timedelta(days=2), window_to=w + timedelta(days=3))
        ),
        "list_tenant_first": captured(page()),
        "get_by_id": captured(
            lambda conn: rr.get(conn, tenant_id=lay.tenant, reservation_id=probe_id, owner=None)
        ),
        "availability": captured(
            lambda conn: rr.busy_between(
                conn, resource_ids=[lay.probe], start=w, end=w + timedelta(days=7), now=now
            )
        ),
    }


_TYPES = {UUID: "uuid", datetime: "timestamptz", int: "int8", str: "text", list: "uuid[]"}


def explain(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) with the values (custom plan), then as a prepared
    statement forced to its generic plan."""
    custom = _plan(conn, "EXPLAIN (ANALYZE, BUFFERS) " + query, params)
    names: list[str] = []

    def positional(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", positional, query)
    types = [_TYPES.get(type(params[n]), "text") for n in names]
    try:
        conn.execute("DEALLOCATE ALL")
        conn.execute(f"PREPARE bench_q ({', '.join(types)}) AS {text}")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        args = sql.SQL(", ").join(sql.Literal(params[n]) for n in names)
        generic = _plan(
            conn, sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_q ({})").format(args), None
        )
    except psycopg.Error as exc:
        generic = {"error": str(exc)}
    finally:
        conn.execute("RESET plan_cache_mode")
    return {"sql": query, "custom": custom, "generic": generic}


def _plan(
    conn: psycopg.Connection[Any], query: Any, params: dict[str, Any] | None
) -> dict[str, Any]:
    lines = [r[0] for r in conn.execute(query, params).fetchall()]
    text = "\n".join(lines)
    found = re.search(r"Execution Time: ([\d.]+) ms", text)
    top = re.search(r"Buffers: shared((?: hit=\d+)?(?: read=\d+)?)", text)
    return {
        "execution_ms": float(found.group(1)) if found else None,
        "top_buffers": top.group(1).strip() if top else None,
        "merge_append": "Merge Append" in text,
        "index_scans": len(re.findall(r"Index (?:Only )?Scan", text)),
        "seq_scans": text.count("Seq Scan"),
        "subplans_removed": sum(int(x) for x in re.findall(r"Subplans Removed: (\d+)", text)),
        "rows_removed_by_filter": sum(
            int(x) for x in re.findall(r"Rows Removed by Filter: (\d+)", text)
        ),
        "plan": lines,
    }


# --- report --------------------------------------------------------------------------------


def goal(report: dict[str, Any]) -> dict[str, Any]:
    sizes = report["sizes"]
    out: dict[str, Any] = {"ratio_goal": GOAL_RATIO, "queries": {}}
    if len(sizes) < 2:
        return {**out, "evaluated": False}
    first, last = sizes[0], sizes[-1]
    for name in last["api"]:
        a, b = first["api"][name]["p50_ms"], last["api"][name]["p50_ms"]
        ratio = b / a if a else None
        out["queries"][name] = {
            "ratio": ratio and round(ratio, 2),
            "reached": ratio is not None and ratio < GOAL_RATIO,
        }
    out["evaluated"] = True
    out["from_rows"], out["to_rows"] = first["rows"], last["rows"]
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms")


def _count(v: int | None) -> str:
    return "-" if v is None else f"{v:,}"


def markdown(report: dict[str, Any]) -> str:
    src = report["source"]
    head = ""
    if report["quick"]:
        head = "**Quick-mode smoke run** (small sizes, short runs: not a measurement to quote): "
    lines = [
        head + f"run of {report['when']} (commit {src['commit'][:7]}"
        f"{', src/ with uncommitted changes' if src['src_dirty'] else ''}),"
        f" `{report['command']}`; {report['machine']['cpus']} cores;"
        f" {report['resources']:,} resources; sequential requests, one keep-alive client.",
        "",
        "| rows (live + history) | query | items | median | p95 | p99 | API CPU / req"
        " | PostgreSQL CPU / req | plans / req | planning / req | execution / req"
        " | EXPLAIN: custom plan | generic plan | rows removed by filter | load 1m |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in report["sizes"]:
        rows = (
            f"{size['rows']:,} ({size['table']['live_rows']:,} + {size['table']['history_rows']:,})"
        )
        for name, a in size["api"].items():
            e = size["explain"].get(name, {})
            c, g = e.get("custom", {}), e.get("generic", {})
            st = a.get("statements", {}).get("per_request", {})
            lines.append(
                f"| {rows} | {name} | {a['items_returned']} | {_ms(a['p50_ms'])}"
                f" | {_ms(a['p95_ms'])} | {_ms(a['p99_ms'])}"
                f" | {a['api_cpu_ms_per_request']:.1f} ms"
                f" | {a['postgres_cpu_ms_per_request']:.1f} ms | {st.get('plans', '-')}"
                f" | {_ms(st.get('plan_ms'))} | {_ms(st.get('exec_ms'))}"
                f" | {_ms(c.get('execution_ms'))} | {_ms(g.get('execution_ms'))}"
                f" | {_count(c.get('rows_removed_by_filter'))} | {a['loadavg']:.1f} |"
            )
            rows = ""
    g = report["goal"]
    if g.get("evaluated"):
        parts = [
            f"{name} {q['ratio']}x" + ("" if q["reached"] else " (missed)")
            for name, q in g["queries"].items()
        ]
        lines += [
            "",
            f"Median at {g['to_rows']:,} rows over the median at {g['from_rows']:,}"
            f" (goal < {GOAL_RATIO}x): " + ", ".join(parts) + ".",
        ]
    lines += [
        "",
        "Plans, planning and execution per request: pg_stat_statements (track_planning on)"
        " over the timed requests, every statement of the request; EXPLAIN: execution time of"
        " the query's SQL alone (planning not included), as a custom plan and as a prepared"
        " statement's generic plan; rows removed by filter: summed over the custom plan.",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    sizes = report["sizes"]
    xs = [s["rows"] for s in sizes]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab10").colors
    for i, name in enumerate(sizes[0]["api"]):
        med = [s["api"][name]["p50_ms"] for s in sizes]
        p99 = [s["api"][name]["p99_ms"] for s in sizes]
        ax1.plot(xs, med, "o-", color=colors[i], label=f"{name} median")
        ax1.plot(xs, p99, "v--", color=colors[i], alpha=0.6, label=f"{name} p99")
        sql_ms = [s["explain"].get(name, {}).get("custom", {}).get("execution_ms") for s in sizes]
        if any(v is not None for v in sql_ms):
            ax2.plot(
                xs,
                [v if v is not None else float("nan") for v in sql_ms],
                "o-",
                color=colors[i],
                label=name,
            )
    for ax in (ax1, ax2):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("reservations in the table (live + history)")
        ax.grid(alpha=0.3, which="both")
    ax1.set_ylabel("latency through the API (ms)")
    ax1.set_title(f"Median and p99 vs rows (goal: median x < {GOAL_RATIO})", fontsize=10)
    ax1.legend(fontsize=7, ncol=2)
    ax2.set_ylabel("EXPLAIN ANALYZE execution time (ms)")
    ax2.set_title("The SQL alone (custom plan)", fontsize=10)
    ax2.legend(fontsize=7)
    fig.suptitle(("QUICK SMOKE RUN — " if report["quick"] else "") + report["when"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    from bench.create import add_common

    parser = argparse.ArgumentParser(
        prog="python -m bench growth",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, port=8784)
    parser.add_argument("--sizes", type=int, nargs="+", help="rows per step (10^5 10^6 10^7)")
    parser.add_argument("--resources", type=int, help=f"resources ({RESOURCES:,}; quick: 100)")
    parser.add_argument("--requests", type=int, help="timed requests per query and size (300)")
    parser.add_argument("--budget", type=float, help="seconds per query and size at most (60)")
    parser.add_argument(
        "--lock",
        type=Path,
        help="on a shared machine: hold this flock(1) lock file while measuring each size"
        " (not while seeding), so jobs taking the same lock keep off the timed requests",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = sorted(args.sizes or (QUICK_SIZES if quick else FULL_SIZES))
    resources = args.resources or (100 if quick else RESOURCES)
    n = args.requests or (40 if quick else 300)
    budget = args.budget or (8 if quick else 60)
    warmup = 5 if quick else 20
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()
    report: dict[str, Any] = {
        "scenario": "growth",
        "command": harness.command("growth", argv),
        "when": harness.now_utc(),
        "quick": quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "server": "reservations serve --no-worker (1 worker), "
        + ("embedded PostgreSQL and Valkey" if not args.database_url else "the given URLs"),
        "resources": resources,
        "requests": {"warmup": warmup, "max": n, "budget_s": budget},
        "sizes": [],
    }
    data = Path(tempfile.mkdtemp(prefix="rsv-bench-growth-"))

    def start() -> harness.Server:
        return harness.start_server(
            port=args.port,
            data=data,
            run_worker=False,
            database_url=args.database_url,
            redis_url=args.redis_url,
        )

    server = start()
    if server.embedded:  # pg_stat_statements needs a restart to load
        harness.preload_pg_stat_statements(server.db_url)
        server.stop(remove=False)
        server = start()
    counted = harness.reset_statements(server.db_url)
    report["pg_stat_statements"] = counted
    try:
        print(f"{clock()} server up on {server.base}", flush=True)
        lay = prepare(server, resources=resources)
        report["layout"] = {
            "read_week": lay.week0.isoformat(),
            "history_horizon": lay.horizon.isoformat(),
            "bulk_from": lay.start.isoformat(),
            "bulk_slots": lay.capacity,
            "probe": str(lay.probe),
        }
        client = httpx.Client(
            base_url=server.base, timeout=120, headers={"Authorization": f"Bearer {server.token}"}
        )
        for size in sizes:
            table = grow(server, lay, to=size)
            print(f"{clock()} {size:,} rows: {table}", flush=True)
            step: dict[str, Any] = {"rows": size, "table": table, "api": {}, "explain": {}}
            quiet = harness.exclusive(args.lock) if args.lock else contextlib.nullcontext()
            with quiet:
                measure_all(
                    step, client, server, lay, warmup=warmup, n=n, budget=budget, statements=counted
                )
            report["sizes"].append(step)
        client.close()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    report["goal"] = goal(report)
    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "growth.json", report)
    (out / "growth.md").write_text(md)
    plot(report, out / "growth.png")
    print(md, flush=True)
    if not quick and out.resolve() == harness.RESULTS.resolve():
        harness.replace_block(harness.REPO / "BENCHMARKS.md", "growth", md)


def measure_all(
    step: dict[str, Any],
    client: httpx.Client,
    server: harness.Server,
    lay: Layout,
    *,
    warmup: int,
    n: int,
    budget: float,
    statements: bool,
) -> None:
    """Each query through the API, then EXPLAIN of its SQL, at the table's current size."""
    clock = harness.timer()
    for name, (path, params) in queries(lay).items():
        step["api"][name] = measure(
            client, server, path, params, warmup=warmup, n=n, budget=budget, statements=statements
        )
        a = step["api"][name]
        print(
            f"{clock()}   {name}: median {a['p50_ms']} ms, p99 {a['p99_ms']} ms,"
            f" {a['items_returned']} items, n={a['n']}",
            flush=True,
        )
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        for name, (query, params) in sql_of(lay).items():
            step["explain"][name] = explain(conn, query, params)


if __name__ == "__main__":
    main()
