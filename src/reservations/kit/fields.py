"""Input types that PostgreSQL will accept without surprises.

PostgreSQL refuses NUL characters in text and jsonb and NaN in jsonb, and Python cannot
convert every aware datetime to UTC; each would otherwise surface as a 5xx. These types turn
them into 422s that say what to change."""

from __future__ import annotations

import math
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, StringConstraints

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
METADATA_MAX_BYTES = 16_384
METADATA_MAX_DEPTH = 8


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def _within_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("must be between 1970-01-01 and 9000-01-01") from None
    if not EARLIEST <= utc < LATEST:
        raise ValueError("must be between 1970-01-01 and 9000-01-01")
    return utc


_PLUS_AS_SPACE = re.compile(r"(T\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d:?\d\d)$")


def _aware_only(value: Any) -> Any:
    if isinstance(value, str):
        # In a query string an unencoded '+' arrives as a space: "10:00:00 01:00".
        value = _PLUS_AS_SPACE.sub(r"\1+\2", value.strip())
    # A bare date ("2026-01-01") or a number would otherwise be read as a naive or epoch time.
    if isinstance(value, str) and "T" not in value.upper() and " " not in value:
        raise ValueError("must be an RFC 3339 timestamp with a time and an offset")
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be an RFC 3339 timestamp string, not a number")
    return value


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > METADATA_MAX_DEPTH:
        raise ValueError(f"is nested deeper than {METADATA_MAX_DEPTH} levels")
    if isinstance(value, str):
        _no_nul(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or Infinity")
    elif isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:  # integers beyond 64 bits, lone surrogates
        raise ValueError(f"is not representable as JSON: {exc}") from None
    if size > METADATA_MAX_BYTES:
        raise ValueError(f"must serialize to at most {METADATA_MAX_BYTES} bytes of JSON")
    return value


def _known_zone(value: str) -> str:
    if value not in _zones():
        raise ValueError("must be an IANA time zone name such as 'Europe/Berlin' or 'UTC'")
    return value


@cache
def _zones() -> frozenset[str]:
    # The host's zoneinfo directory also holds files that are not IANA zone names.
    host_only = {"localtime", "posixrules", "Factory"}
    return frozenset(
        z
        for z in zoneinfo.available_timezones()
        if z not in host_only and not z.startswith(("posix/", "right/"))
    )


_ISO_DURATION = re.compile(r"^P(?:\d+W)?(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+S)?)?$")


def _iso_duration(value: Any) -> Any:
    # Months and years have no fixed length, and numbers would hide their unit.
    if not isinstance(value, str) or not _ISO_DURATION.match(value) or value in ("P", "PT"):
        raise ValueError(
            "must be an ISO 8601 duration in weeks, days, hours, minutes and whole seconds, "
            "such as 'PT1H30M' or 'P7D' (no months or years)"
        )
    if value.endswith("T"):
        raise ValueError("must not end with 'T'; write 'P1D', not 'P1DT'")
    return value


def _signed_iso_duration(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("-"):
        _iso_duration(value[1:])
        return value
    return _iso_duration(value)


MAX_DURATION = timedelta(days=366)


def _whole_seconds(value: timedelta) -> timedelta:
    if value.microseconds:
        raise ValueError("must be whole seconds")
    if abs(value) > MAX_DURATION:
        raise ValueError("must be at most 366 days (P366D)")
    return value


Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
    AfterValidator(_no_nul),
]
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[^\s\x00]+$"),
]
# Free text an admin may leave empty (a feed's label).
Label = Annotated[str, StringConstraints(max_length=200), AfterValidator(_no_nul)]
CustomerRef = Annotated[
    str, StringConstraints(min_length=1, max_length=200), AfterValidator(_no_nul)
]
TimeZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(_known_zone)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_aware_only), AfterValidator(_within_range)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]
Duration = Annotated[timedelta, BeforeValidator(_iso_duration), AfterValidator(_whole_seconds)]
SignedDuration = Annotated[
    timedelta, BeforeValidator(_signed_iso_duration), AfterValidator(_whole_seconds)
]
