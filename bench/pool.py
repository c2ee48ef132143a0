"""Creates from a pool against single-resource creates, through the API (issue 19.1).

1. Start `reservations serve` (1 worker, embedded PostgreSQL and Valkey on a fresh data dir)
   and create POOL_SIZE unit-capacity resources with one tag, through the API.
2. At 32 clients (--clients), each phase from its own era of time, wrk POSTs for a warm-up
   and then the measured time:
   - **single**: `resource_id`, request n books slot n / POOL_SIZE of resource n % POOL_SIZE
     (never a conflict: the create benchmark's load over the pool's resources);
   - **pool round_robin**: `pool: {tags, strategy: round_robin}`, request n books slot
     n / POOL_SIZE: every slot is asked for POOL_SIZE times, so the pool fills each slot and
     the turn spreads the requests over it (a request whose first pick a racer took tries
     the next);
   - **pool first_free**: the same slots with first_free: the i-th request of a slot finds
     i - 1 resources busy (the availability map or the pre-check skips them) before it
     books: the pool's worst ordinary case.
   Each phase reports creates/s (the 201s /metrics counted over the measured time), wrk's
   latency percentiles, the non-2xx count, and its creates/s as a share of single's.
3. After the load: the overlapping live pairs in the table (must be 0).

    python -m bench pool [--quick] [--out DIR] [--clients 32] [--seconds 15]

Writes pool.json and pool.md into --out (default bench/results/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench import harness
from bench.create import EPOCH_2040, ERA_SECONDS, SLOT_SECONDS, Eras

POOL_SIZE = 8
TAG = "bench-pool"

LUA = """
-- Request n (unique over all threads) books slot n / size of the era: with a resource_id
-- (resource n %% size), or from the pool.
local ids = {%(ids)s}
local auth = "Bearer %(token)s"
local base = %(base)d
local nthreads = %(threads)d
local pool = %(pool)s
local counter = 0
local thread_no = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no - 1)
end
function request()
  local n = counter * nthreads + tid
  counter = counter + 1
  local t = base + math.floor(n / #ids) * %(slot)d
  local range = string.format('"start":"%%s","end":"%%s"',
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t), os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", t + %(slot)d))
  local target
  if pool then
    target = pool
  else
    target = string.format('"resource_id":"%%s"', ids[(n %% #ids) + 1])
  end
  local body = "{" .. target .. "," .. range .. "}"
  local headers = {["Authorization"] = auth, ["Content-Type"] = "application/json"}
  return wrk.format("POST", "/v1/reservations", headers, body)
end
"""

PHASES: dict[str, str | None] = {
    "single": None,
    "pool round_robin": f'"pool":{{"tags":["{TAG}"],"strategy":"round_robin"}}',
    "pool first_free": f'"pool":{{"tags":["{TAG}"],"strategy":"first_free"}}',
}


def script(work: Path, ids: list[str], token: str, *, era: int, pool: str | None) -> Path:
    path = work / f"pool-{era}.lua"
    path.write_text(
        LUA
        % {
            "ids": ",".join(f'"{i}"' for i in ids),
            "token": token,
            "base": EPOCH_2040 + era * ERA_SECONDS,
            "threads": 2,
            "pool": "nil" if pool is None else "'" + pool + "'",
            "slot": SLOT_SECONDS,
        }
    )
    return path


def created(server: harness.Server) -> float:
    return harness.metric(harness.scrape(server), "reservations_created_total")


def phase(
    server: harness.Server,
    ids: list[str],
    eras: Eras,
    *,
    pool: str | None,
    clients: int,
    seconds: float,
    warmup: float,
) -> dict[str, Any]:
    if warmup:
        harness.wrk(
            server.base,
            script(server.data, ids, server.token, era=eras.next(), pool=pool),
            connections=clients,
            seconds=warmup,
        )
    path = script(server.data, ids, server.token, era=eras.next(), pool=pool)
    before = created(server)
    w = harness.wrk(server.base, path, connections=clients, seconds=seconds)
    made = created(server) - before
    w.pop("raw")
    return {**w, "created": int(made), "creates_per_s": round(made / seconds, 1)}


def overlapping_pairs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM reservation a JOIN reservation b ON a.resource_id ="
            " b.resource_id AND a.id < b.id AND a.during && b.during"
            " WHERE a.status IN ('held', 'confirmed') AND b.status IN ('held', 'confirmed')"
        ).fetchone()
    return int(row[0]) if row else -1


def report_md(report: dict[str, Any]) -> str:
    lines = [
        f"# Pool creates against single-resource creates ({report['clients']} clients)",
        "",
        f"{report['pool_size']} unit resources in the pool; {report['seconds']} s per phase"
        f"{' (quick run: not a measurement)' if report['quick'] else ''}.",
        "",
        "| phase | creates/s | of single | p50 ms | p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    single = report["phases"]["single"]["creates_per_s"] or 1
    for name, p in report["phases"].items():
        lines.append(
            f"| {name} | {p['creates_per_s']} | {p['creates_per_s'] / single:.2f} |"
            f" {p.get('p50_ms')} | {p.get('p99_ms')} | {p['non_2xx']} |"
        )
    lines += ["", f"Overlapping live pairs after the load: {report['overlapping_pairs']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench pool")
    parser.add_argument("--quick", action="store_true", help="a few seconds per phase")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--port", type=int, default=8771)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    seconds = args.seconds or (3 if args.quick else 15)
    warmup = 1 if args.quick else 3
    server = harness.start_server(port=args.port)
    try:
        headers = {"Authorization": f"Bearer {server.token}"}
        with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
            ids = []
            for i in range(POOL_SIZE):
                r = client.post("/v1/resources", json={"name": f"pool-{i:02d}", "tags": [TAG]})
                r.raise_for_status()
                ids.append(r.json()["id"])
        time.sleep(1)
        eras = Eras()
        phases = {
            name: phase(
                server,
                ids,
                eras,
                pool=pool,
                clients=args.clients,
                seconds=seconds,
                warmup=warmup,
            )
            for name, pool in PHASES.items()
        }
        report = {
            "scenario": "pool",
            "command": harness.command("pool", argv),
            "when": harness.now_utc(),
            "machine": harness.machine(),
            "source": harness.source(),
            "quick": args.quick,
            "clients": args.clients,
            "seconds": seconds,
            "pool_size": POOL_SIZE,
            "phases": phases,
            "overlapping_pairs": overlapping_pairs(server.db_url),
        }
    finally:
        server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    harness.write_json(args.out / "pool.json", report)
    text = report_md(report)
    (args.out / "pool.md").write_text(text)
    print(text)
