"""ical.js (Mozilla's iCalendar parser, which Thunderbird and many web calendars use) reads a
free/busy feed's VFREEBUSY periods as the API wrote them: a fourth parser, in another
language, besides the three of test_freebusy.py. From npm through tests/support/npm.py:
skipped without node outside CI, failed under CI."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from reservations.feeds import ical
from reservations.feeds.busy import ResourceBusy
from reservations.feeds.freebusy import FbType, Period
from tests.support import npm

# Pure (no database): CI's first pass runs it, the second (against TEST_DATABASE_URL) not again.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="runs in the pass on the embedded servers, not again against TEST_DATABASE_URL",
)

READ = """
import ICAL from "ical.js";
import { readFileSync } from "node:fs";
const cal = new ICAL.Component(ICAL.parse(readFileSync(0, "utf8")));
const out = {};
for (const fb of cal.getAllSubcomponents("vfreebusy")) {
  out[fb.getFirstPropertyValue("uid")] = {
    comment: fb.getFirstPropertyValue("comment"),
    start: fb.getFirstPropertyValue("dtstart").toJSDate().toISOString(),
    end: fb.getFirstPropertyValue("dtend").toJSDate().toISOString(),
    periods: fb.getAllProperties("freebusy").flatMap((prop) =>
      prop.getValues().map((p) => [
        p.start.toJSDate().toISOString(),
        p.getEnd().toJSDate().toISOString(),
        prop.getParameter("fbtype") ?? "BUSY",
      ]),
    ),
  };
}
process.stdout.write(JSON.stringify(out));
"""


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_icaljs_reads_the_periods_written() -> None:
    modules = npm.installed()
    t0 = datetime(2027, 3, 28, tzinfo=UTC)
    h = timedelta(hours=1)
    items = [
        ResourceBusy(
            UUID(int=1),
            "Hall; east, \\ 1st floor",
            "Europe/Berlin",
            t0,
            t0 + 62 * 24 * h,
            [
                Period(t0, t0 + 9 * h, FbType.unavailable),
                Period(t0 + 9 * h, t0 + 10.5 * h, FbType.busy),
                Period(t0 + 30 * h, t0 + 31 * h + timedelta(seconds=1), FbType.unavailable),
            ],
        ),
        ResourceBusy(UUID(int=2), "Empty", "UTC", t0, t0 + 3 * h, []),
    ]
    body = ical.render_freebusy(name="Halls", zone=None, stamp=t0, items=items)
    done = subprocess.run(
        [npm.node(), "--input-type=module", "-e", READ],
        input=body.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=modules.parent,  # where "ical.js" resolves from
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        f"freebusy-{item.id}@reservations": {
            "comment": item.name,
            "start": _iso(item.start),
            "end": _iso(item.end),
            "periods": [[_iso(p.start), _iso(p.end), p.type.value] for p in item.periods],
        }
        for item in items
    }
