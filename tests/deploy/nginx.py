"""A real nginx on loopback, configured by deploy/nginx.conf.

The test renders the shipped file rather than keeping a copy: it swaps the upstream addresses,
the listen address and the file paths (pid, logs, temp dirs) and keeps every other directive.
Each substitution must match exactly once, so a change to the shipped file that the renderer
does not understand fails the test instead of testing something else."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.deploy.tools import executable

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    """The nginx executable (see tests/deploy/tools.py for what happens without one)."""
    return executable(
        "nginx",
        install="apt-get install -y nginx",
        places=("/usr/sbin/nginx", "/usr/local/sbin/nginx"),
    )


def _sub_once(pattern: str, replacement: str, text: str) -> str:
    result, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert n == 1, f"deploy/nginx.conf: expected one match for {pattern!r}, found {n}"
    return result


def render(*, listen_port: int, upstream_ports: list[int], tmp: Path) -> str:
    conf = CONF.read_text()
    servers = re.findall(r"^(\s*)server api-\d+:8000( [^;]*);$", conf, flags=re.MULTILINE)
    assert len(servers) >= 2, "deploy/nginx.conf: expected at least two upstream servers"
    indent, params = servers[0]
    lines = "\n".join(f"{indent}server 127.0.0.1:{port}{params};" for port in upstream_ports)
    conf = re.sub(r"^\s*server api-1:8000 [^;]*;$", lambda _: lines, conf, flags=re.MULTILINE)
    conf = re.sub(r"^\s*server api-\d+:8000 [^;]*;\n", "", conf, flags=re.MULTILINE)
    conf = _sub_once(r"^(\s*)listen 8080;", rf"\1listen 127.0.0.1:{listen_port};", conf)
    conf = _sub_once(r"^pid .*;$", f"pid {tmp}/nginx.pid;", conf)
    conf = _sub_once(r"^error_log .*;$", f"error_log {tmp}/error.log warn;", conf)
    conf = _sub_once(r"access_log /dev/stdout api;", f"access_log {tmp}/access.log api;", conf)
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = _sub_once(r"^http \{\n", "http {\n" + temp_paths, conf)
    if os.geteuid() == 0:
        # As root the master would switch its workers to `nobody`, who cannot enter the
        # private temporary directory.
        conf = "user root;\n" + conf
    return conf


@dataclass
class Nginx:
    url: str
    process: subprocess.Popen[bytes]
    tmp: Path

    def access_log(self) -> list[str]:
        return (self.tmp / "access.log").read_text().splitlines()

    def error_log(self) -> str:
        path = self.tmp / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(*, listen_port: int, upstream_ports: list[int], tmp: Path) -> Nginx:
    binary = nginx_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "nginx.conf").write_text(
        render(listen_port=listen_port, upstream_ports=upstream_ports, tmp=tmp)
    )
    process = subprocess.Popen(
        [
            binary,
            "-p",
            f"{tmp}/",
            "-c",
            str(tmp / "nginx.conf"),
            "-e",
            str(tmp / "error.log"),
            "-g",
            "daemon off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"nginx exited at start: {err}{_read(tmp / 'error.log')}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", listen_port)) == 0:
                return Nginx(url=f"http://127.0.0.1:{listen_port}", process=process, tmp=tmp)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("nginx did not listen within 10 s")


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""
