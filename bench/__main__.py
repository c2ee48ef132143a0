"""`python -m bench SCENARIO [options]`: one entry point for the load scenarios.

Every scenario starts its own `reservations serve` on a fresh embedded data directory (or the
URLs given with --database-url/--redis-url where it takes them), seeds its data, runs the load
and writes JSON (and, with matplotlib, PNG plots) into bench/results/ or --out.
`python -m bench SCENARIO --help` lists a scenario's options.
"""

from __future__ import annotations

import importlib
import sys

SCENARIOS = {
    "create": ("bench.create", "create throughput/latency at 1-64 clients vs the pgbench ceiling"),
    "memory": ("bench.memory", "RSS per API worker, idle and under the mixed-day load"),
    "mixed-day": ("bench.mixed_day", "80% reads / 15% creates+holds / 5% changes, per-kind p99"),
    "growth": ("bench.growth", "list and availability latency at 10^5, 10^6, 10^7 rows"),
    "hot-slot": ("bench.hot_slot", "16 and 64 clients racing for one slot; map on/off"),
    "availability": ("bench.availability", "availability and search latency (issue 3)"),
    "create-rate": ("bench.create_rate", "one wrk point of the create load (first probe)"),
    "shards": ("bench.shards", "create and booking throughput with 1, 2 and 3 shard clusters"),
    "peers": ("bench.peers", "the create load and a race against pretix, in the same run"),
    "auth-latency": ("bench.auth_latency", "authentication and rate-limit cost in-process"),
    "waitlist-cancel": ("bench.waitlist_cancel", "cancel latency with 0-1,000 waiting entries"),
    "pool": ("bench.pool", "pool creates/s against single-resource creates/s at 32 clients"),
    "map-repair": ("bench.map_repair", "one availability-map repair round at 10^5, 10^6 rows"),
}


def usage() -> str:
    lines = ["usage: python -m bench SCENARIO [--quick] [--out DIR] [options]", "", "scenarios:"]
    lines += [f"  {name:<16} {text}" for name, (_, text) in SCENARIOS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name = argv[0].replace("_", "-")
    if name not in SCENARIOS:
        print(f"unknown scenario {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SCENARIOS[name][0])
    module.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
