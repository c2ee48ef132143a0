"""The app in a real server process (uvicorn on loopback), keys made straight in its database
(admin_key_on, admin_token), a free port, and a reader of its Prometheus metrics."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx

from reservations.config import Settings
from reservations.kit.db import Database
from reservations.tenancy import service as tenancy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    database_url: str


def start_live_server(database_url: str, **env: str) -> LiveServer:
    """The real thing: `uvicorn` in its own process, serving the app over loopback."""
    port = free_port()
    environ = {
        **os.environ,
        "DATABASE_URL": database_url,
        "RESERVATIONS_RUN_WORKER": "false",
        # A warm pool, as in production: connections are not opened one by one mid-burst.
        "RESERVATIONS_DB_POOL_MIN": "24",
        "RESERVATIONS_DB_POOL_MAX": "24",
        **env,
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "reservations.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=environ,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return LiveServer(url=url, process=process, database_url=database_url)
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise RuntimeError("live server exited during start-up")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("live server did not become ready in 30 s")


def stop_live_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


def admin_key_on(database_url: str) -> str:
    """An admin key of a new tenant, made straight in the database (for a server process)."""

    async def main() -> str:
        db = Database(database_url, Settings(database_url=database_url, db_pool_min=1))
        await db.open()
        try:
            name = f"t-{secrets.token_hex(4)}"
            return (await tenancy.create_key(db, tenant=name, role=tenancy.Role.admin)).token
        finally:
            await db.close()

    return asyncio.run(main())


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 if absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def admin_token(database_url: str) -> str:
    async def main() -> str:
        db = Database(database_url, Settings(database_url=database_url, db_pool_min=1))
        await db.open()
        try:
            name = f"lb-{secrets.token_hex(4)}"
            return (await tenancy.create_key(db, tenant=name, role=tenancy.Role.admin)).token
        finally:
            await db.close()

    return asyncio.run(main())
