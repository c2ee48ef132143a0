"""Resident memory of the API workers, idle and under load (issue 7, scenario 5).

For `serve --workers 1` and `--workers 2` in turn (embedded PostgreSQL and Valkey on one
fresh data directory, or the URLs given): RSS of every API process (psutil) after start-up
and a few requests ("idle"), then sampled every 0.25 s under load at 32 connections ("load":
peak and mean per worker, warm-up included), then idle again after the load. The load is the
mixed day of `bench mixed-day` (issue 7, scenario 3: 1,000 resources seeded, 80% reads, 15%
creates and holds, 5% confirms, cancels and reschedules), or with `--load create` the create
load of `bench create`. The goal is under 150 MiB resident per worker under load.

    python -m bench memory [--quick] [--out DIR] [--seconds 15] [--load mixed|create]

Writes memory.json, memory.md and memory.png into --out (default bench/results/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import httpx

from bench import harness, mixed_day
from bench.create import Eras, add_common, api_phase

GOAL_MIB = 150.0
CLIENTS = 32
LOADS = {
    "mixed": "the mixed-day scenario's wrk load (bench/mixed_day.py: 80% reads, 15% creates and"
    " holds, 5% confirms, cancels, reschedules)",
    "create": "the create scenario's wrk load (every request a new reservation)",
}


Sampler = harness.RssSampler


def snapshot(server: harness.Server) -> dict[str, Any]:
    workers = server.api_workers()
    every = server.api_processes()
    return {
        "workers_mib": harness.rss_mib(workers),
        "all_api_processes_mib": harness.rss_mib(every),
        "all_api_processes_total_mib": round(sum(harness.rss_mib(every)), 1),
    }


def measure(
    *,
    workers: int,
    port: int,
    data: Path | None,
    clients: int,
    seconds: float,
    warmup: float,
    eras: Eras,
    database_url: str | None,
    redis_url: str | None,
    load_kind: str = "mixed",
    resources: int = mixed_day.RESOURCES,
) -> tuple[dict[str, Any], harness.Server]:
    server = harness.start_server(
        port=port, data=data, workers=workers, database_url=database_url, redis_url=redis_url
    )
    try:
        if load_kind == "mixed":
            seeded = (
                mixed_day.seed(server, resources=resources)
                if data is None
                else mixed_day.Seeded(mixed_day.resource_ids(server), mixed_day.read_week(), 0)
            )
        else:
            ids = (
                harness.create_resources(server, 200, prefix=f"mem{workers}")
                if data is None
                else _resources(server)
            )
        headers = {"Authorization": f"Bearer {server.token}"}
        for _ in range(20):  # every worker has served something before "idle"
            httpx.get(server.base + "/v1/resources?limit=5", headers=headers, timeout=10)
        time.sleep(1)
        idle = snapshot(server)
        sampler = Sampler(server)
        sampler.start()
        if load_kind == "mixed":
            if warmup > 0:
                mixed_day.run_load(
                    server,
                    seeded,
                    clients=clients,
                    seconds=warmup,
                    era=eras.next(),
                    work=server.data,
                )
            load = mixed_day.run_load(
                server, seeded, clients=clients, seconds=seconds, era=eras.next(), work=server.data
            )
            load.pop("ops", None)  # per-kind latencies belong to the mixed-day scenario
        else:
            load = api_phase(
                server, ids, clients=clients, seconds=seconds, warmup=warmup, eras=eras,
                work=server.data,
            )  # fmt: skip
        under = sampler.stop()
        time.sleep(1)
        after = snapshot(server)
    except BaseException:
        server.stop()
        raise
    peaks = [v["peak_mib"] for v in under.values()]
    return {
        "workers": workers,
        "idle": idle,
        "under_load": {
            "per_worker": under,
            "peak_per_worker_mib": max(peaks) if peaks else None,
            "sum_of_worker_peaks_mib": round(sum(peaks), 1),
            "load": {k: v for k, v in load.items() if k != "wrk_output"},
        },
        "after_load": after,
        "goal_mib": GOAL_MIB,
        "goal_reached": bool(peaks) and max(peaks) < GOAL_MIB,
    }, server


def _resources(server: harness.Server) -> list[str]:
    headers = {"Authorization": f"Bearer {server.token}"}
    r = httpx.get(server.base + "/v1/resources?limit=500", headers=headers, timeout=30)
    r.raise_for_status()
    return [item["id"] for item in r.json()["items"]]


def markdown(report: dict[str, Any]) -> str:
    head = ""
    if report["quick"]:
        head = "**Quick-mode smoke run** (tiny durations, not a measurement to quote): "
    lines = [
        head + f"Run of {report['when']} (commit {report['source']['commit'][:7]}"
        f"{', src/ with uncommitted changes' if report['source']['src_dirty'] else ''}),"
        f" `{report['command']}`; {report['machine']['cpus']} cores; load: {LOADS[report['load']]}"
        f" at {report['clients']} connections for {report['seconds']:g} s.",
        "",
        "| `--workers` | idle RSS per worker | peak RSS per worker under load | mean under load"
        " | after load | all API processes idle (incl. supervisor) | req/s during | load 1m |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        u = r["under_load"]
        means = [v["mean_mib"] for v in u["per_worker"].values()]
        lines.append(
            f"| {r['workers']} | {_mib(r['idle']['workers_mib'])}"
            f" | **{_mib(sorted(v['peak_mib'] for v in u['per_worker'].values()))}**"
            f" | {_mib(means)} | {_mib(r['after_load']['workers_mib'])}"
            f" | {r['idle']['all_api_processes_total_mib']:.0f} MiB"
            f" | {u['load'].get('requests_per_s') or 0:,.0f}"
            f" | {u['load']['loadavg_before'][0]:.1f}→{u['load']['loadavg_after'][0]:.1f} |"
        )
    reached = all(r["goal_reached"] for r in report["runs"])
    peak = max((r["under_load"]["peak_per_worker_mib"] or 0) for r in report["runs"])
    lines += [
        "",
        f"**Goal: under {GOAL_MIB:.0f} MiB resident per API worker under load —"
        f" {'reached' if reached else 'not reached'} (highest worker peak {peak:.0f} MiB).**",
    ]
    return "\n".join(lines) + "\n"


def _mib(values: list[float]) -> str:
    return " / ".join(f"{v:.0f}" for v in values) + " MiB" if values else "-"


def plot(report: dict[str, Any], path: Path) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels, idle, peak = [], [], []
    for r in report["runs"]:
        peaks = sorted(v["peak_mib"] for v in r["under_load"]["per_worker"].values())
        for i, (a, b) in enumerate(zip(r["idle"]["workers_mib"], peaks, strict=False)):
            labels.append(f"--workers {r['workers']}\nworker {i + 1}")
            idle.append(a)
            peak.append(b)
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], idle, 0.4, label="idle", color="tab:gray")
    ax.bar([x + 0.2 for x in xs], peak, 0.4, label="peak under load", color="tab:red")
    ax.axhline(GOAL_MIB, color="black", lw=0.8, ls="--", label=f"goal {GOAL_MIB:.0f} MiB")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(
        f"API worker resident memory, {report['load']} load at {report['clients']}"
        " connections" + (" (QUICK SMOKE RUN)" if report["quick"] else ""),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__)
    add_common(parser, port=8772)
    parser.add_argument("--seconds", type=float, help="seconds of load (15)")
    parser.add_argument(
        "--load",
        choices=sorted(LOADS),
        default="mixed",
        help="which load: the mixed day (default) or the create scenario's",
    )
    parser.add_argument(
        "--resources",
        type=int,
        help=f"mixed load: resources ({mixed_day.RESOURCES:,}; quick: 100)",
    )
    args = parser.parse_args(argv)
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    seconds = args.seconds or (2 if args.quick else 15)
    clients = 8 if args.quick else CLIENTS
    warmup = 1 if args.quick else 3
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()
    report: dict[str, Any] = {
        "scenario": "memory",
        "command": harness.command("memory", argv),
        "when": harness.now_utc(),
        "quick": args.quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "load": args.load,
        "clients": clients,
        "seconds": seconds,
        "runs": [],
    }
    eras = Eras()
    data: Path | None = None
    server: harness.Server | None = None
    try:
        for workers in (1, 2):
            run, server = measure(
                workers=workers, port=args.port, data=data, clients=clients, seconds=seconds,
                warmup=warmup, eras=eras, database_url=args.database_url,
                redis_url=args.redis_url, load_kind=args.load,
                resources=args.resources or (100 if args.quick else mixed_day.RESOURCES),
            )  # fmt: skip
            data = server.data
            server.stop(remove=False)
            report["runs"].append(run)
            print(
                f"{clock()} --workers {workers}: idle {run['idle']['workers_mib']} MiB,"
                f" peak under load {run['under_load']['peak_per_worker_mib']} MiB per worker",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop(remove=True)
    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "memory.json", report)
    (out / "memory.md").write_text(md)
    plot(report, out / "memory.png")
    print(md, flush=True)
    if not args.quick and out.resolve() == harness.RESULTS.resolve():
        harness.replace_block(harness.REPO / "BENCHMARKS.md", "memory", md)


if __name__ == "__main__":
    main()
