"""A mixed day through the API (issue 7, scenario 3): reads, bookings and changes at once.

`reservations serve` (1 worker, in-process sweeper on, embedded PostgreSQL and Valkey on a
fresh data directory, or the URLs given). Seeded by SQL: RESOURCES unit-capacity resources
(UTC, no policy: open around the clock) and, with COPY, the business already booked in the
three weeks around the read week: each resource, each day, each daytime hour (08-20 UTC) with
probability 1/3, a 30- or 60-minute reservation (9 in 10 confirmed, 1 in 10 cancelled);
VACUUM (ANALYZE) and CHECKPOINT after.

The load is one wrk (2 threads, `--clients` connections) with a Lua script that picks each
request's kind at random by these weights (per 1,000):

    availability   450  GET /v1/resources/{id}/availability, one day of the read week, PT1H
    list_resource  300  GET /v1/reservations?resource_id=&from=&to= (the read week)
    list_tenant     50  GET /v1/reservations?from=&to=&limit=50 (one day, the whole tenant)
    create          75  POST /v1/reservations (confirmed)
    hold            75  POST /v1/reservations with hold_seconds=900
    confirm         17  POST /v1/reservations/{id}/confirm, If-Match (one of its own holds)
    cancel          17  POST /v1/reservations/{id}/cancel, If-Match (one of its confirmed)
    reschedule      16  PATCH /v1/reservations/{id} {start, end}, If-Match

80% reads, 15% creates or holds, 5% confirms, cancels and reschedules. Random resources;
creates and holds take fresh 30-minute ranges in the night hours (00-08, 20-24 UTC, which
the seeded business never uses), each request a range nobody else asked for, so every write
is meant to succeed; a reschedule moves a reservation to the other half of its hour. Each
wrk thread remembers the reservations its own creates returned (id, version from the reply),
so a confirm, cancel or reschedule names a reservation and version that exist; when it has
none yet, it books instead (counted as `fallbacks`). The script stamps every request with an
`X-Request-ID`, which the API echoes, so the reply's latency is attributed to its kind:
client-side p50/p99 per kind (from the script's own clock), besides wrk's overall figures.

Measured: throughput, latency per kind, statuses per kind (and the API's own count by
route), CPU share of wrk, the API, PostgreSQL and Valkey (psutil), resident memory of the API
worker idle and under the load, database commits/rollbacks/deadlocks. The warm-up books in
another month, so the measured writes land in the read week.

    python -m bench mixed-day [--quick] [--out DIR] [--clients 32] [--seconds 60]

Writes mixed_day.json, mixed_day.md and (matplotlib) mixed_day.png into --out (default
bench/results/); a full run with the default --out replaces the generated block of
BENCHMARKS.md. Needs `wrk` built with LuaJIT (Debian's is).
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.range import Range

from bench import harness
from reservations.kit.ids import uuid7

RESOURCES = 1_000
CLIENTS = 32
HOLD_SECONDS = 900
ERA_DAYS = 28  # the warm-up (and any further load) books ERA_DAYS x era after the read week
OPS: list[tuple[str, int, str]] = [
    ("availability", 450, "GET availability, 1 day"),
    ("list_resource", 300, "GET list, 1 resource, 7 days"),
    ("list_tenant", 50, "GET list, tenant, 1 day"),
    ("create", 75, "POST create"),
    ("hold", 75, "POST hold"),
    ("confirm", 17, "POST confirm (If-Match)"),
    ("cancel", 17, "POST cancel (If-Match)"),
    ("reschedule", 16, "PATCH reschedule (If-Match)"),
]
assert sum(w for _, w, _ in OPS) == 1000

LUA = r"""
-- bench/mixed_day.py writes this script; the module's docstring says what it does.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local ids = {%(ids)s}
local auth = "Bearer %(token)s"
local week0 = %(week0)d
local base = %(base)d
local nthreads = %(threads)d
local out_path = "%(out)s"
local ops = {%(ops)s}
local hold_seconds = %(hold)d

local threads = {}
local nsetup = 0
function setup(thread)
  nsetup = nsetup + 1
  thread:set("tid", nsetup - 1)
  table.insert(threads, thread)
end

local seq, made = 0, 0
local pending = {}
local held, confirmed = {}, {}
-- Latencies in one flat global array per kind (L_<kind>): wrk copies a thread's globals out
-- to done(), and its copy of a table of tables crashes.
local lat = {}
codes = {}
fallbacks = 0

function init(args)
  math.randomseed(7919 * (tid + 1))
  for _, o in ipairs(ops) do
    lat[o[1]] = {}
    _G["L_" .. o[1]] = lat[o[1]]
  end
end

local function iso(t) return os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t) end

-- Request n (unique over the threads) books resource n mod #ids, night hour n / #ids of the
-- era: hours 00-07 and 20-23 UTC, which the seeded reservations never use.
local function fresh()
  local n = made * nthreads + tid
  made = made + 1
  local j = math.floor(n / #ids)
  local h = j %% 12
  if h >= 8 then h = h + 12 end
  return ids[(n %% #ids) + 1], base + math.floor(j / 12) * 86400 + h * 3600
end

local function pick()
  local x = math.random(1000)
  for _, o in ipairs(ops) do
    x = x - o[2]
    if x <= 0 then return o[1] end
  end
  return ops[1][1]
end

local function send(op, method, path, body, meta, version)
  seq = seq + 1
  local rid = "b" .. tid .. "-" .. seq
  local h = {["Authorization"] = auth, ["X-Request-ID"] = rid}
  if body then h["Content-Type"] = "application/json" end
  if version then h["If-Match"] = '"' .. version .. '"' end
  pending[rid] = {op, now_ms(), meta}
  return wrk.format(method, path, h, body)
end

local function book(op)
  local r, t = fresh()
  local body = '{"resource_id":"' .. r .. '","start":"' .. iso(t) .. '","end":"'
    .. iso(t + 1800) .. '"'
  if op == "hold" then body = body .. ',"hold_seconds":' .. hold_seconds end
  return send(op, "POST", "/v1/reservations", body .. "}", {t = t})
end

function request()
  local op = pick()
  if op == "confirm" then
    local e = table.remove(held)
    if e == nil then fallbacks = fallbacks + 1; return book("hold") end
    return send(op, "POST", "/v1/reservations/" .. e.id .. "/confirm", nil, e, e.v)
  elseif op == "cancel" or op == "reschedule" then
    local e = table.remove(confirmed)
    if e == nil then fallbacks = fallbacks + 1; return book("create") end
    if op == "cancel" then
      return send(op, "POST", "/v1/reservations/" .. e.id .. "/cancel", nil, nil, e.v)
    end
    -- The other half of the same night hour: no create ever asks for it.
    local t = (e.t %% 3600 == 0) and e.t + 1800 or e.t - 1800
    local body = '{"start":"' .. iso(t) .. '","end":"' .. iso(t + 1800) .. '"}'
    return send(op, "PATCH", "/v1/reservations/" .. e.id, body, {t = t}, e.v)
  elseif op == "create" or op == "hold" then
    return book(op)
  end
  local r = ids[math.random(#ids)]
  local d = week0 + math.random(0, 6) * 86400
  if op == "availability" then
    return send(op, "GET", "/v1/resources/" .. r .. "/availability?from=" .. iso(d)
      .. "&to=" .. iso(d + 86400) .. "&duration=PT1H&step=60")
  elseif op == "list_resource" then
    return send(op, "GET", "/v1/reservations?resource_id=" .. r .. "&from=" .. iso(week0)
      .. "&to=" .. iso(week0 + 7 * 86400))
  end
  return send(op, "GET", "/v1/reservations?from=" .. iso(d) .. "&to=" .. iso(d + 86400)
    .. "&limit=50")
end

function response(status, headers, body)
  local rid = headers["x-request-id"] or headers["X-Request-ID"]
  local p = rid and pending[rid]
  if p == nil then return end
  pending[rid] = nil
  local op = p[1]
  local l = lat[op]
  l[#l + 1] = now_ms() - p[2]
  local key = op .. " " .. status
  codes[key] = (codes[key] or 0) + 1
  if (status == 200 or status == 201) and p[3] then
    local id = string.match(body, '^{"id":"([^"]+)"')
    local v = tonumber(string.match(body, '"version":(%%d+)'))
    if id and v then
      local e = {id = id, v = v, t = p[3].t}
      if op == "hold" then held[#held + 1] = e else confirmed[#confirmed + 1] = e end
    end
  end
end

function done(summary, latency, requests)
  local f = assert(io.open(out_path, "w"))
  for _, t in ipairs(threads) do
    for _, o in ipairs(ops) do
      f:write("L ", o[1], " ", table.concat(t:get("L_" .. o[1]) or {}, " "), "\n")
    end
    for k, n in pairs(t:get("codes") or {}) do f:write("C ", k, " ", n, "\n") end
    f:write("F ", t:get("fallbacks") or 0, "\n")
  end
  f:close()
end
"""


@dataclass
class Seeded:
    ids: list[UUID]
    week0: datetime  # the read week's Monday, 00:00 UTC
    reservations: int


def read_week() -> datetime:
    """The Monday (00:00 UTC) at least 14 days ahead: clear of the history horizon."""
    day = datetime.now(UTC).date() + timedelta(days=14)
    day += timedelta(days=(7 - day.weekday()) % 7)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def seed(server: harness.Server, *, resources: int) -> Seeded:
    """The resources (INSERT) and the business around the read week (COPY)."""
    week0 = read_week()
    rng = random.Random(11)
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        tenant, key = harness.tenant_and_key(conn, server.token)
        ids = harness.insert_resources(conn, tenant=tenant, count=resources, prefix="day-")
        days = [week0.date() + timedelta(days=d) for d in range(-7, 14)]
        now = datetime.now(UTC)

        def rows_of(resource: UUID) -> list[tuple[Any, ...]]:
            out = []
            for day in days:
                for hour in range(8, 20):
                    if rng.random() >= 1 / 3:
                        continue
                    start = _at(day, hour)
                    end = start + timedelta(minutes=rng.choice((30, 60)))
                    status = "cancelled" if rng.random() < 0.1 else "confirmed"
                    out.append(
                        (
                            uuid7(),
                            tenant,
                            resource,
                            start,
                            end,
                            Range(start, end, "[)"),
                            status,
                            1,
                            key,
                            now,
                            now,
                        )
                    )
            return out

        total = 0
        step = max(1, resources // 20)
        batches = range(0, resources, step)
        for lo in harness.progress(batches, total=len(batches), label="seeding reservations"):
            with conn.transaction():
                total += harness.copy_rows(
                    conn,
                    "reservation",
                    harness.RESERVATION_COLUMNS,
                    (row for r in ids[lo : lo + step] for row in rows_of(r)),
                )
        conn.execute("VACUUM (ANALYZE) reservation")
        conn.execute("CHECKPOINT")
    return Seeded(ids=ids, week0=week0, reservations=total)


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def resource_ids(server: harness.Server) -> list[UUID]:
    """The seeded resources of an existing data directory (a second server on it)."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id FROM resource WHERE name LIKE 'day-%' ORDER BY name")
        return [r[0] for r in rows.fetchall()]


def lua_script(
    work: Path, seeded: Seeded, token: str, *, era: int, threads: int
) -> tuple[Path, Path]:
    """The wrk script of one load phase, and the file its done() writes."""
    out = work / f"mixed-{era}.txt"
    out.unlink(missing_ok=True)
    path = work / f"mixed-{era}.lua"
    week0 = int(seeded.week0.timestamp())
    path.write_text(
        LUA
        % {
            "ids": ",".join(f'"{i}"' for i in seeded.ids),
            "token": token,
            "week0": week0,
            "base": week0 + era * ERA_DAYS * 86400,
            "threads": threads,
            "out": str(out),
            "ops": ", ".join(f'{{"{name}", {w}}}' for name, w, _ in OPS),
            "hold": HOLD_SECONDS,
        }
    )
    return path, out


def parse_ops(path: Path) -> dict[str, Any]:
    """Latency percentiles and statuses per kind, from the script's done() file."""
    lat: dict[str, list[float]] = {}
    codes: dict[str, dict[str, int]] = {}
    fallbacks = 0
    for line in path.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "L":
            op, _, values = rest.partition(" ")
            lat.setdefault(op, []).extend(float(v) for v in values.split())
        elif kind == "C":
            op, status, n = rest.split()
            codes.setdefault(op, {})[status] = codes.get(op, {}).get(status, 0) + int(n)
        elif kind == "F":
            fallbacks += int(rest)
    ops = {}
    for name, _, what in OPS:
        ops[name] = {
            "what": what,
            "statuses": codes.get(name, {}),
            **harness.percentiles(lat.get(name, [])),
        }
    return {"ops": ops, "fallbacks": fallbacks}


def run_load(
    server: harness.Server,
    seeded: Seeded,
    *,
    clients: int,
    seconds: float,
    era: int,
    work: Path,
    threads: int = 2,
    statements: bool = False,
) -> dict[str, Any]:
    """One wrk run of the mixed load, with CPU, statuses and per-kind latencies; with
    `statements`, pg_stat_statements' view of it (reset just before)."""
    script, out = lua_script(work, seeded, server.token, era=era, threads=threads)
    if statements:
        harness.reset_statements(server.db_url)
    m0, db0 = harness.scrape(server), harness.database_stats(server.db_url)
    with harness.CpuMeter(server) as meter:
        w = harness.wrk(server.base, script, connections=clients, seconds=seconds, threads=threads)
    time.sleep(0.5)
    m1, db1 = harness.scrape(server), harness.database_stats(server.db_url)
    per_kind = parse_ops(out) if out.exists() else {"ops": {}, "fallbacks": None}
    if statements:
        per_kind["statements"] = harness.statement_totals(server.db_url, top=8)
    done = sum(o["n"] for o in per_kind["ops"].values())
    for o in per_kind["ops"].values():
        o["share"] = round(o["n"] / done, 4) if done else None
    return {
        "clients": clients,
        "threads": threads,
        "workers": server.workers,
        "seconds": seconds,
        "era": era,
        **{k: v for k, v in w.items() if k != "raw"},
        **per_kind,
        "by_route": harness.requests_by(m0, m1),
        # Counters reported late by busy backends may land in the next phase's figures.
        "database": harness.stats_delta(db0, db1),
        **meter.result,
        "wrk_output": w["raw"],
    }


# --- report --------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def markdown(report: dict[str, Any]) -> str:
    load = report["load"]
    src = report["source"]
    share = load["cpu_share"]
    head = ""
    if report["quick"]:
        head = "**Quick-mode smoke run** (tiny durations, not a measurement to quote): "
    lines = [
        head + f"run of {report['when']} (commit {src['commit'][:7]}"
        f"{', src/ with uncommitted changes' if src['src_dirty'] else ''}),"
        f" `{report['command']}`; {report['machine']['cpus']} cores;"
        f" {report['resources']:,} resources, {report['seeded_reservations']:,} reservations"
        f" seeded; wrk {load['threads']} threads, {load['clients']} connections,"
        f" {load['seconds']:g} s after a {report['warmup_s']:g} s warm-up; 1 API worker.",
        "",
        f"**{load['requests_per_s'] or 0:,.0f} requests/s** overall"
        f" (wrk: p50 {_ms(load.get('p50_ms'))}, p99 {_ms(load.get('p99_ms'))};"
        f" {load['non_2xx']} non-2xx, socket errors: {load['socket_errors'] or 'none'}).",
        f"CPU share of the machine: wrk {_pct(share['client'])}, API {_pct(share['api'])},"
        f" PostgreSQL {_pct(share['postgres'])}, Valkey {_pct(share['valkey'])}"
        f" (load 1m {load['loadavg_before'][0]:.1f}→{load['loadavg_after'][0]:.1f}).",
        f"API worker RSS: idle {report['memory']['idle_mib']} MiB, peak under the load"
        f" {report['memory']['peak_mib']} MiB. Deadlocks: {load['database']['deadlocks']}.",
        "",
        "| kind | share | requests/s | p50 | p90 | p99 | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in load["ops"].values():
        rate = o["n"] / load["seconds"] if o["n"] else 0
        codes = ", ".join(f"{s}: {n:,}" for s, n in sorted(o["statuses"].items()))
        lines.append(
            f"| {o['what']} | {_pct(o['share'])} | {rate:,.1f} | {_ms(o['p50_ms'])}"
            f" | {_ms(o['p90_ms'])} | {_ms(o['p99_ms'])} | {codes or '-'} |"
        )
    st = load.get("statements")
    if st:
        n = load["requests"] or 1
        lines += [
            "",
            f"PostgreSQL during the load (pg_stat_statements, planning tracked):"
            f" {st['calls'] / n:.1f} statements, {st['plans'] / n:.2f} plans,"
            f" {st['plan_ms'] / n:.2f} ms planning and {st['exec_ms'] / n:.2f} ms execution"
            " per request. The costliest statements:",
            "",
            "| calls | plans | planning / call | execution / call | statement |",
            "|---|---|---|---|---|",
        ]
        for t in st["top"]:
            calls = t["calls"] or 1
            text = t["query"][:110].replace("|", "\\|")
            lines.append(
                f"| {t['calls']:,} | {t['plans']:,} | {t['plan_ms'] / calls:.2f} ms"
                f" | {t['exec_ms'] / calls:.2f} ms | `{text}…` |"
            )
    lines += [
        "",
        "Latency per kind: from the wrk script's clock, request written to reply parsed;"
        f" {load['fallbacks']} confirm/cancel/reschedule picks found no reservation of their"
        " own yet and booked instead (counted under create/hold).",
    ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    load = report["load"]
    names = [n for n, o in load["ops"].items() if o["n"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    xs = range(len(names))
    for off, key, color in ((-0.2, "p50_ms", "tab:blue"), (0.2, "p99_ms", "tab:red")):
        ax1.bar(
            [x + off for x in xs],
            [load["ops"][n][key] for n in names],
            0.4,
            color=color,
            label=key[:-3],
        )
    ax1.set_xticks(list(xs), names, rotation=20, fontsize=8)
    ax1.set_yscale("log")
    ax1.set_ylabel("latency (ms, log)")
    ax1.set_title(f"Mixed day: latency per kind at {load['clients']} connections", fontsize=10)
    ax1.legend(fontsize=8)
    share = load["cpu_share"]
    parts = [("wrk", "client"), ("API", "api"), ("PostgreSQL", "postgres"), ("Valkey", "valkey")]
    bottom = 0.0
    for label, key in parts:
        ax2.bar([0], [100 * share[key]], bottom=bottom, label=label)
        bottom += 100 * share[key]
    ax2.set_ylim(0, 100)
    ax2.set_xticks([])
    ax2.set_ylabel("% of the machine (all cores)")
    ax2.set_title("CPU share", fontsize=10)
    ax2.legend(fontsize=8)
    fig.suptitle(("QUICK SMOKE RUN — " if report["quick"] else "") + report["when"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


# --- main ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    from bench.create import add_common

    parser = argparse.ArgumentParser(
        prog="python -m bench mixed-day",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, port=8783)
    parser.add_argument("--clients", type=int, help=f"wrk connections ({CLIENTS})")
    parser.add_argument("--seconds", type=float, help="measured seconds (60)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds (5)")
    parser.add_argument("--resources", type=int, help=f"resources ({RESOURCES:,}; quick: 100)")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes (1)")
    parser.add_argument(
        "--statements",
        action=argparse.BooleanOptionalAction,
        help="pg_stat_statements (with planning) over the measured load: one more server"
        " start; default: on, off with --quick",
    )
    args = parser.parse_args(argv)
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    quick = args.quick
    clients = args.clients or (16 if quick else CLIENTS)
    seconds = args.seconds or (4 if quick else 60)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 5)
    resources = args.resources or (100 if quick else RESOURCES)
    statements = not quick if args.statements is None else args.statements
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()
    report: dict[str, Any] = {
        "scenario": "mixed-day",
        "command": harness.command("mixed-day", argv),
        "when": harness.now_utc(),
        "quick": quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "server": f"reservations serve --workers {args.workers}, in-process sweeper on, "
        + ("embedded PostgreSQL and Valkey" if not args.database_url else "the given URLs"),
        "resources": resources,
        "warmup_s": warmup,
        "weights_per_1000": {name: w for name, w, _ in OPS},
    }
    data = Path(tempfile.mkdtemp(prefix="rsv-bench-mixed-"))

    def start() -> harness.Server:
        return harness.start_server(
            port=args.port,
            data=data,
            workers=args.workers,
            database_url=args.database_url,
            redis_url=args.redis_url,
        )

    server = start()
    if statements and server.embedded:  # pg_stat_statements loads at the next start
        harness.preload_pg_stat_statements(server.db_url)
        server.stop(remove=False)
        server = start()
    counted = statements and harness.reset_statements(server.db_url)
    report["pg_stat_statements"] = counted
    try:
        print(f"{clock()} server up on {server.base}", flush=True)
        seeded = seed(server, resources=resources)
        report["seeded_reservations"] = seeded.reservations
        report["read_week"] = seeded.week0.isoformat()
        print(f"{clock()} seeded {seeded.reservations:,} reservations", flush=True)
        idle = harness.rss_mib(server.api_workers())
        if warmup > 0:
            run_load(server, seeded, clients=clients, seconds=warmup, era=1, work=server.data)
        sampler = harness.RssSampler(server)
        sampler.start()
        load = run_load(
            server,
            seeded,
            clients=clients,
            seconds=seconds,
            era=0,
            work=server.data,
            statements=counted,
        )
        rss = sampler.stop()
        report["load"] = load
        report["memory"] = {
            "idle_mib": max(idle) if idle else None,
            "peak_mib": max((v["peak_mib"] for v in rss.values()), default=None),
            "per_worker": rss,
        }
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM reservation").fetchone()
            report["rows_after"] = row[0] if row else None
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    print(
        f"{clock()} {load['requests_per_s']} req/s, p99 {load.get('p99_ms')} ms,"
        f" CPU {load['cpu_share']}",
        flush=True,
    )
    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "mixed_day.json", report)
    (out / "mixed_day.md").write_text(md)
    plot(report, out / "mixed_day.png")
    print(md, flush=True)
    if not quick and out.resolve() == harness.RESULTS.resolve():
        harness.replace_block(harness.REPO / "BENCHMARKS.md", "mixed-day", md)


if __name__ == "__main__":
    main()
