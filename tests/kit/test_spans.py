"""Half-open span lists against a brute-force model: a span list is a set of whole minutes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from reservations.kit.spans import Span, clip, covering, intersect, normalize, overlapping, subtract

BASE = datetime(2026, 3, 29, tzinfo=UTC)
LIMIT = 40


def at(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


def minute_of(instant: datetime) -> int:
    return int((instant - BASE) / timedelta(minutes=1))


def minutes_in(spans: list[Span]) -> set[int]:
    return {m for a, b in spans for m in range(minute_of(a), minute_of(b))}


# Raw lists: unsorted, overlapping, touching, empty and reversed spans included.
raw_spans = st.lists(
    st.tuples(st.integers(0, LIMIT), st.integers(0, LIMIT)).map(lambda p: (at(p[0]), at(p[1]))),
    max_size=8,
)
ranges = st.tuples(st.integers(0, LIMIT), st.integers(0, LIMIT)).map(sorted)

PROPS = settings(max_examples=300, deadline=None)


def assert_normalized(spans: list[Span]) -> None:
    for a, b in spans:
        assert a < b, spans
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start, f"spans touch or overlap or are unsorted: {spans}"


@PROPS
@given(raw_spans)
def test_normalize_is_sorted_disjoint_non_touching_and_keeps_the_set(spans: list[Span]) -> None:
    out = normalize(spans)
    assert_normalized(out)
    assert minutes_in(out) == minutes_in([s for s in spans if s[0] < s[1]])
    assert normalize(out) == out


@PROPS
@given(raw_spans, raw_spans)
def test_intersect_is_set_intersection(a: list[Span], b: list[Span]) -> None:
    a, b = normalize(a), normalize(b)
    out = intersect(a, b)
    assert_normalized(out)
    assert minutes_in(out) == minutes_in(a) & minutes_in(b)


@PROPS
@given(raw_spans, raw_spans)
def test_subtract_is_set_difference(a: list[Span], b: list[Span]) -> None:
    a, b = normalize(a), normalize(b)
    out = subtract(a, b)
    assert_normalized(out)
    assert minutes_in(out) == minutes_in(a) - minutes_in(b)


@PROPS
@given(raw_spans, st.integers(0, LIMIT), st.integers(0, LIMIT))
def test_clip_is_intersection_with_the_range(spans: list[Span], lo: int, hi: int) -> None:
    spans = normalize(spans)
    out = clip(spans, at(lo), at(hi))
    assert_normalized(out)
    assert minutes_in(out) == minutes_in(spans) & set(range(lo, hi))


@PROPS
@given(raw_spans, ranges.filter(lambda r: r[0] < r[1]))
def test_covering_finds_the_one_span_holding_the_whole_range(
    spans: list[Span], rng: list[int]
) -> None:
    spans = normalize(spans)
    lo, hi = rng
    found = covering(spans, at(lo), at(hi))
    # In a normalized list, a range is inside one span iff every minute of it is covered.
    inside = set(range(lo, hi)) <= minutes_in(spans)
    assert (found is not None) == inside
    if found is not None:
        assert found in spans
        assert found[0] <= at(lo)
        assert at(hi) <= found[1]


@PROPS
@given(raw_spans, ranges.filter(lambda r: r[0] < r[1]))
def test_overlapping_is_spans_sharing_a_minute(spans: list[Span], rng: list[int]) -> None:
    spans = normalize(spans)
    lo, hi = rng
    want = [s for s in spans if minutes_in([s]) & set(range(lo, hi))]
    assert overlapping(spans, at(lo), at(hi)) == want


def test_covering_at_span_edges() -> None:
    spans = [(at(0), at(10)), (at(20), at(30))]
    assert covering(spans, at(0), at(10)) == (at(0), at(10))
    assert covering(spans, at(20), at(21)) == (at(20), at(30))
    assert covering(spans, at(9), at(11)) is None
    assert covering(spans, at(10), at(20)) is None
    assert covering([], at(0), at(1)) is None


def test_touching_spans_merge_but_gapped_ones_do_not() -> None:
    assert normalize([(at(5), at(10)), (at(0), at(5))]) == [(at(0), at(10))]
    assert normalize([(at(0), at(5)), (at(6), at(10))]) == [(at(0), at(5)), (at(6), at(10))]
    assert normalize([(at(3), at(3)), (at(4), at(2))]) == []
