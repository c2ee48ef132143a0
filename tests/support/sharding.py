"""The sharded topology the tests in tests/sharding run on (three clusters, a catalog, three
Valkey nodes for Redlock) and a direct reader of one cluster's rows."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse, urlunparse

import psycopg

from tests.support.servers import make_settings

CLUSTERS = ("a", "b", "c")


LOGICAL = 16


def _database(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + name))


@dataclass
class Topology:
    catalog: str
    clusters: dict[str, str]
    redlock: list[str]
    cache: str

    def shards_json(self, **extra: Any) -> str:
        return json.dumps({"logical_shards": LOGICAL, "clusters": self.clusters, **extra})

    def settings(self, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "shards": self.shards_json(),
            "redlock_urls": ",".join(self.redlock),
            "redis_url": self.cache,
            "redis_key_prefix": f"rsv-shard-{secrets.token_hex(3)}:",
            **overrides,
        }
        return make_settings(self.catalog, **values)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "RESERVATIONS_SHARDS": self.shards_json(),
            "RESERVATIONS_REDLOCK_URLS": ",".join(self.redlock),
            "REDIS_URL": self.cache,
            **extra,
        }


def rows_on(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()
