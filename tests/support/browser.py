"""Debian's Chromium for the browser tests (tests/web), driven by Playwright; never a browser
that `playwright install` downloads. MISSING says why the tests cannot run here; in CI they
must."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed: .venv/bin/pip install -e '.[test]'"
    if not CHROMIUM.exists():
        return (
            "no /usr/bin/chromium: install Debian's package with `apt-get install chromium` "
            "(.ci/run does; never `playwright install`, which downloads a browser)"
        )
    return None


MISSING = _missing_browser()

if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"CI must run the browser tests: {MISSING}")
