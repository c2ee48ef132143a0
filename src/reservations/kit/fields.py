"""Input types that PostgreSQL will accept without surprises.

PostgreSQL refuses NUL characters in text and jsonb and NaN in jsonb, UTF-8 cannot carry a lone
surrogate (a JSON "\\ud800" without its pair), and Python cannot convert every aware datetime to
UTC; each would otherwise surface as a 5xx. These types turn them into 422s that say what to
change. Every free-text field of a request is `Text` (or a narrower type built on it).

Each type's JSON Schema (and so the OpenAPI document) says as much of its rule as JSON Schema
can: a client, or a fuzzer, that follows the schema is refused only for what no schema can say
(the order of two fields, a duration's total length, an instant at the very edge of the range).
Schemas shared by many fields are OpenAPI components; `component()` marks where they go and
kit/openapi.py turns the mark into a `$ref`."""

from __future__ import annotations

import math
import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    GetJsonSchemaHandler,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
# Local calendar dates (overrides, exdates) within the same years.
EARLIEST_DATE = date(1970, 1, 1)
LATEST_DATE = date(8999, 12, 31)
METADATA_MAX_BYTES = 16_384
METADATA_MAX_DEPTH = 8
# PostgreSQL's jsonb keeps numbers as `numeric` and prints 1e20 as 100000000000000000000, which
# reads back as an integer no 64-bit encoder can write; so every number stays within 64 bits.
METADATA_NUMBER_LIMIT = 2**63

# What str.strip() strips (str.isspace()), spelled out so that Python's, pydantic's (Rust) and a
# client's (ECMA-262) regular expressions all read the same class: their `\s` differ.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL = r"^[^\x00]*$"
COMPONENT_MARK = "x-component"


def component(name: str) -> WithJsonSchema:
    """The JSON Schema of a field whose schema is the OpenAPI component `name`."""
    return WithJsonSchema({COMPONENT_MARK: name})


class _SchemaExtra:
    """Adds keys a type's JSON Schema lacks, without replacing it (as WithJsonSchema would):
    the lengths and pattern a field narrows the type with still show."""

    def __init__(self, **extra: Any) -> None:
        self.extra = extra

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        for key, value in self.extra.items():
            schema.setdefault(key, value)
        return schema


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def _no_lone_surrogate(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"must not contain a lone surrogate (\\u{ord(value[exc.start]):04x} at character "
            f"{exc.start}): send UTF-8 text, and a character beyond U+FFFF as one escaped pair "
            "such as \\ud83d\\ude00"
        ) from None
    return value


def plain_text(value: Any) -> Any:
    """What PostgreSQL and UTF-8 can store: no NUL, no lone surrogate. Runs before pydantic's
    own string checks, whose refusal of a surrogate does not say what to send instead."""
    if isinstance(value, str):
        _no_lone_surrogate(_no_nul(value))
    return value


def within_range(value: datetime) -> datetime:
    """The instant in UTC; ValueError unless it lies in [EARLIEST, LATEST)."""
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
        plain_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or Infinity")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if not -METADATA_NUMBER_LIMIT < value < METADATA_NUMBER_LIMIT:
            raise ValueError("must not contain numbers beyond 64 bits (±9.2e18)")
    elif isinstance(value, dict):
        for key, item in value.items():
            plain_text(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    _check_json(value)
    try:
        size = len(orjson.dumps(value))
    except TypeError as exc:  # what _check_json missed
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


_ISO_DURATION = re.compile(r"^P(?:[0-9]+W)?(?:[0-9]+D)?(?:T(?:[0-9]+H)?(?:[0-9]+M)?(?:[0-9]+S)?)?$")


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


def iso_duration(value: timedelta) -> str:
    """The duration as `Duration` reads it: days, hours, minutes and seconds ("P366D",
    "-PT30M", "PT0S"). Pydantic's own writer turns 365 days into "P1Y", which no reader here
    accepts (a year has no fixed length)."""
    sign = "-" if value < timedelta(0) else ""
    value = abs(value)
    minutes, seconds = divmod(value.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    second = f"{seconds}.{value.microseconds:06d}".rstrip("0") if value.microseconds else seconds
    clock = "".join(f"{n}{unit}" for n, unit in ((hours, "H"), (minutes, "M")) if n)
    clock += f"{second}S" if seconds or value.microseconds else ""
    days = f"{value.days}D" if value.days else ""
    if not days and not clock:
        return "PT0S"
    return f"{sign}P{days}{'T' + clock if clock else ''}"


def _whole_seconds(value: timedelta) -> timedelta:
    if value.microseconds:
        raise ValueError("must be whole seconds")
    if abs(value) > MAX_DURATION:
        raise ValueError("must be at most 366 days (P366D)")
    return value


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date_text(value: Any) -> Any:
    # Without this a number would be read as seconds since 1970.
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    return value


def _date_in_range(value: date) -> date:
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise ValueError(f"must be between {EARLIEST_DATE} and {LATEST_DATE}")
    return value


def _json_integer(value: Any) -> Any:
    # JSON Schema's integer: 3 and 3.0, not "3" nor true (which Python would take as 1).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    return value


def _stripped_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must contain a character other than white space")
    return value


# Free text: anything PostgreSQL can store (no NUL, no lone surrogate). Every field bounds
# it, `Annotated[Text, StringConstraints(max_length=...)]` (not pydantic's Field: these
# types are also query parameters); tests/api/test_free_text.py checks that none is unbounded.
Text = Annotated[str, BeforeValidator(plain_text), _SchemaExtra(pattern=NO_NUL)]
# Lengths count what was sent (as the schema says); the name is stored without the white space
# around it.
Name = Annotated[
    Text,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_stripped_name),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "pattern": rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$",
            "description": "Stored without leading and trailing white space.",
        }
    ),
]
Tag = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=rf"^[^\x00{WHITESPACE}]+$"),
    BeforeValidator(plain_text),
]
# Free text an admin may leave empty (a feed's label).
Label = Annotated[Text, StringConstraints(max_length=200)]
CustomerRef = Annotated[Text, StringConstraints(min_length=1, max_length=200)]
TimeZoneName = Annotated[
    str, StringConstraints(max_length=64), AfterValidator(_known_zone), component("TimeZoneName")
]
# The years the range allows; the edges (1970-01-01 ahead of UTC, 8999-12-31 behind it) are left
# to the validator, a regular expression cannot add offsets.
_TIMESTAMP_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^(19[7-9][0-9]|[2-8][0-9]{3})-",
    "description": "RFC 3339 with an offset, from 1970-01-01 to 9000-01-01 (UTC).",
}
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_aware_only),
    AfterValidator(within_range),
    WithJsonSchema(_TIMESTAMP_SCHEMA),
]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata), component("Metadata")]
CalendarDate = Annotated[
    date,
    BeforeValidator(_date_text),
    AfterValidator(_date_in_range),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date",
            "pattern": r"^(19[7-9][0-9]|[2-8][0-9]{3})-[0-9]{2}-[0-9]{2}$",
            "description": "YYYY-MM-DD, from 1970-01-01 to 8999-12-31.",
        }
    ),
]
# For JSON bodies; query parameters arrive as text and keep plain `int`. Constraints of an
# optional one go before JSON_INTEGER (`Annotated[int, Field(ge=1), JSON_INTEGER] | None`), else
# pydantic leaves them out of the JSON Schema.
JSON_INTEGER = BeforeValidator(_json_integer)
JsonInt = Annotated[int, JSON_INTEGER]
_DURATION_PATTERN = r"P(?!$)([0-9]+W)?([0-9]+D)?(T(?=[0-9])([0-9]+H)?([0-9]+M)?([0-9]+S)?)?$"
_DURATION_SCHEMA = {
    "type": "string",
    "format": "duration",
    "pattern": "^" + _DURATION_PATTERN,
    "description": "ISO 8601 in weeks, days, hours, minutes and whole seconds (no months or "
    "years), at most 366 days: PT1H30M, P7D. Written back in days, hours, minutes and seconds "
    "(P1W as P7D, PT90M as PT1H30M).",
}
_WRITE_DURATION = PlainSerializer(iso_duration, return_type=str, when_used="json")
Duration = Annotated[
    timedelta,
    BeforeValidator(_iso_duration),
    AfterValidator(_whole_seconds),
    _WRITE_DURATION,
    WithJsonSchema(_DURATION_SCHEMA),
]
# A duration in a reply the server builds (no validation: the server made it), written as above.
WrittenDuration = Annotated[timedelta, _WRITE_DURATION]
SignedDuration = Annotated[
    timedelta,
    BeforeValidator(_signed_iso_duration),
    AfterValidator(_whole_seconds),
    _WRITE_DURATION,
    WithJsonSchema(
        {
            **_DURATION_SCHEMA,
            "pattern": "^-?" + _DURATION_PATTERN,
            "description": "ISO 8601 as for durations, optionally negative: -PT30M.",
        }
    ),
]


# Any JSON value Metadata may hold, exactly as the validator takes it. The document publishes a
# flat form (components()): client generators such as openapi-python-client cannot process a
# schema that refers to itself, and dropped every operation whose body held metadata. The
# fuzzer (tests/fuzz/hooks.py) puts this exact form back, so that what it generates as valid
# is valid. Its depth limit is left to the validator: a schema that counted levels would be
# eight copies of this one.
STRICT_METADATA_VALUE: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": NO_NUL},
        {
            "type": "number",
            "exclusiveMinimum": -METADATA_NUMBER_LIMIT,
            "exclusiveMaximum": METADATA_NUMBER_LIMIT,
        },
        {"type": "boolean"},
        {"type": "null"},
        {"type": "array", "items": {"$ref": "#/components/schemas/MetadataValue"}},
        {
            "type": "object",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {"$ref": "#/components/schemas/MetadataValue"},
        },
    ]
}


def zone_constant(zone: str) -> str:
    """The constant a generated client names a zone by: Europe/Berlin -> EUROPE_BERLIN,
    Etc/GMT+1 -> ETC_GMT_PLUS_1, Etc/GMT-1 -> ETC_GMT_MINUS_1 (which would otherwise both be
    ETC_GMT1: a generator refuses an enum with two members of one name)."""
    name = re.sub(r"-(?=[0-9])", "_MINUS_", zone.replace("+", "_PLUS_"))
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()


def components() -> dict[str, dict[str, Any]]:
    """The OpenAPI components the types above refer to."""
    zones = sorted(_zones())
    constants = [zone_constant(z) for z in zones]
    assert len(set(constants)) == len(constants), "two zones with one constant"
    out: dict[str, dict[str, Any]] = {
        "TimeZoneName": {
            "type": "string",
            "enum": zones,
            "x-enum-varnames": constants,
            "description": "An IANA time zone name, such as Europe/Berlin or UTC.",
        },
        "Metadata": {
            "type": "object",
            "description": f"Any JSON object of at most {METADATA_MAX_BYTES} bytes, nested at "
            f"most {METADATA_MAX_DEPTH} levels; no NUL characters, numbers within 64 bits.",
            "propertyNames": {"pattern": NO_NUL},
            "additionalProperties": {COMPONENT_MARK: "MetadataValue"},
        },
        "MetadataValue": {
            "description": "Any JSON value: a string (no NUL), a number within 64 bits, true, "
            f"false, null, or an array or object of such values, nested at most "
            f"{METADATA_MAX_DEPTH} levels in all.",
        },
    }
    return out
