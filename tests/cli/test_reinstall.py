"""The quick start's two commands side by side: the first installs the package and serves;
the second (`pip install -e '.[test]'` into the same venv) uninstalls the installed package
under the running server, deleting its files, and installs it again as an editable one. The
server must go on serving everything, the booking page and the docs included."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.live import free_port
from tests.support.servers import RedisServer

# Packaging, whatever PostgreSQL is behind the API: CI's first pass (embedded servers) runs it;
# the second, against TEST_DATABASE_URL, does not again.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="runs in the pass on the embedded servers, not again against TEST_DATABASE_URL",
)

ROOT = Path(__file__).resolve().parents[2]
FILES = [
    "/app",
    "/app/static/app.css",
    "/app/static/js/main.js",
    "/docs",
    "/docs/static/swagger-ui-bundle.js",
    "/docs/static/swagger-ui.css",
    "/openapi.json",
]


def _pip(venv: Path, *args: str) -> None:
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A venv of its own for the package, whose dependencies come from this one's (a .pth
    file), so that pip installs only the package itself, as the quick start's second command
    does when the dependencies are there already."""
    path = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    purelib = subprocess.run(
        [
            str(path / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path


@pytest.fixture
def served(
    venv: Path, database_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[str]:
    _pip(venv, str(ROOT))  # the first command: a regular install
    installed = next((venv / "lib").glob("python*/site-packages/reservations"))
    assert (installed / "web" / "page.html").exists()
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(venv / "bin" / "python"),
            "-m",
            "uvicorn",
            "reservations.app:create_app",
            "--factory",
            "--port",
            str(port),
        ],
        env={
            **{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            "DATABASE_URL": database_url,
            "RESERVATIONS_RUN_WORKER": "false",
            **redis_server.env(),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,  # not the repository: nothing is imported from the work tree
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        log.close()


@pytest.mark.slow
def test_server_keeps_serving_through_an_editable_reinstall(venv: Path, served: str) -> None:
    before = {path: httpx.get(served + path, timeout=10) for path in FILES}
    for path, response in before.items():
        assert response.status_code == 200, (path, response.text)

    _pip(venv, "-e", str(ROOT))  # the second command, under the running server
    site = next((venv / "lib").glob("python*/site-packages"))
    assert not (site / "reservations").exists(), "pip left the installed files in place?"

    for path in FILES:
        again = httpx.get(served + path, timeout=10)
        assert again.status_code == 200, (path, again.status_code, again.text[:300])
        assert again.content == before[path].content, path
    # A revalidation still gets its 304, and the API itself works on.
    css = httpx.get(
        served + "/app/static/app.css",
        headers={"If-None-Match": before["/app/static/app.css"].headers["ETag"]},
    )
    assert css.status_code == 304
    assert httpx.get(served + "/v1/resources").status_code == 401
