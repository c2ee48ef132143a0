"""The context every use case runs in: the app's database handles, clock, Redis tier and
the components built on it. A plain dataclass, built once by whoever runs the code: the app's
lifespan, the CLI, the worker, a test."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from uuid import UUID

from reservations.availability_map.store import AvailabilityMap
from reservations.caches.resource import ResourceCache
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.db import Database
from reservations.kit.redis import RedisTier
from reservations.kit.redlock import Redlock
from reservations.sharding.router import Shards
from reservations.tenancy.cache import KeyCache
from reservations.tenancy.limits import CallerLimits
from reservations.tenancy.service import Principal


@dataclass
class Context:
    """Everything a request may use; built once in the app's lifespan."""

    settings: Settings
    db: Database
    clock: Clock
    redis: RedisTier = field(default_factory=RedisTier.disabled)
    key_cache: KeyCache | None = None
    limits: CallerLimits | None = None
    resource_cache: ResourceCache | None = None
    availability_map: AvailabilityMap | None = None
    # Where each resource lives (a pass-through to `db` unless RESERVATIONS_SHARDS is set),
    # and the Redlock nodes for bookings that span clusters.
    shards: Shards = field(init=False)
    redlock: Redlock | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.shards = Shards(self.db, self.settings)
        if len(self.shards.databases()) > 1:
            urls = self.settings.redlock_url_list
            if len(urls) < 3:
                raise ValueError(
                    "RESERVATIONS_REDLOCK_URLS must name at least 3 independent Redis/Valkey "
                    "nodes when RESERVATIONS_SHARDS has more than one cluster (bookings that "
                    f"span clusters lock with Redlock); got {len(urls)}"
                )
            self.redlock = Redlock(
                urls, ttl_ms=self.settings.redlock_ttl_ms, prefix=self.settings.redis_key_prefix
            )

    def on(self, db: Database) -> Context:
        """These services with `db` replaced (a shard cluster's database)."""
        view = copy.copy(self)
        view.db = db
        return view

    def at(self, ident: UUID, caller: Principal | None = None) -> Context:
        """These services with `db` the database of `ident` (a resource, or anything created
        beside one: reservation, booking, waitlist entry), guarded against shard moves; with
        `caller`, whose key and tenant are mirrored there for the rows it writes."""
        if not self.shards.sharded:
            return self
        return self.on(self.shards.bind(ident, caller.api_key_id if caller else None))
