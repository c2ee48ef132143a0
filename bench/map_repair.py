"""Map repair: what one round of the availability map's repair costs at 10^5 and 10^6
reservations, driven by the outbox (this code) and by rescanning the map (the job before).

`reservations serve --no-worker` (1 worker, so nothing but this script repairs the map) on a
fresh embedded data directory, or the URLs given, only for its PostgreSQL and Valkey: the
repair runs in this process, on a context wired like the worker's (`wiring.build` with the
Redis tier), so its CPU is this process's (`time.process_time`).

**Data**: growth's (bench/growth.py `prepare`/`grow`, COPY in the history job's layout:
30-minute reservations on RESOURCES unit resources, 9 in 10 confirmed, from two years before
the read week to half a year after it). After each size:

1. The repair's position is moved to the outbox's head (the seeding's events are behind it:
   a running worker would have read them as they came).
2. The map is emptied and warmed as if every live confirmed reservation ending after now had
   been booked within the map's TTL: each is marked (`AvailabilityMap.apply`), the most the
   map can hold.
3. `--changes` changes are made in SQL, behind the API (so none reached the map: every one
   is a lost effect to repair): half cancel random confirmed future reservations, half book
   free half-hours of random resources in the 60 days after the seeded ones (deleted again
   after the measurement: growth counts its rows).

Then, measured one after the other:

- **outbox round**: `repair_map_changes` until it has read every new event (batches of
  1,000): events read, (resource, day) entries rebuilt, reservation rows read, CPU of this
  process, PostgreSQL CPU (its process tree), wall time; and EXPLAIN (ANALYZE, BUFFERS) of
  its read of the rows for as many random (resource, future day) windows.
- **rescan round**: the job before (commit ecdf7ca, `repair_map` then), reproduced here from
  the map's and the repository's primitives: the next page of 10,000 entries from a SCAN of
  the map, each resource's rows read from its first to its last day, each day rebuilt in
  its own round trip. A round rebuilt one page; a stale entry waited up to
  ceil(entries / 10,000) + 1 rounds, also reported.

    python -m bench map-repair [--quick] [--out DIR] [--sizes 100000 1000000]
                               [--changes 1000] [--resources 1000]

Full mode: 10^5 and 10^6 rows, 1,000 resources, 1,000 changes (seeding 10^6 rows is most of
its time). Quick: 10^3 and 10^4 rows, 100 resources, 100 changes. Writes map_repair.json and
map_repair.md into --out (default bench/results/); a full run with the default --out
replaces the generated block of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from bench import growth, harness

OLD_PAGE = 10_000  # the old job's entries per round
FULL_SIZES = [100_000, 1_000_000]
QUICK_SIZES = [1_000, 10_000]


# --- the data around the measurement ---------------------------------------------------------


def skip_seeded_events(url: str) -> None:
    """The repair's position to the head of the outbox."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE outbox_position SET after_txid = pg_snapshot_xmin(pg_current_snapshot()),"
            " after_id = 0 WHERE reader = 'availability_map'"
        )


async def warm(svc: Any, url: str) -> int:
    """An empty map, then every live confirmed reservation that ends after now marked; how
    many."""
    from reservations.availability_map import store
    from reservations.reservations.repository import CHANGED
    from reservations.reservations.rows import RangeRow

    tier = svc.redis
    stale = [k async for k in tier.client.scan_iter(match=tier.key("map", "*"), count=1000)]
    for lo in range(0, len(stale), 1000):  # the previous size's entries
        await tier.client.unlink(*stale[lo : lo + 1000])
    marked = 0
    rows_of = psycopg.rows.class_row(RangeRow)
    conn = await psycopg.AsyncConnection.connect(url)
    async with conn, conn.cursor(name="warm", row_factory=rows_of) as cur:
        await cur.execute(
            f"SELECT {CHANGED} FROM reservation WHERE status = 'confirmed' AND NOT pooled"
            " AND upper(during) > now()"
        )
        while rows := await cur.fetchmany(2_000):
            await svc.availability_map.apply(store.changes(rows, live=True))
            marked += len(rows)
    return marked


def change(url: str, lay: growth.Layout, n: int, seed: int) -> dict[str, int]:
    """n/2 cancels of confirmed future reservations and n/2 creates in free half-hours after
    the seeded days, in SQL: their events are written, the map is not told."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM reservation WHERE status = 'confirmed' AND start_at > %s"
                " ORDER BY id LIMIT 200000",
                (now + timedelta(days=1),),
            ).fetchall()
        ]
        cancel = rng.sample(ids, min(len(ids), n // 2))
        cancelled = conn.execute(
            "UPDATE reservation SET status = 'cancelled', version = version + 1,"
            " updated_at = now() WHERE id = ANY(%s)",
            (cancel,),
        ).rowcount
        # After the last day growth fills, so the next size's rows never meet these.
        first = lay.week0 + timedelta(days=growth.FUTURE_DAYS + 1)
        slots = 60 * growth.SLOTS_PER_DAY
        picks = {(rng.choice(lay.bulk), rng.randrange(slots)) for _ in range(4 * n)}
        created = conn.execute(
            "INSERT INTO reservation (id, tenant_id, resource_id, start_at, end_at, during,"
            " status, quantity, created_by, created_at, updated_at)"
            " SELECT gen_random_uuid(), %(tenant)s, c.resource_id, c.s, c.s + %(slot)s,"
            " tstzrange(c.s, c.s + %(slot)s), 'confirmed', 1, %(key)s, now(), now()"
            " FROM unnest(%(rids)s::uuid[], %(starts)s::timestamptz[]) AS c(resource_id, s)"
            " WHERE NOT EXISTS (SELECT 1 FROM reservation r WHERE r.resource_id = c.resource_id"
            " AND r.status IN ('held', 'confirmed') AND NOT r.pooled"
            " AND r.during && tstzrange(c.s, c.s + %(slot)s))"
            " LIMIT %(n)s",
            {
                "tenant": lay.tenant,
                "key": lay.key,
                "slot": growth.SLOT,
                "rids": [rid for rid, _ in picks],
                "starts": [first + k * growth.SLOT for _, k in picks],
                "n": n - cancelled,
            },
        ).rowcount
    return {"cancelled": cancelled, "created": created}


def explain_rows_read(url: str, lay: growth.Layout, n: int, seed: int) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the read a round makes (`live_unit_rows`) for n random
    (resource, future day) windows: its cost beside the table's size."""
    from reservations.availability_map import store
    from reservations.reservations import repository

    rng = random.Random(seed)
    today = (datetime.now(UTC) - store.day_bounds(0)[0]).days
    windows = [
        (rng.choice(lay.bulk), *store.day_bounds(today + rng.randrange(1, growth.FUTURE_DAYS)))
        for _ in range(n)
    ]
    query, params = growth.captured(
        lambda conn: repository.live_unit_rows(conn, windows=windows, now=datetime.now(UTC))
    )
    with psycopg.connect(url, autocommit=True) as conn:
        plan = growth.explain(conn, query, params)["custom"]
    return {k: plan[k] for k in ("execution_ms", "top_buffers", "index_scans", "seq_scans")}


def forget_created(url: str, lay: growth.Layout) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM reservation WHERE tenant_id = %s AND start_at > %s",
            (lay.tenant, lay.week0 + timedelta(days=growth.FUTURE_DAYS)),
        )


# --- the two repairs ---------------------------------------------------------------------------


async def outbox_round(svc: Any) -> dict[str, Any]:
    from reservations.reservations import tasks

    t0, c0 = time.perf_counter(), time.process_time()
    done = await tasks.repair_map_changes(svc, batches=1_000)
    return {
        "events": done.events,
        "entries": done.entries,
        "rows_read": done.rows,
        "wrong": done.wrong,
        "cpu_s": round(time.process_time() - c0, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }


async def rescan_round(svc: Any) -> dict[str, Any]:
    """One round of the job before: a page of OLD_PAGE entries from a SCAN of the map."""
    from reservations.availability_map import store
    from reservations.reservations import repository

    tier, amap = svc.redis, svc.availability_map
    t0, c0 = time.perf_counter(), time.process_time()
    pattern = tier.key("map", "*") + ":m"
    pairs: list[tuple[UUID, int]] = []
    cursor = 0
    while True:
        cursor, batch = await tier.client.scan(cursor, match=pattern, count=1000)
        for raw in batch:
            parts = raw.decode()[len(tier.prefix) :].split(":")
            pairs.append((UUID(parts[1]), int(parts[2])))
        if cursor == 0 or len(pairs) >= OLD_PAGE:
            break
    days: dict[UUID, list[int]] = defaultdict(list)
    for rid, day in pairs:
        days[rid].append(day)
    rows_read = wrong = 0
    now = svc.clock.now()
    for rid, in_use in days.items():
        start = store.day_bounds(min(in_use))[0]
        end = store.day_bounds(max(in_use))[1]
        async with svc.db.connection() as conn:
            rows = await repository.live_unit_rows(conn, windows=[(rid, start, end)], now=now)
        rows_read += len(rows)
        for day in in_use:
            lo, hi = store.day_bounds(day)
            on_day = [r for r in rows if r.during_start < hi and lo < r.during_end]
            wrong += await amap.repair_day(rid, day, on_day) or 0
    return {
        "entries": len(pairs),
        "rows_read": rows_read,
        "wrong": wrong,
        "cpu_s": round(time.process_time() - c0, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
    }


async def map_entries(svc: Any) -> int:
    n = 0
    async for _ in svc.redis.client.scan_iter(match=svc.redis.key("map", "*") + ":m", count=1000):
        n += 1
    return n


def measured(server: harness.Server, step: Any) -> Any:
    """`step(svc)` with the CPU PostgreSQL and Valkey spent during it added to its result."""

    async def run(svc: Any) -> dict[str, Any]:
        pg = server.postgres_master()
        pg0 = harness.postgres_cpu(pg)
        vk0 = sum(harness.cpu_of(server.valkey_processes()).values())
        out: dict[str, Any] = await step(svc)
        out["postgres_cpu_s"] = round(harness.postgres_cpu(pg) - pg0, 3)
        valkey = sum(harness.cpu_of(server.valkey_processes()).values()) - vk0
        out["valkey_cpu_s"] = round(valkey, 3)
        return out

    return run


async def with_context(db_url: str, redis_url: str, work: Any) -> Any:
    from reservations import wiring
    from reservations.config import Settings
    from reservations.kit.clock import Clock
    from reservations.kit.db import Database

    settings = Settings(
        database_url=db_url, redis_url=redis_url, db_pool_min=1, db_pool_max=4, run_worker=False
    )
    db = Database(db_url, settings)
    await db.open()
    try:
        async with wiring.opened(wiring.build(settings, db, Clock(), redis=True)) as svc:
            return await work(svc)
    finally:
        await db.close()


def measure_size(
    server: harness.Server, redis_url: str, lay: growth.Layout, *, changes: int, seed: int
) -> dict[str, Any]:
    clock = harness.timer()
    url = server.db_url
    skip_seeded_events(url)
    marked = asyncio.run(with_context(url, redis_url, lambda svc: warm(svc, url)))
    entries = asyncio.run(with_context(url, redis_url, map_entries))
    print(f"{clock()}   map warmed: {marked:,} reservations, {entries:,} entries", flush=True)
    made = change(url, lay, changes, seed)

    # Every change must be readable (its transaction older than any running one).
    time.sleep(0.5)
    new = asyncio.run(with_context(url, redis_url, measured(server, outbox_round)))
    print(f"{clock()}   outbox round: {new}", flush=True)
    old = asyncio.run(with_context(url, redis_url, measured(server, rescan_round)))
    print(f"{clock()}   rescan round: {old}", flush=True)
    forget_created(url, lay)  # growth counts the rows it has written
    new["sql"] = explain_rows_read(url, lay, changes, seed)
    print(f"{clock()}   its read, EXPLAINed: {new['sql']}", flush=True)
    return {
        "map": {"marked": marked, "entries": entries},
        "changes": made,
        "outbox": new,
        "rescan": {**old, "rounds_for_every_entry": math.ceil(entries / OLD_PAGE) + 1},
    }


# --- report --------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    src = report["source"]
    head = ""
    if report["quick"]:
        head = "**Quick-mode smoke run** (small sizes: not a measurement to quote): "
    lines = [
        head + f"run of {report['when']} (commit {src['commit'][:7]}"
        f"{', src/ with uncommitted changes' if src['src_dirty'] else ''}),"
        f" `{report['command']}`; {report['machine']['cpus']} cores;"
        f" {report['resources']:,} resources; one round after {report['changes']:,} changes"
        " made in SQL (every one a lost effect).",
        "",
        "| rows (live + history) | map entries | repair | events read | entries rebuilt"
        " | rows read | repair CPU | PostgreSQL CPU | Valkey CPU | wall | rounds until every"
        " entry is rebuilt |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in report["sizes"]:
        t = size["table"]
        rows = f"{size['rows']:,} ({t['live_rows']:,} + {t['history_rows']:,})"
        for name, r in (("outbox", size["outbox"]), ("rescan (before)", size["rescan"])):
            events = f"{r['events']:,}" if "events" in r else "-"
            lines.append(
                f"| {rows} | {size['map']['entries']:,} | {name}"
                f" | {events} | {r['entries']:,}"
                f" | {r['rows_read']:,} | {r['cpu_s']:.3f} s | {r['postgres_cpu_s']:.3f} s"
                f" | {r['valkey_cpu_s']:.3f} s | {r['wall_s']:.3f} s"
                f" | {r.get('rounds_for_every_entry', 1)} |"
            )
            rows = ""
    lines += [
        "",
        "The outbox round's read of the rows (`live_unit_rows`), EXPLAIN (ANALYZE, BUFFERS)"
        f" for {report['changes']:,} random (resource, future day) windows:",
        "",
        "| rows (live + history) | execution | buffers | index scans | seq scans |",
        "|---|---|---|---|---|",
    ]
    for size in report["sizes"]:
        q = size["outbox"]["sql"]
        lines.append(
            f"| {size['rows']:,} | {q['execution_ms']} ms | {q['top_buffers']}"
            f" | {q['index_scans']} | {q['seq_scans']} |"
        )
    lines += [
        "",
        "Repair CPU: this process (`time.process_time`), where the worker's loop would spend"
        " it; PostgreSQL: its whole process tree; rescan: one round of the job before (a page"
        f" of {OLD_PAGE:,} entries), which rebuilt every entry only after the rounds shown.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from bench.create import add_common
    from reservations.kit.embedded_valkey import EmbeddedValkey

    parser = argparse.ArgumentParser(
        prog="python -m bench map-repair",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, port=8786)
    parser.add_argument("--sizes", type=int, nargs="+", help="rows per step (10^5 10^6)")
    parser.add_argument("--resources", type=int, help="resources (1,000; quick: 100)")
    parser.add_argument("--changes", type=int, help="changes before the round (1,000; quick: 100)")
    args = parser.parse_args(argv)
    quick = args.quick
    sizes = sorted(args.sizes or (QUICK_SIZES if quick else FULL_SIZES))
    resources = args.resources or (100 if quick else growth.RESOURCES)
    changes = args.changes or (100 if quick else 1_000)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()
    report: dict[str, Any] = {
        "scenario": "map-repair",
        "command": harness.command("map-repair", argv),
        "when": harness.now_utc(),
        "quick": quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "resources": resources,
        "changes": changes,
        "sizes": [],
    }
    data = Path(tempfile.mkdtemp(prefix="rsv-bench-map-repair-"))
    server = harness.start_server(
        port=args.port,
        data=data,
        run_worker=False,
        database_url=args.database_url,
        redis_url=args.redis_url,
    )
    try:
        redis_url = args.redis_url or EmbeddedValkey(data).running_url()
        if redis_url is None:
            raise SystemExit("no Valkey: the server's embedded one is not running")
        print(f"{clock()} server up on {server.base}", flush=True)
        lay = growth.prepare(server, resources=resources)
        for n, size in enumerate(sizes):
            table = growth.grow(server, lay, to=size)
            print(f"{clock()} {size:,} rows: {table}", flush=True)
            step = measure_size(server, redis_url, lay, changes=changes, seed=n)
            report["sizes"].append({"rows": size, "table": table, **step})
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)
    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "map_repair.json", report)
    (out / "map_repair.md").write_text(md)
    print(md, flush=True)
    if not quick and out.resolve() == harness.RESULTS.resolve():
        harness.replace_block(harness.REPO / "BENCHMARKS.md", "map-repair", md)


if __name__ == "__main__":
    main()
