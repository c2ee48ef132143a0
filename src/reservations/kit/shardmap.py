"""The shard map: a fixed number of logical shards, each assigned to one physical cluster.

A resource's logical shard follows from its id alone (the id's last 16 bits modulo the number
of logical shards), so routing needs no lookup. Everything that belongs to one resource (its
reservations, bookings, waitlist entries) gets an id with the same last 16 bits
(`reservations.kit.ids.uuid7_beside`), so it routes to the same shard from its own id.

The topology comes from `RESERVATIONS_SHARDS`: a JSON document, or `@/path/to/file.json`:

    {"logical_shards": 64,
     "clusters": {"a": "postgresql://.../reservations",
                  "b": {"url": "postgresql://.../reservations",
                        "replicas": ["postgresql://...replica.../reservations"]}},
     "assign": {"a": "0-31", "b": "32-63"}}

`assign` is where each logical shard starts out; once the catalog holds a map (the first
start writes it), the catalog's map wins, because `reservations shards move` changes it there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

MAX_LOGICAL = 4096
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


class ShardMapError(ValueError):
    """The shard configuration is wrong; the message says where and how to fix it."""


def logical_of(ident: UUID, logical_shards: int) -> int:
    """The logical shard of a resource id, or of anything created beside a resource."""
    return int.from_bytes(ident.bytes[14:], "big") % logical_shards


@dataclass(frozen=True)
class ShardMap:
    logical_shards: int
    clusters: dict[str, str]  # name -> primary URL
    assignment: tuple[str, ...]  # logical shard -> cluster name
    replicas: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name -> replica URLs

    def cluster_of(self, ident: UUID) -> str:
        return self.assignment[logical_of(ident, self.logical_shards)]

    def logical_of(self, ident: UUID) -> int:
        return logical_of(ident, self.logical_shards)

    def shards_of(self, cluster: str) -> list[int]:
        return [n for n, name in enumerate(self.assignment) if name == cluster]

    def with_assignment(self, assignment: dict[int, str]) -> ShardMap:
        """This topology with the catalog's assignment (which moves change)."""
        if sorted(assignment) != list(range(self.logical_shards)):
            raise ShardMapError(
                f"the catalog's shard map covers {len(assignment)} logical shards, the "
                f"configuration {self.logical_shards}; the number of logical shards is fixed "
                "for the life of a deployment"
            )
        unknown = sorted({c for c in assignment.values() if c not in self.clusters})
        if unknown:
            raise ShardMapError(
                f"the catalog assigns logical shards to clusters {unknown} that "
                "RESERVATIONS_SHARDS does not define; add them to 'clusters'"
            )
        return ShardMap(
            self.logical_shards,
            self.clusters,
            tuple(assignment[n] for n in range(self.logical_shards)),
            self.replicas,
        )


def parse(text: str) -> ShardMap:
    """Parse and validate RESERVATIONS_SHARDS (JSON, or '@path' to a JSON file)."""
    source, text = _read(text)
    doc = _document(text, source)
    count = _logical_shards(doc, source)
    urls, replicas = _clusters(doc.get("clusters"), source)
    assign = doc.get("assign")
    if assign is None:  # spread evenly, in contiguous ranges, in the clusters' order
        names = list(urls)
        assignment = tuple(names[n * len(names) // count] for n in range(count))
        return ShardMap(count, urls, assignment, replicas)
    return ShardMap(count, urls, _assignment(assign, urls, count, source), replicas)


def _read(text: str) -> tuple[str, str]:
    """Where the map comes from (the variable, or the file '@path' names) and its text."""
    source = "RESERVATIONS_SHARDS"
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        source = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ShardMapError(f"cannot read the shard map file {path}: {exc.strerror}") from None
    return source, text


def _document(text: str, source: str) -> dict[str, object]:
    """Whether the text is a JSON object with only the known keys."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShardMapError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ShardMapError(f"{source} must be a JSON object with 'logical_shards', 'clusters'")
    extra = sorted(set(doc) - {"logical_shards", "clusters", "assign"})
    if extra:
        raise ShardMapError(f"{source}: unknown keys {extra}")
    return doc


def _logical_shards(doc: dict[str, object], source: str) -> int:
    """The number of logical shards: an integer 1-MAX_LOGICAL."""
    count = doc.get("logical_shards")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_LOGICAL:
        raise ShardMapError(f"{source}: 'logical_shards' must be an integer 1-{MAX_LOGICAL}")
    return count


def _clusters(clusters: object, source: str) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """Each cluster's primary URL and replica URLs, from a URL or {"url", "replicas"}."""
    if not isinstance(clusters, dict) or not clusters:
        raise ShardMapError(f"{source}: 'clusters' must map names to postgresql:// URLs")
    urls: dict[str, str] = {}
    replicas: dict[str, tuple[str, ...]] = {}
    for name, spec in clusters.items():
        if not _NAME.match(name):
            raise ShardMapError(
                f"{source}: cluster name {name!r} must be lower-case letters, digits, - or _"
            )
        url, copies = (
            (spec.get("url"), spec.get("replicas", [])) if isinstance(spec, dict) else (spec, [])
        )
        if isinstance(spec, dict) and set(spec) - {"url", "replicas"}:
            raise ShardMapError(f"{source}: cluster {name!r} takes only 'url' and 'replicas'")
        if not _is_url(url):
            raise ShardMapError(f"{source}: cluster {name!r} needs a postgresql:// URL")
        if not isinstance(copies, list) or not all(_is_url(c) for c in copies):
            raise ShardMapError(
                f"{source}: cluster {name!r}: 'replicas' must be a list of postgresql:// URLs"
            )
        urls[name] = str(url)
        replicas[name] = tuple(copies)
    return urls, replicas


def _assignment(
    assign: object, clusters: dict[str, str], count: int, source: str
) -> tuple[str, ...]:
    """Which cluster owns each logical shard, from 'assign': every shard exactly once."""
    if not isinstance(assign, dict):
        raise ShardMapError(f"{source}: 'assign' must map cluster names to ranges like '0-31'")
    owner: dict[int, str] = {}
    for name, ranges_ in assign.items():
        if name not in clusters:
            raise ShardMapError(f"{source}: 'assign' names {name!r}, which is not a cluster")
        for part in str(ranges_).split(","):
            for n in _range(part, name, count, source):
                if n in owner:
                    raise ShardMapError(
                        f"{source}: logical shard {n} is assigned to both {owner[n]!r} and {name!r}"
                    )
                owner[n] = name
    missing = [n for n in range(count) if n not in owner]
    if missing:
        raise ShardMapError(
            f"{source}: logical shards {ranges(missing)} are assigned to no cluster"
        )
    return tuple(owner[n] for n in range(count))


def _range(part: str, name: str, count: int, source: str) -> range:
    """The logical shards one part of a cluster's 'assign' ('5' or '0-31') names."""
    match = _RANGE.match(part)
    if match is None:
        raise ShardMapError(f"{source}: {name!r}: {part!r} is not a range like '0-31'")
    low = int(match.group(1))
    high = int(match.group(2) or low)
    if not low <= high < count:
        raise ShardMapError(f"{source}: {name!r}: range {part.strip()!r} is outside 0-{count - 1}")
    return range(low, high + 1)


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    if not numbers:
        return ""
    out: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], -2]:
        if n != prev + 1:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = n
        prev = n
    return ",".join(out)
