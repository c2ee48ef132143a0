"""The benchmark harness runs end to end (issue 7's quick mode): `python -m bench SCENARIO
--quick` for create, memory, mixed-day, hot-slot and growth starts its own server on a fresh
embedded data directory, drives it with wrk (and pgbench, or its own clients), exits 0 and
writes its results. Nothing here asserts a time or a rate: those belong in BENCHMARKS.md, not
in a test. What is asserted are the facts a run must show whatever the machine: every
request of a non-conflicting load succeeded, one winner per race, no deadlocks, the map (or
the database) refused what it should, the tables hold the rows asked for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.live import free_port

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
    port = ("--port", str(free_port()))
    done = subprocess.run(
        # A port of its own: a benchmark running beside the suite keeps its default port.
        [sys.executable, "-m", "bench", *args, "--quick", "--out", str(out), *port],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"exit {done.returncode}\n{tail}"
    return json.loads((out / f"{args[0].replace('-', '_')}.json").read_text())


def test_create_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("create", out=tmp_path)

    assert report["quick"] is True
    assert {"command", "when", "machine", "source", "points", "variants", "goal"} <= set(report)
    assert [p["clients"] for p in report["points"]] == [1, 8]
    # The bare ceiling: replica mode where the role may set it (the embedded superuser), else
    # a copy of the table.
    assert report["bare_setup"]["mode"] in ("replica", "copy")
    for point in report["points"]:
        api, pgbench, bare = point["api"], point["pgbench"], point["bare"]
        assert {"requests_per_s", "p50_ms", "p99_ms", "cpu_share", "loadavg_before"} <= set(api)
        assert {"client", "api", "postgres", "valkey"} <= set(api["cpu_share"])
        assert api["requests_per_s"] > 0
        # Non-conflicting bookings: every create through the API was accepted.
        assert api["non_2xx"] == 0, api["by_status"]
        # CPU per create, over the creates /metrics counted.
        assert api["ops"] == api["by_status"]["201"]
        assert {"api", "postgres", "valkey"} <= set(api["cpu_ms_per_op"])
        for phase in (pgbench, bare):
            assert {"tps", "p50_ms", "p99_ms", "cpu_share", "failed", "cpu_ms_per_op"} <= set(phase)
            assert phase["tps"] > 0
            assert phase["failed"] == 0
            assert phase["ops"] == phase["transactions"]
        # With triggers, the outbox trigger wrote one event per transaction; bare, none.
        assert (pgbench["kind"], bare["kind"]) == ("with_triggers", "bare")
        assert pgbench["events_written"] == pgbench["transactions"]
        assert bare["events_written"] == 0
        assert point["ratio_bare"] > 0
        assert point["ratio_triggers"] > 0
    assert report["variants"][0]["api"]["workers"] == 2
    assert report["goal"]["evaluated"] is False  # the quick mode has no 32-client point
    assert report["goal"]["ratio_goal"] == 0.06
    md = (tmp_path / "create.md").read_text()
    assert "| clients | API req/s" in md
    assert "| bare tps |" in md
    assert "| API / bare | API / with-triggers |" in md
    assert "`--workers 2`" in md
    assert "PostgreSQL CPU ≤ 0.5 ms per create" in md


def test_memory_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("memory", out=tmp_path)

    assert [r["workers"] for r in report["runs"]] == [1, 2]
    for run in report["runs"]:
        assert len(run["idle"]["workers_mib"]) == run["workers"]
        assert len(run["under_load"]["per_worker"]) == run["workers"]
        assert run["under_load"]["peak_per_worker_mib"] > 0
        assert isinstance(run["goal_reached"], bool)
    assert "per worker" in (tmp_path / "memory.md").read_text()


def test_mixed_day_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("mixed-day", out=tmp_path)

    load = report["load"]
    assert report["quick"] is True
    assert report["seeded_reservations"] > 0
    assert load["requests_per_s"] > 0
    # Every write names a free range or a reservation and version it holds: all succeed.
    assert load["non_2xx"] == 0, load["by_route"]
    assert load["database"]["deadlocks"] == 0
    ops = load["ops"]
    assert set(ops) == {"availability", "list_resource", "list_tenant", "create", "hold",
                        "confirm", "cancel", "reschedule"}  # fmt: skip
    for kind in ("availability", "list_resource", "create", "hold"):  # the frequent kinds
        assert ops[kind]["n"] > 0, kind
        assert ops[kind]["p99_ms"] is not None
    for kind, o in ops.items():
        assert set(o["statuses"]) <= {"200", "201"}, (kind, o["statuses"])
    # Each reply was attributed to its kind through the echoed X-Request-ID.
    attributed = sum(o["n"] for o in ops.values())
    assert abs(attributed - load["requests"]) <= load["clients"], (attributed, load["requests"])
    assert {"client", "api", "postgres", "valkey"} <= set(load["cpu_share"])
    assert report["memory"]["idle_mib"] > 0
    assert report["memory"]["peak_mib"] >= report["memory"]["idle_mib"] * 0.9
    assert "| kind | share |" in (tmp_path / "mixed_day.md").read_text()


def test_hot_slot_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("hot-slot", "--bursts", "5", out=tmp_path)

    assert [p["map"] for p in report["phases"]] == ["on", "off"]
    for phase in report["phases"]:
        assert phase["deadlocks"] == 0
        assert phase["server_5xx"] == 0
        [point] = phase["points"]
        assert point["clients"] == 16
        race, taken = point["race"], point["taken"]
        assert race["bursts"] == 5
        # Sixteen creates of one free range at once: exactly one wins, the rest get 409.
        assert race["winners_per_burst"] == {"1": 5}
        assert race["statuses"] == {"201": 5, "409": 75}
        assert taken["rejections"] > 0
        assert taken["accepted"] == 0
        # Refused before the insert: by the map, or (map off, or Redis too slow to answer on a
        # loaded machine: see map_decisions) by the database's pre-check.
        by_map, by_precheck = taken["rejected_by_map"], taken["rejected_by_database_precheck"]
        assert by_map + by_precheck == taken["rejections"]
        if phase["map"] == "on":
            assert by_map > 0
        else:
            assert by_map == 0
    assert report["goal"]["zero_deadlocks"] is True
    assert "exactly 1 winner" in (tmp_path / "hot_slot.md").read_text()


def test_growth_quick_writes_results(tmp_path: Path) -> None:
    report = run_bench("growth", "--sizes", "1000", "10000", "--requests", "10", out=tmp_path)

    assert [s["rows"] for s in report["sizes"]] == [1000, 10000]
    for size in report["sizes"]:
        table = size["table"]
        assert table["live_rows"] + table["history_rows"] == size["rows"]
        assert table["history_rows"] > 0  # ended rows sit behind the horizon, as the job puts them
        api = size["api"]
        # The probe resource holds the same rows at every size: same answers.
        assert api["list_resource"]["items_returned"] == 14
        assert api["get_by_id"]["items_returned"] == 1
        assert api["list_tenant_first"]["items_returned"] == 50
        for name in ("list_resource", "list_tenant", "list_tenant_first", "get_by_id",
                     "availability"):  # fmt: skip
            assert api[name]["n"] >= 10
            plans = size["explain"][name]
            assert plans["custom"]["execution_ms"] is not None, name
            assert "error" not in plans["generic"], plans["generic"]
        # A resource's list prunes the live table to that resource's partition.
        assert size["explain"]["list_resource"]["generic"]["subplans_removed"] >= 15
        if report["pg_stat_statements"]:
            assert api["availability"]["statements"]["calls"] > 0
    assert report["goal"]["evaluated"] is True
    assert "| rows (live + history) |" in (tmp_path / "growth.md").read_text()


def test_shards_quick_books_on_every_cluster(tmp_path: Path) -> None:
    report = run_bench("shards", out=tmp_path)

    runs = report["runs"]
    assert [r["shards"] for r in runs] == [1, 2, 3]
    for run in runs:
        assert run["non_2xx"] == 0  # non-conflicting creates: every one a 201
        assert len(run["rows_per_cluster"]) == run["shards"]
        assert all(n > 0 for n in run["rows_per_cluster"].values()), run["rows_per_cluster"]
        for kind, booked in run["bookings"].items():
            assert set(booked["statuses"]) == {"201"}, (kind, booked["statuses"])
    assert "across_clusters" not in runs[0]["bookings"]
    assert all("across_clusters" in r["bookings"] for r in runs[1:])


def test_waitlist_cancel_quick_spends_no_statement_per_blocked_entry(tmp_path: Path) -> None:
    report = run_bench("waitlist-cancel", "--statements", out=tmp_path)

    empty, queued = report["levels"]
    assert (empty["entries"], queued["entries"]) == (0, 50)
    assert queued["join"]["n"] == 50  # every join through the API was a 201, still waiting
    for lv in (empty, queued):
        assert lv["cancel"]["n"] == 20
        assert lv["cancel"]["p99_ms"] is not None
    # The cancels of other ranges promoted nothing; each freeing cancel promoted exactly the
    # next in line (the scenario stops otherwise), and the rest kept waiting behind its hold.
    assert [c["promoted"] for c in queued["freeing_cancel"]["cancels"]] == [1, 1]
    assert queued["waitlist_after"] == {"waiting": 48, "promoted": 2}
    assert [c["promoted"] for c in empty["freeing_cancel"]["cancels"]] == [0]
    # A cancel reads the queue and the live rows once whatever their number: 50 entries that
    # cannot be promoted cost no statement each (the code before issue 16 spent four on each,
    # a savepoint and an INSERT among them: 200 more per cancel).
    assert report["pg_stat_statements"] is True
    assert queued["cancel"]["statements"] - empty["cancel"]["statements"] < 10
    assert "| waiting entries |" in (tmp_path / "waitlist_cancel.md").read_text()


def test_map_repair_quick_reads_the_changes_not_the_tables(tmp_path: Path) -> None:
    report = run_bench("map-repair", out=tmp_path)

    small, large = report["sizes"]
    assert (small["rows"], large["rows"]) == (1_000, 10_000)
    for size in (small, large):
        made = size["changes"]["cancelled"] + size["changes"]["created"]
        assert made > 0
        outbox = size["outbox"]
        # One round read every change made behind the API and nothing else; each touched
        # entry was rebuilt once (some changes share a day), reading the rows of those days.
        assert outbox["events"] == made
        assert 0 < outbox["entries"] <= made
        assert outbox["wrong"] >= made
        assert outbox["rows_read"] <= 2 * made
    # The rescan (the job before) visits what the map holds, ten times more at ten times the
    # rows; the outbox round does not grow with them.
    assert large["rescan"]["entries"] > 5 * small["rescan"]["entries"]
    assert large["outbox"]["rows_read"] <= 2 * report["changes"]
    assert (
        "| rows (live + history) | map entries | repair |"
        in (tmp_path / "map_repair.md").read_text()
    )
