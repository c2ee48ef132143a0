"""Node tools from npm for the tests that check what JavaScript clients make of the API
(tests/api/test_generated_typescript.py) and of a free/busy feed (ical.js in
tests/feeds/test_freebusy_icaljs.py): installed once into a cache directory the runs
share, `~/.cache/reservations-tests/npm/` (or under $XDG_CACHE_HOME), with the major versions
pinned in PACKAGES and the exact ones kept in that directory's package-lock.json.

Node 18.17 or later and npm come from the machine (`apt-get install nodejs npm`). Without them,
or without the registry on a first run, a test is skipped and says why; under CI (`CI` set) it
fails instead, so CI always runs it."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

# Each tool's major version; an upgrade is a change here, reviewed like any other.
PACKAGES = {"openapi-typescript": "7", "typescript": "5", "ical.js": "2"}
NODE_AT_LEAST = (18, 17)  # @redocly/openapi-core, which openapi-typescript 7 validates with


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reservations-tests" / "npm"


def unavailable(why: str) -> pytest.OutcomeException:
    """Skip saying why, or fail under CI, which must run these tests."""
    if os.environ.get("CI"):
        return pytest.fail.Exception(f"CI must run the npm tool tests: {why}")
    return pytest.skip.Exception(why, _use_item_location=True)


def node() -> str:
    """The node executable, recent enough, or the test is skipped (failed under CI)."""
    found, npm = shutil.which("node"), shutil.which("npm")
    if found is None or npm is None:
        raise unavailable(
            "node and npm are not installed (apt-get install nodejs npm): they run "
            "openapi-typescript and tsc against /openapi.json"
        )
    said = subprocess.run(
        [found, "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    version = re.match(r"v(\d+)\.(\d+)", said)
    if version is None or (int(version[1]), int(version[2])) < NODE_AT_LEAST:
        raise unavailable(f"node {said.strip()} is too old: openapi-typescript 7 needs 18.17+")
    return found


def installed() -> Path:
    """node_modules with PACKAGES in it, installed on the first run (one worker at a time)."""
    node()
    where = cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    manifest = json.dumps(
        {"name": "reservations-test-tools", "private": True, "dependencies": PACKAGES},
        indent=2,
    )
    # Written after a whole install only: an interrupted one is redone, not trusted.
    stamp = where / "installed.json"
    with (where / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == manifest):
            stamp.unlink(missing_ok=True)
            (where / "package.json").write_text(manifest)
            done = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(where)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                raise unavailable(
                    f"npm install {' '.join(PACKAGES)} into {where} failed "
                    f"(no registry?):\n{(done.stdout + done.stderr)[-2000:]}"
                )
            stamp.write_text(manifest)
    return where / "node_modules"


def version(modules: Path, package: str) -> str:
    return str(json.loads((modules / package / "package.json").read_text())["version"])
