"""Availability latency through the API (issue 3), with a server-side split.

Starts `reservations serve` (1 worker) on a fresh embedded data directory, seeds 1,000
resources (Europe/Berlin, weekday hours 08:00-20:00, 30-minute grid, 10/15-minute buffers)
and reservations straight into PostgreSQL with COPY, then measures with one keep-alive httpx
client, requests one after another:

1. one resource, 7-day window, duration=PT1H, 1,000 reservations in the table;
2. one resource, 31-day window, duration=PT1H, 10,000 reservations in the table;
3. POST /v1/availability/search over 1,000 resources (a share busy or fully booked that
   day), one-day window, duration=PT1H, limit 20, 10,000 reservations in the table.

For each: median/p95/p99 of the client's wall time, the server's own mean (the
http_request_duration_seconds histogram of /metrics), and the same use case called in-process
(service function, its SQL statements and `slots.compute` timed one by one) to show what is
Python compute and what is database or HTTP. With wrk installed, also requests/s (16
connections for one resource, 4 for search). Writes bench/results/availability.json and
(with matplotlib) availability.png.

    python -m bench.availability [--requests 300] [--no-wrk] [--profile]

`--profile` also records the server under scenario 1 and 3 load with py-spy (collapsed
stacks in bench/results/, top functions in the JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as wall
from pathlib import Path
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import httpx
import psutil
import psycopg
from psycopg.types.json import Jsonb
from psycopg.types.range import Range

from bench import harness
from reservations.kit.ids import uuid7

ZONE = "Europe/Berlin"
TZ = ZoneInfo(ZONE)
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
POLICY: dict[str, Any] = {
    "weekly_hours": {d: [{"start": "08:00", "end": "20:00"}] for d in WEEKDAYS},
    "slot_grid_minutes": 30,
    "buffer_before": "PT10M",
    "buffer_after": "PT15M",
    "min_duration": "PT30M",
    "max_duration": "PT4H",
    "min_notice": "PT2H",
    "max_advance": "P180D",
}
BEFORE, AFTER = timedelta(minutes=10), timedelta(minutes=15)
# Six two-hour blocks per open day; a booking of 30 or 60 minutes starting on the block or
# 30 minutes into it, widened by the buffers, never reaches the next block, so random
# seeding never trips the exclusion constraint. A block in use leaves no room for a 1-hour
# slot, so a resource with all six blocks taken has no slot that day.
BLOCKS = [8 * 60, 10 * 60, 12 * 60, 14 * 60, 16 * 60, 18 * 60]
RESOURCES = 1_000
RESULTS = Path(__file__).resolve().parent / "results"
GOAL_MS = 20.0


# --- server ------------------------------------------------------------------------------


Server = harness.Server


def start_server(port: int) -> Server:
    return harness.start_server(port=port, prefix="rsv-bench-avail-", log_name="server.log")


def stop_server(server: Server) -> None:
    server.stop(remove=True)


# --- seeding -----------------------------------------------------------------------------


def local(day: date, minute: int) -> datetime:
    return datetime.combine(day, wall(), TZ) + timedelta(minutes=minute)


def first_monday() -> date:
    """The Monday at least 14 days ahead (clear of min_notice; max_advance covers 31 days)."""
    day = datetime.now(TZ).date() + timedelta(days=14)
    return day + timedelta(days=(7 - day.weekday()) % 7)


class Seeder:
    """Non-conflicting reservations: at most one per (resource, day, block)."""

    def __init__(self, conn: psycopg.Connection[Any], tenant: UUID, key: UUID) -> None:
        self.conn, self.tenant, self.key = conn, tenant, key
        self.used: set[tuple[UUID, date, int]] = set()
        self.rng = random.Random(7)
        self.total = 0

    def row(self, resource: UUID, day: date, block: int) -> tuple[Any, ...] | None:
        if (resource, day, block) in self.used or day.weekday() >= 5:
            return None
        self.used.add((resource, day, block))
        start = local(day, BLOCKS[block] + self.rng.choice((0, 30)))
        end = start + timedelta(minutes=self.rng.choice((30, 60, 60, 60)))
        now = datetime.now(UTC)
        return (
            uuid7(),
            self.tenant,
            resource,
            start,
            end,
            Range(start - BEFORE, end + AFTER, "[)"),
            "confirmed",
            1,
            self.key,
            now,
            now,
        )

    def copy(self, rows: list[tuple[Any, ...]]) -> None:
        with (
            self.conn.cursor() as cur,
            cur.copy(
                "COPY reservation (id, tenant_id, resource_id, start_at, end_at, during,"
                " status, quantity, created_by, created_at, updated_at) FROM STDIN"
            ) as copy,
        ):
            for r in rows:
                copy.write_row(r)
        # A table in steady state: hint bits set, visibility map current, statistics fresh
        # (otherwise the first reads after the COPY write and the timings wander).
        self.conn.execute("VACUUM (ANALYZE) reservation")
        self.conn.execute("CHECKPOINT")
        self.total += len(rows)

    def fill(
        self, resource: UUID, days: list[date], per_day: int
    ) -> Iterator[tuple[Any, ...] | None]:
        for day in days:
            for block in self.rng.sample(range(len(BLOCKS)), per_day):
                yield self.row(resource, day, block)

    def random(self, resources: list[UUID], days: list[date], count: int) -> list[tuple[Any, ...]]:
        out: list[tuple[Any, ...]] = []
        while len(out) < count:
            r = self.row(
                self.rng.choice(resources),
                self.rng.choice(days),
                self.rng.randrange(len(BLOCKS)),
            )
            if r is not None:
                out.append(r)
        return out


def create_resources(client: httpx.Client, conn: psycopg.Connection[Any]) -> list[UUID]:
    """Two through the API (so the stored policy is the API's own), the rest by INSERT."""
    ids = []
    for name in ("focus-week", "focus-month"):
        r = client.post(
            "/v1/resources",
            json={
                "name": name,
                "capacity": 1,
                "timezone": ZONE,
                "tags": ["room", "bench"],
                "policy": POLICY,
            },
        )
        r.raise_for_status()
        ids.append(UUID(r.json()["id"]))
    row = conn.execute(
        "SELECT tenant_id, policy, created_at FROM resource WHERE id = %s", (ids[0],)
    ).fetchone()
    assert row is not None
    tenant, policy, created = row
    rows = [(uuid7(), tenant, f"room-{i:04d}", Jsonb(policy), created) for i in range(2, RESOURCES)]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO resource (id, tenant_id, name, capacity, timezone, tags, policy,"
            f" created_at, updated_at) VALUES (%s, %s, %s, 1, '{ZONE}', '{{room,bench}}', %s,"
            " %s, now())",
            rows,
        )
    conn.execute("ANALYZE resource")
    return ids + [r[0] for r in rows]


# --- measuring ---------------------------------------------------------------------------


def summary(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(q[94], 3),
        "p99_ms": round(q[98], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def server_side(client: httpx.Client, route: str, method: str) -> tuple[float, float]:
    """(sum seconds, count) of the server's latency histogram for a route."""
    found = {"sum": 0.0, "count": 0.0}
    for line in client.get("/metrics").text.splitlines():
        for kind in found:
            head = f"http_request_duration_seconds_{kind}{{"
            if (
                line.startswith(head)
                and f'route="{route}"' in line
                and f'method="{method}"' in line
            ):
                found[kind] = float(line.rsplit(" ", 1)[1])
    return found["sum"], found["count"]


def cpu_seconds(server: Server) -> tuple[float, float]:
    """CPU seconds used so far by the API process and by the embedded PostgreSQL (postmaster,
    its live children, and the children it has reaped)."""
    api = psutil.Process(server.proc.pid).cpu_times()
    pid = int((server.data / "postgres" / "postmaster.pid").read_text().split()[0])
    master = psutil.Process(pid)
    pg = master.cpu_times()
    total = pg.user + pg.system + pg.children_user + pg.children_system
    for child in master.children(recursive=True):
        try:
            t = child.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return api.user + api.system, total


def timed(
    client: httpx.Client, send: Callable[[], httpx.Response], n: int, warmup: int
) -> tuple[list[float], httpx.Response]:
    reply = send()
    for _ in range(warmup):
        reply = send()
        reply.raise_for_status()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        reply = send()
        out.append((time.perf_counter() - t0) * 1000)
        if reply.status_code != 200:
            raise SystemExit(f"{reply.status_code}: {reply.text[:500]}")
    return out, reply


def through_api(
    client: httpx.Client,
    server: Server,
    *,
    route: str,
    method: str,
    send: Callable[[], httpx.Response],
    n: int,
    warmup: int = 30,
) -> tuple[dict[str, Any], list[float], httpx.Response]:
    load = os.getloadavg()[0]
    s0, c0 = server_side(client, route, method)
    api0, pg0 = cpu_seconds(server)
    ms, reply = timed(client, send, n, warmup=warmup)
    api1, pg1 = cpu_seconds(server)
    s1, c1 = server_side(client, route, method)
    stats = summary(ms)
    sent = n + warmup + 1
    stats["api_cpu_ms_per_request"] = round((api1 - api0) / sent * 1000, 3)
    stats["postgres_cpu_ms_per_request"] = round((pg1 - pg0) / sent * 1000, 3)
    stats["loadavg_1m_before"] = round(load, 2)
    stats["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    # The warm-up and the first request land in the histogram too; they are few.
    stats["server_mean_ms"] = round((s1 - s0) / (c1 - c0) * 1000, 3) if c1 > c0 else None
    return stats, ms, reply


def wrk(
    base: str,
    path: str,
    token: str,
    *,
    body: str | None,
    seconds: int,
    connections: int,
    work: Path,
) -> dict[str, Any] | None:
    if shutil.which("wrk") is None:
        return None
    script = work / "req.lua"
    lines = [f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        lines += [
            'wrk.method = "POST"',
            'wrk.headers["Content-Type"] = "application/json"',
            f"wrk.body = {json.dumps(body)}",
        ]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            *("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"),
            *("--latency", "-s", str(script), base + path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+(\S+)", out)
    lat = dict(re.findall(r"^\s*(50|99)%\s+(\S+)\s*$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: (.*)$", out, re.M)
    time.sleep(2)  # let the server finish what wrk left in flight
    return {
        "raw": out,
        "connections": connections,
        "socket_errors": socket.group(1) if socket else None,
        "seconds": seconds,
        "requests_per_s": float(rps.group(1)) if rps else None,
        "p50": lat.get("50"),
        "p99": lat.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def profile(
    pid: int, seconds: int, out: Path, send: Callable[[], httpx.Response]
) -> dict[str, Any]:
    """py-spy record (collapsed stacks) while `load` runs; the top functions by own and by
    inclusive share of the samples of the event-loop thread."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    rec = subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "-d", str(seconds), "-r", "200"),
            *("--format", "raw", "-o", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.5)
    deadline, requests = time.monotonic() + seconds - 1.5, 0
    while time.monotonic() < deadline:
        send()
        requests += 1
    rec.wait(seconds + 30)
    if not out.exists():
        return {"error": (rec.stderr.read() if rec.stderr else b"").decode()[-500:]}
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if "idle" in frames[-1] or "select (selectors.py" in frames[-1]:
            continue  # the loop waiting for I/O
        total += n
        names = [re.sub(r" \(.*?/site-packages/", " (", f) for f in frames[1:]]
        if not names:
            continue
        own[names[-1]] += n
        for name in {re.sub(r":\d+\)$", ")", f) for f in names}:
            incl[name] += n
    return {
        "requests": requests,
        "seconds": seconds,
        "rate_hz": 200,
        "busy_samples": total,
        "top_own": [(f, round(c / total, 3)) for f, c in own.most_common(25)] if total else [],
        "top_inclusive": [(f, round(c / total, 3)) for f, c in incl.most_common(80)]
        if total
        else [],
    }


# --- in process --------------------------------------------------------------------------


async def clock(fn: Callable[[], Awaitable[Any]], reps: int) -> float:
    """Median milliseconds of `reps` calls after three warm-up calls."""
    for _ in range(3):
        await fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(out), 3)


async def gc_off(timing: Awaitable[float]) -> float:
    """The same timing with Python's cyclic garbage collector paused."""
    gc.collect()
    gc.disable()
    try:
        return await timing
    finally:
        gc.enable()


def sync(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return fn()

    return run


@dataclass
class Ctx:
    svc: Any
    caller: Any
    token: str
    n: int


async def split_resource(ctx: Ctx, resource: UUID, ws: datetime, we: datetime) -> dict[str, Any]:
    """GET availability in-process: the service call whole, then each step it takes."""
    from reservations.availability import service
    from reservations.availability.slots import compute
    from reservations.catalog import repository as resources
    from reservations.policy import enforce
    from reservations.policy.usage import Busy
    from reservations.reservations import repository as reservations
    from reservations.tenancy.service import authenticate

    db, tenant, hour, now = ctx.svc.db, ctx.caller.tenant_id, timedelta(hours=1), datetime.now(UTC)

    async def whole() -> str:
        result = await service.for_resource(
            ctx.svc,
            ctx.caller,
            resource,
            window_start=ws,
            window_end=we,
            duration=hour,
            quantity=1,
            step_minutes=15,
            customer=None,
            explain=False,
        )
        return result.model_dump_json(by_alias=True, exclude_none=True)

    async def auth() -> Any:
        return await authenticate(db, ctx.token, now=now)

    async def get_row() -> Any:
        async with db.connection() as conn:
            return await resources.get(conn, tenant_id=tenant, resource_id=resource)

    row = await get_row()
    policy = enforce.policy_of(row.policy)

    async def busy_rows() -> Any:
        async with db.connection() as conn:
            return await reservations.busy_between(
                conn,
                resource_ids=[resource],
                start=ws - policy.buffer_before,
                end=we + policy.buffer_after,
                now=now,
            )

    busy = [Busy(r.during_start, r.during_end, r.quantity) for r in await busy_rows()]

    def slots() -> Any:
        return compute(
            policy,
            ZONE,
            1,
            busy,
            window_start=ws,
            window_end=we,
            duration=hour,
            quantity=1,
            now=now,
            step_minutes=15,
        )

    computed = slots()

    def render() -> str:
        read = service._read(row, computed, ws, we, hour, 1, False)
        return read.model_dump_json(by_alias=True, exclude_none=True)

    return {
        "busy_rows": len(busy),
        "slots": len(computed.slots),
        "service_call_ms": await clock(whole, ctx.n),
        "authenticate_ms": await clock(auth, ctx.n),
        "sql_resource_ms": await clock(get_row, ctx.n),
        "sql_busy_between_ms": await clock(busy_rows, ctx.n),
        "policy_parse_ms": await clock(sync(lambda: enforce.policy_of(row.policy)), ctx.n),
        "slots_compute_ms": await clock(sync(slots), ctx.n),
        "response_json_ms": await clock(sync(render), ctx.n),
    }


async def split_search(ctx: Ctx, ws: datetime, we: datetime) -> dict[str, Any]:
    """POST search in-process: the service call whole, then each step it takes."""
    from reservations.availability import service
    from reservations.availability.schemas import (
        MAX_SEARCH_RESOURCES,
        ResourceBrief,
        SearchHit,
        SearchRequest,
    )
    from reservations.catalog import repository as resources
    from reservations.policy import enforce
    from reservations.policy.usage import Busy
    from reservations.reservations import repository as reservations

    db, tenant, now = ctx.svc.db, ctx.caller.tenant_id, datetime.now(UTC)
    body = SearchRequest.model_validate(
        {"from": ws, "to": we, "duration": "PT1H", "tags": ["room"], "limit": 20}
    )
    reps = max(20, ctx.n // 5)

    async def whole() -> str:
        page = await service.search(ctx.svc, ctx.caller, body)
        return page.model_dump_json()

    async def candidates() -> Any:
        async with db.connection() as conn:
            return await resources.candidates(
                conn, tenant_id=tenant, tags=body.tags, min_capacity=1, limit=MAX_SEARCH_RESOURCES
            )

    rows = await candidates()
    policies = {r.id: enforce.policy_of(r.policy) for r in rows}

    async def busy_all() -> Any:
        async with db.connection() as conn:
            return await reservations.busy_between(
                conn, resource_ids=list(policies), start=ws - BEFORE, end=we + AFTER, now=now
            )

    busy_rows = await busy_all()
    by_resource: dict[UUID, list[Busy]] = {}
    for b in busy_rows:
        by_resource.setdefault(b.resource_id, []).append(
            Busy(b.during_start, b.during_end, b.quantity)
        )

    # history_before=None: the windows lie weeks ahead, after any history horizon.
    def earliest_all() -> int:
        hits = 0
        for r in rows:
            found = service._earliest(r, policies[r.id], by_resource.get(r.id, []), body, now, None)
            hits += found is not None
        return hits

    found = [
        (r, service._earliest(r, policies[r.id], by_resource.get(r.id, []), body, now, None))
        for r in rows
    ]

    def build_hits() -> list[Any]:
        hits = [
            SearchHit(resource=ResourceBrief.model_validate(r, from_attributes=True), earliest=e)
            for r, e in found
            if e is not None
        ]
        hits.sort(key=lambda h: (h.earliest.start, h.resource.id))
        return hits

    return {
        "candidates": len(rows),
        "busy_rows": len(busy_rows),
        "resources_with_a_slot": earliest_all(),
        "service_call_ms": await clock(whole, reps),
        "sql_candidates_ms": await clock(candidates, reps),
        "policy_parse_all_ms": await clock(
            sync(lambda: [enforce.policy_of(r.policy) for r in rows]), reps
        ),
        "sql_busy_between_ms": await clock(busy_all, reps),
        "earliest_slot_all_ms": await clock(sync(earliest_all), reps),
        "build_hits_all_ms": await clock(sync(build_hits), reps),
        "service_call_gc_off_ms": await gc_off(clock(whole, reps)),
    }


async def in_process(
    url: str,
    token: str,
    resources: dict[str, tuple[UUID, datetime, datetime]],
    search: tuple[datetime, datetime],
    n: int,
) -> dict[str, Any]:
    """The same use cases without HTTP, on a pool like the server's."""
    from reservations import wiring
    from reservations.config import Settings
    from reservations.kit.clock import Clock
    from reservations.kit.db import Database
    from reservations.tenancy.service import authenticate

    settings = Settings(database_url=url)
    db = Database(url, settings)
    await db.open()
    try:
        caller = await authenticate(db, token, now=datetime.now(UTC))
        assert caller is not None
        ctx = Ctx(wiring.build(settings, db, Clock()), caller, token, n)
        out = {name: await split_resource(ctx, *args) for name, args in resources.items()}
        out["search"] = await split_search(ctx, *search)
        out["search"]["authenticate_ms"] = out["week"]["authenticate_ms"]
        return out
    finally:
        await db.close()


# --- plot --------------------------------------------------------------------------------


def plot(report: dict[str, Any], samples: dict[str, list[float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, mid, right) = plt.subplots(
        1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.3, 1, 1]}
    )
    for name, ms in samples.items():
        xs = sorted(ms)
        left.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=name)
    left.axvline(GOAL_MS, color="grey", ls="--", lw=1, label=f"goal: median < {GOAL_MS:.0f} ms")
    left.set_xscale("log")
    left.set_xlabel("latency per request through the API (ms, log)")
    left.set_ylabel("fraction of requests")
    left.set_title("Availability latency, sequential keep-alive requests")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)

    parts = [
        ("authenticate_ms", "auth (key lookup)"),
        ("sql_resource_ms", "SQL: resource row"),
        ("sql_candidates_ms", "SQL: candidate rows"),
        ("policy_parse_ms", "Policy.model_validate"),
        ("policy_parse_all_ms", "Policy.model_validate"),
        ("sql_busy_between_ms", "SQL: busy_between"),
        ("slots_compute_ms", "slots.compute"),
        ("earliest_slot_all_ms", "slots.compute"),
        ("build_hits_all_ms", "response models + JSON"),
        ("response_json_ms", "response models + JSON"),
    ]
    palette = iter(plt.get_cmap("tab10").colors)
    colors: dict[str, Any] = {"rest": "lightgrey"}
    for ax, names in ((mid, ["week", "month"]), (right, ["search"])):
        for i, name in enumerate(names):
            s = report["scenarios"][name]
            split = s["in_process"]
            x = 0.0
            for key, label in parts:
                if key not in split:
                    continue
                if label not in colors:
                    colors[label] = next(palette)
                ax.barh(i, split[key], left=x, color=colors[label], label=label)
                x += split[key]
            rest = s["api"]["median_ms"] - x
            if rest > 0:
                ax.barh(
                    i, rest, left=x, color=colors["rest"], label="rest: HTTP, FastAPI, CPU wait"
                )
        ax.set_yticks(range(len(names)), names)
        ax.axvline(GOAL_MS, color="grey", ls="--", lw=1)
        ax.set_xlabel("ms: parts timed in-process; each bar ends at the API median")
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower right")
    mid.set_title("Where the median goes: one resource")
    right.set_title("Where the median goes: search, 1,000 resources")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# --- main --------------------------------------------------------------------------------


machine = harness.machine
source = harness.source


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300, help="timed requests per scenario")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk throughput runs")
    parser.add_argument("--wrk-seconds", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="py-spy the server under load")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    server = start_server(args.port)
    print(f"[{time.monotonic() - started:.0f}s] server up", flush=True)
    report: dict[str, Any] = {
        "command": "python -m bench.availability " + " ".join(sys.argv[1:]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source(),
        "server": "reservations serve, 1 worker, embedded defaults, in-process sweeper on",
        "policy": POLICY,
        "scenarios": {},
    }
    samples: dict[str, list[float]] = {}
    try:
        client = httpx.Client(
            base_url=server.base,
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=30,
        )
        conn = psycopg.connect(server.db_url, autocommit=True)
        report["machine"]["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        tenant, key = conn.execute("SELECT tenant_id, id FROM api_key LIMIT 1").fetchone()  # type: ignore[misc]
        ids = create_resources(client, conn)
        week_res, month_res, others = ids[0], ids[1], ids[2:]
        seed = Seeder(conn, tenant, key)
        monday = first_monday()
        week = (local(monday, 0), local(monday + timedelta(days=7), 0))
        month = (local(monday, 0), local(monday + timedelta(days=31), 0))
        search_day = monday + timedelta(days=2)  # a Wednesday
        search = (local(search_day, 0), local(search_day + timedelta(days=1), 0))
        spread = [monday + timedelta(days=d) for d in range(-28, 63)]

        # Phase A: 1,000 rows. The week's resource busy four blocks of six each weekday of
        # its week and of the weeks around it; the rest spread over the other resources.
        rows = [
            r
            for r in seed.fill(
                week_res, [monday + timedelta(days=d) for d in range(-7, 14)], per_day=4
            )
            if r
        ]
        rows += seed.random(others, spread, 1_000 - len(rows))
        seed.copy(rows)
        assert seed.total == 1_000
        time.sleep(2)

        def get(res: UUID, window: tuple[datetime, datetime]) -> Callable[[], httpx.Response]:
            params = {"from": window[0].isoformat(), "to": window[1].isoformat()}
            params["duration"] = "PT1H"
            path = f"/v1/resources/{res}/availability"
            return lambda: client.get(path, params=params)

        route = "/v1/resources/{resource_id}/availability"
        n = args.requests
        stats, ms, reply = through_api(
            client, server, route=route, method="GET", send=get(week_res, week), n=n
        )
        body = reply.json()
        report["scenarios"]["week"] = {
            "what": "one resource, 7-day window, duration=PT1H",
            "reservations_in_table": seed.total,
            "window": [week[0].isoformat(), week[1].isoformat()],
            "slots_returned": len(body["slots"]),
            "free_spans_returned": len(body["free"]),
            "response_bytes": len(reply.content),
            "api": stats,
        }
        samples["1: week, 1k rows"] = ms
        print(f"[{time.monotonic() - started:.0f}s] week (1k rows): {stats}", flush=True)
        # Phase B: to 10,000 rows. The month's resource busy four of six blocks every
        # weekday of its 31 days; on the search day 100 resources fully booked and 500 with
        # one to three bookings; the rest spread.
        rows = [
            r for r in seed.fill(month_res, [monday + timedelta(days=d) for d in range(31)], 4) if r
        ]
        pool = others[:]
        seed.rng.shuffle(pool)
        for res in pool[:100]:
            rows += [r for r in seed.fill(res, [search_day], per_day=6) if r]
        for res in pool[100:600]:
            rows += [r for r in seed.fill(res, [search_day], seed.rng.randint(1, 3)) if r]
        rows += seed.random(others, spread, 10_000 - seed.total - len(rows))
        seed.copy(rows)
        assert seed.total == 10_000
        time.sleep(2)

        stats, ms, reply = through_api(
            client, server, route=route, method="GET", send=get(month_res, month), n=n
        )
        body = reply.json()
        report["scenarios"]["month"] = {
            "what": "one resource, 31-day window, duration=PT1H",
            "reservations_in_table": seed.total,
            "window": [month[0].isoformat(), month[1].isoformat()],
            "slots_returned": len(body["slots"]),
            "free_spans_returned": len(body["free"]),
            "response_bytes": len(reply.content),
            "api": stats,
        }
        samples["2: 31 days, 10k rows"] = ms
        print(f"[{time.monotonic() - started:.0f}s] month (10k rows): {stats}", flush=True)

        # The week scenario again with 10,000 rows: how much the table size matters.
        stats10k, _, _ = through_api(
            client, server, route=route, method="GET", send=get(week_res, week), n=n
        )
        report["scenarios"]["week"]["api_with_10k_rows"] = stats10k
        print(f"[{time.monotonic() - started:.0f}s] week (10k rows): {stats10k}", flush=True)

        query = {
            "from": search[0].isoformat(),
            "to": search[1].isoformat(),
            "duration": "PT1H",
            "tags": ["room"],
            "limit": 20,
        }

        def post() -> httpx.Response:
            return client.post("/v1/availability/search", json=query)

        stats, ms, reply = through_api(
            client,
            server,
            route="/v1/availability/search",
            method="POST",
            send=post,
            n=max(50, n // 3),
            warmup=10,
        )
        body = reply.json()
        report["scenarios"]["search"] = {
            "what": "search over 1,000 resources, one-day window, duration=PT1H, limit 20",
            "reservations_in_table": seed.total,
            "window": [search[0].isoformat(), search[1].isoformat()],
            "busy_that_day": "100 resources fully booked, 500 with 1-3 bookings, "
            "plus the random spread",
            "items_returned": len(body["items"]),
            "next_cursor": body["next_cursor"] is not None,
            "response_bytes": len(reply.content),
            "api": stats,
        }
        samples["3: search 1k resources"] = ms
        print(f"[{time.monotonic() - started:.0f}s] search: {stats}", flush=True)
        health, _ = timed(client, lambda: client.get("/healthz"), n, warmup=20)
        report["http_floor"] = {"what": "GET /healthz, same client", **summary(health)}

        print(f"[{time.monotonic() - started:.0f}s] healthz: {report['http_floor']}", flush=True)
        split = asyncio.run(
            in_process(
                server.db_url,
                server.token,
                {"week": (week_res, *week), "month": (month_res, *month)},
                search,
                n=100,
            )
        )
        # In-process splits run after seeding is complete: 10,000 rows in the table.
        report["scenarios"]["week"]["in_process"] = split["week"]
        report["scenarios"]["month"]["in_process"] = split["month"]
        report["scenarios"]["search"]["in_process"] = split["search"]
        print(f"[{time.monotonic() - started:.0f}s] in-process: {split}", flush=True)

        if not args.no_wrk:
            # Throughput at concurrency, all with 10,000 rows in the table. Search gets few
            # connections: each request holds the single worker for a long time.
            def qs(w: tuple[datetime, datetime]) -> str:
                q = f"?from={w[0].isoformat()}&to={w[1].isoformat()}&duration=PT1H"
                return q.replace("+", "%2B")

            for name, path, body, conns in (
                ("week", f"/v1/resources/{week_res}/availability" + qs(week), None, 16),
                ("month", f"/v1/resources/{month_res}/availability" + qs(month), None, 16),
                ("search", "/v1/availability/search", json.dumps(query), 4),
            ):
                report["scenarios"][name]["wrk"] = wrk(
                    server.base,
                    path,
                    server.token,
                    body=body,
                    seconds=args.wrk_seconds,
                    connections=conns,
                    work=server.data,
                )
                print(
                    f"[{time.monotonic() - started:.0f}s] wrk {name}: "
                    f"{report['scenarios'][name]['wrk']}",
                    flush=True,
                )

        if args.profile:
            send_week = get(week_res, week)
            report["profile"] = {
                "week": profile(
                    server.proc.pid,
                    12,
                    args.out / "availability-week.pyspy.txt",
                    send_week,
                ),
                "search": profile(
                    server.proc.pid,
                    12,
                    args.out / "availability-search.pyspy.txt",
                    post,
                ),
            }
        client.close()
        conn.close()
    finally:
        stop_server(server)

    report["goal"] = {
        "what": f"scenario 1 median under {GOAL_MS:.0f} ms through the API",
        "median_ms": report["scenarios"]["week"]["api"]["median_ms"],
        "met": report["scenarios"]["week"]["api"]["median_ms"] < GOAL_MS,
    }
    report["runtime_s"] = round(time.monotonic() - started, 1)
    (args.out / "availability.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    made = plot(report, samples, args.out / "availability.png")
    print(json.dumps({k: v for k, v in report.items() if k != "policy"}, indent=2, default=str))
    print(f"wrote {args.out / 'availability.json'}" + (" and availability.png" if made else ""))


if __name__ == "__main__":
    main()
