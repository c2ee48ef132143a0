"""Racing clients against a real server process: exactly one winner per slot.

The control runs the same race against a database whose exclusion constraint was dropped
(everything else, application pre-check and advisory lock included, unchanged) and shows that
it double-books: the race is real, and the constraint is what stops it."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.live import LiveServer
from tests.support.race import burst, create_key, live_rows, overlapping_pairs

CLIENTS = 48


@pytest.mark.slow
def test_racing_creates_have_exactly_one_winner(live_server: LiveServer) -> None:
    token = create_key(live_server.database_url)
    for slot in (1, 2, 3):
        result = asyncio.run(burst(live_server, token, CLIENTS, slot))
        codes = result["codes"]
        assert codes.count(201) == 1, codes
        assert codes.count(409) == CLIENTS - 1, codes
        assert not [c for c in codes if c >= 500]
        assert result["elapsed"] < 10, f"burst took {result['elapsed']:.1f} s"
        assert live_rows(live_server.database_url, result["resource_id"]) == 1
    assert overlapping_pairs(live_server.database_url) == 0


@pytest.mark.slow
def test_control_without_the_constraint_the_race_double_books(
    unguarded_server: LiveServer,
) -> None:
    token = create_key(unguarded_server.database_url)
    winners = []
    for slot in range(1, 6):
        result = asyncio.run(burst(unguarded_server, token, CLIENTS, slot))
        winners.append(result["codes"].count(201))
        if winners[-1] > 1:
            break
    # Check-then-insert in application code lets several racers through the same slot.
    assert max(winners) > 1, f"expected a double booking without the guard, got {winners}"
    assert overlapping_pairs(unguarded_server.database_url) > 0
