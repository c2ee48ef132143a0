"""Cancel latency with a long waitlist (issue 16, "One gate for every write").

A cancel promotes the resource's waiting entries that fit the freed range, in the cancel's
request, under the resource's lock. This scenario shows what that costs as the queue grows:
the waitlist is bounded per resource and per key, and a promotion should cost work
proportional to what can be promoted, not to the length of the queue.

One `reservations serve --no-worker` (1 worker; no sweeper and no waitlist job, so every
statement counted is a request's) on a fresh embedded data directory, started twice when
statements are counted (the first start turns on `pg_stat_statements`, effective from the
next). Four booker keys are made with `reservations keys create`. The waitlist's bounds are
raised by environment so that the largest queue fits: RESERVATIONS_WAITLIST_MAX_PER_RESOURCE
= the largest N (a promotion then reads every entry), RESERVATIONS_WAITLIST_MAX_PER_KEY = all
entries of the run divided among the keys. For each N of `--entries` (0, 100, 1000; quick: 0,
50), on a resource of its own:

1. **seed**: a confirmed reservation covers the whole day 2031-06-02; N entries join the
   waitlist (POST /v1/waitlist, the booker keys in turn), all for 10:00-11:00 of that day, so
   none can be promoted. The latency of each join is kept (a join promotes, too). With
   `--seed sql` the same rows are written by one INSERT instead (for code whose every join
   tries each entry, as a cancel does: 1,000 joins through the API cost ~N^2/2 tries there).
2. **cancels of other reservations**: `--warmup` + `--pairs` reservations are booked (30
   minutes each, from 2031-06-09, ranges nobody waits for) and then cancelled one at a time;
   the first `--warmup` cancels are not measured. Per cancel: p50/p99 latency, API and
   PostgreSQL CPU (psutil, over the measured cancels), statements (pg_stat_statements,
   BEGIN/SAVEPOINT/COMMIT included). No entry may be promoted by them.
3. **freeing cancels**: the day's reservation is cancelled, which frees the range every
   entry waits for; the first entry gets a hold and the others stay blocked by it. Then that
   hold is cancelled, promoting the next, `--frees` times in all (at most N; one for N = 0).
   Each must promote exactly one entry; its latency and statements are kept (its CPU is not:
   one cancel is too short for psutil's clock ticks).

`--src PATH` puts PATH first on the server's PYTHONPATH, to measure other code with the same
client (e.g. a checkout from before a change: `--src ../wt-old/src`). Code without the
waitlist's bounds ignores their variables. Its results are written under a name with
`--tag` (default: the name of the directory that holds PATH).

    python -m bench waitlist-cancel [--quick] [--out DIR] [--entries 0 100 1000]
                                    [--pairs 200] [--frees 5] [--seed api|sql]
                                    [--src PATH [--tag NAME]]

Writes waitlist_cancel[_TAG].json and .md into --out (default bench/results/) and, with
matplotlib, a .png with every run of the same mode found there (new and old code side by
side). No wrk needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg

from bench import harness

DAY = datetime(2031, 6, 2, tzinfo=UTC)  # taken all day by one confirmed reservation
WAIT = (DAY + timedelta(hours=10), DAY + timedelta(hours=11))  # what every entry waits for
PAIRS_FROM = DAY + timedelta(days=7)  # pair k books [PAIRS_FROM + k h, + 30 min)
KEYS = 4

Server = harness.Server


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


# --- the server and its keys ---------------------------------------------------------------


def server_env(*, entries: list[int], src: Path | None) -> dict[str, str]:
    env = {
        "RESERVATIONS_WAITLIST_MAX_PER_RESOURCE": str(max(1, *entries)),
        "RESERVATIONS_WAITLIST_MAX_PER_KEY": str(max(1, math.ceil(sum(entries) / KEYS))),
    }
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p
        )
    return env


def code_of(src: Path | None) -> dict[str, Any]:
    """Which code the server ran: this checkout's (harness.source) or the one at `src`."""
    if src is None:
        return {"src": str(harness.REPO / "src"), **harness.source()}

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, cwd=src
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "src": str(src),
        "commit": git("rev-parse", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", ".")),
    }


def start(data: Path, port: int, env: dict[str, str]) -> Server:
    return harness.start_server(port=port, data=data, run_worker=False, env=env)


def booker_keys(server: Server, count: int) -> list[str]:
    keys = []
    for i in range(count):
        out = subprocess.run(
            [sys.executable, "-m", "reservations", "keys", "create", "--tenant", "default",
             "--role", "booker", "--label", f"bench-waitlist-{i}"],
            env=server.env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        keys.append(out.strip().splitlines()[-1].strip())
    return keys


def entry_counts(server: Server, rid: str) -> dict[str, int]:
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT status, count(*) FROM waitlist_entry WHERE resource_id = %s GROUP BY status",
            (rid,),
        ).fetchall()
    return {str(s): int(n) for s, n in rows}


def live_hold(server: Server, rid: str) -> str:
    """The hold a promotion made and nobody has cancelled yet."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT w.reservation_id FROM waitlist_entry w JOIN reservation r"
            " ON r.id = w.reservation_id AND r.resource_id = w.resource_id"
            " WHERE w.resource_id = %s AND r.status = 'held'",
            (rid,),
        ).fetchone()
    if row is None:
        raise SystemExit(f"no promoted hold on resource {rid}")
    return str(row[0])


# --- measuring -----------------------------------------------------------------------------


class Api:
    """The admin's client, timing each request."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.client = httpx.Client(
            base_url=server.base,
            timeout=120,
            headers={"Authorization": f"Bearer {server.token}"},
        )

    def post(self, path: str, body: dict[str, Any] | None = None, **kw: Any) -> tuple[Any, float]:
        t0 = time.perf_counter()
        r = self.client.post(path, json=body, **kw)
        ms = (time.perf_counter() - t0) * 1000
        if r.status_code not in (200, 201):
            raise SystemExit(f"POST {path}: {r.status_code} {r.text[:500]}")
        return r.json(), ms

    def book(self, rid: str, start: datetime, end: datetime) -> tuple[str, float]:
        body = {"resource_id": rid, "start": iso(start), "end": iso(end)}
        reply, ms = self.post("/v1/reservations", body)
        return reply["id"], ms

    def cancel(self, reservation_id: str) -> float:
        return self.post(f"/v1/reservations/{reservation_id}/cancel")[1]


class Meter:
    """CPU (harness.CpuMeter) and statements (pg_stat_statements, if on) over a phase."""

    def __init__(self, server: Server, *, statements: bool) -> None:
        self.server, self.statements = server, statements
        self.cpu = harness.CpuMeter(server)
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Meter:
        if self.statements:
            harness.reset_statements(self.server.db_url)
        self.cpu.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu.__exit__(*exc)
        self.result = {"cpu": self.cpu.result}
        if self.statements:
            self.result["statements"] = harness.statement_totals(self.server.db_url)

    def per(self, n: int) -> dict[str, Any]:
        """CPU ms and statements per operation of the phase."""
        cpu = self.result["cpu"]["cpu_s"]
        stmts = self.result.get("statements")
        return {
            "api_cpu_ms": round(cpu["api"] * 1000 / n, 2) if n else None,
            "postgres_cpu_ms": round(cpu["postgres"] * 1000 / n, 2) if n else None,
            "statements": round(stmts["calls"] / n, 1) if stmts and n else None,
        }


def seed_sql(server: Server, keys: list[str], rid: str, entries: int) -> None:
    """The rows `entries` joins would write, in one INSERT: the keys in turn, a microsecond
    apart (promotion takes them in created_at order)."""
    from reservations.kit.ids import uuid7_beside

    resource = UUID(rid)
    with psycopg.connect(server.db_url) as conn:
        owners = [harness.tenant_and_key(conn, k) for k in keys]
        conn.execute(
            "INSERT INTO waitlist_entry (id, tenant_id, resource_id, start_at, end_at, quantity,"
            " hold_seconds, status, created_by, created_at, updated_at)"
            " SELECT id, %s, %s, %s, %s, 1, 900, 'waiting', (%s::uuid[])[1 + (n - 1) %% %s],"
            " now() + n * interval '1 microsecond', now() + n * interval '1 microsecond'"
            " FROM unnest(%s::uuid[]) WITH ORDINALITY AS x(id, n)",
            (owners[0][0], resource, WAIT[0], WAIT[1], [key for _, key in owners], len(owners),
             [uuid7_beside(resource) for _ in range(entries)]),
        )  # fmt: skip
        conn.execute("ANALYZE waitlist_entry")


def seed(server: Server, keys: list[str], rid: str, entries: int) -> list[float]:
    """`entries` joins, the keys in turn; the latency of each."""
    latencies: list[float] = []
    if not entries:
        return latencies
    body = {"resource_id": rid, "start": iso(WAIT[0]), "end": iso(WAIT[1])}
    clients = [
        httpx.Client(base_url=server.base, timeout=120, headers={"Authorization": f"Bearer {k}"})
        for k in keys
    ]
    try:
        for i in harness.progress(range(entries), total=entries, label=f"{entries} joins"):
            t0 = time.perf_counter()
            r = clients[i % len(clients)].post("/v1/waitlist", json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 201 or r.json()["status"] != "waiting":
                raise SystemExit(f"join {i}: {r.status_code} {r.text[:500]}")
    finally:
        for c in clients:
            c.close()
    return latencies


def cancels(
    api: Api, rid: str, *, pairs: int, warmup: int, statements: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Book `warmup + pairs` reservations nobody waits for, cancel them one by one; the
    books' and the measured cancels' figures."""
    ids, book_ms = [], []
    with Meter(api.server, statements=False) as booked:
        for k in range(warmup + pairs):
            start = PAIRS_FROM + timedelta(hours=k)
            rid_k, ms = api.book(rid, start, start + timedelta(minutes=30))
            ids.append(rid_k)
            book_ms.append(ms)
    for reservation_id in ids[:warmup]:
        api.cancel(reservation_id)
    with Meter(api.server, statements=statements) as cancelled:
        cancel_ms = [api.cancel(reservation_id) for reservation_id in ids[warmup:]]
    book = {**harness.percentiles(book_ms), **booked.per(len(book_ms)), "phase": booked.result}
    cancel = {**harness.percentiles(cancel_ms), **cancelled.per(pairs), "phase": cancelled.result}
    return book, cancel


def frees(
    api: Api, rid: str, blocker: str, *, times: int, entries: int, statements: bool
) -> dict[str, Any]:
    """Cancel what holds the waited-for range, `times` times: first the day's reservation,
    then each hold the previous cancel's promotion made. Each promotes exactly one entry."""
    latencies, per_cancel = [], []
    holder = blocker
    for i in range(times):
        before = entry_counts(api.server, rid).get("promoted", 0)
        with Meter(api.server, statements=statements) as m:
            latencies.append(api.cancel(holder))
        after = entry_counts(api.server, rid)
        gained = after.get("promoted", 0) - before
        if gained != (1 if i < entries else 0):
            raise SystemExit(f"freeing cancel {i + 1} promoted {gained} entries: {after}")
        # No CPU per single cancel: 10 ms ticks, and the checks' own connections end beside it.
        stmts = m.per(1)["statements"]
        per_cancel.append({"ms": round(latencies[-1], 3), "statements": stmts, "promoted": gained})
        if i + 1 < times:
            holder = live_hold(api.server, rid)
    return {**harness.percentiles(latencies), "cancels": per_cancel}


def level(
    api: Api,
    keys: list[str],
    *,
    entries: int,
    pairs: int,
    warmup: int,
    times: int,
    stmts: bool,
    by_sql: bool,
) -> dict[str, Any]:
    clock = harness.timer()
    rid = api.post("/v1/resources", {"name": f"waitlist-{entries}"})[0]["id"]
    blocker, _ = api.book(rid, DAY, DAY + timedelta(days=1))
    if by_sql:
        seed_sql(api.server, keys, rid, entries)
    joins = [] if by_sql else seed(api.server, keys, rid, entries)
    seeded = entry_counts(api.server, rid)
    if seeded.get("waiting", 0) != entries:
        raise SystemExit(f"{entries} joins, but the waitlist holds {seeded}")
    tenth = joins[-max(1, entries // 10) :] if joins else []
    print(f"{clock()} {entries} entries waiting; {pairs} book + cancel pairs", flush=True)
    book, cancel = cancels(api, rid, pairs=pairs, warmup=warmup, statements=stmts)
    after = entry_counts(api.server, rid)
    if after != seeded:
        raise SystemExit(f"cancels of other ranges changed the waitlist: {seeded} -> {after}")
    freed = frees(api, rid, blocker, times=times, entries=entries, statements=stmts)
    result = {
        "entries": entries,
        "resource_id": rid,
        "join": harness.percentiles(joins),
        "join_last_tenth": harness.percentiles(tenth),
        "book": book,
        "cancel": cancel,
        "freeing_cancel": freed,
        "waitlist_after": entry_counts(api.server, rid),
    }
    print(
        f"{clock()} N={entries}: join (last tenth) p50 {result['join_last_tenth']['p50_ms']} ms;"
        f" cancel p50 {cancel['p50_ms']} ms, p99 {cancel['p99_ms']} ms, API CPU"
        f" {cancel['api_cpu_ms']} ms, PostgreSQL CPU {cancel['postgres_cpu_ms']} ms,"
        f" statements {cancel['statements']} per cancel; freeing cancels {freed['p50_ms']} ms"
        f" (p50 of {freed['n']})",
        flush=True,
    )
    return result


# --- report --------------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def label(report: dict[str, Any]) -> str:
    return report["tag"] or "this checkout"


def markdown(reports: list[dict[str, Any]]) -> str:
    """One row per run and N; `reports` are this run and the others of its mode in --out."""
    lines = []
    for r in reports:
        code = r["code"]
        quick = "**quick-mode smoke run** (not a measurement to quote), " if r["quick"] else ""
        lines.append(
            f"- {label(r)}: {quick}run of {r['when']}, code at `{code['src']}`"
            f" (commit {code['commit'][:7]}"
            f"{', with uncommitted changes' if code['src_dirty'] else ''}), `{r['command']}`;"
            f" {r['machine']['cpus']} cores, load average {r['loadavg_before'][0]:.1f} at the"
            " start."
        )
    lines += [
        "",
        "| code | waiting entries | join p50 / p99 ms (last tenth) | cancel p50 ms | cancel p99 ms"
        " | API CPU ms / cancel | PostgreSQL CPU ms / cancel | statements / cancel"
        " | freeing cancel p50 / max ms (n) | statements / freeing cancel |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in reports:
        for lv in r["levels"]:
            c, j, f = lv["cancel"], lv["join_last_tenth"], lv["freeing_cancel"]
            fs = [x["statements"] for x in f["cancels"] if x["statements"] is not None]
            joined = f"{_ms(j['p50_ms'])} / {_ms(j['p99_ms'])}"
            if r["settings"]["seed"] == "sql" and lv["entries"]:
                joined = "(seeded by SQL)"
            lines.append(
                f"| {label(r)} | {lv['entries']:,} | {joined}"
                f" | {_ms(c['p50_ms'])} | {_ms(c['p99_ms'])} | {_ms(c['api_cpu_ms'])}"
                f" | {_ms(c['postgres_cpu_ms'])} | {_ms(c['statements'])}"
                f" | {_ms(f['p50_ms'])} / {_ms(f['max_ms'])} ({f['n']})"
                f" | {_ms(sum(fs) / len(fs)) if fs else '-'} |"
            )
    return "\n".join(lines) + "\n"


def plot(reports: list[dict[str, Any]], path: Path) -> None:
    plt = harness.pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(reports):
        xs = [lv["entries"] for lv in r["levels"]]
        pos = list(range(len(xs)))
        color = f"C{i}"
        for key, style in (("p50_ms", "o-"), ("p99_ms", "v--")):
            ax1.plot(pos, [lv["cancel"][key] for lv in r["levels"]], style, color=color,
                     label=f"{label(r)}, {key[:3]}")  # fmt: skip
        ax2.plot(pos, [lv["freeing_cancel"]["p50_ms"] for lv in r["levels"]], "o-", color=color,
                 label=f"{label(r)}, p50")  # fmt: skip
        for ax in (ax1, ax2):
            ax.set_xticks(pos, [f"{x:,}" for x in xs])
    ax1.set_title("Cancel of another range (promotes nothing)", fontsize=10)
    ax2.set_title("Cancel that frees the waited-for range (promotes one)", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_yscale("log")
        ax.set_xlabel("waiting entries on the resource")
        ax.set_ylabel("ms")
        ax.legend(fontsize=8)
    quick = reports[0]["quick"]
    fig.suptitle(("QUICK SMOKE RUN — " if quick else "") + reports[0]["when"], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", flush=True)


def runs_beside(out: Path, report: dict[str, Any], stem: str) -> list[dict[str, Any]]:
    """This run first, then the other runs of the same mode whose JSON is in `out`."""
    found = [report]
    for path in sorted(out.glob("waitlist_cancel*.json")):
        if path.stem == stem:
            continue
        try:
            other = json.loads(path.read_text())
        except ValueError:
            continue
        if other.get("scenario") == "waitlist-cancel" and other.get("quick") == report["quick"]:
            found.append(other)
    return found


# --- main ----------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    from bench.create import add_common

    parser = argparse.ArgumentParser(
        prog="python -m bench waitlist-cancel",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, port=8786)
    parser.add_argument("--entries", type=int, nargs="+", help="waitlist lengths (0 100 1000)")
    parser.add_argument("--pairs", type=int, help="measured book + cancel pairs per length (200)")
    parser.add_argument("--warmup", type=int, help="unmeasured pairs before them (10)")
    parser.add_argument("--frees", type=int, help="freeing cancels per length (5)")
    parser.add_argument(
        "--seed",
        choices=("api", "sql"),
        default="api",
        help="join through the API (default; join latencies measured) or write the same rows"
        " with one INSERT (for code whose joins cost as much as a cancel: 1,000 joins are"
        " quadratic there)",
    )
    parser.add_argument("--src", type=Path, help="put this source directory first on the"
                        " server's PYTHONPATH (other code, same client)")  # fmt: skip
    parser.add_argument("--tag", help="results name suffix (default with --src: its parent's)")
    parser.add_argument(
        "--statements",
        action=argparse.BooleanOptionalAction,
        help="count statements with pg_stat_statements (one more server start; default: on,"
        " off with --quick)",
    )
    args = parser.parse_args(argv)
    if args.database_url or args.redis_url:
        raise SystemExit("waitlist-cancel runs on its own embedded servers (it restarts them)")
    if args.src is not None:
        args.src = args.src.resolve()
        if not (args.src / "reservations" / "__init__.py").is_file():
            raise SystemExit(f"--src {args.src}: no reservations package there")
    if args.tag is None and args.src is not None:
        args.tag = args.src.parent.name
    if args.tag and not re.fullmatch(r"[\w.-]+", args.tag):
        raise SystemExit(f"--tag {args.tag!r}: letters, digits, '.', '-' and '_' only")
    return args


def prepare(data: Path, port: int, env: dict[str, str], *, statements: bool) -> tuple[Server, bool]:
    """The first start makes the cluster; with `statements` it asks for pg_stat_statements
    and the server is started again so that it loads. Returns the server and whether
    statements are counted."""
    server = start(data, port, env)
    if not statements:
        return server, False
    try:
        harness.preload_pg_stat_statements(server.db_url)
    finally:
        server.stop(remove=False)
    server = start(data, port, env)
    if not harness.reset_statements(server.db_url):
        print("no pg_stat_statements; statements not counted", flush=True)
        return server, False
    return server, True


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    quick = args.quick
    entries = args.entries or ([0, 50] if quick else [0, 100, 1000])
    pairs = args.pairs or (20 if quick else 200)
    warmup = args.warmup if args.warmup is not None else (3 if quick else 10)
    times = args.frees or (2 if quick else 5)
    statements = not quick if args.statements is None else args.statements
    env = server_env(entries=entries, src=args.src)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    stem = "waitlist_cancel" + (f"_{args.tag}" if args.tag else "")
    report: dict[str, Any] = {
        "scenario": "waitlist-cancel",
        "command": harness.command("waitlist-cancel", argv),
        "when": harness.now_utc(),
        "quick": quick,
        "tag": args.tag,
        "machine": harness.machine(),
        "source": harness.source(),
        "code": code_of(args.src),
        "server": "reservations serve --no-worker --workers 1, embedded PostgreSQL and Valkey",
        "env": env,
        "keys": KEYS,
        "waited_for": [iso(t) for t in WAIT],
        "settings": {
            "entries": entries,
            "pairs": pairs,
            "warmup": warmup,
            "frees": times,
            "seed": args.seed,
        },
        "pg_stat_statements": statements,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
        "levels": [],
    }
    data = Path(tempfile.mkdtemp(prefix="rsv-bench-waitlist-"))
    try:
        server, statements = prepare(data, args.port, env, statements=statements)
        report["pg_stat_statements"] = statements
        try:
            keys = booker_keys(server, KEYS)
            api = Api(server)
            for n in entries:
                report["levels"].append(
                    level(api, keys, entries=n, pairs=pairs, warmup=warmup,
                          times=max(1, min(times, n)), stmts=statements,
                          by_sql=args.seed == "sql")
                )  # fmt: skip
            api.client.close()
        finally:
            server.stop(remove=False)
    finally:
        shutil.rmtree(data, ignore_errors=True)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    runs = runs_beside(out, report, stem)
    md = markdown(runs)
    report["markdown"] = markdown([report])
    harness.write_json(out / f"{stem}.json", report)
    (out / f"{stem}.md").write_text(md)
    plot(runs, out / f"{stem}.png")
    print(md, flush=True)


if __name__ == "__main__":
    main()
