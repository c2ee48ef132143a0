"""The context every use case runs in: the database handles, the clock, the Redis tier and
the components built on it, and the hooks other domains attach. A plain dataclass: built by
`wiring.build` for the app's lifespan, the CLI, the worker and tests; nothing here opens,
connects or decides anything."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from uuid import UUID

from reservations.availability_map.store import AvailabilityMap, Change
from reservations.catalog.cache import ResourceCache
from reservations.config import Settings
from reservations.kit.clock import Clock
from reservations.kit.db import AfterCommit, Database
from reservations.kit.redis import RedisTier
from reservations.kit.redlock import Redlock
from reservations.sharding.router import Shards
from reservations.tenancy.cache import KeyCache
from reservations.tenancy.limits import CallerLimits
from reservations.tenancy.service import Principal

# Told that a range of a resource became free (a cancel, a decline, an expired hold): the
# waitlist attaches its promotion here (wiring.py), so reservations never import it.
FreedHook = Callable[["Context", UUID], Awaitable[object]]


@dataclass
class Context:
    """What a use case may use. `db` is the database of the rows at hand: the catalog, or
    after `at` the shard cluster of one resource."""

    settings: Settings
    db: Database
    clock: Clock
    # Where each resource lives (a pass-through to `db` unless RESERVATIONS_SHARDS is set).
    shards: Shards
    redis: RedisTier = field(default_factory=RedisTier.disabled)
    key_cache: KeyCache | None = None
    limits: CallerLimits | None = None
    resource_cache: ResourceCache | None = None
    availability_map: AvailabilityMap | None = None
    # The Redlock nodes for bookings that span clusters (only when sharded).
    redlock: Redlock | None = None
    on_freed: list[FreedHook] = field(default_factory=list)

    def on(self, db: Database) -> Context:
        """This context with `db` replaced (a shard cluster's database)."""
        view = copy.copy(self)
        view.db = db
        return view

    def at(self, ident: UUID, caller: Principal | None = None) -> Context:
        """This context on the database of `ident` (a resource, or anything created beside
        one: reservation, booking, waitlist entry), guarded against shard moves; with
        `caller`, whose key and tenant are mirrored there for the rows it writes. The one
        place a use case chooses its shard."""
        if not self.shards.sharded:
            return self
        return self.on(self.shards.bind(ident, caller.api_key_id if caller else None))

    def map_after_commit(self, unit: AfterCommit, changes: Sequence[Change]) -> None:
        """Apply `changes` to the availability map once `unit` has committed."""
        if self.availability_map is not None and changes:
            unit.after_commit(partial(self.availability_map.apply, list(changes)))

    def freed_after_commit(self, unit: AfterCommit, resource_ids: Sequence[UUID]) -> None:
        """Tell the `on_freed` hooks, once `unit` has committed, that ranges of these
        resources became free (each resource once, in a stable order)."""
        for resource_id in sorted(set(resource_ids)):
            for hook in self.on_freed:
                unit.after_commit(partial(hook, self, resource_id))
