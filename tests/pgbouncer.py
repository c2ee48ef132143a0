"""A real PgBouncer (Debian's 1.18) in transaction pooling mode, in front of a test database.

PgBouncer will not run as root; as root it is started as the user that owns the target's
socket directory (or `postgres`), so its files live in a directory anyone may write."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg

BINARY = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgBouncer:
    process: subprocess.Popen[bytes]
    workdir: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_pgbouncer(target_url: str, *, pool_size: int = 4) -> PgBouncer:
    """PgBouncer on a free loopback port forwarding every database name to the server of
    `target_url` (TCP host or unix-socket directory), `pool_size` server connections each."""
    if BINARY is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    parts = urlparse(target_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    workdir = Path(tempfile.mkdtemp(prefix="rsv-pgb-"))
    workdir.chmod(0o777)
    listen = _free_port()
    (workdir / "userlist.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = {pool_size}
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
"""
    )
    command = [BINARY, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # A unix socket may sit in a directory only its server's user can enter.
        user = Path(host).owner() if host.startswith("/") else "postgres"
        command[1:1] = ["-u", user]
    # Never a pipe nobody reads: pgbouncer also logs to stderr and would block on a full one.
    stderr = (workdir / "stderr.log").open("wb")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    stderr.close()
    bouncer = PgBouncer(process=process, workdir=workdir, port=listen)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(bouncer.url("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return bouncer
        except psycopg.Error:
            if process.poll() is not None:
                err = (workdir / "stderr.log").read_text()[-2000:]
                raise RuntimeError(f"pgbouncer exited: {err}") from None
            time.sleep(0.1)
    logfile = workdir / "pgbouncer.log"
    log = logfile.read_text()[-2000:] if logfile.exists() else ""
    bouncer.stop()
    raise RuntimeError(f"pgbouncer did not accept connections in 15 s: {log}")
