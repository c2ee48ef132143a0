"""What every benchmark scenario shares: a server on a fresh embedded data directory (or the
URLs given), its admin key, process accounting (CPU and memory per group of processes), wrk
and its output, a progress bar for seeding, py-spy, and the machine/source description that
goes into every result file.

Nothing here knows a scenario. The scenarios (bench/create.py, bench/memory.py,
bench/availability.py, bench/hot_slot.py, bench/mixed_day.py, bench/growth.py) import it;
`python -m bench SCENARIO` dispatches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import fmean, median, quantiles
from typing import Any, TypeVar

import httpx
import psutil
import psycopg

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent
T = TypeVar("T")


# --- the server --------------------------------------------------------------------------


@dataclass
class Server:
    """A running `reservations serve`. `data` is its data directory (the embedded
    PostgreSQL and Valkey live under it unless URLs were given); `log` its stderr."""

    proc: subprocess.Popen[bytes]
    base: str
    token: str
    data: Path
    log: Path
    workers: int = 1
    database_url: str | None = None  # given; None = embedded
    owns_data: bool = True
    env: dict[str, str] = field(default_factory=dict)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"postgresql://postgres:@/reservations?host={self.data / 'postgres'}"

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def stop(self, *, remove: bool | None = None) -> None:
        """SIGTERM (uvicorn drains, the embedded servers stop with it), then wait; the data
        directory is removed if this harness made it, unless `remove=False`."""
        stop_process(self.proc)
        if remove if remove is not None else self.owns_data:
            shutil.rmtree(self.data, ignore_errors=True)

    # Process groups, for CPU and memory accounting.

    def api_processes(self) -> list[psutil.Process]:
        """The serve process and its Python children (uvicorn workers with --workers > 1);
        not the embedded Valkey it started."""
        try:
            root = psutil.Process(self.proc.pid)
            kids = root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [root, *(p for p in kids if _is_python(p))]

    def api_workers(self) -> list[psutil.Process]:
        """The processes that serve requests: the serve process itself with one worker, the
        spawned uvicorn workers with more (the parent only supervises)."""
        procs = self.api_processes()
        if self.workers <= 1:
            return procs[:1]
        return [p for p in procs[1:] if "multiprocessing.spawn" in _cmdline(p)
                and "resource_tracker" not in _cmdline(p)]  # fmt: skip

    def valkey_processes(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [p for p in kids if "valkey" in _name(p) or "redis" in _name(p)]

    def postgres_master(self) -> psutil.Process | None:
        """The embedded postmaster (None for a given DATABASE_URL: not ours to measure)."""
        if not self.embedded:
            return None
        try:
            pid = int((self.data / "postgres" / "postmaster.pid").read_text().split()[0])
            return psutil.Process(pid)
        except (OSError, ValueError, psutil.NoSuchProcess):
            return None


def _name(p: psutil.Process) -> str:
    try:
        return p.name()
    except psutil.Error:
        return ""


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _is_python(p: psutil.Process) -> bool:
    return "python" in _name(p) or "python" in _cmdline(p).split(" ", 1)[0]


def ensure_port_free(port: int) -> None:
    """Refuse to start on a port something already listens on: the new server would exit,
    and the readiness check would be answered by the other one (another benchmark, say)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise SystemExit(f"port {port} is in use ({exc.strerror}); pass --port") from exc


def start_server(
    *,
    port: int,
    data: Path | None = None,
    workers: int = 1,
    run_worker: bool = True,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    redis_url: str | None = None,
    log_name: str | None = None,
    prefix: str = "rsv-bench-",
    timeout: float = 180,
) -> Server:
    """Start `reservations serve` and wait until every worker has started and /readyz says
    ready. Without `database_url`/`redis_url` the server runs the embedded PostgreSQL and
    Valkey in `data` (a fresh temporary directory by default). The admin key is the one the
    first start prints; on a data directory or database that already has one, a new admin
    key is made with `reservations keys create`."""
    ensure_port_free(port)
    owns = data is None
    data = data or Path(tempfile.mkdtemp(prefix=prefix))
    data.mkdir(parents=True, exist_ok=True)
    environ = {**os.environ, "RESERVATIONS_DATA_DIR": str(data), **(env or {})}
    for name, value in (("DATABASE_URL", database_url), ("REDIS_URL", redis_url)):
        if value:
            environ[name] = value
        else:
            environ.pop(name, None)
    log = data / (log_name or f"server-{port}.log")
    with log.open("ab") as out:
        start_at = out.tell()
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "reservations", "serve", "--port", str(port)),
                *("--workers", str(workers)),
                *(() if run_worker else ("--no-worker",)),
            ],
            env=environ,
            stdout=subprocess.DEVNULL,  # uvicorn's access log
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    text = ""
    while True:
        text = log.read_bytes()[start_at:].decode(errors="replace")
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{text[-3000:]}")
        if text.count("Application startup complete") >= workers and _ready(base):
            break
        if time.monotonic() > deadline:
            stop_process(proc)
            raise SystemExit(f"server did not become ready in {timeout:.0f} s:\n{text[-3000:]}")
        time.sleep(0.2)
    # A restart on the same data directory finds the key of the first start earlier in
    # the log; a database that already had one (given URLs) gets a new admin key.
    m = re.search(r"(rsv_\w+)", log.read_text(errors="replace"))
    token = m.group(1) if m else admin_key(environ)
    return Server(proc, base, token, data, log, workers, database_url, owns, environ)


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def admin_key(environ: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "reservations", "keys", "create", "--tenant", "default",
         "--role", "admin", "--label", "bench"],
        env=environ, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1].strip()


def stop_process(proc: subprocess.Popen[Any], timeout: float = 60) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# --- CPU and memory ----------------------------------------------------------------------


def cpu_of(procs: Iterable[psutil.Process]) -> dict[int, float]:
    """user + system seconds per live pid."""
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def postgres_cpu(master: psutil.Process | None) -> float:
    """CPU seconds used so far by a postmaster, its live children, and the children it has
    reaped (a backend that exits during a phase keeps counting through the latter)."""
    if master is None:
        return 0.0
    try:
        t = master.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        kids = master.children(recursive=True)
    except psutil.Error:
        return 0.0
    return total + sum(cpu_of(kids).values())


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (wrk, pgbench once they exit)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU seconds and share of the machine (all cores) per group over a phase: `api`,
    `postgres`, `valkey`, and `client` (the load generator, counted when it is reaped)."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def _snap(self) -> dict[str, Any]:
        return {
            "wall": time.monotonic(),
            "api": cpu_of(self.server.api_processes()),
            "valkey": cpu_of(self.server.valkey_processes()),
            "postgres": postgres_cpu(self.server.postgres_master()),
            "client": children_cpu(),
            "load": os.getloadavg(),
        }

    def __enter__(self) -> CpuMeter:
        self.before = self._snap()
        self.result: dict[str, Any] = {}
        return self

    def __exit__(self, *exc: object) -> None:
        after = self._snap()
        b = self.before
        wall = after["wall"] - b["wall"]
        cores = os.cpu_count() or 1
        secs = {
            # A process that exited in between took its CPU with it; the API's do not.
            "api": sum(v - b["api"].get(pid, 0.0) for pid, v in after["api"].items()),
            "valkey": sum(v - b["valkey"].get(pid, 0.0) for pid, v in after["valkey"].items()),
            "postgres": after["postgres"] - b["postgres"],
            "client": after["client"] - b["client"],
        }
        self.result = {
            "wall_s": round(wall, 2),
            "cpu_s": {k: round(v, 2) for k, v in secs.items()},
            # Share of the whole machine: 1.0 = every core busy for the whole phase.
            "cpu_share": {k: round(v / (wall * cores), 3) for k, v in secs.items()},
            "loadavg_before": [round(x, 2) for x in b["load"]],
            "loadavg_after": [round(x, 2) for x in after["load"]],
        }


def rss_mib(procs: Iterable[psutil.Process]) -> list[float]:
    out = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            out.append(round(p.memory_info().rss / 2**20, 1))
    return out


class RssSampler(threading.Thread):
    """RSS of each API worker every `interval` seconds until stopped."""

    def __init__(self, server: Server, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.server, self.interval = server, interval
        self.samples: dict[int, list[float]] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for p in self.server.api_workers():
                for mib in rss_mib([p]):
                    self.samples.setdefault(p.pid, []).append(mib)
            self.done.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        """{pid: {peak_mib, mean_mib, samples}} per worker."""
        self.done.set()
        self.join(5)
        return {
            str(pid): {"peak_mib": max(v), "mean_mib": round(fmean(v), 1), "samples": len(v)}
            for pid, v in self.samples.items()
            if v
        }


# --- wrk ---------------------------------------------------------------------------------


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def wrk(
    url: str,
    script: Path | None,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    timeout: str = "10s",
) -> dict[str, Any]:
    """Run wrk (threads never above connections) and parse its summary."""
    threads = max(1, min(threads, connections))
    out = subprocess.run(
        [
            *("wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s"),
            *("--timeout", timeout, "--latency"),
            *(("-s", str(script)) if script else ()),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {"threads": threads, "connections": connections, **parse_wrk(out)}


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(out: str) -> dict[str, Any]:
    pct = {
        f"p{p}_ms": round(to_ms(v, u), 3)
        for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    }
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "requests_per_s": float(rps.group(1)) if rps else None,
        "requests": int(requests.group(1)) if requests else None,
        **pct,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "raw": out,
    }


# --- latency, /metrics, PostgreSQL's statistics -------------------------------------------


def percentiles(values_ms: list[float]) -> dict[str, Any]:
    """n, p50/p90/p95/p99, mean and max of a list of milliseconds (None when empty)."""
    if not values_ms:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p95_ms": None, "p99_ms": None,
                "mean_ms": None, "max_ms": None}  # fmt: skip
    q = quantiles(values_ms, n=100, method="inclusive") if len(values_ms) > 1 else values_ms * 99
    return {
        "n": len(values_ms),
        "p50_ms": round(median(values_ms), 3),
        "p90_ms": round(q[89], 3),
        "p95_ms": round(q[94], 3),
        "p99_ms": round(q[98], 3),
        "mean_ms": round(fmean(values_ms), 3),
        "max_ms": round(max(values_ms), 3),
    }


Samples = list[tuple[str, dict[str, str], float]]


def scrape(server: Server) -> Samples:
    """Every sample of the API's /metrics as (name, labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.base + "/metrics", timeout=30).text
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def metric(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items())
    )


def requests_by(before: Samples, after: Samples) -> dict[str, dict[str, int]]:
    """http_requests_total between two scrapes: {"METHOD route": {status: count}}."""
    out: dict[str, dict[str, int]] = {}
    old = {
        (lab.get("route"), lab.get("method"), lab.get("status")): v
        for n, lab, v in before
        if n == "http_requests_total"
    }
    for n, lab, v in after:
        if n != "http_requests_total" or lab.get("route") == "/metrics":
            continue
        key = (lab.get("route"), lab.get("method"), lab.get("status"))
        d = round(v - old.get(key, 0.0))
        if d:
            out.setdefault(f"{key[1]} {key[0]}", {})[str(key[2])] = d
    return out


# Backends send their statistics at most once a second, and an idle backend holding some
# sends them 10 s later (PGSTAT_IDLE_INTERVAL): read pg_stat_database this long after a load.
STATS_SETTLE_S = 11.0


def database_stats(url: str) -> dict[str, int]:
    """This database's pg_stat_database counters: transactions, deadlocks, conflicts."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit, xact_rollback, deadlocks, conflicts, temp_files"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    names = ("xact_commit", "xact_rollback", "deadlocks", "conflicts", "temp_files")
    return dict(zip(names, (int(v or 0) for v in row or (0,) * 5), strict=True))


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after}


def preload_pg_stat_statements(url: str) -> None:
    """Ask for pg_stat_statements with planning counted, from the server's next start."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        conn.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")


def reset_statements(url: str) -> bool:
    """Create pg_stat_statements if need be and zero it; False when it is not loaded."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        except psycopg.Error:
            return False
    return True


def statement_totals(url: str, *, top: int = 3) -> dict[str, Any]:
    """Calls, plans, planning and execution time of this database's statements since the
    last reset (pg_stat_statements' own reads left out), and the `top` costliest."""
    where = (
        "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND query NOT LIKE '%%pg_stat_statements%%'"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        total = conn.execute(
            "SELECT coalesce(sum(calls), 0), coalesce(sum(plans), 0),"
            " coalesce(sum(total_plan_time), 0), coalesce(sum(total_exec_time), 0)"
            f" FROM pg_stat_statements WHERE {where}"
        ).fetchone()
        rows = conn.execute(
            "SELECT calls, plans, round(total_plan_time::numeric, 3),"
            " round(total_exec_time::numeric, 3),"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 300)"
            f" FROM pg_stat_statements WHERE {where}"
            " ORDER BY total_plan_time + total_exec_time DESC LIMIT %s",
            (top,),
        ).fetchall()
    assert total is not None
    return {
        "calls": int(total[0]),
        "plans": int(total[1]),
        "plan_ms": round(float(total[2]), 3),
        "exec_ms": round(float(total[3]), 3),
        "top": [
            {
                "calls": r[0],
                "plans": r[1],
                "plan_ms": float(r[2]),
                "exec_ms": float(r[3]),
                "query": r[4],
            }
            for r in rows
        ],
    }


# --- a raw HTTP/1.1 client for bursts ---------------------------------------------------------


class RawHttp:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for the API's
    replies (Content-Length bodies). A few microseconds of client CPU per request, where an
    httpx request costs a few hundred: for bursts of many requests sent at the same instant
    by one Python process, without the client's own work spreading them out."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, base: str
    ) -> None:
        self.reader, self.writer, self.base = reader, writer, base
        self.reconnects = 0

    @staticmethod
    async def _connect(base: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, _, port = base.removeprefix("http://").partition(":")
        return await asyncio.open_connection(host, int(port or 80))

    @classmethod
    async def open(cls, base: str) -> RawHttp:
        return cls(*await cls._connect(base), base)

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and read its reply. A connection the server closed while it was
        idle (uvicorn's keep-alive timeout) is reopened once; nothing was sent on it."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            await self.close()
            self.reader, self.writer = await self._connect(self.base)
            self.reconnects += 1
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
        if m is None:
            raise RuntimeError(f"reply without Content-Length: {head[:200]!r}")
        return status, await self.reader.readexactly(int(m.group(1)))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


def raw_request(
    method: str, path: str, *, token: str, body: str | None = None, **headers: str
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Authorization: Bearer {token}"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    data = (body or "").encode()
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


# --- seeding -----------------------------------------------------------------------------


def progress(items: Iterable[T], *, total: int, label: str) -> Iterator[T]:
    """A progress bar over `items`: rich's when installed, a line per 10% otherwise."""
    try:
        from rich.progress import track
    except ImportError:
        step = max(1, total // 10)
        for i, item in enumerate(items, 1):
            yield item
            if i % step == 0 or i == total:
                print(f"{label}: {i}/{total}", flush=True)
        return
    yield from track(items, total=total, description=label, transient=False)


def create_resources(server: Server, count: int, *, prefix: str = "bench") -> list[str]:
    """`count` unit-capacity resources without a policy, through the API."""
    ids = []
    headers = {"Authorization": f"Bearer {server.token}"}
    with httpx.Client(base_url=server.base, headers=headers, timeout=30) as client:
        for i in progress(range(count), total=count, label=f"creating {count} resources"):
            r = client.post("/v1/resources", json={"name": f"{prefix}-{i:05d}"})
            r.raise_for_status()
            ids.append(r.json()["id"])
    return ids


def tenant_and_key(conn: psycopg.Connection[Any], token: str) -> tuple[Any, Any]:
    """(tenant_id, api_key id) of an API key, read from the database."""
    row = conn.execute(
        "SELECT tenant_id, id FROM api_key WHERE prefix = %s", (token.split("_")[1],)
    ).fetchone()
    if row is None:
        raise SystemExit("the admin key is not in the database")
    return row[0], row[1]


def insert_resources(
    conn: psycopg.Connection[Any], *, tenant: Any, count: int, prefix: str, tags: str = "{bench}"
) -> list[Any]:
    """`count` unit-capacity resources (UTC, no policy: open around the clock) by INSERT, in
    one statement; then ANALYZE. Returns their ids in name order."""
    from reservations.kit.ids import uuid7

    ids = [uuid7() for _ in range(count)]
    conn.execute(
        "INSERT INTO resource (id, tenant_id, name, capacity, timezone, tags, created_at,"
        " updated_at) SELECT id, %s, %s || lpad(n::text, 5, '0'), 1, 'UTC', %s, now(), now()"
        " FROM unnest(%s::uuid[]) WITH ORDINALITY AS x(id, n)",
        (tenant, prefix, tags, ids),
    )
    conn.execute("ANALYZE resource")
    return ids


RESERVATION_COLUMNS = (
    "id, tenant_id, resource_id, start_at, end_at, during, status, quantity, created_by,"
    " created_at, updated_at"
)


def copy_rows(
    conn: psycopg.Connection[Any], table: str, columns: str, rows: Iterable[tuple[Any, ...]]
) -> int:
    """COPY rows into a table in the connection's current transaction; the number written."""
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


# --- profiling ---------------------------------------------------------------------------


def py_spy() -> str | None:
    return shutil.which("py-spy") or (
        str(Path(sys.executable).parent / "py-spy")
        if (Path(sys.executable).parent / "py-spy").exists()
        else None
    )


def py_spy_record(
    pid: int, *, seconds: int, out: Path, fmt: str = "raw", rate: int = 100
) -> subprocess.Popen[bytes]:
    spy = py_spy()
    if spy is None:
        raise SystemExit("needs py-spy (pip install py-spy)")
    return subprocess.Popen(
        [
            *(spy, "record", "--pid", str(pid), "-d", str(seconds), "-r", str(rate)),
            *("--format", fmt, "-o", str(out), "--nonblocking"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def collapsed_top(path: Path, *, top: int = 30) -> dict[str, Any]:
    """Own and inclusive shares of the busy samples in a py-spy raw (collapsed) file;
    samples of the event loop waiting in select/epoll are left out."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if "idle" in frames[-1] or re.search(r"\b(select|poll|epoll_wait) \(", frames[-1]):
            idle += n
            continue
        total += n
        names = [re.sub(r" \(.*?/(site-packages|src)/", " (", f) for f in frames[1:]]
        if not names:
            continue
        own[names[-1]] += n
        for name in {re.sub(r":\d+\)$", ")", f) for f in names}:
            incl[name] += n

    def share(c: Counter[str], k: int) -> list[tuple[str, float]]:
        return [(f, round(v / total, 3)) for f, v in c.most_common(k)] if total else []

    return {
        "busy_samples": total,
        "idle_samples": idle,
        "top_own": share(own, top),
        "top_inclusive": share(incl, top * 3),
    }


# --- describing a run --------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def source() -> dict[str, Any]:
    """Which code was measured: the commit and whether src/ had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, cwd=REPO
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "src_dirty": bool(git("status", "--porcelain", "src")),
    }


def command(scenario: str, argv: list[str] | None) -> str:
    """The command line that ran a scenario, for the result files."""
    return " ".join([f"python -m bench {scenario}", *(sys.argv[1:] if argv is None else argv)])


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {path}", flush=True)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot", flush=True)
        return None
    return plt


def replace_block(path: Path, name: str, text: str) -> bool:
    """Replace what stands between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` in a
    Markdown file; False (and the file untouched) when the markers are missing."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    try:
        doc = path.read_text()
    except OSError:
        return False
    i, j = doc.find(start), doc.find(end)
    if i < 0 or j < i:
        return False
    path.write_text(doc[: i + len(start)] + "\n" + text.strip() + "\n" + doc[j:])
    print(f"updated {path} ({name})", flush=True)
    return True


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock(2) on `path` (created if missing): the lock `flock(1)` takes,
    so other jobs on a shared machine that run under `flock PATH ...` wait for this block."""
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def timer() -> Callable[[], str]:
    t0 = time.monotonic()
    return lambda: f"[{time.monotonic() - t0:5.0f}s]"
