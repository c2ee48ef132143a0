"""Create throughput with one, two and three shard clusters (issue 6), and the cost of a
booking that spans clusters.

Starts three embedded PostgreSQL clusters (each its own server, data directory and
postmaster), a catalog database on the first, and three Valkey nodes for Redlock. For k = 1,
2, 3 it starts `reservations serve` with the first k clusters in RESERVATIONS_SHARDS (fresh
databases each time), creates 120 resources, and:

- has wrk POST non-conflicting reservations spread over the resources for `--seconds`
  (the `bench create` Lua script), recording req/s, latency, the rows each cluster got and
  the CPU each PostgreSQL and the API used;
- books two-resource bookings for `--seconds` from `--clients` concurrent clients: pairs on
  one cluster (one transaction) and, for k >= 2, pairs on two clusters (Redlock + two-phase
  commit), recording bookings/s and latency.

    python -m bench shards [--seconds 15] [--connections 32] [--workers 2] [--quick]

Writes bench/results/shards.json (and shards.png with matplotlib). Needs wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse
from uuid import UUID

import httpx
import psutil
import psycopg

from bench import harness
from bench.create import Eras, lua_script
from reservations.kit import migrate
from reservations.kit.embedded import EmbeddedPostgres
from reservations.kit.embedded_valkey import EmbeddedValkey
from reservations.kit.shardmap import logical_of

LOGICAL = 64
RESULTS = Path(__file__).parent / "results"


def _database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + name))


def _create_db(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database(admin_url, name)
    migrate.upgrade(url)
    return url


def _postgres_cpu(pg: EmbeddedPostgres) -> float:
    try:  # the postmaster's pid is the first line of postmaster.pid
        pid = int((pg.pgdata / "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return 0.0
    total = 0.0
    for p in [master, *master.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _api_cpu(server: harness.Server) -> float:
    return sum(harness.cpu_of(server.api_processes()).values())


async def _bookings(
    base: str, token: str, pairs: list[tuple[str, str]], *, clients: int, seconds: float, day0: int
) -> dict[str, Any]:
    """Two-resource bookings from `clients` concurrent clients; every booking its own hour."""
    latencies: list[float] = []
    codes: dict[str, int] = {}
    counter = iter(range(10**9))
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            n = next(counter)
            a, b = pairs[n % len(pairs)]
            slot = n // len(pairs)
            day, hour = day0 + slot // 24, slot % 24
            start = f"2045-01-01T{hour:02d}:00:00Z"
            body = {
                "resources": [{"resource_id": a}, {"resource_id": b}],
                "start": start.replace("2045-01-01", _day(day)),
                "end": start.replace("2045-01-01", _day(day)).replace(":00:00Z", ":30:00Z"),
            }
            t0 = time.perf_counter()
            res = await client.post("/v1/bookings", json=body, headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            kind = str(res.status_code)
            if res.status_code >= 400:  # which problem: contention, conflict, ...
                kind += " " + str(res.json().get("type", "")).rsplit("/", 1)[-1]
            codes[kind] = codes.get(kind, 0) + 1

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(one(client) for _ in range(clients)))
    elapsed = time.monotonic() - started
    return {
        "bookings_per_s": round(codes.get("201", 0) / elapsed, 1),
        "statuses": dict(sorted(codes.items())),
        **harness.percentiles(latencies),
    }


def _day(n: int) -> str:
    from datetime import date, timedelta

    return (date(2045, 1, 1) + timedelta(days=n)).isoformat()


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="rsv-bench-shards-"))
    names = ["a", "b", "c"]
    servers = {n: EmbeddedPostgres(tmp / n) for n in names}
    valkeys = [EmbeddedValkey(tmp / f"vk{i}") for i in range(3)]
    results: dict[str, Any] = {"machine": harness.machine()}
    runs = []
    try:
        admin = {n: _database(pg.start(), "postgres") for n, pg in servers.items()}
        redlock = [vk.start() for vk in valkeys]
        eras = Eras()
        # There and back (1, 2, 3, 3, 2, 1 with --repeat 2): drift in the machine's load
        # shows as a difference between the two runs of the same k.
        order = [1, 2, 3, 3, 2, 1, 1, 2, 3][: 3 * args.repeat]
        for i, k in enumerate(order):
            catalog = _create_db(admin["a"], f"catalog_{i}")
            clusters = {n: _create_db(admin[n], f"shard_{i}") for n in names[:k]}
            env = {
                "RESERVATIONS_SHARDS": json.dumps(
                    {"logical_shards": LOGICAL, "clusters": clusters}
                ),
                "RESERVATIONS_REDLOCK_URLS": ",".join(redlock),
                "RESERVATIONS_REDIS_KEY_PREFIX": f"bench-shards-{i}:",
            }
            server = harness.start_server(
                port=args.port,
                workers=args.workers,
                run_worker=False,
                database_url=catalog,
                redis_url=redlock[0],
                env=env,
                data=tmp / f"serve-{i}",
            )
            try:
                runs.append(_measure(args, server, k, clusters, servers, eras))
            finally:
                server.stop(remove=False)
            print(json.dumps({key: v for key, v in runs[-1].items() if key != "wrk_raw"}))
    finally:
        for vk in valkeys:
            vk.stop()
        for pg in servers.values():
            pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    results["runs"] = runs
    results["command"] = "python -m bench shards" + (" --quick" if args.quick else "")
    return results


def _measure(
    args: argparse.Namespace,
    server: harness.Server,
    k: int,
    clusters: dict[str, str],
    servers: dict[str, EmbeddedPostgres],
    eras: Eras,
) -> dict[str, Any]:
    ids = harness.create_resources(server, 120, prefix=f"k{k}-")
    by_cluster: dict[str, list[str]] = {}
    names = list(clusters)
    for rid in ids:
        n = logical_of(UUID(rid), LOGICAL)
        by_cluster.setdefault(names[n * len(names) // LOGICAL], []).append(rid)
    threads = 2
    warm = lua_script(server.data, ids, server.token, era=eras.next(), threads=threads, idem=True)
    harness.wrk(server.base, warm, connections=args.connections, seconds=2, threads=threads)
    script = lua_script(server.data, ids, server.token, era=eras.next(), threads=threads, idem=True)
    load0 = os.getloadavg()[0]
    cpu0 = {n: _postgres_cpu(servers[n]) for n in clusters}
    api0 = _api_cpu(server)
    rows0 = _rows(clusters)
    w = harness.wrk(
        server.base, script, connections=args.connections, seconds=args.seconds, threads=threads
    )
    cpu = {n: round(_postgres_cpu(servers[n]) - cpu0[n], 2) for n in clusters}
    api = round(_api_cpu(server) - api0, 2)
    rows = {n: v - rows0[n] for n, v in _rows(clusters).items()}
    made = max(1, sum(rows.values()))
    same = [(v[i], v[i + 1]) for v in by_cluster.values() for i in range(0, len(v) - 1, 2)]
    bookings = {
        "same_cluster": asyncio.run(
            _bookings(
                server.base, server.token, same, clients=args.clients,
                seconds=args.booking_seconds, day0=0,
            )
        )
    }  # fmt: skip
    if k >= 2:  # disjoint pairs, each of two resources on different clusters
        groups = list(by_cluster.values())
        interleaved = [g[j] for j in range(min(len(g) for g in groups)) for g in groups]
        cross = list(zip(interleaved[0::2], interleaved[1::2], strict=False))
        bookings["across_clusters"] = asyncio.run(
            _bookings(
                server.base, server.token, cross, clients=args.clients,
                seconds=args.booking_seconds, day0=400,
            )
        )  # fmt: skip
    return {
        "shards": k,
        "clusters": list(clusters),
        "workers": args.workers,
        "connections": args.connections,
        "seconds": args.seconds,
        "creates_per_s": w["requests_per_s"],
        "p50_ms": w.get("p50_ms"),
        "p99_ms": w.get("p99_ms"),
        "non_2xx": w["non_2xx"],
        "rows_per_cluster": rows,
        "postgres_cpu_s": cpu,
        "api_cpu_s": api,
        # CPU per create: what the load costs, much less sensitive than req/s to what else
        # the machine runs.
        "api_cpu_ms_per_create": round(api * 1000 / made, 3),
        "postgres_cpu_ms_per_create": round(sum(cpu.values()) * 1000 / made, 3),
        "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "bookings": bookings,
        "wrk_raw": w["raw"],
    }


def _rows(clusters: dict[str, str]) -> dict[str, int]:
    out = {}
    for name, url in clusters.items():
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM reservation").fetchone()
        out[name] = int(row[0]) if row else 0
    return out


def _plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    runs = results["runs"]  # in the order they ran
    labels = [f"{r['shards']}\n#{i + 1}" for i, r in enumerate(runs)]
    colors = {"a": "#c44", "b": "#84b", "c": "#964"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    x = range(len(runs))
    left.bar(x, [r["creates_per_s"] for r in runs], color="#4a7")
    left.set_xticks(x, labels)
    left.set_xlabel("shard clusters, run")
    left.set_ylabel("creates/s (wrk, 32 connections)")
    labelled: set[str] = set()

    def label(name: str) -> str | None:
        if name in labelled:
            return None
        labelled.add(name)
        return name

    for i, r in enumerate(runs):
        made = max(1, sum(r["rows_per_cluster"].values()))
        bottom = 0.0
        for name, cpu in r["postgres_cpu_s"].items():
            share = cpu * 1000 / made
            right.bar(
                i, share, bottom=bottom, color=colors[name], label=label(f"PostgreSQL {name}")
            )
            bottom += share
        right.bar(i, r["api_cpu_ms_per_create"], bottom=bottom, color="#999", label=label("API"))
    right.set_xticks(x, labels)
    right.set_xlabel("shard clusters, run")
    right.set_ylabel("CPU ms per create")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench shards")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--booking-seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--repeat", type=int, default=2, choices=(1, 2, 3))
    parser.add_argument("--quick", action="store_true", help="2-second runs (CI smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.booking_seconds, args.repeat = 2, 2, 1
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shards.json").write_text(json.dumps(results, indent=2))
    _plot(results, args.out / "shards.png")
    print(f"wrote {args.out / 'shards.json'}")


if __name__ == "__main__":
    main()
