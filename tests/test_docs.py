"""The README and docs/ as a reader meets them: the first booking works when pasted, every link
stays in the repository and lands somewhere, CI runs the README's test command, and the docs
carry no dated timings or issue numbers (BENCHMARKS.md and RELIABILITY.md may)."""

from __future__ import annotations

import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

import pytest

from tests.support.live import LiveServer, admin_key_on

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


@pytest.mark.skipif(shutil.which("curl") is None, reason="the README's example uses curl")
def test_the_first_booking_works_when_pasted(live_server: LiveServer, tmp_path: Path) -> None:
    """The README's block, run by bash as a reader pastes it (only the address changed to
    this test's server), with KEY set as the README says."""
    (block,) = _blocks_after(README.read_text(), "## A first booking")
    assert "http://127.0.0.1:8000" in block
    script = block.replace("http://127.0.0.1:8000", live_server.url)
    expected = [line.removeprefix("# → ") for line in block.splitlines() if "# → " in line]
    done = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        env={"KEY": admin_key_on(live_server.database_url), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert len(printed) == len(expected), (printed, expected)
    for got, want in zip(printed, expected, strict=True):
        # The README elides the dates (they depend on the day it is run): "…" stands for any
        # text.
        pattern = ".*".join(re.escape(part) for part in want.split("…"))
        assert re.fullmatch(pattern, got), (got, want)
