"""Create throughput through the API at N concurrent connections (wrk + Lua).

A first, honest probe for the issue-7 harness: it starts `reservations serve` on a fresh
embedded data directory, creates 100 resources, and has wrk POST non-conflicting reservations
(each connection walks its own sequence of hours over the resources) for a fixed time.

    python -m bench.create_rate --connections 32 --seconds 20 [--workers 1]

Needs `wrk` (Debian: apt-get install wrk). Prints wrk's summary and the 201/409/5xx counts.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

LUA = """
local ids = {%(ids)s}
local token = "%(token)s"
local counter = 0
local thread_no = 0
local threads = {}
function setup(thread)
  thread_no = thread_no + 1
  thread:set("tid", thread_no)
  table.insert(threads, thread)
end
function request()
  counter = counter + 1
  local n = counter * 64 + tid
  local rid = ids[(n %% #ids) + 1]
  local slot = math.floor(n / #ids)
  local day = 1 + math.floor(slot / 20)
  local hour = slot %% 20
  local body = string.format(
    '{"resource_id":"%%s","start":"%%s","end":"%%s"}', rid,
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", 2051222400 + day * 86400 + hour * 3600),
    os.date("!%%Y-%%m-%%dT%%H:%%M:%%SZ", 2051222400 + day * 86400 + hour * 3600 + 1800))
  return wrk.format("POST", "/v1/reservations",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-worker", action="store_true", help="no in-process sweeper")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="rsv-bench-"))
    env = {**os.environ, "RESERVATIONS_DATA_DIR": str(data)}
    env.pop("DATABASE_URL", None)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reservations",
            "serve",
            "--port",
            str(args.port),
            "--workers",
            str(args.workers),
            *(["--no-worker"] if args.no_worker else []),
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    token = None
    for line in server.stderr:
        m = re.search(r"(rsv_\w+)", line)
        token = token or (m.group(1) if m else None)
        if "Application startup complete" in line:
            break
    assert token, "no admin key printed"
    base = f"http://127.0.0.1:{args.port}"
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    for i in range(100):
        r = httpx.post(f"{base}/v1/resources", json={"name": f"r{i}"}, headers=headers)
        ids.append(r.json()["id"])
    script = data / "create.lua"
    script.write_text(LUA % {"ids": ",".join(f'"{i}"' for i in ids), "token": token})
    try:
        time.sleep(1)
        out = subprocess.run(
            [
                "wrk",
                "-t2",
                f"-c{args.connections}",
                f"-d{args.seconds}s",
                "--latency",
                "-s",
                str(script),
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(out)
        metrics = httpx.get(f"{base}/metrics").text
        for line in metrics.splitlines():
            if line.startswith("http_requests_total{") and '/v1/reservations"' in line:
                print(line)
        url = f"postgresql://postgres:@/reservations?host={data / 'postgres'}"
        with psycopg.connect(url) as conn:
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
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
