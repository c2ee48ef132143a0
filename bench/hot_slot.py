"""The hot slot (issues 4 and 7): many clients on one slot of one resource, with the
availability map on and off.

One fresh embedded data directory for the whole run. A first start of `reservations serve`
creates the cluster, turns on `pg_stat_statements` (ALTER SYSTEM, effective from the next
start) and creates the unit-capacity resource. Then two server phases on that data: map ON
(default settings) and map OFF (`RESERVATIONS_AVAILABILITY_MAP_ENABLED=false`), each on its
own `reservations serve --no-worker` (1 worker; no sweeper or repair loop, so every database
round trip counted is a request's). In each, for every client count (16 and 64):

1. **taken slot** (issue 4): the range 2031-03-03 10:00-11:00 is held and confirmed through
   the API (so the map holds it); wrk (2 threads, N connections) POSTs it for a warm-up, then
   for `--seconds`: rejections/s, p50/p99 (wrk), database transactions
   (`pg_stat_database`) and statements (`pg_stat_statements`, BEGIN/ROLLBACK included) per
   1,000 rejections, PostgreSQL and API CPU per 1,000 rejections.
2. **race** (issue 7): `--bursts` times, N clients, one keep-alive connection each (a raw
   HTTP/1.1 client: microseconds of client CPU per request), POST the same fresh 30-minute
   range at the same instant. Per burst the winners (201: must be exactly one) and the
   losers' statuses (409); the latency of every request from its write to the end of its
   reply, p50/p99 over all bursts.

Deadlocks: `pg_stat_database.deadlocks`, read when the phase's server is up and again
`harness.STATS_SETTLE_S` after its last request (backends report late), must not move; every
5xx the API answered is counted too. Goal (issue 7): zero deadlocks, race p99 under 100 ms at
16 clients.

    python -m bench hot-slot [--quick] [--out DIR] [--clients 16 64] [--seconds 15]
                             [--bursts 200]

Writes hot_slot.json, hot_slot.md and (with matplotlib) hot_slot.png into --out (default
bench/results/); a full run with the default --out replaces the generated block of
BENCHMARKS.md. Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import harness

SLOT = ("2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z")
RACE_BASE = datetime(2032, 1, 5, tzinfo=UTC)  # burst k races for [base + k h, + 30 min)
ROUTE = "/v1/reservations"
GOAL_CLIENTS = 16
GOAL_P99_MS = 100.0

LUA = """
local body = '%(body)s'
local headers = {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}
request = function() return wrk.format("POST", "/v1/reservations", headers, body) end
"""

Server = harness.Server


def start(data: Path, port: int, workers: int = 1, **env: str) -> Server:
    return harness.start_server(port=port, data=data, workers=workers, run_worker=False, env=env)


def statements(server: Server) -> float | None:
    """pg_stat_statements calls in this database (not the statistics reads), or None."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        try:
            row = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND query NOT LIKE '%%pg_stat%%'"
            ).fetchone()
        except psycopg.Error:
            return None
    return float(row[0]) if row else None


def counters(server: Server) -> dict[str, Any]:
    samples = harness.scrape(server)
    db = harness.database_stats(server.db_url)
    return {
        "409": harness.metric(samples, "http_requests_total", route=ROUTE, status="409"),
        "201": harness.metric(samples, "http_requests_total", route=ROUTE, status="201"),
        "map": harness.metric(samples, "reservations_conflicts_total", stage="map"),
        "precheck": harness.metric(samples, "reservations_conflicts_total", stage="precheck"),
        "constraint": harness.metric(samples, "reservations_conflicts_total", stage="constraint"),
        # Why a create passed the map: nothing marked, or Redis did not answer in time.
        **{
            f"map_{d}": harness.metric(samples, "availability_map_decisions_total", decision=d)
            for d in ("refuse", "pass", "unavailable")
        },
        "redis_errors": harness.metric(samples, "redis_errors_total"),
        "redis_skipped": harness.metric(samples, "redis_skipped_total"),
        "xacts": db["xact_commit"] + db["xact_rollback"],
        "statements": statements(server),
    }


# --- 1. the taken slot (wrk) ---------------------------------------------------------------


def taken_phase(
    server: Server, script: Path, *, clients: int, seconds: float, warmup: float, settle: float
) -> dict[str, Any]:
    harness.wrk(server.base, script, connections=clients, seconds=warmup)
    time.sleep(settle)  # let idle backends report their statistics
    before = counters(server)
    with harness.CpuMeter(server) as meter:
        w = harness.wrk(server.base, script, connections=clients, seconds=seconds)
    time.sleep(settle)
    after = counters(server)
    rejections = after["409"] - before["409"]
    per_k = 1000 / rejections if rejections else float("nan")
    stmts = (
        None
        if before["statements"] is None or after["statements"] is None
        else (after["statements"] - before["statements"]) * per_k
    )
    cpu = meter.result["cpu_s"]
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": w["requests"],
        "rejections": rejections,
        "accepted": after["201"] - before["201"],
        "rejected_by_map": after["map"] - before["map"],
        "rejected_by_database_precheck": after["precheck"] - before["precheck"],
        "rejected_by_constraint": after["constraint"] - before["constraint"],
        "map_decisions": {
            d: after[f"map_{d}"] - before[f"map_{d}"] for d in ("refuse", "pass", "unavailable")
        },
        "redis_errors": after["redis_errors"] - before["redis_errors"],
        "redis_skipped": after["redis_skipped"] - before["redis_skipped"],
        "rejections_per_s": round(rejections / seconds, 1),
        "wrk_requests_per_s": w["requests_per_s"],
        "p50_ms": w.get("p50_ms"),
        "p99_ms": w.get("p99_ms"),
        "socket_errors": w["socket_errors"],
        "db_transactions_per_1k": round((after["xacts"] - before["xacts"]) * per_k, 2),
        "db_statements_per_1k": None if stmts is None else round(stmts, 1),
        "postgres_cpu_s_per_1k": round(cpu["postgres"] * per_k, 3),
        "api_cpu_s_per_1k": round(cpu["api"] * per_k, 3),
        **meter.result,
        "wrk_output": w["raw"],
    }


# --- 2. the race (bursts on a fresh range) --------------------------------------------------


async def race(
    server: Server, rid: str, *, clients: int, bursts: int, first: int, pause: float
) -> dict[str, Any]:
    """`bursts` rounds of `clients` simultaneous creates of one fresh range each."""
    conns = [await harness.RawHttp.open(server.base) for _ in range(clients)]
    latencies: list[float] = []
    winners: list[int] = []
    statuses: dict[str, int] = {}
    try:
        for conn in conns:  # every connection open and used before the first burst
            await conn.send(harness.raw_request("GET", "/healthz", token=server.token))
        for k in range(first, first + bursts):
            start = RACE_BASE + timedelta(hours=k)
            body = json.dumps(
                {
                    "resource_id": rid,
                    "start": start.isoformat().replace("+00:00", "Z"),
                    "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
                }
            )
            request = harness.raw_request("POST", "/v1/reservations", token=server.token, body=body)
            gate = asyncio.Event()

            async def one(
                conn: harness.RawHttp, request: bytes = request, gate: asyncio.Event = gate
            ) -> tuple[int, float]:
                await gate.wait()
                t0 = time.perf_counter()
                status, _ = await conn.send(request)
                return status, (time.perf_counter() - t0) * 1000

            tasks = [asyncio.create_task(one(c)) for c in conns]
            await asyncio.sleep(0)  # every task waits at the gate
            gate.set()
            results = await asyncio.gather(*tasks)
            winners.append(sum(1 for s, _ in results if s == 201))
            for s, ms in results:
                statuses[str(s)] = statuses.get(str(s), 0) + 1
                latencies.append(ms)
            await asyncio.sleep(pause)
    finally:
        reconnects = sum(c.reconnects for c in conns)
        for conn in conns:
            await conn.close()
    spread = {str(w): winners.count(w) for w in sorted(set(winners))}
    return {
        "clients": clients,
        "bursts": bursts,
        "winners_per_burst": spread,
        "bursts_with_exactly_one_winner": winners.count(1),
        "statuses": statuses,
        "reconnects": reconnects,
        **harness.percentiles(latencies),
    }


def race_phase(
    server: Server, rid: str, *, clients: int, bursts: int, first: int, pause: float
) -> dict[str, Any]:
    with harness.CpuMeter(server) as meter:
        t0 = time.monotonic()
        result = asyncio.run(
            race(server, rid, clients=clients, bursts=bursts, first=first, pause=pause)
        )
        wall = time.monotonic() - t0
    return {**result, "wall_s": round(wall, 2), "cpu": meter.result}


# --- report --------------------------------------------------------------------------------


def goal(report: dict[str, Any]) -> dict[str, Any]:
    deadlocks = sum(p["deadlocks"] for p in report["phases"])
    five = sum(p["server_5xx"] for p in report["phases"])
    p99s = [
        pt["race"]["p99_ms"]
        for p in report["phases"]
        for pt in p["points"]
        if pt["clients"] == GOAL_CLIENTS and pt["race"]["p99_ms"] is not None
    ]
    one_winner = all(
        pt["race"]["bursts_with_exactly_one_winner"] == pt["race"]["bursts"]
        for p in report["phases"]
        for pt in p["points"]
    )
    return {
        "deadlocks": deadlocks,
        "server_5xx": five,
        "zero_deadlocks": deadlocks == 0,
        "exactly_one_winner_every_burst": one_winner,
        "race_p99_ms_at_16": max(p99s) if p99s else None,
        "p99_goal_ms": GOAL_P99_MS,
        "p99_reached": bool(p99s) and max(p99s) < GOAL_P99_MS,
        "evaluated": bool(p99s),
    }


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _n(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def markdown(report: dict[str, Any]) -> str:
    quick = report["quick"]
    src = report["source"]
    head = (
        "**Quick-mode smoke run** (tiny durations, not a measurement to quote): " if quick else ""
    )
    lines = [
        head + f"run of {report['when']} (commit {src['commit'][:7]}"
        f"{', src/ with uncommitted changes' if src['src_dirty'] else ''}), `{report['command']}`;"
        f" {report['machine']['cpus']} cores; taken slot: wrk {report['durations']['seconds']:g} s"
        f" per point after a {report['durations']['warmup_s']:g} s warm-up; race:"
        f" {report['durations']['bursts']} bursts per point.",
        "",
        "| map | clients | race: bursts with exactly 1 winner | race p50 | race p99"
        " | taken: rejections/s | taken p50 | taken p99 | DB transactions / 1k rejections"
        " | DB statements / 1k | PostgreSQL CPU s / 1k | API CPU s / 1k | load 1m |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in report["phases"]:
        for pt in phase["points"]:
            r, t = pt["race"], pt["taken"]
            lines.append(
                f"| {phase['map']} | {pt['clients']}"
                f" | {r['bursts_with_exactly_one_winner']} of {r['bursts']}"
                f" | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {t['rejections_per_s']:,.0f}"
                f" | {_ms(t['p50_ms'])} | {_ms(t['p99_ms'])} | {t['db_transactions_per_1k']:,.1f}"
                f" | {_n(t['db_statements_per_1k'])} | {t['postgres_cpu_s_per_1k']:.2f}"
                f" | {t['api_cpu_s_per_1k']:.2f}"
                f" | {t['loadavg_before'][0]:.1f}→{t['loadavg_after'][0]:.1f} |"
            )
    lines.append("")
    lines.append(
        "Deadlocks (`pg_stat_database.deadlocks`, read "
        f"{report['durations']['settle_s']:g} s after each phase): "
        + ", ".join(f"map {p['map']}: {p['deadlocks']}" for p in report["phases"])
        + "; 5xx answers: "
        + ", ".join(f"map {p['map']}: {p['server_5xx']}" for p in report["phases"])
        + "."
    )
    g = report["goal"]
    if g["evaluated"] and not quick:
        lines += [
            "",
            f"**Goal: zero deadlocks — {'reached' if g['zero_deadlocks'] else 'not reached'}"
            f" ({g['deadlocks']}); race p99 < {GOAL_P99_MS:.0f} ms at {GOAL_CLIENTS} clients —"
            f" {'reached' if g['p99_reached'] else 'not reached'}"
            f" ({_ms(g['race_p99_ms_at_16'])}, the higher of map on and off).**",
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"on": "tab:green", "off": "tab:gray"}
    for phase in report["phases"]:
        xs = [pt["clients"] for pt in phase["points"]]
        c = colors.get(phase["map"], "tab:blue")
        for key, style in (("p50_ms", "o-"), ("p99_ms", "v--")):
            ax1.plot(
                xs,
                [pt["race"][key] or float("nan") for pt in phase["points"]],
                style,
                color=c,
                label=f"map {phase['map']}, {key[:-3]}",
            )
        ax2.plot(
            xs,
            [pt["taken"]["rejections_per_s"] for pt in phase["points"]],
            "o-",
            color=c,
            label=f"map {phase['map']}",
        )
    ax1.axhline(GOAL_P99_MS, color="black", lw=0.8, ls=":")
    ax1.annotate(
        f"goal: p99 < {GOAL_P99_MS:.0f} ms at {GOAL_CLIENTS}",
        (GOAL_CLIENTS, GOAL_P99_MS),
        fontsize=8,
        textcoords="offset points",
        xytext=(2, 3),
    )
    ax1.set_title("Race for one fresh range: latency per request", fontsize=10)
    ax2.set_title("Taken range: rejections / s (wrk)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        xs = sorted({pt["clients"] for p in report["phases"] for pt in p["points"]})
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("clients")
        ax.legend(fontsize=8)
    ax1.set_ylabel("ms")
    fig.suptitle(("QUICK SMOKE RUN — " if report["quick"] else "") + report["when"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


# --- main ----------------------------------------------------------------------------------


def prepare(
    data: Path, port: int, *, statements: bool, workers: int
) -> tuple[str, str, Server | None]:
    """First start: the cluster and the resource. With `statements`, pg_stat_statements is
    asked for and the server stopped (it loads on the next start); without, the running
    server is returned for the first phase (default settings: map on)."""
    server = start(data, port, workers)
    try:
        if statements:
            harness.preload_pg_stat_statements(server.db_url)
        r = httpx.post(
            server.base + "/v1/resources",
            json={"name": "hot"},
            headers={"Authorization": f"Bearer {server.token}"},
            timeout=30,
        )
        r.raise_for_status()
    except BaseException:
        server.stop(remove=False)
        raise
    if statements:
        server.stop(remove=False)
        return r.json()["id"], server.token, None
    return r.json()["id"], server.token, server


def take_the_slot(server: Server, body: str, *, map_on: bool) -> None:
    """Hold and confirm the taken range through the API (once), then check who refuses it."""
    with httpx.Client(
        base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {server.token}"}
    ) as c:
        if map_on:
            held = c.post("/v1/reservations", json={**json.loads(body), "hold_seconds": 600})
            assert held.status_code == 201, held.text
            ok = c.post(f"/v1/reservations/{held.json()['id']}/confirm")
            assert ok.status_code == 200, ok.text
        probe = c.post("/v1/reservations", json=json.loads(body))
        assert probe.status_code == 409, probe.text
        expected = "availability-map" if map_on else None
        assert probe.json().get("source") == expected, probe.text


def main(argv: list[str] | None = None) -> None:
    from bench.create import add_common

    parser = argparse.ArgumentParser(
        prog="python -m bench hot-slot",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, port=8781)
    parser.add_argument("--clients", type=int, nargs="+", help="client counts (16 64; quick: 16)")
    parser.add_argument("--seconds", type=float, help="taken slot: wrk seconds per point (15)")
    parser.add_argument("--warmup", type=float, help="taken slot: wrk warm-up seconds (3)")
    parser.add_argument("--bursts", type=int, help="race: bursts per point (200)")
    parser.add_argument("--pause", type=float, default=0.05, help="race: seconds between bursts")
    parser.add_argument("--workers", type=int, default=1, help="API worker processes (1)")
    parser.add_argument(
        "--statements",
        action=argparse.BooleanOptionalAction,
        help="count statements with pg_stat_statements (one more server start; default: on,"
        " off with --quick)",
    )
    args = parser.parse_args(argv)
    if args.database_url or args.redis_url:
        raise SystemExit("hot-slot runs on its own embedded servers (it restarts them)")
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    quick = args.quick
    clients = args.clients or ([16] if quick else [16, 64])
    seconds = args.seconds or (2 if quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    bursts = args.bursts or (10 if quick else 200)
    settle = 1.0 if quick else 2.0
    statements = not quick if args.statements is None else args.statements
    # The deadlock count is exact only after backends have reported (STATS_SETTLE_S); the
    # quick mode, a smoke test, waits less and says so in its table.
    settle_db = 2.0 if quick else harness.STATS_SETTLE_S
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()
    report: dict[str, Any] = {
        "scenario": "hot-slot",
        "command": harness.command("hot-slot", argv),
        "when": harness.now_utc(),
        "quick": quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "server": f"reservations serve --no-worker --workers {args.workers},"
        " embedded PostgreSQL and Valkey",
        "durations": {
            "seconds": seconds,
            "warmup_s": warmup,
            "bursts": bursts,
            "pause_s": args.pause,
            "settle_s": settle_db,
        },
        "taken_range": SLOT,
        "pg_stat_statements": statements,
        "phases": [],
    }
    data = Path(tempfile.mkdtemp(prefix="rsv-bench-hot-"))
    try:
        rid, token, running = prepare(data, args.port, statements=statements, workers=args.workers)
        body = json.dumps({"resource_id": rid, "start": SLOT[0], "end": SLOT[1]})
        script = data / "hot.lua"
        script.write_text(LUA % {"body": body, "token": token})
        first_burst = 0
        for name, env in (("on", {}), ("off", {"RESERVATIONS_AVAILABILITY_MAP_ENABLED": "false"})):
            server = running or start(data, args.port, args.workers, **env)
            running = None
            try:
                if statements and not harness.reset_statements(server.db_url):
                    print("no pg_stat_statements; statements not counted", flush=True)
                take_the_slot(server, body, map_on=name == "on")
                db0, m0 = harness.database_stats(server.db_url), harness.scrape(server)
                phase: dict[str, Any] = {"map": name, "env": env, "points": []}
                for c in clients:
                    taken = taken_phase(
                        server, script, clients=c, seconds=seconds, warmup=warmup, settle=settle
                    )
                    raced = race_phase(
                        server, rid, clients=c, bursts=bursts, first=first_burst, pause=args.pause
                    )
                    first_burst += bursts
                    phase["points"].append({"clients": c, "taken": taken, "race": raced})
                    print(
                        f"{clock()} map {name}, {c} clients: taken {taken['rejections_per_s']:,.0f}"
                        f" rejections/s (p99 {taken['p99_ms']} ms), race winners"
                        f" {raced['winners_per_burst']}, p50 {raced['p50_ms']} ms,"
                        f" p99 {raced['p99_ms']} ms, statuses {raced['statuses']}",
                        flush=True,
                    )
                time.sleep(settle_db)
                db1, m1 = harness.database_stats(server.db_url), harness.scrape(server)
                phase["database"] = harness.stats_delta(db0, db1)
                phase["deadlocks"] = phase["database"]["deadlocks"]
                phase["requests"] = harness.requests_by(m0, m1)
                phase["server_5xx"] = sum(
                    n
                    for by in phase["requests"].values()
                    for s, n in by.items()
                    if s.startswith("5")
                )
                report["phases"].append(phase)
                print(
                    f"{clock()} map {name}: deadlocks {phase['deadlocks']},"
                    f" 5xx {phase['server_5xx']}",
                    flush=True,
                )
            finally:
                server.stop(remove=False)
    finally:
        shutil.rmtree(data, ignore_errors=True)

    report["goal"] = goal(report)
    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "hot_slot.json", report)
    (out / "hot_slot.md").write_text(md)
    plot(report, out / "hot_slot.png")
    print(md, flush=True)
    if not quick and out.resolve() == harness.RESULTS.resolve():
        harness.replace_block(harness.REPO / "BENCHMARKS.md", "hot-slot", md)


if __name__ == "__main__":
    main()
