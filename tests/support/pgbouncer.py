"""A real PgBouncer (Debian's 1.18) in transaction pooling mode, in front of a test database.

PgBouncer will not run as root; as root it is started as the user that owns the target's
socket directory (or `postgres`), so its files live in a directory anyone may write.

For fault tests (tests/storm) it can be SIGKILLed and started again on the same port, and
paused with SIGSTOP (a frozen pooler: connections neither fail nor answer)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
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
    command: list[str] = field(default_factory=list)  # how it was started, to start it again
    paused: bool = False

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, cleanup: bool = True) -> None:
        """Terminate it (SIGKILL after 10 s); unless `cleanup=False`, delete its files."""
        self.resume()
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if cleanup:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL: every client and server connection is cut at once."""
        if self.running():
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)
        self.paused = False

    def restart(self, timeout: float = 15) -> None:
        """Start it again, with the same configuration and port, after `kill()` or `stop()`."""
        if self.running():
            return
        # The dead process's pid file would make the new one refuse to start if that pid
        # had been reused meanwhile.
        (self.workdir / "pgbouncer.pid").unlink(missing_ok=True)
        self.process = _spawn(self.command, self.workdir)
        _wait_ready(self, timeout)

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        if self.running() and not self.paused:
            self.process.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.paused and self.running():
            self.process.send_signal(signal.SIGCONT)
        self.paused = False


def _spawn(command: list[str], workdir: Path) -> subprocess.Popen[bytes]:
    # Never a pipe nobody reads: pgbouncer also logs to stderr and would block on a full one.
    with (workdir / "stderr.log").open("ab") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)


def _wait_ready(bouncer: PgBouncer, timeout: float) -> None:
    """Until it forwards a query; else stop it and raise with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(bouncer.url("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error:
            if not bouncer.running():
                err = (bouncer.workdir / "stderr.log").read_text()[-2000:]
                raise RuntimeError(f"pgbouncer exited: {err}") from None
            time.sleep(0.1)
    logfile = bouncer.workdir / "pgbouncer.log"
    log = logfile.read_text()[-2000:] if logfile.exists() else ""
    bouncer.stop(cleanup=False)
    raise RuntimeError(f"pgbouncer did not accept connections in {timeout:g} s: {log}")


def start_pgbouncer(
    target_url: str,
    *,
    pool_size: int = 4,
    workdir: Path | None = None,
    settings: dict[str, str] | None = None,
) -> PgBouncer:
    """PgBouncer on a free loopback port forwarding every database name to the server of
    `target_url` (TCP host or unix-socket directory), `pool_size` server connections each.
    Its files go to `workdir` (made if missing; default a new temporary directory);
    `settings` are more lines for its [pgbouncer] section (they win over the ones here)."""
    if BINARY is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    parts = urlparse(target_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    own_dir = workdir is None
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="rsv-pgb-"))
    else:
        workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o777)
    listen = _free_port()
    extra = "".join(f"{name} = {value}\n" for name, value in (settings or {}).items())
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
{extra}"""
    )
    command = [BINARY, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # A unix socket may sit in a directory only its server's user can enter.
        user = Path(host).owner() if host.startswith("/") else "postgres"
        command[1:1] = ["-u", user]
    bouncer = PgBouncer(
        process=_spawn(command, workdir), workdir=workdir, port=listen, command=command
    )
    try:
        _wait_ready(bouncer, 15)
    except RuntimeError:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    return bouncer
