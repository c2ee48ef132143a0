"""The quick start, as a user runs it: `reservations serve` on the embedded defaults, a key
made with `reservations keys create` while the server runs, a restart that keeps every
reservation, and a clean stop of the embedded database."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.live import free_port

CLI = [sys.executable, "-m", "reservations"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["RESERVATIONS_DATA_DIR"] = str(data_dir)
    return env


def _serve(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        env=_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = []
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        out.append(line)
        if "Uvicorn running" in line or (not line and proc.poll() is not None):
            break
    text = "".join(out)
    assert "Uvicorn running" in text, text
    return proc, text


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def _postgres_running(data_dir: Path) -> bool:
    pgdata = str((data_dir / "postgres").resolve())
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] == "postgres" and pgdata in " ".join(p.info["cmdline"] or []):
            return True
    return False


def _valkey_running(data_dir: Path) -> bool:
    # Valkey rewrites its process title, but it works in its `dir`.
    home = str((data_dir / "valkey").resolve())
    for p in psutil.process_iter(["name", "cwd"]):
        if "valkey" in (p.info["name"] or "") and p.info["cwd"] == home:
            return True
    return False


@pytest.mark.slow
def test_quick_start_serve_keys_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    proc, text = _serve(data_dir, port)
    try:
        admin = re.search(r"(rsv_\w+)", text)
        assert admin, f"no admin key printed on first start:\n{text}"
        headers = {"Authorization": f"Bearer {admin.group(1)}"}
        room = httpx.post(f"{base}/v1/resources", json={"name": "Room"}, headers=headers)
        assert room.status_code == 201, room.text

        # A booker key made from the CLI while the server holds the same data directory.
        made = subprocess.run(
            [*CLI, "keys", "create", "--tenant", "default", "--role", "booker"],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        booker = made.stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"rsv_\w+", booker), made.stdout
        booked = httpx.post(
            f"{base}/v1/reservations",
            json={
                "resource_id": room.json()["id"],
                "start": "2033-05-01T09:00:00+02:00",
                "end": "2033-05-01T10:00:00+02:00",
            },
            headers={"Authorization": f"Bearer {booker}"},
        )
        assert booked.status_code == 201, booked.text
        assert _postgres_running(data_dir), "server still running after keys create"
        # The embedded Valkey runs beside it, and the API uses it.
        assert _valkey_running(data_dir)
        assert httpx.get(f"{base}/readyz").json()["redis"] == "ok"
        assert booked.headers["RateLimit"].startswith('"key";r=')

        # Revoked from the CLI while serving: the running API refuses it at once, although
        # the request above put it in the cache.
        prefix = booker.split("_")[1]
        revoked = subprocess.run(
            [*CLI, "keys", "revoke", prefix],
            env=_env(data_dir),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert "warning" not in revoked.stderr, revoked.stderr
        again = httpx.get(f"{base}/v1/resources", headers={"Authorization": f"Bearer {booker}"})
        assert again.status_code == 401
    finally:
        _stop(proc)
    assert proc.returncode is not None
    assert not _postgres_running(data_dir), "embedded PostgreSQL left running after stop"
    assert not _valkey_running(data_dir), "embedded Valkey left running after stop"

    # Restart: no new admin key, and the reservation is still there.
    proc, text = _serve(data_dir, port)
    try:
        assert "First start" not in text
        got = httpx.get(f"{base}/v1/reservations/{booked.json()['id']}", headers=headers)
        assert got.status_code == 200
        assert got.json()["start"] == "2033-05-01T07:00:00Z"
    finally:
        _stop(proc)
    assert not _postgres_running(data_dir)
    assert not _valkey_running(data_dir)


def test_bad_setting_stops_start_up_naming_it(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["RESERVATIONS_PORT"] = "not-a-port"
    result = subprocess.run(
        [*CLI, "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "RESERVATIONS_PORT" in result.stderr


def test_help_everywhere() -> None:
    for args in (["--help"], ["serve", "--help"], ["keys", "--help"], ["keys", "create", "--help"]):
        result = subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "Usage" in result.stdout


@pytest.mark.parametrize(
    ("var", "value"),
    [("REDIS_URL", "http://127.0.0.1:6379"), ("RESERVATIONS_RATE_LIMIT_KEY_REQUESTS", "0")],
)
def test_bad_redis_setting_stops_start_up_naming_it(tmp_path: Path, var: str, value: str) -> None:
    env = {**_env(tmp_path), var: value}
    result = subprocess.run(
        [*CLI, "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert var in result.stderr, result.stderr


def _run(data_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in _env(data_dir).items() if k != "XDG_RUNTIME_DIR"}
    return subprocess.run(
        [*CLI, *args],
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_version(tmp_path: Path) -> None:
    from reservations import __version__

    result = _run(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"reservations {__version__}"


@pytest.mark.slow
def test_keys_list_is_a_table_and_commands_print_no_warnings(tmp_path: Path) -> None:
    """With XDG_RUNTIME_DIR unset (cron, containers, su, CI), as everywhere: nothing on
    stderr but what the command means to say."""
    made = _run(
        tmp_path, "keys", "create", "--tenant", "acme", "--role", "booker", "--label", "desk"
    )
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    prefix = made.stdout.strip().splitlines()[-1].split("_")[1]

    listed = _run(tmp_path, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""
    lines = [line.split() for line in listed.stdout.splitlines() if line.strip()]
    header = lines[0]
    assert header[:4] == ["prefix", "tenant", "role", "state"], listed.stdout
    row = next(line for line in lines if line[0] == prefix)
    assert row[1:4] == ["acme", "booker", "active"], listed.stdout
    assert row[-1] == "desk"


def test_serve_on_a_busy_port_says_so_before_serving(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run(tmp_path, "serve", "--port", str(port))
    assert result.returncode == 1
    assert "Serving" not in result.stdout + result.stderr
    assert f"port {port}" in result.stderr
    assert "--port" in result.stderr
    assert not (tmp_path / "postgres").exists(), "started the database before finding out"


def test_shards_status_without_shards_is_no_error(tmp_path: Path) -> None:
    result = _run(tmp_path, "shards", "status")
    assert result.returncode == 0, result.stderr
    assert "RESERVATIONS_SHARDS is not set" in result.stdout
