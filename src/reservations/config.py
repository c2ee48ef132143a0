"""One typed settings object, read from the environment once and validated."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reservations.kit.faults import CrashAfterCommit


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("reservations"))


class Settings(BaseSettings):
    """Every knob of the service. Unprefixed names are the ones DESIGN.md promises
    (`DATABASE_URL`, `REDIS_URL`); everything else is `RESERVATIONS_*`."""

    model_config = SettingsConfigDict(env_prefix="RESERVATIONS_", extra="ignore")

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "RESERVATIONS_DATABASE_URL")
    )
    # Streaming replicas for reads (comma-separated URLs); empty: every read is the primary's.
    database_replica_urls: str = Field(
        default="",
        validation_alias=AliasChoices(
            "DATABASE_REPLICA_URLS", "RESERVATIONS_DATABASE_REPLICA_URLS"
        ),
    )
    replica_max_lag_seconds: float = Field(default=5.0, gt=0, le=3600)
    replica_wait_ms: int = Field(default=200, ge=0, le=10_000)
    replica_check_seconds: float = Field(default=1.0, gt=0, le=60)
    # A read a replica has not answered by then runs again on the primary.
    replica_read_timeout_ms: int = Field(default=1_000, ge=10, le=60_000)
    data_dir: Path = Field(default_factory=_default_data_dir)

    # Sharding (reservations.sharding): the topology as JSON or '@/path/to/file.json' (see
    # kit/shardmap.py); unset, every resource lives on DATABASE_URL, which is always the
    # catalog (tenants, keys, the shard map, two-phase decisions).
    shards: str | None = None
    # Redis/Valkey nodes for Redlock (cross-shard bookings): at least 3 independent ones,
    # comma-separated; required when the shard map has more than one cluster.
    redlock_urls: str = ""
    redlock_ttl_ms: int = Field(default=10_000, ge=100, le=600_000)
    # A prepared cross-shard transaction older than this with no decision is rolled back
    # by the recovery job (its coordinator died); longer than any booking takes.
    twophase_recover_after_seconds: float = Field(default=30.0, gt=0, le=86_400)
    # How often an API instance re-reads the catalog's shard map (a stale one is refused by
    # the clusters' shard guard, never written through; this bounds stale reads).
    shard_map_refresh_seconds: float = Field(default=5.0, gt=0, le=3_600)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)

    db_pool_min: int = Field(default=2, ge=1, le=200)
    db_pool_max: int = Field(default=20, ge=1, le=500)
    # psycopg prepares a statement after this many executions; 0 disables prepared statements
    # (needed behind a pooler without prepared-statement support, e.g. PgBouncer < 1.21).
    db_prepare_threshold: int = Field(default=5, ge=0)
    # "transaction": connections go through a pooler in transaction mode (PgBouncer): no
    # startup options, no prepared statements, timeouts set per transaction (SET LOCAL).
    db_pooler: Literal["none", "transaction"] = "none"
    statement_timeout_ms: int = Field(default=10_000, ge=100)
    lock_timeout_ms: int = Field(default=5_000, ge=10)

    max_reservation_seconds: int = Field(default=31 * 86_400, ge=60, le=366 * 86_400)
    max_hold_seconds: int = Field(default=86_400, ge=1, le=7 * 86_400)
    # The longest a hold may live, from its creation to its expiry, however often it is
    # extended (POST .../extend): extensions cannot keep a range held for ever.
    hold_max_life_seconds: int = Field(default=86_400, ge=1, le=30 * 86_400)
    # `hold.expiring` goes out this long before a hold lapses (0: never).
    hold_expiring_seconds: int = Field(default=120, ge=0, le=86_400)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    idempotency_ttl_seconds: int = Field(default=86_400, ge=60)

    run_worker: bool = True
    sweep_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # History (reservations.history): reservations whose guarded range ended this many days
    # ago move to the monthly history table; nothing can be booked or moved before that.
    history_after_days: int = Field(default=90, ge=1, le=36_500)
    history_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    history_batch: int = Field(default=1_000, ge=1, le=100_000)
    # Month partitions made ahead of the horizon, and (0: never) how many months of history
    # before the horizon stay attached; older ones are detached, kept as plain tables.
    history_months_ahead: int = Field(default=2, ge=0, le=24)
    history_detach_after_months: int = Field(default=0, ge=0, le=1_200)

    # Unset: `reservations serve` starts the embedded Valkey; "none": no cache tier at all.
    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "RESERVATIONS_REDIS_URL")
    )
    # Short on purpose: a slow Redis must cost a request little more than a cache miss.
    redis_timeout_ms: int = Field(default=250, ge=10, le=10_000)
    # Every key this service writes starts with it, so several deployments (or test workers)
    # can share one Redis.
    redis_key_prefix: str = Field(default="rsv:", min_length=1, max_length=64)
    # 0 turns the API-key cache off; revocations invalidate explicitly, this is the backstop.
    api_key_cache_ttl_seconds: int = Field(default=60, ge=0, le=86_400)
    rate_limit_enabled: bool = True
    # Generous defaults: above what one instance serves on a 2-core machine, so they only
    # stop runaway clients. Quota per window, per API key and per tenant.
    rate_limit_key_requests: int = Field(default=600_000, ge=1, le=100_000_000)
    rate_limit_tenant_requests: int = Field(default=1_200_000, ge=1, le=100_000_000)
    rate_limit_window_seconds: int = Field(default=60, ge=1, le=86_400)
    # Live (unexpired) holds one tenant may have at once: the guard against holding every slot.
    max_live_holds_per_tenant: int = Field(default=10_000, ge=1, le=10_000_000)
    # Waiting entries at once, per resource and per API key (across resources): promotion
    # reads at most a resource's whole queue, so this bounds the work a cancel triggers.
    waitlist_max_per_resource: int = Field(default=200, ge=1, le=10_000)
    waitlist_max_per_key: int = Field(default=50, ge=1, le=10_000)
    # Resource metadata cache: written after each committed change, versioned; 0 turns it off.
    resource_cache_ttl_seconds: int = Field(default=300, ge=0, le=86_400)
    # The availability map (fast refusal of creates on taken ranges) and its repair job.
    availability_map_enabled: bool = True
    availability_map_ttl_seconds: int = Field(default=3_600, ge=10, le=7 * 86_400)
    # The repair reads the outbox's changes since its last round: a round costs what the
    # changes cost, so it can run often (a lost clear refuses a free range until it runs).
    availability_map_repair_interval_seconds: float = Field(default=5.0, gt=0, le=86_400)
    # Tests only (kit/faults.py): kill the process between a write's commit and its response.
    # 'once', 'always' or a probability; unset (the default) turns it off.
    fault_crash_after_commit: str | None = None
    # Tests only: cross-shard bookings skip the shards' fencing-token check (the control
    # that shows what fencing refuses). Never set in production.
    fault_skip_fencing: bool = False

    @field_validator("fault_crash_after_commit")
    @classmethod
    def _check_fault(cls, value: str | None) -> str | None:
        CrashAfterCommit.parse(value)  # raises ValueError with what it should be
        return value

    # Webhooks (reservations.webhooks): the worker copies events into each endpoint's queue
    # and delivers them. How often it looks when idle, how many requests it has in flight,
    # and how long one request may take (connect to last byte).
    webhooks_interval_seconds: float = Field(default=1.0, gt=0, le=3_600)
    webhooks_concurrency: int = Field(default=16, ge=1, le=1_000)
    webhooks_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Retries: after the n-th failed attempt wait a random time in [0, min(max, base * 2^(n-1))]
    # (exponential backoff, full jitter); a message still failing this long after its first
    # attempt is given up ("dead").
    webhooks_backoff_base_seconds: float = Field(default=5.0, gt=0, le=86_400)
    webhooks_backoff_max_seconds: float = Field(default=3_600.0, gt=0, le=7 * 86_400)
    webhooks_give_up_after_seconds: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    # An endpoint whose every attempt has failed for this long, over at least this many
    # attempts, is disabled (PATCH enabled=true turns it back on).
    webhooks_disable_after_seconds: float = Field(default=5 * 86_400.0, ge=0, le=90 * 86_400)
    webhooks_disable_after_failures: int = Field(default=10, ge=1, le=1_000_000)
    # Endpoints may only be public addresses unless this is true (tests, local receivers);
    # with it, plain http is accepted too.
    webhooks_allow_private: bool = False
    # Delivered and dead messages, with their attempts, are kept this long.
    webhooks_retention_days: int = Field(default=30, ge=1, le=3_650)

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        if value.strip().lower() == "none":
            return "none"
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL, or 'none'")
        return value

    @property
    def redis_disabled(self) -> bool:
        """REDIS_URL=none: run with no cache tier, no rate limits."""
        return self.redis_url == "none"

    @property
    def replica_urls(self) -> list[str]:
        return [u.strip() for u in self.database_replica_urls.split(",") if u.strip()]

    @field_validator("database_replica_urls")
    @classmethod
    def _check_replicas(cls, value: str) -> str:
        for url in (u.strip() for u in value.split(",")):
            if url and not url.startswith(("postgresql://", "postgres://")):
                raise ValueError("must be comma-separated postgresql:// URLs")
        return value

    @field_validator("shards")
    @classmethod
    def _check_shards(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        from reservations.kit.shardmap import parse  # ShardMapError is a ValueError

        parse(value)
        return value

    @property
    def redlock_url_list(self) -> list[str]:
        return [u.strip() for u in self.redlock_urls.split(",") if u.strip()]

    @property
    def max_reservation(self) -> timedelta:
        return timedelta(seconds=self.max_reservation_seconds)

    @property
    def hold_max_life(self) -> timedelta:
        return timedelta(seconds=self.hold_max_life_seconds)

    @property
    def idempotency_ttl(self) -> timedelta:
        return timedelta(seconds=self.idempotency_ttl_seconds)


class SettingsError(Exception):
    """A setting is wrong; the message names the variable and what it should be."""


_UNPREFIXED = {
    "database_url": "DATABASE_URL",
    "redis_url": "REDIS_URL",
    "database_replica_urls": "DATABASE_REPLICA_URLS",
}


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            env = _UNPREFIXED.get(field, f"RESERVATIONS_{field.upper()}")
            lines.append(f"{env}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
