"""Create throughput through the API at N concurrent connections (wrk + Lua): one point.

The first probe of the issue-7 harness, kept for its command line; `python -m bench create`
is the full scenario (several client counts, the pgbench ceiling, CPU shares, plots). This
starts `reservations serve` on a fresh embedded data directory, creates 100 resources, and
has wrk POST non-conflicting reservations for a fixed time.

    python -m bench.create_rate --connections 32 --seconds 20 [--workers 1] [--no-worker]

Needs `wrk` (Debian: apt-get install wrk). Prints wrk's summary, the 201/409/5xx counts, and
the rows in the table with the count of overlapping pairs (must be 0).
"""

from __future__ import annotations

import argparse
import time

import httpx
import psycopg

from bench import harness
from bench.create import Eras, lua_script


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.create_rate")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-worker", action="store_true", help="no in-process sweeper")
    parser.add_argument("--idempotency-key", action="store_true", help="send Idempotency-Key")
    args = parser.parse_args(argv)
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")

    server = harness.start_server(
        port=args.port, workers=args.workers, run_worker=not args.no_worker
    )
    try:
        ids = harness.create_resources(server, 100, prefix="r")
        script = lua_script(
            server.data, ids, server.token, era=Eras().next(), threads=2,
            idem=args.idempotency_key,
        )  # fmt: skip
        time.sleep(1)
        w = harness.wrk(server.base, script, connections=args.connections, seconds=args.seconds)
        print(w["raw"])
        for line in httpx.get(f"{server.base}/metrics").text.splitlines():
            if line.startswith("http_requests_total{") and '/v1/reservations"' in line:
                print(line)
        with psycopg.connect(server.db_url) as conn:
            row = conn.execute("SELECT count(*) FROM reservation").fetchone()
            overlaps = conn.execute(
                "SELECT count(*) FROM reservation a JOIN reservation b ON a.resource_id ="
                " b.resource_id AND a.id < b.id AND a.during && b.during"
            ).fetchone()
        print(
            f"reservations in the table: {row[0] if row else '?'}; "
            f"overlapping pairs: {overlaps[0] if overlaps else '?'}"
        )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
