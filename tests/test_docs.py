"""The README and docs/ as a reader meets them: the first booking works when pasted, and so does
every shell example of docs/ pasted after it (no placeholder left to replace), every link stays
in the repository and lands somewhere, CI runs the README's test command, and the docs carry no
dated timings or issue numbers (BENCHMARKS.md and RELIABILITY.md may)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import LiveServer, admin_key_on, start_live_server, stop_live_server

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
USER_DOCS = [README, *DOCS]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _blocks_after(text: str, heading: str) -> list[str]:
    """The fenced code blocks of one section."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(r"^```[a-z]*\n(.*?)^```", section, re.S | re.M)


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_the_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 160, "the README is the front door, not the manual"
    for section in ("## Quick start", "## A first booking", "## How it works", "## Documentation"):
        assert f"\n{section}\n" in text, section
    # Every page of docs/ is in the README's index.
    for page in DOCS:
        assert f"](docs/{page.name})" in text, f"docs/{page.name} is not in the README's index"


def test_ci_runs_the_readmes_test_command() -> None:
    serve, test = _blocks_after(README.read_text(), "## Quick start")[:2]
    assert serve.strip().endswith(".venv/bin/reservations serve"), serve
    assert test.strip().endswith(".venv/bin/pytest -n 2"), test
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test.strip() in ci, "CI must run the README's test command verbatim"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.name)
def test_every_link_stays_in_the_repository_and_lands(path: Path) -> None:
    text = FENCE.sub("", path.read_text())
    for target in LINK.findall(text):
        assert ":" not in target.partition("#")[0], f"{path.name}: {target} leaves the repository"
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        assert dest.is_relative_to(ROOT), f"{path.name}: {target} leaves the repository"
        assert dest.exists(), f"{path.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{path.name}: no heading for #{anchor} in {file}"


@pytest.mark.parametrize("path", USER_DOCS, ids=lambda p: p.name)
def test_no_dated_timings_or_issue_numbers(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"\bissues? ?-?\d", text, re.I), f"{path.name} names an issue number"
    assert not re.search(r"\b20[2-9]\d-[01]\d-[0-3]\d(?!T)", text), f"{path.name} has a date"
    assert "shared/" not in text, f"{path.name} points outside the repository"


def _pasted(
    script: str, url: str, database_url: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    """A block run by bash as a reader pastes it (only the address changed to the test's
    server), with KEY set as the README says."""
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script.replace("http://127.0.0.1:8000", url)],
        env={"KEY": admin_key_on(database_url), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
    )


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_the_first_booking_works_when_pasted(live_server: LiveServer, tmp_path: Path) -> None:
    """The README's block, run by bash as a reader pastes it (only the address changed to
    this test's server), with KEY set as the README says."""
    (block,) = _blocks_after(README.read_text(), "## A first booking")
    assert "http://127.0.0.1:8000" in block
    expected = [line.removeprefix("# → ") for line in block.splitlines() if "# → " in line]
    done = _pasted(block, live_server.url, live_server.database_url, tmp_path)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert len(printed) == len(expected), (printed, expected)
    for got, want in zip(printed, expected, strict=True):
        # The README elides the dates (they depend on the day it is run): "…" stands for any
        # text.
        pattern = ".*".join(re.escape(part) for part in want.split("…"))
        assert re.fullmatch(pattern, got), (got, want)


def _api_examples() -> list[tuple[str, str]]:
    """The ```sh blocks of docs/ that call the API ($API); the others install tools."""
    return [
        (page.name, block)
        for page in DOCS
        for block in re.findall(r"^```sh\n(.*?)^```", page.read_text(), re.S | re.M)
        if "$API" in block
    ]


@pytest.mark.skipif(shutil.which("curl") is None, reason="the examples use curl")
def test_the_docs_api_examples_work_when_pasted_after_the_first_booking(
    database_url: str, redis_server: Any, tmp_path: Path
) -> None:
    """Each ```sh block of docs/ that calls the API uses what the README's first booking set
    ($API, $H, $ROOM), not a placeholder such as "01a2…": pasted in the same shell after it,
    each creates what it says. The server allows private webhook receivers only so that the
    webhook example's example.com is not looked up (a reader's server resolves it; a test
    machine may have no DNS); everything else about its body is checked as sent."""
    examples = _api_examples()
    assert {"feeds.md", "webhooks.md"} <= {name for name, _ in examples}
    (first,) = _blocks_after(README.read_text(), "## A first booking")
    server = start_live_server(
        database_url, **redis_server.env(), RESERVATIONS_WEBHOOKS_ALLOW_PRIVATE="true"
    )
    try:
        for name, block in examples:
            done = _pasted(first + block, server.url, database_url, tmp_path)
            assert done.returncode == 0, (name, done.stderr)
            if "Accept: text/csv" in block:  # the list as CSV, with the first booking in it
                header, *rows = done.stdout.split("\ufeff", 1)[1].splitlines()
                assert header.startswith("id,resource_id,resource_name,status,"), (name, header)
                assert rows, (name, done.stdout)
                continue
            reply: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
            assert "type" not in reply, (name, reply)  # a problem
            # What a POST makes has an id; a report answers for its window.
            assert "id" in reply or "group_by" in reply, (name, reply)
    finally:
        stop_live_server(server)
