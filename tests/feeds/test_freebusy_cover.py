"""freebusy.grid_cover's shortcut (a stretch of constant UTC offset covers from its first grid
start to its last start's longest end) equals listing every grid start, across clock changes
too (where starts may lie further apart than the step)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reservations.feeds.freebusy import grid_cover
from reservations.kit.localtime import grid_instants
from reservations.kit.spans import normalize

# Pure (no database): CI's first pass runs it, the second (against TEST_DATABASE_URL) not again.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="runs in the pass on the embedded servers, not again against TEST_DATABASE_URL",
)

# Around the autumn and spring changes of zones that shift by an hour or by 30 minutes.
CHANGES = [
    ("Europe/Berlin", datetime(2027, 10, 31, 1, tzinfo=UTC)),
    ("Europe/Berlin", datetime(2027, 3, 28, 1, tzinfo=UTC)),
    ("America/St_Johns", datetime(2027, 11, 7, 3, 30, tzinfo=UTC)),
    ("Australia/Lord_Howe", datetime(2027, 4, 3, 15, tzinfo=UTC)),
    ("UTC", datetime(2027, 1, 1, tzinfo=UTC)),
]


@given(
    change=st.sampled_from(CHANGES),
    step=st.sampled_from([1, 7, 15, 30, 45, 60, 90, 120, 360, 1440]),
    before=st.integers(0, 48 * 60),
    after=st.integers(1, 48 * 60),
    tail=st.integers(0, 600),
    longest=st.integers(1, 26 * 60),
)
def test_the_shortcut_covers_what_every_start_covers(
    change: tuple[str, datetime], step: int, before: int, after: int, tail: int, longest: int
) -> None:
    zone, at = change
    lo, last = at - timedelta(minutes=before), at + timedelta(minutes=after)
    hi, length = last + timedelta(minutes=tail + 1), timedelta(minutes=longest)
    every = normalize(
        (s, min(hi, s + length))
        for s in grid_instants(zone, step, lo, last + timedelta(microseconds=1))
    )
    assert normalize(grid_cover(zone, step, (lo, hi), last=last, longest=length)) == every
