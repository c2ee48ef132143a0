"""Peers (issue 7, scenario 6): the create load of bench/create.py against a published booking
API run on this machine, pretix, in the same run as ours, on the same PostgreSQL server.

1. pretix (PRETIX_VERSION, from PyPI, with gunicorn) is installed into its own venv under
   the cache directory (~/.cache/reservations-bench/pretix-VERSION; reused when present),
   never into this project's environment; none of its code is in this repository.
2. `reservations serve` starts as in every scenario (embedded PostgreSQL and Valkey on a
   fresh data directory). pretix gets a database `pretix` on that same PostgreSQL and Valkey
   database 1 as its Redis; a pretix.cfg written here (no mail server, no Celery broker, so
   pretix runs its tasks eagerly in the request, as its docs allow); `migrate`; then a
   Django shell script written here creates an organizer, one event with 1,000 products (20
   with --quick) each with its own quota of 1,000,000 (many resources, creates that never
   conflict), one product with a quota of 1 per race burst, and a team API token with every
   permission.
3. pretix runs under gunicorn (sync workers, as its install guide shows) with as many worker
   processes as our API gets: 1, then 2 (`serve --workers 2` on the same data).
4. For each worker count and client count (32 and 8): wrk (2 threads) POSTs orders to pretix
   (`POST /api/v1/organizers/bench/events/bench/orders/`, one position, request n on product
   n mod 1,000) and reservations to ours (bench/create.py's load and phase: a new 30-minute
   slot of resource n mod 1,000, with an Idempotency-Key); a warm-up (pretix's backlog is
   drained after it), then the measured seconds. pretix's statuses are counted by the wrk
   script, ours by the API's /metrics; CPU of wrk, the server processes, PostgreSQL and
   Valkey from psutil as in bench/create.py.
5. The race: `--bursts` times, 16 clients each on a fresh connection send at the same
   instant an order of the same quota-1 product (pretix) or a reservation of the same fresh
   slot of a unit-capacity resource (ours). Winners per burst: more than one is overselling.

    python -m bench.peers [--quick] [--out DIR] [--workers 1 2] [--clients 32 8]

Writes peers.json and peers.md into --out (default bench/results/). Needs wrk and network
access to PyPI on the first run (the pretix install).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench import harness
from bench.create import Eras, api_phase, fmt

PRETIX_VERSION = "2026.8.0"
GUNICORN_VERSION = "27.0.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "reservations-bench"
ORGANIZER = EVENT = "bench"
ORDERS_PATH = f"/api/v1/organizers/{ORGANIZER}/events/{EVENT}/orders/"
QUOTA_SIZE = 1_000_000
RACE_CLIENTS = 16
RACE_BASE = datetime(2036, 1, 7, tzinfo=UTC)  # our burst k races for [base + k h, + 30 min)

# Counts every reply's status per thread; done() prints them for parse_statuses.
STATUS_LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads - 1)
end
statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for s, n in pairs(t:get("statuses")) do io.write(string.format("status %d %d\\n", s, n)) end
  end
end
"""

PRETIX_LUA = """
local items = {%(items)s}
local auth = "Token %(token)s"
local nthreads = %(threads)d
local counter = 0
function request()
  local n = counter * nthreads + tid
  counter = counter + 1
  local body = string.format('{"email":"b%%d-%%d@example.org","locale":"en",'
    .. '"sales_channel":"web","send_email":false,"positions":[{"item":%%d}]}',
    tid, counter, items[(n %% #items) + 1])
  return wrk.format("POST", "%(path)s",
    {["Authorization"] = auth, ["Content-Type"] = "application/json"}, body)
end
"""

PRETIX_CFG = """\
[pretix]
instance_name=pretix bench
url={base}
currency=EUR
datadir={data}
ecb_rates=off
registration=off

[locale]
default=en
timezone=UTC

[django]
secret={secret}
debug=off

[database]
backend=postgresql
name=pretix
user=postgres
password=
host={pg_host}
port={pg_port}

[mail]
from=bench@localhost
host=127.0.0.1
port=9

[redis]
location={redis}
sessions=false
"""

# Run by `python -m pretix shell -c` (pretix's settings, models and scopes loaded).
SETUP_SCRIPT = """
import json
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils.timezone import now
from django_scopes import scopes_disabled

from pretix.base.models import Event, Item, Organizer, Quota, Team

with scopes_disabled():
    org = Organizer.objects.create(name="Bench", slug="{organizer}")
    event = Event.objects.create(
        organizer=org, name="Bench", slug="{event}", currency="EUR", live=True,
        date_from=now() + timedelta(days=30),
    )
    event.set_defaults()
    event.plugins = settings.PRETIX_PLUGINS_DEFAULT
    event.save()
    event.settings.timezone = "UTC"
    event.settings.locales = ["en"]
    event.settings.locale = "en"

    def products(prefix, count, size):
        items = Item.objects.bulk_create([
            Item(event=event, name=f"{{prefix}} {{i}}", default_price=Decimal("10.00"),
                 admission=True, active=True, position=i)
            for i in range(count)
        ])
        quotas = Quota.objects.bulk_create([
            Quota(event=event, name=f"{{prefix}} {{i}}", size=size) for i in range(count)
        ])
        Quota.items.through.objects.bulk_create([
            Quota.items.through(quota_id=q.pk, item_id=it.pk) for q, it in zip(quotas, items)
        ])
        return [it.pk for it in items]

    load = products("slot", {items}, {quota_size})
    race = products("race", {race_items}, 1)
    team = Team.objects.create(
        organizer=org, name="bench", all_events=True, all_event_permissions=True,
        all_organizer_permissions=True,
    )
    token = team.tokens.create(name="bench")
    print("BENCH-SETUP " + json.dumps({{"items": load, "race": race, "token": token.token}}))
"""


# --- pretix: install, configure, start ------------------------------------------------------


def pretix_venv(version: str = PRETIX_VERSION) -> Path:
    """The venv holding pretix `version` and gunicorn, installed once under CACHE. A venv
    whose install did not finish (no marker) is removed and made again."""
    venv = CACHE / f"pretix-{version}"
    marker = venv / ".bench-installed"
    if marker.exists():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing pretix {version} into {venv} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            f"pretix=={version}",
            f"gunicorn=={GUNICORN_VERSION}",
        ],
        check=True,
    )
    marker.write_text(f"pretix=={version} gunicorn=={GUNICORN_VERSION}\n")
    return venv


class Pretix:
    """pretix on a database `pretix` of the run's PostgreSQL, under gunicorn."""

    def __init__(self, venv: Path, home: Path, *, port: int, server: harness.Server) -> None:
        self.venv, self.home, self.port = venv, home, port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers = 0
        self.log = home / "gunicorn.log"
        home.mkdir(parents=True, exist_ok=True)
        (home / "data").mkdir(exist_ok=True)
        self.cfg = home / "pretix.cfg"
        self.secret = secrets.token_hex(32)
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")},
            "PRETIX_CONFIG_FILE": str(self.cfg),
            "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}",
        }
        self.configure(server)

    def configure(self, server: harness.Server) -> None:
        """(Re)write pretix.cfg for the server's PostgreSQL and Valkey (the Valkey socket
        moves when `serve` restarts)."""
        pg = psycopg.conninfo.conninfo_to_dict(server.db_url)
        url = (server.data / "valkey" / "url").read_text().strip()
        redis = url.split("?")[0] + "?db=1" if url.startswith("unix") else url.rstrip("/") + "/1"
        self.cfg.write_text(
            PRETIX_CFG.format(
                base=self.base,
                data=self.home / "data",
                secret=self.secret,
                pg_host=pg.get("host", "127.0.0.1"),
                pg_port=pg.get("port", "5432"),
                redis=redis,
            )
        )

    def manage(self, *args: str, timeout: float = 1800) -> str:
        run = subprocess.run(
            [str(self.venv / "bin" / "python"), "-m", "pretix", *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if run.returncode != 0:
            raise SystemExit(
                f"pretix {' '.join(args)} failed ({run.returncode}):\n"
                f"{(run.stdout + run.stderr)[-4000:]}"
            )
        return run.stdout

    def setup(self, *, items: int, race_items: int) -> dict[str, Any]:
        script = self.home / "bench_setup.py"
        script.write_text(
            SETUP_SCRIPT.format(
                organizer=ORGANIZER,
                event=EVENT,
                items=items,
                quota_size=QUOTA_SIZE,
                race_items=race_items,
            )
        )
        out = self.manage("shell", "-c", f"exec(open({str(script)!r}).read())")
        line = next(x for x in out.splitlines() if x.startswith("BENCH-SETUP "))
        result: dict[str, Any] = json.loads(line.removeprefix("BENCH-SETUP "))
        return result

    def start(self, workers: int, timeout: float = 120) -> None:
        """gunicorn as pretix's install guide runs it (sync workers, pretix.wsgi), without
        --max-requests: a worker restart in a 15 s window would be measured as pretix."""
        self.workers = workers
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(self.venv / "bin" / "gunicorn"),
                    "pretix.wsgi",
                    "--name",
                    "pretix",
                    "--workers",
                    str(workers),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                cwd=self.home,
                stdout=out,
                stderr=out,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + "/healthcheck/", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"pretix not ready in {timeout:.0f} s:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None:
            harness.stop_process(self.proc)
            self.proc = None

    def processes(self) -> list[psutil.Process]:
        """The gunicorn master and its workers."""
        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def orders(self, server: harness.Server) -> int:
        with psycopg.connect(pretix_db_url(server), autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pretixbase_order").fetchone()
        return int(row[0]) if row else 0


def pretix_db_url(server: harness.Server) -> str:
    return re.sub(r"/reservations(\?|$)", r"/pretix\1", server.db_url)


class PretixCpuMeter(harness.CpuMeter):
    """CpuMeter with pretix's gunicorn processes in the `api` group (our API is idle then)."""

    def __init__(self, server: harness.Server, pretix: Pretix) -> None:
        super().__init__(server)
        self.pretix = pretix

    def _snap(self) -> dict[str, Any]:
        return {**super()._snap(), "api": harness.cpu_of(self.pretix.processes())}


# --- load ------------------------------------------------------------------------------------


def parse_statuses(raw: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for status, n in re.findall(r"^status (\d+) (\d+)$", raw, re.M):
        out[status] = out.get(status, 0) + int(n)
    return out


def drain(pretix: Pretix, server: harness.Server, *, timeout: float = 60) -> None:
    """Wait until pretix has worked off what wrk left queued: a sync worker takes queued
    requests one by one after wrk has gone (~0.1 s each), and the measured window must not
    start with the warm-up's backlog."""
    deadline = time.monotonic() + timeout
    n = pretix.orders(server)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        n, before = pretix.orders(server), n
        if n == before:
            return


def pretix_phase(
    pretix: Pretix,
    server: harness.Server,
    setup: dict[str, Any],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    work: Path,
) -> dict[str, Any]:
    threads = max(1, min(2, clients))
    script = work / f"pretix-{clients}.lua"
    script.write_text(
        STATUS_LUA
        + PRETIX_LUA
        % {
            "items": ",".join(map(str, setup["items"])),
            "token": setup["token"],
            "threads": threads,
            "path": ORDERS_PATH,
        }
    )
    if warmup > 0:
        harness.wrk(pretix.base, script, connections=clients, seconds=warmup, threads=threads)
        drain(pretix, server)
    orders_before = pretix.orders(server)
    with PretixCpuMeter(server, pretix) as meter:
        w = harness.wrk(pretix.base, script, connections=clients, seconds=seconds, threads=threads)
    by_status = parse_statuses(w["raw"])
    return {
        "clients": clients,
        "workers": pretix.workers,
        "seconds": seconds,
        **{k: v for k, v in w.items() if k != "raw"},
        "by_status": by_status,
        # Orders the server committed during the window (a cross-check of wrk's count).
        "orders_in_db_delta": pretix.orders(server) - orders_before,
        **meter.result,
        "wrk_output": w["raw"],
    }


def ours_phase(
    server: harness.Server,
    ids: list[str],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    eras: Eras,
    work: Path,
) -> dict[str, Any]:
    """bench/create.py's API phase (statuses from the API's /metrics)."""
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM reservation").fetchone()[0]  # type: ignore[index]
    a = api_phase(
        server, ids, clients=clients, seconds=seconds, warmup=warmup, eras=eras, work=work
    )
    with psycopg.connect(server.db_url, autocommit=True) as conn:
        after = conn.execute("SELECT count(*) FROM reservation").fetchone()[0]  # type: ignore[index]
    # The warm-up's rows are in `after - before` too; the measured phase's are by_status 201.
    return {**a, "rows_written_incl_warmup": after - before}


# --- the race --------------------------------------------------------------------------------


async def _one(base: str, request: bytes, gate: asyncio.Event) -> tuple[int, float, bytes]:
    host, _, port = base.removeprefix("http://").partition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await gate.wait()
        t0 = time.perf_counter()
        writer.write(request)
        data = await reader.read()  # Connection: close: the reply ends at EOF
        ms = (time.perf_counter() - t0) * 1000
    finally:
        writer.close()
    status = int(data[9:12]) if data.startswith(b"HTTP/1.") else 0
    return status, ms, data.partition(b"\r\n\r\n")[2][:300]


def http_request(path: str, *, auth: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + data


async def race(base: str, requests: list[bytes], *, clients: int, pause: float) -> dict[str, Any]:
    """For each request: `clients` connections opened first, then all send it at once."""
    winners: list[int] = []
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    replies: dict[str, str] = {}
    for request in requests:
        gate = asyncio.Event()
        tasks = [asyncio.create_task(_one(base, request, gate)) for _ in range(clients)]
        await asyncio.sleep(0.05)  # every connection open and waiting at the gate
        gate.set()
        results = await asyncio.gather(*tasks)
        winners.append(sum(1 for s, _, _ in results if s == 201))
        for s, ms, body in results:
            statuses[str(s)] = statuses.get(str(s), 0) + 1
            replies.setdefault(str(s), body.decode(errors="replace"))
            latencies.append(ms)
        await asyncio.sleep(pause)
    return {
        "clients": clients,
        "bursts": len(requests),
        "winners_per_burst": {str(w): winners.count(w) for w in sorted(set(winners))},
        "bursts_with_exactly_one_winner": winners.count(1),
        "bursts_oversold": sum(1 for w in winners if w > 1),
        "statuses": statuses,
        "first_reply_per_status": replies,
        **harness.percentiles(latencies),
    }


def race_pretix(pretix: Pretix, setup: dict[str, Any], *, bursts: int) -> dict[str, Any]:
    reqs = [
        http_request(
            ORDERS_PATH,
            auth=f"Token {setup['token']}",
            body={
                "email": f"race{k}@example.org",
                "locale": "en",
                "sales_channel": "web",
                "send_email": False,
                "positions": [{"item": item}],
            },
        )
        for k, item in enumerate(setup["race"][:bursts])
    ]
    return {
        "workers": pretix.workers,
        **asyncio.run(race(pretix.base, reqs, clients=RACE_CLIENTS, pause=0.05)),
    }


def race_ours(server: harness.Server, rid: str, *, bursts: int) -> dict[str, Any]:
    def slot(k: int) -> dict[str, str]:
        start = RACE_BASE + timedelta(hours=k)
        end = start + timedelta(minutes=30)
        return {
            "resource_id": rid,
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": end.isoformat().replace("+00:00", "Z"),
        }

    reqs = [
        http_request("/v1/reservations", auth=f"Bearer {server.token}", body=slot(k))
        for k in range(bursts)
    ]
    return {
        "workers": server.workers,
        **asyncio.run(race(server.base, reqs, clients=RACE_CLIENTS, pause=0.05)),
    }


# --- report ----------------------------------------------------------------------------------


def _pct(share: dict[str, float], key: str) -> str:
    v = share.get(key)
    return "-" if v is None else f"{100 * v:.0f}%"


def _statuses(by: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {int(v):,}" for k, v in sorted(by.items())) or "-"


def cpu_ms_per_create(p: dict[str, Any], group: str) -> float | None:
    """CPU milliseconds of a process group per completed request of the measured phase."""
    n = p.get("requests")
    return 1000 * p["cpu_s"][group] / n if n and "cpu_s" in p else None


def _row(name: str, p: dict[str, Any]) -> str:
    s = p.get("cpu_share", {})
    b, a = p.get("loadavg_before"), p.get("loadavg_after")
    server_ms, pg_ms = cpu_ms_per_create(p, "api"), cpu_ms_per_create(p, "postgres")
    return (
        f"| {name} | {p['workers']} | {p['clients']} | {fmt(p.get('requests_per_s'), ',.1f')}"
        f" | {fmt(p.get('p50_ms'), '.1f')} ms | {fmt(p.get('p99_ms'), '.1f')} ms"
        f" | {_statuses(p.get('by_status', {}))} | {_pct(s, 'client')} / {_pct(s, 'api')}"
        f" / {_pct(s, 'postgres')} / {_pct(s, 'valkey')}"
        f" | {fmt(server_ms, '.1f')} / {fmt(pg_ms, '.1f')}"
        f" | {f'{b[0]:.1f}→{a[0]:.1f}' if b and a else '-'} |"
    )


def markdown(report: dict[str, Any]) -> str:
    m, d, px = report["machine"], report["durations"], report["pretix"]
    src = report["source"]
    quick = (
        "**Quick-mode smoke run** (tiny durations: not a measurement.) " if report["quick"] else ""
    )
    lines = [
        "## Peers: the same create load against pretix (issue 7, scenario 6)",
        "",
        f"{quick}Run of {report['when']} (commit {src['commit'][:7]}"
        f"{', src/ with uncommitted changes' if src['src_dirty'] else ''}),"
        f" `{report['command']}`; {m['cpus']} cores ({m['cpu_model'] or 'unknown CPU'}),"
        f" {m['memory_gib']} GiB, {m['platform']}, Python {m['python']}.",
        "",
        f"**pretix {px['version']}** (PyPI) with gunicorn {px['gunicorn']}, installed by the"
        f" script into its own venv (`{px['venv'].replace(str(Path.home()), '~')}`); no pretix"
        " code is in this repository. Configuration (a pretix.cfg the script writes): database"
        f" `pretix` on the run's embedded PostgreSQL {report['postgres_version']} (the one our"
        " API uses; Django keeps connections for 120 s, pretix's default), Redis = the run's"
        " embedded Valkey (database 1) as cache, no Celery broker (pretix then runs its tasks"
        " eagerly inside the request), no mail server (orders are created with"
        " `send_email: false`), `debug=off`. Served by `gunicorn pretix.wsgi` with sync"
        " workers as pretix's install guide shows, without its `--max-requests 1200` (a worker"
        f" restart inside a measured window would be measured as pretix). Data, made by"
        f" `migrate` ({px.get('migrate_s', '-')} s) and a Django shell script the bench"
        f" writes: one organizer, one event, {px['products']:,} products at 10.00 EUR each"
        f" with its own quota of {px['quota_size']:,} (creates never compete for a quota),"
        f" {px['race_products']} products with a quota of 1 (the race), a team API token with"
        " every permission. Each create is `POST /api/v1/organizers/bench/events/bench/"
        "orders/` with one position (request n: product n mod"
        f" {px['products']:,}); the order is created pending (`n`, no payment provider).",
        "",
        f"**Ours:** `reservations serve` as in every scenario (embedded PostgreSQL and Valkey,"
        f" in-process sweeper on), {report['ours']['resources']:,} unit-capacity resources;"
        " bench/create.py's load (each request a new 30-minute slot of resource n mod"
        f" {report['ours']['resources']:,}, with an `Idempotency-Key`). Both servers run for"
        " the whole run; the one not under load is idle. Worker processes are the same on"
        " both sides (gunicorn `--workers N`, `serve --workers N`).",
        "",
        f"**Load:** wrk, 2 threads, a {d['warmup_s']:g} s warm-up and then {d['measure_s']:g} s"
        " measured per row, pretix first, then ours, at each worker and client count. After"
        " pretix's warm-up the script waits until its order count stops growing (a sync"
        " worker works off the requests wrk left queued), so the window starts on an idle"
        " server. creates/s and latencies are wrk's (replies within the window); CPU from"
        " psutil over the window (as bench/create.py).",
        "",
        "| server | worker processes | clients | creates/s | p50 | p99 | statuses"
        " | CPU share: wrk / server / PostgreSQL / Valkey | CPU ms per create: server /"
        " PostgreSQL | load 1m |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in report["points"]:
        lines.append(_row("pretix", p["pretix"]))
        lines.append(_row("reservations", p["ours"]))
    lines += [
        "",
        "CPU share = CPU seconds / (wall seconds x cores): 100% is the whole machine."
        " pretix's statuses are counted by the wrk script, ours by the API's /metrics.",
    ]
    if report.get("races"):
        lines += [
            "",
            f"**Race** ({RACE_CLIENTS} clients, each on a new connection opened beforehand,"
            " send at one instant; each burst on a fresh quota-1 product (pretix) or a fresh"
            " 30-minute slot of one unit-capacity resource (ours); more than one 201 in a burst"
            " would be overselling):",
            "",
            "| server | worker processes | bursts | winners per burst (winners: bursts)"
            " | oversold bursts | statuses | p50 | p99 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in report["races"].items():
            spread = ", ".join(f"{w}: {n}" for w, n in r["winners_per_burst"].items())
            lines.append(
                f"| {name} | {r['workers']} | {r['bursts']} | {spread} | {r['bursts_oversold']}"
                f" | {_statuses(r['statuses'])} | {fmt(r.get('p50_ms'), '.1f')} ms"
                f" | {fmt(r.get('p99_ms'), '.1f')} ms |"
            )
    lines += [
        "",
        "**Caveats.** These are two whole create paths, not equal work. A pretix order does"
        " more than a reservation: it validates the order against the event (products,"
        " sales channel, quotas, prices and taxes), locks the product's quota (a PostgreSQL"
        " advisory lock) and recomputes its availability, writes the order, its position and"
        " its transaction rows and an audit log entry, runs the order-placed signal and its"
        " notification task (eagerly, in the request, since there is no Celery worker), and"
        " serializes the whole order back. With a Celery worker that task would run in"
        " another process of the same machine. It generates no invoice, ticket, payment or"
        " mail here (none is configured or asked for). Ours runs auth, the rate limit, the"
        " idempotency claim and record, the pre-check, the resource's advisory lock, the"
        " INSERT under the exclusion constraint and the availability-map update. pretix's"
        " gunicorn sync worker serves one request at a time and closes the connection after"
        " it (wrk reconnects); ours keeps connections alive. The machine is shared: the load"
        " average per row is in the table; compare CPU per create rather than wall-clock"
        " latency across runs.",
    ]
    return "\n".join(lines) + "\n"


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny run proving the harness")
    parser.add_argument("--out", type=Path, default=harness.RESULTS, help="results directory")
    parser.add_argument("--port", type=int, default=18510, help="our API's port")
    parser.add_argument("--pretix-port", type=int, default=18511)
    parser.add_argument("--workers", type=int, nargs="+", help="worker processes (1 2)")
    parser.add_argument("--clients", type=int, nargs="+", help="client counts (32 8)")
    parser.add_argument("--seconds", type=float, help="measured seconds per point (15)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per point (3)")
    parser.add_argument("--bursts", type=int, help="race bursts per server (50; 0: no race)")
    args = parser.parse_args(argv)
    if not harness.have_wrk():
        raise SystemExit("needs wrk (Debian: apt-get install wrk)")
    quick = args.quick
    workers = args.workers or ([1] if quick else [1, 2])
    clients = args.clients or ([8] if quick else [32, 8])
    seconds = args.seconds or (2 if quick else 15)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    bursts = args.bursts if args.bursts is not None else (5 if quick else 50)
    n_items = n_resources = 20 if quick else 1000
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    clock = harness.timer()

    venv = pretix_venv()
    print(f"{clock()} pretix {PRETIX_VERSION} in {venv}", flush=True)
    report: dict[str, Any] = {
        "scenario": "peers",
        # Not yet in bench/__main__.py's list: the command is the module's own.
        "command": " ".join(["python -m bench.peers", *(sys.argv[1:] if argv is None else argv)]),
        "when": harness.now_utc(),
        "quick": quick,
        "machine": harness.machine(),
        "source": harness.source(),
        "durations": {"measure_s": seconds, "warmup_s": warmup},
        "pretix": {
            "version": PRETIX_VERSION,
            "gunicorn": GUNICORN_VERSION,
            "venv": str(venv),
            "products": n_items,
            "quota_size": QUOTA_SIZE,
            "race_products": bursts,
        },
        "ours": {"resources": n_resources},
        "points": [],
        "races": {},
    }
    eras = Eras()
    server = harness.start_server(port=args.port)
    work = server.data
    pretix: Pretix | None = None
    try:
        print(f"{clock()} our API up on {server.base}", flush=True)
        with psycopg.connect(server.db_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE pretix")
            report["postgres_version"] = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        pretix = Pretix(venv, work / "pretix", port=args.pretix_port, server=server)
        t0 = time.monotonic()
        pretix.manage("migrate", "--noinput")
        report["pretix"]["migrate_s"] = round(time.monotonic() - t0, 1)
        print(f"{clock()} pretix migrated in {report['pretix']['migrate_s']} s", flush=True)
        setup = pretix.setup(items=n_items, race_items=max(bursts, 1))
        ids = harness.create_resources(server, n_resources)
        for i, w in enumerate(workers):
            if i > 0 or w != server.workers:
                # Same data directory: the same resources, pretix database and Valkey path.
                pretix.stop()
                server.stop(remove=False)
                server = harness.start_server(port=args.port, data=work, workers=w)
                pretix.configure(server)
            pretix.start(w)
            print(f"{clock()} pretix and our API up with {w} worker(s)", flush=True)
            for c in clients:
                p = pretix_phase(
                    pretix, server, setup, clients=c, seconds=seconds, warmup=warmup, work=work
                )
                print(
                    f"{clock()} pretix {w}w {c}c: {fmt(p['requests_per_s'], ',.1f')}/s,"
                    f" p99 {p.get('p99_ms')} ms, {p['by_status']}, CPU {p['cpu_share']}",
                    flush=True,
                )
                o = ours_phase(
                    server, ids, clients=c, seconds=seconds, warmup=warmup, eras=eras, work=work
                )
                print(
                    f"{clock()} ours {w}w {c}c: {fmt(o['requests_per_s'], ',.1f')}/s,"
                    f" p99 {o.get('p99_ms')} ms, {o['by_status']}, CPU {o['cpu_share']}",
                    flush=True,
                )
                report["points"].append({"workers": w, "clients": c, "pretix": p, "ours": o})
        if bursts:
            report["races"]["pretix"] = race_pretix(pretix, setup, bursts=bursts)
            report["races"]["reservations"] = race_ours(server, ids[0], bursts=bursts)
            print(f"{clock()} races: {json.dumps(report['races'])}", flush=True)
        report["pretix"]["orders_total"] = pretix.orders(server)
    finally:
        if pretix is not None:
            pretix.stop()
        server.stop(remove=True)

    md = markdown(report)
    report["markdown"] = md
    harness.write_json(out / "peers.json", report)
    (out / "peers.md").write_text(md)
    print(md, flush=True)


if __name__ == "__main__":
    main()
