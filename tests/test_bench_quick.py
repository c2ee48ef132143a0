"""The benchmark harness runs end to end (issue 7's quick mode): `python -m bench create
--quick` and `python -m bench memory --quick` start their own server on a fresh embedded data
directory, drive it with wrk (and pgbench), exit 0 and write their results. Nothing here
asserts a time or a rate: those belong in BENCHMARKS.md, not in a test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("wrk") is None,
        reason="needs wrk, the benchmark load generator (apt-get install wrk)",
    ),
    pytest.mark.skipif(
        bool(os.environ.get("TEST_DATABASE_URL")),
        reason="the harness always runs on its own embedded servers: it runs in the suite"
        " without TEST_DATABASE_URL, not again in the run against external servers",
    ),
]


def run_bench(*args: str, out: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"exit {done.returncode}\n{tail}"
    return json.loads((out / f"{args[0]}.json").read_text())


def test_create_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("create", out=tmp_path)

    assert report["quick"] is True
    assert {"command", "when", "machine", "source", "points", "variants", "goal"} <= set(report)
    assert [p["clients"] for p in report["points"]] == [1, 8]
    for point in report["points"]:
        api, pgbench = point["api"], point["pgbench"]
        assert {"requests_per_s", "p50_ms", "p99_ms", "cpu_share", "loadavg_before"} <= set(api)
        assert {"client", "api", "postgres", "valkey"} <= set(api["cpu_share"])
        assert api["requests_per_s"] > 0
        # Non-conflicting bookings: every create through the API was accepted.
        assert api["non_2xx"] == 0, api["by_status"]
        assert {"tps", "p50_ms", "p99_ms", "cpu_share", "failed"} <= set(pgbench)
        assert pgbench["tps"] > 0
        assert pgbench["failed"] == 0
    assert report["variants"][0]["api"]["workers"] == 2
    assert report["goal"]["evaluated"] is False  # the quick mode has no 32-client point
    md = (tmp_path / "create.md").read_text()
    assert "| clients | API req/s" in md
    assert "`--workers 2`" in md


def test_memory_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("memory", out=tmp_path)

    assert [r["workers"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert len(run["idle"]["workers_mib"]) == run["workers"]
        assert len(run["under_load"]["per_worker"]) == run["workers"]
        assert run["under_load"]["peak_per_worker_mib"] > 0
        assert isinstance(run["goal_reached"], bool)
    assert "per worker" in (tmp_path / "memory.md").read_text()
