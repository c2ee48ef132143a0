"""The hot slot (issue 4): 64 clients hammering a range that is already taken, with the
availability map on and off, against servers on the same data.

One fresh embedded data directory for the whole run. A first start of `reservations serve`
creates the cluster and turns on `pg_stat_statements` (ALTER SYSTEM, effective from the next
start). Then two phases, each on its own `reservations serve --no-worker` (1 worker; no
sweeper or repair loop, so every database round trip counted is a request's):

1. map ON (default settings): the slot is held and confirmed through the API first, so the
   availability map holds it; one create of it must come back 409 `source: availability-map`;
2. map OFF (`RESERVATIONS_AVAILABILITY_MAP_ENABLED=false`): the same slot, refused by the
   database pre-check.

Each phase: wrk (2 threads, 64 connections) POSTs the taken range for a short warm-up, then
for `--seconds`. Per phase: rejections/s, p50/p99 latency (wrk), database transactions
(`pg_stat_database` xact_commit + xact_rollback) and statements (`pg_stat_statements` calls,
BEGIN/COMMIT/ROLLBACK included) per 1,000 rejections, PostgreSQL CPU (every process of the
postmaster's tree, from psutil) and API-process CPU per 1,000 rejections. Writes
bench/results/hot_slot.json and (with matplotlib) hot_slot.png.

    python -m bench.hot_slot [--seconds 15] [--warmup 3] [--connections 64]

Needs `wrk` (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from bench import harness

RESULTS = Path(__file__).resolve().parent / "results"
SLOT = ("2031-03-03T10:00:00Z", "2031-03-03T11:00:00Z")

LUA = """
local body = '%(body)s'
local headers = {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}
request = function() return wrk.format("POST", "/v1/reservations", headers, body) end
"""


Server = harness.Server


def start(data: Path, port: int, **env: str) -> Server:
    return harness.start_server(port=port, data=data, run_worker=False, env=env)


def stop(server: Server) -> None:
    server.stop(remove=False)


def db_counters(server: Server) -> dict[str, float | None]:
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()
        try:
            calls = conn.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND query NOT LIKE '%%pg_stat%%'"
            ).fetchone()
        except psycopg.Error:
            calls = None
    return {"xacts": float(row[0]) if row else None, "statements": calls and float(calls[0])}


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def scrape(server: Server) -> dict[str, float]:
    text = httpx.get(server.base + "/metrics").text
    return {
        "409": metric(text, "http_requests_total", route="/v1/reservations", status="409"),
        "201": metric(text, "http_requests_total", route="/v1/reservations", status="201"),
        "map": metric(text, "reservations_conflicts_total", stage="map"),
        "precheck": metric(text, "reservations_conflicts_total", stage="precheck"),
        "refuse": metric(text, "availability_map_decisions_total", decision="refuse"),
    }


def wrk(server: Server, script: Path, *, connections: int, seconds: int) -> dict[str, Any]:
    return harness.wrk(server.base, script, connections=connections, seconds=seconds)


def phase(
    name: str, server: Server, script: Path, *, connections: int, seconds: int, warmup: int
) -> dict[str, Any]:
    wrk(server, script, connections=connections, seconds=warmup)
    time.sleep(2)  # let idle backends flush their pending statistics
    api = psutil.Process(server.proc.pid)
    load_before = os.getloadavg()
    m0, d0 = scrape(server), db_counters(server)
    c0, a0 = harness.postgres_cpu(server.postgres_master()), api.cpu_times()
    w = wrk(server, script, connections=connections, seconds=seconds)
    a1, c1 = api.cpu_times(), harness.postgres_cpu(server.postgres_master())
    time.sleep(2)
    m1, d1 = scrape(server), db_counters(server)
    load_after = os.getloadavg()
    out = w["raw"]
    rejections = m1["409"] - m0["409"]
    per_k = 1000 / rejections if rejections else float("nan")
    measured = w["requests"] or rejections
    xacts = (d1["xacts"] or 0) - (d0["xacts"] or 0)
    stmts = None if d0["statements"] is None else (d1["statements"] or 0) - d0["statements"]
    pg_cpu = c1 - c0
    api_cpu = (a1.user + a1.system) - (a0.user + a0.system)
    result = {
        "phase": name,
        "seconds": seconds,
        "requests": measured,
        "rejections": rejections,
        "accepted": m1["201"] - m0["201"],
        "rejected_by_map": m1["map"] - m0["map"],
        "rejected_by_database_precheck": m1["precheck"] - m0["precheck"],
        "rejections_per_s": rejections / seconds,
        "wrk_requests_per_s": w["requests_per_s"],
        "p50_ms": w["p50_ms"],
        "p99_ms": w["p99_ms"],
        "socket_errors": w["socket_errors"],
        "db_transactions_per_1k": xacts * per_k,
        "db_statements_per_1k": None if stmts is None else stmts * per_k,
        "postgres_cpu_s_per_1k": pg_cpu * per_k,
        "api_cpu_s_per_1k": api_cpu * per_k,
        "postgres_cpu_s": pg_cpu,
        "api_cpu_s": api_cpu,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "wrk_output": out,
    }
    print(
        f"{name}: {result['rejections_per_s']:,.0f} rejections/s, p50 {w['p50_ms']} ms,"
        f" p99 {w['p99_ms']} ms, {result['db_transactions_per_1k']:.1f} xacts and"
        f" {result['db_statements_per_1k']} statements per 1k, PostgreSQL CPU"
        f" {result['postgres_cpu_s_per_1k']:.3f} s/1k, API CPU {result['api_cpu_s_per_1k']:.3f}"
        f" s/1k (load {load_before[0]:.1f} -> {load_after[0]:.1f})",
        flush=True,
    )
    return result


def plot(results: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    panels = [
        ("rejections_per_s", "rejections / s"),
        ("p99_ms", "p99 latency (ms)"),
        ("db_transactions_per_1k", "DB transactions / 1k rejections"),
        ("postgres_cpu_s_per_1k", "PostgreSQL CPU s / 1k"),
        ("api_cpu_s_per_1k", "API CPU s / 1k"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    names = [r["phase"] for r in results]
    for ax, (key, title) in zip(axes, panels, strict=True):
        values = [r[key] or 0 for r in results]
        ax.bar(names, values, color=["tab:green", "tab:gray"][: len(values)])
        ax.set_title(title, fontsize=9)
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.3g}", (i, v), ha="center", va="bottom", fontsize=8)
    fig.suptitle("Hot slot: 64 connections on one taken range (wrk, 2 threads)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def git_commit() -> str | None:
    src = harness.source()
    if not src["commit"]:
        return None
    return src["commit"][:7] + ("+uncommitted src changes" if src["src_dirty"] else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--port", type=int, default=8781)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (apt-get install wrk)")

    data = Path(tempfile.mkdtemp(prefix="rsv-bench-hot-"))
    try:
        # First start: the cluster, pg_stat_statements for the next start, the resource.
        server = start(data, args.port)
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        headers = {"Authorization": f"Bearer {server.token}"}
        rid = httpx.post(
            server.base + "/v1/resources", json={"name": "hot"}, headers=headers
        ).json()["id"]
        stop(server)
        body = json.dumps({"resource_id": rid, "start": SLOT[0], "end": SLOT[1]})
        script = data / "hot.lua"
        script.write_text(LUA % {"body": body, "token": server.token})

        results = []
        for name, env in (
            ("map on", {}),
            ("map off", {"RESERVATIONS_AVAILABILITY_MAP_ENABLED": "false"}),
        ):
            server = start(data, args.port, **env)
            try:
                with psycopg.connect(server.db_url, autocommit=True) as conn:
                    try:
                        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                    except psycopg.Error as exc:
                        print(f"no pg_stat_statements ({exc}); statements not counted")
                with httpx.Client(base_url=server.base, headers=headers) as c:
                    if name == "map on":  # booked and confirmed through the API
                        held = c.post(
                            "/v1/reservations", json={**json.loads(body), "hold_seconds": 600}
                        )
                        assert held.status_code == 201, held.text
                        ok = c.post(f"/v1/reservations/{held.json()['id']}/confirm")
                        assert ok.status_code == 200, ok.text
                    probe = c.post("/v1/reservations", json=json.loads(body))
                    assert probe.status_code == 409, probe.text
                    expected = "availability-map" if name == "map on" else None
                    assert probe.json().get("source") == expected, probe.text
                results.append(
                    phase(
                        name,
                        server,
                        script,
                        connections=args.connections,
                        seconds=args.seconds,
                        warmup=args.warmup,
                    )
                )
            finally:
                stop(server)
    finally:
        shutil.rmtree(data, ignore_errors=True)

    RESULTS.mkdir(exist_ok=True)
    report = {
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": "python -m bench.hot_slot " + " ".join(sys.argv[1:]),
        "connections": args.connections,
        "wrk_threads": 2,
        "phases": results,
    }
    out = RESULTS / "hot_slot.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    plot(results, RESULTS / "hot_slot.png")


if __name__ == "__main__":
    main()
